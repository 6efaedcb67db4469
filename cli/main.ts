#!/usr/bin/env node
import "reflect-metadata";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { type ConfigDecl, renderHelp } from "../common/config";
import { isStintError } from "../common/errors";
import { agent } from "./agent";
import { AGENT_CONFIG } from "./agent-config";
import { audit } from "./audit";
import { caBootstrap, caFingerprint } from "./bootstrap";
import { CA_CONFIG } from "./ca-config";
import { caImportCrl, caRootCrlRequest } from "./ca-import-crl";
import { caAdminCert, caInit } from "./ca-init";
import { caIntermediateCsr } from "./ca-intermediate-csr";
import { caIssue } from "./ca-issue";
import { caRevoke } from "./ca-revoke";
import { ROTATION_COMMANDS } from "./ca-rotate";
import { caServe } from "./ca-serve";
import { caStatus } from "./ca-status";
import { certList, certRevoke, certShow } from "./cert";
import { type Command, helpText } from "./command";
import { consoleLogin } from "./console";
import { entryCreate, entryDelete, entryList } from "./entry";
import { rootCrossSign } from "./root-cross-sign";
import { rootInit } from "./root-init";
import { rootSign } from "./root-sign";
import { rootSignCrl } from "./root-sign-crl";
import { tokenCreate } from "./token";
import { verify } from "./verify";

/** Every `stint` subcommand; help, dispatch and the help test (test/e2e/cli-help.test.ts) read this table. */
export const COMMANDS: readonly Command[] = [
  caInit,
  caServe,
  caIssue,
  caRevoke,
  caStatus,
  caAdminCert,
  caFingerprint,
  caBootstrap,
  ...ROTATION_COMMANDS,
  caIntermediateCsr,
  caRootCrlRequest,
  caImportCrl,
  rootSign,
  rootInit,
  rootCrossSign,
  rootSignCrl,
  entryCreate,
  entryList,
  entryDelete,
  tokenCreate,
  certList,
  certShow,
  certRevoke,
  audit,
  consoleLogin,
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
    "Run `stint <command> --help` for a command's options and examples,",
    "`stint help config` for every CA setting, `stint --version` for the version.",
  ].join("\n");
}

/** The version in package.json, found above this file whether it runs from dist/ or from source. */
function version(): string {
  for (let dir = __dirname; dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "stint" && pkg.version) return pkg.version;
    } catch {
      // not here: look one level up
    }
  }
  return "unknown";
}

/** The settings tables, too long for every command's --help: `stint help config`, `stint help agent-config`. */
const SETTINGS_TOPICS: Record<string, { usage: string; about: string; decls: readonly ConfigDecl[] }> = {
  config: {
    usage: "stint ca <command> [--config FILE] [--<setting> VALUE]",
    about: "The CA's settings, read by `stint ca serve` and every `stint ca` command.",
    decls: CA_CONFIG,
  },
  "agent-config": {
    usage: "stint agent [--config FILE] [--<setting> VALUE]",
    about: "The agent's settings.",
    decls: AGENT_CONFIG,
  },
};

/** `stint help`, `stint help config` and `stint help <command>`. */
function help(topic: string[]): number {
  if (topic.length === 0) {
    console.log(overview());
    return 0;
  }
  const settings = SETTINGS_TOPICS[topic.join(" ")];
  if (settings) {
    console.log(
      [
        `usage: ${settings.usage}`,
        "",
        settings.about,
        "Each has a key in the config file (YAML or JSON, --config or STINT_CONFIG), an environment",
        "variable and, unless secret, a flag.",
        "",
        renderHelp(settings.decls),
      ].join("\n"),
    );
    return 0;
  }
  const [cmd, rest] = resolve(topic);
  if (!cmd || rest.length > 0) {
    console.error(`stint help: no command or topic "${topic.join(" ")}"; see stint --help`);
    return 2;
  }
  console.log(helpText(cmd));
  return 0;
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
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h") {
    console.log(overview());
    return 0;
  }
  if (argv[0] === "help") return help(argv.slice(1));
  if (argv[0] === "--version" || argv[0] === "-V" || argv[0] === "version") {
    console.log(`stint ${version()}`);
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
    console.log(helpText(cmd));
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
