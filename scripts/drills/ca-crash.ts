import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { JoinToken } from "../bench/acme-load/run";
import { freePort, mintJoinTokens } from "../bench/acme-load/servers";
import { startBalancer } from "./balancer";
import { type DrillContext, runDrill, sleep, summary } from "./harness";
import { IssuanceLoad } from "./issuance";
import { throwawayDatabase } from "./postgres";
import { CaServer, stintJson } from "./processes";
import { auditChain, checkReceived, sqliteIntegrity } from "./store-check";

/**
 * The CA killed with SIGKILL at random moments while clients obtain and
 * renew certificates, and started again each time: on SQLite (one process),
 * then on PostgreSQL with two replicas behind one address, killing one at a
 * time. Afterwards every certificate a client received must be in the store,
 * byte for byte; no serial or sequence number may appear twice; `stint ca
 * status` must verify the audit chain; SQLite's integrity_check must say ok.
 *   npm run drill:ca-crash [-- --short] [--kills 10] [--pg-kills 10] [--workers 8]
 */

interface Settings extends Record<string, number> {
  kills: number;
  "pg-kills": number;
  workers: number;
  "renewals-per-order": number;
}

const TD = "crash.example";

/** Common flags of every CA process here: no rate limits, so the load is only bounded by the machine. */
const SERVE_FLAGS = [
  "--insecure-no-passphrase",
  "--acme-rate-limit-per-address",
  "0",
  "--acme-rate-limit-per-account",
  "0",
];

interface Target {
  servers: CaServer[];
  /** The address clients use (the CA, or the balancer in front of the replicas). */
  origin: string;
  dataDir: string;
  env: Record<string, string>;
}

/** How many certificates to let through after a (re)start before the next kill may come. */
const CERTS_BEFORE_KILL = 3;

async function killLoop(ctx: DrillContext<Settings>, t: Target, load: IssuanceLoad, kills: number) {
  const downMs: number[] = [];
  const restartMs: number[] = [];
  for (let k = 0; k < kills && !ctx.overdue(); k++) {
    // Under load: wait for a few certificates since the last start, then a random moment.
    const base = load.count;
    const until = Date.now() + 30_000;
    while (load.count < base + CERTS_BEFORE_KILL && Date.now() < until) await sleep(20);
    await sleep(Math.random() * 1500);
    const victim = t.servers[k % t.servers.length];
    const inFlight = load.count;
    await victim.kill9();
    const killedAt = Date.now();
    await sleep(Math.random() * 1000); // down for a moment, as a supervisor's restart delay
    downMs.push(Date.now() - killedAt);
    const t0 = Date.now();
    await victim.start();
    restartMs.push(Date.now() - t0);
    ctx.log(
      `kill ${k + 1}/${kills}: ${victim.name} (after ${inFlight} certificates), back in ${Date.now() - t0} ms`,
    );
  }
  return { downMs, restartMs };
}

async function drive(ctx: DrillContext<Settings>, t: Target, tokens: JoinToken[], kills: number) {
  const load = new IssuanceLoad({
    directoryUrl: `${t.origin}/acme/directory`,
    ca: readFileSync(join(t.dataDir, "root.pem"), "utf8"),
    workers: ctx.settings.workers,
    tokens,
    renewalsPerOrder: ctx.settings["renewals-per-order"],
    log: ctx.log,
  });
  load.start();
  const timing = await killLoop(ctx, t, load, kills);
  // After the last restart: certificates must keep coming, from every kind of request.
  const base = load.count;
  const until = Date.now() + 30_000;
  while (load.count < base + ctx.settings.workers * 2 && Date.now() < until) await sleep(50);
  const issuance = await load.stop();
  const stopCodes = [];
  for (const s of t.servers) stopCodes.push(await s.stop());
  ctx.log(`${issuance.certificatesReceived} certificates received; checking the store`);
  const store = await checkReceived(t.dataDir, t.env.STINT_STORE_URL ?? "", load.received);
  const audit = auditChain(t.env);
  return {
    load,
    issuance,
    store,
    audit,
    stopCodes,
    timing,
    crashes: t.servers.reduce((n, s) => n + s.unexpectedExits, 0),
    crashReports: t.servers.flatMap((s) => s.exitReports),
    errorLogLines: t.servers.reduce((n, s) => n + s.errorLines().length, 0),
  };
}

function tokensFor(n: number, label: string) {
  return Array.from({ length: n }, (_, i) => `spiffe://${TD}/${label}/${i}`);
}

/** One backend's figures: the zeros under `<backend>.` names, the rest as figures. */
function report(prefix: string, r: Awaited<ReturnType<typeof drive>>, extra: Record<string, unknown>) {
  const zeros: Record<string, number> = {
    [`${prefix}.certificatesLost`]: r.store.certificatesLost,
    [`${prefix}.duplicateSerials`]: r.store.duplicateSerials,
    [`${prefix}.duplicateSequences`]: r.store.duplicateSequences,
    [`${prefix}.auditChainBroken`]: r.audit.intact ? 0 : 1,
    [`${prefix}.crashes`]: r.crashes,
    [`${prefix}.serverErrors5xx`]: r.issuance.serverErrors,
    [`${prefix}.uncleanStops`]: r.stopCodes.filter((c) => c !== 0).length,
    // Without any certificate the drill proved nothing.
    [`${prefix}.noCertificates`]: r.issuance.certificatesReceived > 0 ? 0 : 1,
  };
  const { serverErrors: _, ...issuance } = r.issuance;
  return {
    zeros,
    figures: {
      kills: r.timing.restartMs.length,
      ...issuance,
      certificatesStored: r.store.certificatesStored,
      auditRecords: r.audit.records,
      restartMs: summary(r.timing.restartMs),
      downMs: summary(r.timing.downMs),
      errorLogLines: r.errorLogLines,
      ...(r.crashReports.length > 0 ? { crashReports: r.crashReports } : {}),
      ...extra,
    },
  };
}

