import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { get } from "node:http";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ADMIN_PATHS } from "../../acme/admin";
import { AdminClient } from "../../cli/admin-client";
import { sampleProcess } from "./acme-load/proc";
import { mintJoinTokens, startStint, stintMain, stopServersOnSignal } from "./acme-load/servers";

/**
 * The node agent path (issue 14) at host scale: a fresh `stint ca serve`, N
 * workload entries (10-minute SVIDs) parented to one `stint agent
 * --workload-api-socket`, and the CPU both processes spend from the moment
 * the agent holds its own certificate until it holds all N workload SVIDs.
 * Every SVID there is what a renewal is on this path (a new P-256 key in
 * memory, a CSR, a slot in a batch POST, the chain checked), so the figures
 * are CPU per renewed SVID. JSON on stdout, progress on stderr.
 *   npm run build && node dist/scripts/bench/workload-agent.js [--entries 1000]
 */

const TD = "workload-bench.example";
const NODE_ID = `spiffe://${TD}/node/bench`;
const log = (line: string) => process.stderr.write(`bench:workload-agent: ${line}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let text = "";
      res.on("data", (d) => {
        text += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    }).on("error", reject);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: { entries: { type: "string" } } });
  const count = Number(values.entries ?? 1000);
  stopServersOnSignal();
  const dir = mkdtempSync(join(tmpdir(), "stint-bench-workload-"));
  chmodSync(dir, 0o755);
  const ca = await startStint({ dir, trustDomain: TD });
  let agentPid = 0;
  let stopAgent = async () => {};
  try {
    const admin = await AdminClient.fromFlags({ "data-dir": ca.dataDir, server: ca.url });
    log(`creating ${count} entries parented to ${NODE_ID}`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < count) {
          const i = next++;
          await admin.post(ADMIN_PATHS.entries, {
            spiffeId: `spiffe://${TD}/workload/${i}`,
            selectors: [`unix:uid:${10_000 + i}`],
            ttl: "10m",
            parent: NODE_ID,
          });
        }
      }),
    );
    const [token] = await mintJoinTokens(ca.dataDir, ca.url, [NODE_ID], log);
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, token, { mode: 0o600 });
    const rootDer = new X509Certificate(ca.ca).raw;
    const fingerprint = `sha256:${createHash("sha256").update(rootDer).digest("hex")}`;
    const child = spawn(
      process.execPath,
      [
        stintMain(),
        "agent",
        "--ca-url",
        ca.url,
        "--ca-fingerprint",
        fingerprint,
        "--spiffe-id",
        NODE_ID,
        "--join-token-file",
        tokenFile,
        "--state-dir",
        join(dir, "state"),
        "--out-dir",
        join(dir, "out"),
        "--health-listen",
        "127.0.0.1:0",
        "--workload-api-socket",
        join(dir, "agent.sock"),
      ],
      {
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp" },
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    agentPid = child.pid!;
    stopAgent = async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
    };
    const healthUrl = await new Promise<string>((resolve, reject) => {
      let text = "";
      child.stderr!.on("data", (d: Buffer) => {
        text += d.toString();
        const m = /"msg":"health endpoint listening".*?"url":"([^"]+)"/.exec(text);
        if (m) resolve(m[1]);
      });
      child.once("exit", (code) => reject(new Error(`the agent exited with ${code}: ${text.slice(-2000)}`)));
    });
    // From the agent's own certificate on: all that is left is the workloads'.
    let start: { agent: number; ca: number; at: number } | null = null;
    let heldAtStart = 0;
    for (;;) {
      const { body } = await getJson(`${healthUrl}/health`).catch(() => ({
        body: {} as Record<string, unknown>,
      }));
      const held = (body.workloads as { svidsHeld?: number } | undefined)?.svidsHeld ?? 0;
      if (start === null && body.state === "ok") {
        start = { agent: sampleProcess(agentPid).cpuMs, ca: sampleProcess(ca.pid).cpuMs, at: Date.now() };
        heldAtStart = held;
        log(`agent enrolled; ${held} workload SVIDs held so far`);
      }
      if (start !== null && held >= count) break;
      await sleep(50);
    }
    const agentMs = sampleProcess(agentPid).cpuMs - start!.agent;
    const caMs = sampleProcess(ca.pid).cpuMs - start!.ca;
    const issued = count - heldAtStart;
    const result = {
      entries: count,
      svidsMeasured: issued,
      wallSeconds: (Date.now() - start!.at) / 1000,
      agentCpuMsPerSvid: Math.round((agentMs / issued) * 1000) / 1000,
      caCpuMsPerSvid: Math.round((caMs / issued) * 1000) / 1000,
      cpus: cpus().length,
      node: process.version,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await stopAgent();
    await ca.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  log((err as Error).stack ?? String(err));
  process.exit(1);
});
