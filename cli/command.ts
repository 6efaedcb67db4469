import { type ParseArgsConfig, parseArgs } from "node:util";
import { StintError } from "../common/errors";

/** One `stint` subcommand: its help text and what it runs. */
export interface Command {
  /** Words after `stint`, e.g. "ca init". */
  name: string;
  summary: string;
  /** Full --help text. */
  help(): string;
  run(argv: string[]): Promise<number>;
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

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}
