import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { Agent, request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ADMIN_PATHS } from "../../acme/admin";
import { AGENT_PATHS, MAX_BATCH } from "../../acme/agent-api";
import { buildCsr } from "../../agent/csr";
import { AdminClient } from "../../cli/admin-client";
import { runLoad } from "./acme-load/load";
import { sampleProcess } from "./acme-load/proc";
import { mintJoinTokens, startStint, stintMain } from "./acme-load/servers";

/**
 * bench:agent-api — the CA's CPU per workload SVID on the node agent's batch
 * endpoint (POST /agent/v1/x509-svids, one mTLS session, 100 CSRs a request)
 * against the ACME per-workload path (account, order, attest-01 with a join
 * token, finalize, download: what one `stint agent` per workload costs the
 * CA). Both against one `stint ca serve` (SQLite, keys unencrypted), CPU read
 * from /proc around the measured part only; CSRs and join tokens are made
 * beforehand and not measured.
 *
 *   npm run bench:agent-api -- [--svids 1000] [--acme 200] [--concurrency 8]
 */

const log = (line: string) => process.stderr.write(`bench:agent-api: ${line}\n`);

function post(
  agent: Agent,
  url: string,
  body: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: "POST", agent, headers: { "content-type": "application/json" } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString("utf8")) }),
        );
      },
    );
    req.on("error", reject);
    req.end(text);
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      svids: { type: "string", default: "1000" },
      acme: { type: "string", default: "200" },
      concurrency: { type: "string", default: "8" },
    },
  });
  const svids = Number(values.svids);
  const acmeCount = Number(values.acme);
  const concurrency = Number(values.concurrency);
  const dir = mkdtempSync(join(tmpdir(), "stint-bench-agent-api-"));
  const td = "bench.test";
  const ca = await startStint({ dir, trustDomain: td });
  try {
    // The node agent's own SVID, as a join-token enrollment would leave it.
    const agentDir = join(dir, "agent");
    const agentId = `spiffe://${td}/node/bench`;
    const issued = spawnSync(
      process.execPath,
      [
        stintMain(),
        "ca",
        "issue",
        "--data-dir",
        ca.dataDir,
        "--spiffe-id",
        agentId,
        "--out",
        agentDir,
        "--ttl",
        "2h",
      ],
      { encoding: "utf8" },
    );
    if (issued.status !== 0) throw new Error(`stint ca issue failed: ${issued.stderr}`);

    log(`registering ${svids} entries parented to ${agentId}`);
    const admin = await AdminClient.fromFlags({ "data-dir": ca.dataDir, server: ca.url });
    const entries: { id: string; spiffeId: string }[] = new Array(svids);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < svids) {
          const i = next++;
          const spiffeId = `spiffe://${td}/workload/${i}`;
          const e = await admin.post<{ id: string }>(ADMIN_PATHS.entries, {
            spiffeId,
            parent: agentId,
            selectors: [`unix:uid:${10_000 + i}`],
            ttl: "10m",
          });
          entries[i] = { id: e.id, spiffeId };
        }
      }),
    );
    log(`making ${svids} P-256 keys and CSRs (not measured)`);
    const csrs = entries.map((e) => {
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      return {
        entryId: e.id,
        csr: buildCsr({ key: privateKey, spiffeId: e.spiffeId }).toString("base64url"),
      };
    });

    const tls = new Agent({
      keepAlive: true,
      maxSockets: 1,
      ca: ca.ca,
      cert: readFileSync(join(agentDir, "cert.pem")),
      key: readFileSync(join(agentDir, "key.pem")),
    });
    // A warm-up batch: JIT and the TLS session, as a running CA has them.
    await post(tls, `${ca.url}${AGENT_PATHS.x509Svids}`, {
      requests: csrs.slice(0, Math.min(MAX_BATCH, svids)),
    });
    const before = sampleProcess(ca.pid);
    const started = process.hrtime.bigint();
    let failures = 0;
    for (let i = 0; i < svids; i += MAX_BATCH) {
      const res = await post(tls, `${ca.url}${AGENT_PATHS.x509Svids}`, {
        requests: csrs.slice(i, i + MAX_BATCH),
      });
      if (res.status !== 200) throw new Error(`batch answered ${res.status}: ${JSON.stringify(res.json)}`);
      failures += (res.json.svids as { error?: unknown }[]).filter((s) => s.error).length;
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const after = sampleProcess(ca.pid);
    tls.destroy();
    const batch = {
      path: "agent API batch (100 CSRs per request, one mTLS session)",
      svids,
      failures,
      seconds: Number(seconds.toFixed(2)),
      svidsPerSecond: Math.round(svids / seconds),
      caCpuMsPerSvid: Number(((after.cpuMs - before.cpuMs) / svids).toFixed(3)),
    };
    log(JSON.stringify(batch));

    log(
      `ACME per workload: ${acmeCount} certificates, attest-01 with join tokens, concurrency ${concurrency}`,
    );
    const warmup = Math.min(20, acmeCount);
    const ids = Array.from({ length: acmeCount + warmup }, (_, i) => `spiffe://${td}/acme/${i}`);
    const tokens = await mintJoinTokens(ca.dataDir, ca.url, ids, log);
    const acme = await runLoad({
      target: { name: "stint", directoryUrl: ca.directoryUrl, ca: ca.ca, serverPid: ca.pid },
      mode: "full",
      names: {
        challenge: "attest-01",
        identifiers: (i) => [{ type: "spiffe", value: ids[i]! }],
        joinToken: (i) => tokens[i]!,
      },
      concurrency,
      count: acmeCount,
      warmup,
      pollMs: 250,
      rssEvery: 0,
      log,
    });
    const perWorkload = {
      path: "ACME per workload (order, attest-01 join token, finalize, download; one account per worker)",
      svids: acme.certificates,
      failures: acme.failures,
      seconds: Number(acme.seconds.toFixed(2)),
      svidsPerSecond: Math.round(acme.certsPerSecond),
      caCpuMsPerSvid: Number((acme.serverCpuMsPerCert ?? Number.NaN).toFixed(3)),
    };
    const result = {
      batch,
      acme: perWorkload,
      cpuRatio: Number((perWorkload.caCpuMsPerSvid / batch.caCpuMsPerSvid).toFixed(1)),
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  } finally {
    await ca.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    log(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  },
);
