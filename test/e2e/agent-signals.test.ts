import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fingerprint, startAgent, waitFor } from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * SIGHUP forces a renewal (the README's contract), including one sent the
 * moment the agent reports its health endpoint listening, which is when a
 * supervisor or a test sees it ready. The agent-kills drill found the
 * handler was installed only after that line, so such a SIGHUP could end the
 * agent by its default action; the race is narrow, so this repeats it.
 */

const TD = "signals.example";
const SPIFFE_ID = `spiffe://${TD}/svc/web`;
const dir = tempDir("stint-agent-signals-");
const dataDir = join(dir, "ca");
let ca: ServerProcess;

beforeAll(async () => {
  ca = await startServer(["--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", TD]);
}, 60_000);
afterAll(async () => {
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it("renews on a SIGHUP sent as soon as the health endpoint is reported, and keeps running", async () => {
  const token = stint([
    "token",
    "create",
    "--spiffe-id",
    SPIFFE_ID,
    "--json",
    "--data-dir",
    dataDir,
    "--server",
    ca.url,
  ]);
  expect(token.code).toBe(0);
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, JSON.parse(token.stdout).token, { mode: 0o600 });
  const args = ["--ca-url", ca.url, "--spiffe-id", SPIFFE_ID, "--state-dir", join(dir, "state")].concat([
    "--out-dir",
    join(dir, "out"),
    "--health-listen",
    "127.0.0.1:0",
  ]);
  const first = stint([
    "agent",
    ...args,
    "--once",
    "--ca-fingerprint",
    fingerprint(dataDir),
    "--join-token-file",
    tokenFile,
  ]);
  expect(first.code).toBe(0);

  for (let i = 0; i < 5; i++) {
    const agent = startAgent(args);
    // Signalled from the very chunk that carries the line, with no polling delay in between.
    agent.child.stderr!.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes('"msg":"health endpoint listening"')) agent.child.kill("SIGHUP");
    });
    await waitFor(
      "a renewal forced by the SIGHUP",
      () =>
        agent.child.exitCode !== null ||
        agent.child.signalCode !== null ||
        agent.logs().some((l) => l.msg === "certificate switched"),
    );
    expect({ run: i, signal: agent.child.signalCode, code: agent.child.exitCode }).toEqual({
      run: i,
      signal: null,
      code: null,
    });
    expect(agent.logs().filter((l) => l.msg === "SIGHUP: renewing now")).toHaveLength(1);
    expect(await agent.stop()).toBe(0);
  }
}, 120_000);
