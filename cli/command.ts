import { type ParseArgsConfig, parseArgs } from "node:util";
import { isStintError, StintError } from "../common/errors";

/** One `stint` subcommand: its help text and what it runs. */
export interface Command {
  /** Words after `stint`, e.g. "ca init". */
  name: string;
  summary: string;
  /** Usage, description and the command's own options; helpText adds the examples. */
  help(): string;
  /** Two or three command lines an operator would type, shown under "Examples:". */
  examples: readonly string[];
  run(argv: string[]): Promise<number>;
}

/** What `stint <command> --help` prints: the command's help, then its examples. */
export function helpText(cmd: Command): string {
  return [cmd.help().trimEnd(), "", "Examples:", ...cmd.examples.map((e) => `  ${e}`)].join("\n");
}

export type Options = NonNullable<ParseArgsConfig["options"]>;

/** parseArgs with our error style: unknown or malformed flags become one ERR_USAGE line. */
export function parseFlags(argv: string[], options: Options, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    const msg = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new StintError("ERR_USAGE", msg.replace(/\. To specify a positional argument.*$/, ""));
  }
}

/**
 * Parses one flag's value; a value the parser refuses is a usage mistake
 * (exit 2), whatever code the parser gives it elsewhere.
 */
export function flagValue<T>(command: string, flag: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (!isStintError(err)) throw err;
    throw new StintError("ERR_USAGE", `--${flag}: ${err.message} (see stint ${command} --help)`);
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}
