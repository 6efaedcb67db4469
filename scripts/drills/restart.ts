import { readFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { STORE_FILE } from "../../ca/store/open";
import { freePort, mintJoinTokens } from "../bench/acme-load/servers";
import { AgentFleet, fleetPki } from "./agent-fleet";
import { runDrill, sleep, summary } from "./harness";
import { IssuanceLoad } from "./issuance";
import { CaServer, stintJson } from "./processes";
import { sqliteIntegrity } from "./store-check";

/**
 * The CA killed with SIGKILL again and again while clients enroll with join
 * tokens, then started once more: nothing may be left half-done. A token
 * spent without the authorization it validated (stranded), or an order left
 * "processing" after the restart (stuck), would need an administrator.
 * Meanwhile `stint agent` daemons renew short certificates through the same
 * kills: an agent whose certificate on disk expired (expired) has had its
 * workload fail handshakes.
 *   npm run drill:restart [-- --short] [--kills 10] [--workers 8] [--agents 4] [--agent-ttl-seconds 60]
 *     [--up-seconds 15]
 */

interface Settings extends Record<string, number> {
  kills: number;
  workers: number;
  agents: number;
  "agent-ttl-seconds": number;
  "up-seconds": number;
}

const TD = "restart.example";
const SERVE_FLAGS = [
  "--insecure-no-passphrase",
  "--acme-rate-limit-per-address",
  "0",
  "--acme-rate-limit-per-account",
  "0",
];

/** What a crash can strand, read from the store file after the final start's recovery. */
function stranded(dataDir: string) {
  const db = new Database(join(dataDir, STORE_FILE), { readonly: true, fileMustExist: true });
  try {
    const count = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
    return {
      // Spent, yet no attestation names it: the enrollment it paid for never happened.
      strandedTokens: count(`SELECT count(*) AS n FROM join_tokens AS t WHERE t.used_at IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM attestations AS a WHERE a.evidence = 'join_token:' || t.id)`),
      stuckOrders: count("SELECT count(*) AS n FROM orders WHERE status = 'processing'"),
      tokensSpent: count("SELECT count(*) AS n FROM join_tokens WHERE used_at IS NOT NULL"),
      ordersByStatus: Object.fromEntries(
        (
          db.prepare("SELECT status, count(*) AS n FROM orders GROUP BY status").all() as {
            status: string;
            n: number;
          }[]
        ).map((r) => [r.status, r.n]),
      ),
    };
  } finally {
    db.close();
  }
}

runDrill<Settings>({
  name: "restart",
  about:
    "Kills the CA with SIGKILL at random moments while clients enroll with join tokens and renew, starts it\n" +
    "again each time, then once more, and counts what was left half-done: join tokens spent for no\n" +
    "authorization (stranded), orders still processing (stuck), and `stint agent` daemons renewing short\n" +
    "certificates through the kills whose certificate on disk expired. All three must be 0.",
  settings: {
    kills: { full: 10, short: 3, help: "kills of the CA" },
    workers: { full: 8, short: 4, help: "concurrent ACME clients" },
    agents: { full: 4, short: 2, help: "stint agent daemons renewing through the kills" },
    // A minute: its last quarter still outlasts a CA restart on a loaded two-core machine (20 s did not).
    "agent-ttl-seconds": { full: 60, short: 60, help: "the agents' certificate lifetime" },
    // A CA that is down most of the time expires any certificate; the agents are tested against crashes.
    "up-seconds": { full: 15, short: 0, help: "least time the CA serves between kills" },
  },
  deadlineSeconds: { full: 600, short: 240 },
  async run(ctx) {
    const dir = ctx.tempDir("restart");
    const dataDir = join(dir, "ca");
    // Agent certificates of seconds, so they renew several times through the kills.
    const env = { STINT_DATA_DIR: dataDir, STINT_TRUST_DOMAIN: TD, STINT_POLICY_MIN_TTL: "1s" };
    stintJson(["ca", "init", "--insecure-no-passphrase"], env);
    const pki = fleetPki(dir);
    const ca = new CaServer(
      "ca",
      [
        ...SERVE_FLAGS,
        "--attest-x509pop-bundle-file",
        pki.caPath,
        "--listen",
        `127.0.0.1:${await freePort()}`,
      ],
      env,
    );
    ctx.onCleanup(() => ca.stop());
    await ca.start();
    const { kills, workers } = ctx.settings;
    const fleet = new AgentFleet(ctx, {
      ca,
      dataDir,
      env,
      spiffeId: `spiffe://${TD}/agent`,
      pki,
      agents: ctx.settings.agents,
      certTtlSeconds: ctx.settings["agent-ttl-seconds"],
      dir: join(dir, "agents"),
    });
    await fleet.start();
    const renewalsBefore = fleet.renewals;
    const ids = Array.from(
      { length: Math.max(workers * 4, (kills + 2) * workers * 3) },
      (_, i) => `spiffe://${TD}/w/${i}`,
    );
    const tokens = await mintJoinTokens(dataDir, ca.url, ids, ctx.log);
    const load = new IssuanceLoad({
      directoryUrl: `${ca.url}/acme/directory`,
      ca: readFileSync(join(dataDir, "root.pem"), "utf8"),
      workers,
      tokens: tokens.map((token, i) => ({ token, spiffeId: ids[i] })),
      // Mostly new enrollments: they are what spends tokens and finalizes orders.
      renewalsPerOrder: 0,
      log: ctx.log,
    });
    load.start();
    let done = 0;
    const downMs: number[] = [];
    for (; done < kills && !ctx.overdue(); done++) {
      const upUntil = Date.now() + ctx.settings["up-seconds"] * 1000;
      const base = load.count;
      const until = Date.now() + 30_000;
      while ((load.count < base + 2 || Date.now() < upUntil) && Date.now() < until) await sleep(20);
      await sleep(Math.random() * 800);
      await ca.kill9();
      const downAt = Date.now();
      await sleep(Math.random() * 500);
      await ca.start();
      downMs.push(Date.now() - downAt);
      ctx.log(`kill ${done + 1}/${kills}: back after ${load.count} certificates`);
    }
    const base = load.count;
    const until = Date.now() + 30_000;
    while (load.count < base + workers && Date.now() < until) await sleep(50);
    // Every agent renews at least once after the kills began, so the expired count covers the kills.
    const agentsUntil = Date.now() + 2 * ctx.settings["agent-ttl-seconds"] * 1000;
    while (
      fleet.renewals - renewalsBefore < ctx.settings.agents &&
      Date.now() < agentsUntil &&
      !ctx.overdue()
    )
      await sleep(200);
    const issuance = await load.stop();
    const agents = await fleet.stop();
    // The last kill may have come mid-finalize: one more start runs the recovery, as a supervisor would.
    await ca.kill9();
    await ca.start();
    // ca serve installs its SIGTERM handler just after logging "listening": a stop sooner is a kill.
    await sleep(1000);
    const stopCode = await ca.stop();
    const left = stranded(dataDir);
    const integrity = sqliteIntegrity(dataDir);
    return {
      zeros: {
        strandedTokens: left.strandedTokens,
        stuckOrders: left.stuckOrders,
        ...agents.zeros,
        crashes: ca.unexpectedExits,
        uncleanStops: stopCode === 0 ? 0 : 1,
        integrityProblems: integrity === "ok" ? 0 : 1,
        noCertificates: issuance.certificatesReceived > 0 ? 0 : 1,
        // Renewals during the kills, not only before them: else the agents proved nothing.
        noAgentRenewals: agents.figures.agentRenewals > renewalsBefore ? 0 : 1,
      },
      figures: {
        kills: done,
        // From SIGKILL to the new process listening: what the agents' runway must cover.
        downMs: summary(downMs),
        stopCode,
        certificatesReceived: issuance.certificatesReceived,
        tokensSpent: left.tokensSpent,
        ordersByStatus: left.ordersByStatus,
        clientsSawStuckOrders: issuance.ordersStuckProcessing,
        ordersAbandoned: issuance.ordersAbandoned,
        requestsInterrupted: issuance.requestsInterrupted,
        ...agents.figures,
      },
    };
  },
});
