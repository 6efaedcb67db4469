#!/usr/bin/env node
import "reflect-metadata";
import { isStintError } from "../common/errors";
import { agent } from "./agent";
import { audit } from "./audit";
import { caAdminCert, caInit } from "./ca-init";
import { caIntermediateCsr } from "./ca-intermediate-csr";
import { caIssue } from "./ca-issue";
import { caRevoke } from "./ca-revoke";
import { ROTATION_COMMANDS } from "./ca-rotate";
import { caServe } from "./ca-serve";
import { caStatus } from "./ca-status";
import { certList, certRevoke, certShow } from "./cert";
import type { Command } from "./command";
import { entryCreate, entryDelete, entryList } from "./entry";
import { rootSign } from "./root-sign";
import { tokenCreate } from "./token";
import { verify } from "./verify";

const COMMANDS: readonly Command[] = [
  caInit,
  caServe,
  caIssue,
  caRevoke,
  caStatus,
  caAdminCert,
  ...ROTATION_COMMANDS,
  caIntermediateCsr,
  rootSign,
  entryCreate,
  entryList,
  entryDelete,
  tokenCreate,
  certList,
  certShow,
  certRevoke,
  audit,
  agent,
  verify,
];

function overview(prefix = ""): string {
  const shown = COMMANDS.filter((c) => c.name.startsWith(prefix));
  const width = Math.max(...shown.map((c) => c.name.length));
  return [
    `usage: stint ${prefix || "<command>"} ... [--help]`,
    "",
    "Stint: an internal PKI for short-lived mTLS certificates.",
    "",
    "commands:",
    ...shown.map((c) => `  stint ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Run `stint <command> --help` for a command's options.",
  ].join("\n");
}

/** Finds the longest command name that prefixes argv; returns it with the remaining arguments. */
function resolve(argv: string[]): [Command | undefined, string[]] {
  for (let words = 3; words >= 1; words--) {
    const name = argv.slice(0, words).join(" ");
    const cmd = COMMANDS.find((c) => c.name === name);
    if (cmd) return [cmd, argv.slice(words)];
  }
  return [undefined, argv];
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    console.log(overview());
    return 0;
  }
  const [cmd, rest] = resolve(argv);
  if (!cmd) {
    // The longest group the words name ("ca root", then "ca"), for `stint ca root` alone or with --help.
    const words = argv.filter((a) => !a.startsWith("-"));
    const group =
      [words.slice(0, 2).join(" "), words[0]].find(
        (g) => g && COMMANDS.some((c) => c.name.startsWith(g + " ")),
      ) ?? "";
    const groupWords = group.split(" ").length;
    if (group && (argv.length === groupWords || argv[groupWords] === "--help" || argv[groupWords] === "-h")) {
      console.log(overview(group));
      return 0;
    }
    console.error(
      `stint: unknown command "${argv.slice(0, group ? groupWords + 1 : 1).join(" ")}"; see stint ${group ? `${group} ` : ""}--help`,
    );
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(cmd.help());
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (isStintError(err)) {
      console.error(`stint ${cmd.name}: ${err.message}`);
      return err.code === "ERR_USAGE" ? 2 : 1;
    }
    // Not one of ours: still one line, and no stack unless asked for.
    console.error(`stint ${cmd.name}: unexpected error: ${err instanceof Error ? err.message : String(err)}`);
    if (process.env.STINT_DEBUG) console.error(err);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      console.error(`stint: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    },
  );
}
