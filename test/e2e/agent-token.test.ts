import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pemDecodeAll } from "../../formats/pem";
import { fingerprint } from "../helpers/agent";
import { type RunResult, type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * `stint agent --once` with a join token and no --spiffe-id: the token names
 * the identity. A --spiffe-id that disagrees with the token stops the agent
 * before anything is sent, and the token still enrolls afterwards.
 */

const TD = "token.example";
const dir = tempDir("stint-agent-token-");
const dataDir = join(dir, "ca");
let ca: ServerProcess;

beforeAll(async () => {
  const init = stint(["ca", "init", "--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", TD]);
  if (init.code !== 0) throw new Error(init.stderr);
  ca = await startServer(["--insecure-no-passphrase", "--data-dir", dataDir]);
}, 60_000);

afterAll(async () => {
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function token(spiffeId: string): string {
  const r = stint([
    "token",
    "create",
    "--spiffe-id",
    spiffeId,
    "--json",
    "--data-dir",
    dataDir,
    "--server",
    ca.url,
  ]);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout).token;
}

function agentOnce(name: string, args: string[]): RunResult & { out: string } {
  const state = join(dir, `state-${name}`);
  const out = join(state, "out");
  const r = stint([
    "agent",
    "--once",
    "--ca-url",
    ca.url,
    "--ca-fingerprint",
    fingerprint(dataDir),
    "--state-dir",
    state,
    "--out-dir",
    out,
    ...args,
  ]);
  return { ...r, out };
}

const sanOf = (out: string) =>
  new X509Certificate(pemDecodeAll(readFileSync(join(out, "cert.pem"), "utf8"), "CERTIFICATE", "cert")[0])
    .subjectAltName;

it("enrolls for the SPIFFE ID the join token names, without --spiffe-id, from a file or the command line", () => {
  const fromFile = token(`spiffe://${TD}/web`);
  const file = join(dir, "token");
  writeFileSync(file, `${fromFile}\n`, { mode: 0o600 });
  const a = agentOnce("file", ["--join-token-file", file]);
  expect(a.stderr).not.toMatch(/"level":"error"/);
  expect(a.code).toBe(0);
  expect(sanOf(a.out)).toBe(`URI:spiffe://${TD}/web`);

  // No leading "-": the token can follow --join-token as its value.
  const onCommandLine = token(`spiffe://${TD}/batch`);
  expect(onCommandLine.startsWith("-")).toBe(false);
  const b = agentOnce("flag", ["--join-token", onCommandLine]);
  expect(b.code).toBe(0);
  expect(sanOf(b.out)).toBe(`URI:spiffe://${TD}/batch`);
});

it("refuses a --spiffe-id the token was not made for before sending anything, and the token still works", () => {
  const t = token(`spiffe://${TD}/db`);
  const file = join(dir, "db-token");
  writeFileSync(file, t, { mode: 0o600 });
  const typo = agentOnce("typo", ["--join-token-file", file, "--spiffe-id", `spiffe://${TD}/bd`]);
  expect(typo.code).not.toBe(0);
  expect(typo.stderr).toContain(
    `spiffeId spiffe://${TD}/bd is not the SPIFFE ID the join token was created for (spiffe://${TD}/db)`,
  );
  expect(typo.stderr).not.toContain(t);
  expect(ca.logs().join("\n")).not.toContain(`spiffe://${TD}/bd`);

  const fixed = agentOnce("fixed", ["--join-token-file", file, "--spiffe-id", `spiffe://${TD}/db`]);
  expect(fixed.code).toBe(0);
  expect(sanOf(fixed.out)).toBe(`URI:spiffe://${TD}/db`);
});
