import { type ParseArgsConfig, parseArgs } from "node:util";
import { type ConfigDecl, type LoadOptions, loadConfig } from "../common/config";
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

/**
 * Checks the settings given as flags on their own, before the config file and
 * the environment are merged in: a bad value typed on the command line is a
 * usage mistake (exit 2), while the same value in a file or the environment
 * stays a configuration error (exit 1). `topic` is the `stint help` page that
 * lists the settings.
 */
export function checkSettingFlags(
  decls: readonly ConfigDecl[],
  flags: LoadOptions<unknown>["flags"],
  topic: "config" | "agent-config",
): void {
  try {
    // No file, no environment, no cross-field check: any problem is one flag's value.
    loadConfig(decls, { env: {}, flags });
  } catch (err) {
    if (!isStintError(err) || err.code !== "ERR_CONFIG") throw err;
    throw new StintError("ERR_USAGE", `${err.message} (see stint help ${topic})`);
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}