async function sqlitePhase(ctx: DrillContext<Settings>) {
  const dir = ctx.tempDir("ca-crash-sqlite");
  const dataDir = join(dir, "ca");
  const env = { STINT_DATA_DIR: dataDir, STINT_TRUST_DOMAIN: TD };
  stintJson(["ca", "init", "--insecure-no-passphrase"], env);
  const port = await freePort();
  const ca = new CaServer("ca", [...SERVE_FLAGS, "--listen", `127.0.0.1:${port}`], env);
  ctx.onCleanup(() => ca.stop());
  await ca.start();
  const kills = ctx.settings.kills;
  const tokens = await mintJoinTokens(dataDir, ca.url, tokensFor(tokenBudget(ctx, kills), "sqlite"), ctx.log);
  ctx.log(`SQLite: ${ctx.settings.workers} clients, ${kills} kills`);
  const r = await drive(
    ctx,
    { servers: [ca], origin: ca.url, dataDir, env },
    joinTokens(tokens, "sqlite"),
    kills,
  );
  const integrity = sqliteIntegrity(dataDir);
  const out = report("sqlite", r, { integrityCheck: integrity });
  out.zeros["sqlite.integrityProblems"] = integrity === "ok" ? 0 : 1;
  return out;
}

async function postgresPhase(ctx: DrillContext<Settings>) {
  const { db, close } = await throwawayDatabase(ctx.log);
  ctx.onCleanup(close);
  const dir = ctx.tempDir("ca-crash-pg");
  const dataDir = join(dir, "ca");
  const env = { STINT_DATA_DIR: dataDir, STINT_TRUST_DOMAIN: TD, STINT_STORE_URL: db.url };
  // The admin client in this process reads the roots from the store (mintJoinTokens).
  process.env.STINT_STORE_URL = db.url;
  stintJson(["ca", "init", "--insecure-no-passphrase"], env);
  const ports = [await freePort(), await freePort()];
  const balancer = await startBalancer(() => ports);
  ctx.onCleanup(() => balancer.close());
  // Both replicas answer for the balancer's address, as replicas behind one name do.
  const publicUrl = `https://127.0.0.1:${balancer.port}`;
  const replicas = ports.map(
    (port, i) =>
      new CaServer(
        `replica ${"AB"[i]}`,
        [...SERVE_FLAGS, "--listen", `127.0.0.1:${port}`, "--public-url", publicUrl],
        env,
      ),
  );
  for (const r of replicas) ctx.onCleanup(() => r.stop());
  await Promise.all(replicas.map((r) => r.start()));
  const kills = ctx.settings["pg-kills"];
  const tokens = await mintJoinTokens(dataDir, publicUrl, tokensFor(tokenBudget(ctx, kills), "pg"), ctx.log);
  ctx.log(
    `PostgreSQL: two replicas behind 127.0.0.1:${balancer.port}, ${kills} kills, one replica at a time`,
  );
  const r = await drive(
    ctx,
    { servers: replicas, origin: publicUrl, dataDir, env },
    joinTokens(tokens, "pg"),
    kills,
  );
  return report("postgres", r, {
    connectionsPerReplica: ports.map((p) => balancer.forwarded.get(p) ?? 0),
  });
}

/** Enough join tokens that workers never run out before the kills are done. */
const tokenBudget = (ctx: DrillContext<Settings>, kills: number) =>
  Math.max(ctx.settings.workers * 4, (kills + 2) * ctx.settings.workers * 3);

const joinTokens = (tokens: string[], label: string): JoinToken[] =>
  tokens.map((token, i) => ({ token, spiffeId: `spiffe://${TD}/${label}/${i}` }));

runDrill<Settings>({
  name: "ca-crash",
  about:
    "Kills the CA with SIGKILL at random moments during ACME issuance and renewals, restarts it, and checks\n" +
    "that every certificate a client received is stored, no serial repeats, the audit chain verifies and\n" +
    "SQLite's file is intact; then the same with two PostgreSQL replicas, killing one at a time.",
  settings: {
    kills: { full: 10, short: 2, help: "kills of the SQLite CA (0 skips that part)" },
    "pg-kills": { full: 10, short: 2, help: "kills of a PostgreSQL replica (0 skips that part)" },
    workers: { full: 8, short: 3, help: "concurrent ACME clients" },
    "renewals-per-order": { full: 2, short: 2, help: "renew-cert requests after each certificate ordered" },
  },
  deadlineSeconds: { full: 900, short: 120 },
  async run(ctx) {
    const zeros: Record<string, number> = {};
    const figures: Record<string, unknown> = {};
    if (ctx.settings.kills > 0) {
      const r = await sqlitePhase(ctx);
      Object.assign(zeros, r.zeros);
      figures.sqlite = r.figures;
    }
    if (ctx.settings["pg-kills"] > 0) {
      const r = await postgresPhase(ctx);
      Object.assign(zeros, r.zeros);
      figures.postgres = r.figures;
    }
    return { zeros, figures };
  },
});
