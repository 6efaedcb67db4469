import "reflect-metadata";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { CA_CONFIG } from "../../cli/ca-config";
import { COMMANDS } from "../../cli/main";
import { stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * Issue 19: every subcommand's --help fits a screen and shows examples, the
 * settings table lives in `stint help config`, and a usage mistake exits 2.
 * The commands come from cli/main.ts's table, so a new command is covered too.
 */

const root = tempDir();
afterAll(() => rmSync(root, { recursive: true, force: true }));
// An empty data directory: nothing may get far enough to need a CA or a passphrase.
const env = { STINT_DATA_DIR: join(root, "no-ca"), STINT_STATE_DIR: join(root, "agent") };

const names = COMMANDS.map((c) => c.name);

test("the command table is not empty", () => {
  expect(names.length).toBeGreaterThan(20);
});

test.each(names)("stint %s --help is under 40 lines, with its own examples", (name) => {
  const r = stint([...name.split(" "), "--help"], env);
  expect(r.code).toBe(0);
  const lines = r.stdout.trimEnd().split("\n");
  expect(lines.length).toBeLessThan(40);
  expect(r.stdout).toMatch(/^usage: stint /);
  const examples = r.stdout.slice(r.stdout.indexOf("\nExamples:\n"));
  expect(examples).toContain("\nExamples:\n");
  expect(examples).toContain(`stint ${name}`);
  // The settings table moved to `stint help config`; its header no longer shows, doubled or not.
  expect(r.stdout).not.toMatch(/^settings/im);
});

test("stint help <command> prints the command's --help", () => {
  expect(stint(["help", "ca", "rotate"], env).stdout).toBe(stint(["ca", "rotate", "--help"], env).stdout);
});

test("stint help config lists every CA setting once, under one header", () => {
  const r = stint(["help", "config"], env);
  expect(r.code).toBe(0);
  for (const decl of CA_CONFIG) expect(r.stdout).toContain(`      ${decl.key}: `);
  expect(r.stdout.match(/^settings/gim)).toHaveLength(1);
});

test("stint help agent-config lists the agent's settings", () => {
  const r = stint(["help", "agent-config"], env);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain("--ca-fingerprint");
});

test("stint help with an unknown topic exits 2", () => {
  expect(stint(["help", "nonsense"], env).code).toBe(2);
});

test("stint --version prints package.json's version", () => {
  const { version } = JSON.parse(readFileSync(join(__dirname, "../../package.json"), "utf8")) as {
    version: string;
  };
  for (const flag of ["--version", "-V"]) {
    const r = stint([flag], env);
    expect(r).toMatchObject({ code: 0, stdout: `stint ${version}\n` });
  }
});

test.each(names)("stint %s with an unknown flag exits 2 with one line", (name) => {
  const r = stint([...name.split(" "), "--no-such-flag"], env);
  expect(r.code).toBe(2);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toContain("--no-such-flag");
});

test.each(names)("stint %s with stray arguments exits 2", (name) => {
  // No command takes two positional arguments.
  const r = stint([...name.split(" "), "stray-one", "stray-two"], env);
  expect(r.code).toBe(2);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
});

test("an unknown command exits 2", () => {
  expect(stint(["ca", "rotat"], env).code).toBe(2);
  expect(stint(["nonsense"], env).code).toBe(2);
});

test.each([
  ["ca", "issue", "--spiffe-id", "spiffe://example.org/a", "--out", "unused", "--ttl", "abc"],
  ["ca", "admin-cert", "--ttl", "soon"],
  ["ca", "revoke", "--serial", "01", "--reason", "bogus"],
  ["ca", "taint", "0011223344556677", "--revoke-at", "later"],
])("a malformed flag value is a usage mistake too: stint %s %s %s", (...args) => {
  const r = stint(args, env);
  expect(r.code).toBe(2);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toContain("--help");
});

// A setting typed as a flag is checked as the flag it is: a bad value is a usage mistake (exit 2),
// with one line naming the flag and what it takes; the same value from the environment or a config
// file stays a configuration error (exit 1), as the README's CLI reference says.
test.each([
  [["ca", "serve", "--listen", "nonsense"], "--listen", "host:port"],
  [["ca", "serve", "--listen", "127.0.0.1:99999"], "--listen", "host:port"],
  [["ca", "serve", "--data-dir"], "--data-dir", "argument missing"],
  [["ca", "init", "--policy-max-ttl", "5x"], "--policy-max-ttl", "is not a duration"],
  [["ca", "status", "--log-level", "loud"], "--log-level", "is not one of debug, info, warn, error"],
  [["ca", "rotate", "--key-algorithm", "dsa"], "--key-algorithm", "is not one of"],
  [["ca", "fingerprint", "--trust-domain", "Not_A_Domain"], "--trust-domain", "lowercase"],
  [["ca", "rotate", "--ttl-days", "abc"], "--ttl-days", "whole number of days"],
  [["ca", "root", "prepare", "--ttl-days", "0"], "--ttl-days", "whole number of days"],
  [["agent", "--once", "--backoff-base", "soon"], "--backoff-base", "is not a duration"],
  [["agent", "--once", "--ca-url", "http://ca:8443"], "--ca-url", "https://host[:port]"],
  [["agent", "--once", "--renew-percent", "99"], "--renew-percent", "between 10 and 90"],
  [["verify", "c.pem", "--bundle", "b.pem", "--clock-skew", "lots"], "--clock-skew", "duration"],
  [["verify", "c.pem", "--bundle", "b.pem", "--max-feed-age", "old"], "--max-feed-age", "duration"],
])("a bad setting flag is a usage mistake: stint %j", (args, flag, expected) => {
  const r = stint(args, env);
  expect(r.code).toBe(2);
  const lines = r.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain(flag);
  expect(lines[0]).toContain(expected);
});

test.each([
  [["ca", "serve"], { STINT_LISTEN: "nonsense" }, "environment STINT_LISTEN"],
  [["agent", "--once"], { STINT_BACKOFF_BASE: "soon" }, "environment STINT_BACKOFF_BASE"],
])(
  "the same bad value from the environment is a configuration error (exit 1): stint %j",
  (args, vars, where) => {
    const r = stint(args, { ...env, ...vars });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(where);
  },
);
