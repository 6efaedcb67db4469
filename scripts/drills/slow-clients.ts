import { readFileSync } from "node:fs";
import { Agent } from "node:https";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { AcmeClient, joinTokenEvidence } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { freePort, mintJoinTokens } from "../bench/acme-load/servers";
import { type DrillContext, runDrill, sleep, summary } from "./harness";
import { ecKey } from "./hostile-cases";
import { health } from "./https";
import { CaServer, stintJson } from "./processes";
import { SLOW_KINDS, SlowCrowd } from "./slow-crowd";

/**
 * Hundreds of idle and slowloris connections held open against a CA with
 * its default listener limits, from several addresses, reopened as the CA
 * closes them; meanwhile a good client asks /health and obtains
 * certificates (the full ACME flow, each on a new connection). Every one of
 * those must be answered; the full size also expects each within 1 s. The
 * latencies are the figures.
 *   npm run drill:slow-clients [-- --short] [--connections 500] [--seconds 60]
 */

interface Settings extends Record<string, number> {
  connections: number;
  seconds: number;
  "issuance-every-ms": number;
}

const TD = "slow.example";
const SPIFFE_ID = `spiffe://${TD}/web`;
const ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"];

async function run(ctx: DrillContext<Settings>) {
  const s = ctx.settings;
  const dataDir = join(ctx.tempDir("slow"), "ca");
  const env = { STINT_DATA_DIR: dataDir, STINT_TRUST_DOMAIN: TD };
  stintJson(["ca", "init", "--insecure-no-passphrase"], env);
  const port = await freePort();
  // The default listener limits: what a deployment gets without tuning.
  const ca = new CaServer("ca", ["--insecure-no-passphrase", "--listen", `127.0.0.1:${port}`], env);
  ctx.onCleanup(() => ca.stop());
  const origin = await ca.start();
  const rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  const samples = Math.ceil((s.seconds * 1000) / s["issuance-every-ms"]) + 2;
  const tokens = await mintJoinTokens(dataDir, origin, Array(samples).fill(SPIFFE_ID), ctx.log);
  const accountKey = ecKey();
  const first = await AcmeClient.connect({
    directoryUrl: `${origin}/acme/directory`,
    ca: rootPem,
    accountKey,
  });
  await first.newAccount();
  const kid = first.accountUrl!;
  first.close();

  const crowd = new SlowCrowd({
    host: "127.0.0.1",
    port,
    ca: rootPem,
    size: s.connections,
    addresses: ADDRESSES,
  });
  ctx.onCleanup(() => crowd.close());
  const t0 = performance.now();
  await crowd.open();
  ctx.log(
    `${crowd.size} slow connections open after ${Math.round(performance.now() - t0)} ms; holding ${s.seconds} s`,
  );

  const healthMs: number[] = [];
  const issuanceMs: number[] = [];
  let healthUnanswered = 0;
  let issuanceFailures = 0;
  const failures: string[] = [];
  const held: number[] = [];
  const until = Date.now() + s.seconds * 1000;
  const healthLoop = async () => {
    while (Date.now() < until && !ctx.overdue()) {
      const r = await health(origin, rootPem, 30_000);
      if (r.status === 200) healthMs.push(r.ms);
      else {
        healthUnanswered++;
        if (failures.length < 5) failures.push(`/health: ${r.status || r.error}`);
      }
      held.push(crowd.size);
      await sleep(250);
    }
  };
  let token = 0;
  const issuanceLoop = async () => {
    while (Date.now() < until && !ctx.overdue() && token < tokens.length) {
      const next = Date.now() + s["issuance-every-ms"];
      // A new connection each time: its TLS handshake competes with the crowd's.
      const agent = new Agent({ keepAlive: true, ca: rootPem });
      const started = performance.now();
      try {
        const c = await AcmeClient.connect({
          directoryUrl: `${origin}/acme/directory`,
          ca: rootPem,
          accountKey,
          accountUrl: kid,
          agent,
        });
        const secret = tokens[token++];
        await c.obtainCertificate({
          identifiers: [{ type: "spiffe", value: SPIFFE_ID }],
          csrDer: buildCsr({ key: ecKey(), spiffeId: SPIFFE_ID }),
          authorize: (_authz, ch) => c.attest(ch.url, "join_token", joinTokenEvidence(secret)),
        });
        issuanceMs.push(performance.now() - started);
      } catch (err) {
        issuanceFailures++;
        if (failures.length < 5) failures.push(`issuance: ${(err as Error).message}`);
      } finally {
        agent.destroy();
      }
      await sleep(Math.max(0, next - Date.now()));
    }
  };
  await Promise.all([healthLoop(), issuanceLoop()]);
  crowd.close();
  const finalHealth = (await health(origin, rootPem)).status;
  const crashes = ca.unexpectedExits;
  const stopCode = await ca.stop();

  const over1s = (ms: number[]) => ms.filter((m) => m > 1000).length;
  const timing = {
    healthOver1s: over1s(healthMs),
    issuanceOver1s: over1s(issuanceMs),
  };
  return {
    zeros: {
      healthUnanswered: healthUnanswered + (finalHealth === 200 ? 0 : 1),
      issuanceFailures,
      crashes,
      uncleanStop: stopCode === 0 ? 0 : 1,
      noIssuance: issuanceMs.length > 0 ? 0 : 1,
      // CI machines are shared and loaded: there the times are reported, not judged.
      ...(ctx.short ? {} : timing),
    },
    figures: {
      slowConnections: s.connections,
      kinds: SLOW_KINDS,
      sourceAddresses: ADDRESSES.length,
      heldOpen: summary(held),
      opened: crowd.opened,
      closedByServer: crowd.closedByServer,
      failedToOpen: crowd.failedToOpen,
      healthMs: summary(healthMs),
      issuanceMs: summary(issuanceMs),
      ...(ctx.short ? timing : {}),
      ...(failures.length > 0 ? { failures } : {}),
    },
  };
}

runDrill<Settings>({
  name: "slow-clients",
  about:
    "Holds hundreds of idle and slowloris connections (stalled in TCP, the TLS hello, the headers, the\n" +
    "body, keep-alive) against a CA with its default limits, reopening each one the CA closes, while a good\n" +
    "client asks /health and obtains certificates: all answered, and (full size) each within 1 s.",
  settings: {
    connections: { full: 500, short: 500, help: "slow connections held at once" },
    seconds: { full: 60, short: 5, help: "how long they are held" },
    "issuance-every-ms": {
      full: 2000,
      short: 1500,
      help: "interval between certificates obtained meanwhile",
    },
  },
  deadlineSeconds: { full: 600, short: 120 },
  run,
});
