import { type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { Agent } from "node:https";
import { join } from "node:path";
import { AcmeClient, joinTokenEvidence } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { flattenedJws } from "../../formats/jose";
import { pemDecodeAll } from "../../formats/pem";
import { sampleProcess } from "../bench/acme-load/proc";
import { freePort, mintJoinTokens } from "../bench/acme-load/servers";
import { seeded } from "../bench/seeded";
import { type DrillContext, runDrill, sleep } from "./harness";
import { ecKey, GENERATORS, type HostileRequest, type Kit } from "./hostile-cases";
import { hostileCsrs } from "./hostile-csr";
import { health, problemOf, type Reply, rawExchange, request } from "./https";
import { CaServer, stintJson } from "./processes";

/**
 * At least 10,000 malformed and hostile requests against a real CA, across
 * the ACME and admin endpoints (scripts/drills/hostile-cases.ts lists them).
 * None may be answered 5xx or 2xx, each must be an RFC 7807 problem
 * document, the CA must never exit, /health must answer throughout, and the
 * process's resident memory must come back to where it was before.
 *   npm run drill:hostile-input [-- --short] [--requests 10000] [--concurrency 8] [--seed 18]
 */

interface Settings extends Record<string, number> {
  requests: number;
  concurrency: number;
  seed: number;
}

const TD = "hostile.example";
const SPIFFE_ID = `spiffe://${TD}/web`;
const READY_ORDERS = 6;
/** Resident memory may end this much above where it started (heap growth V8 keeps for reuse). */
const RSS_MARGIN = { share: 0.25, mib: 32 };

const mib = (kib: number) => Math.round(kib / 102.4) / 10;

interface Tally {
  requests: number;
  byStatus: Record<string, number>;
}

async function run(ctx: DrillContext<Settings>) {
  const dir = ctx.tempDir("hostile");
  const dataDir = join(dir, "ca");
  const env = { STINT_DATA_DIR: dataDir, STINT_TRUST_DOMAIN: TD };
  stintJson(["ca", "init", "--insecure-no-passphrase"], env);
  const port = await freePort();
  // Rate limits off: every request must reach the code under test, not a 429.
  const ca = new CaServer(
    "ca",
    [
      "--insecure-no-passphrase",
      "--listen",
      `127.0.0.1:${port}`,
      "--acme-rate-limit-per-address",
      "0",
      "--acme-rate-limit-per-account",
      "0",
      "--http-headers-timeout",
      "5s",
      "--http-body-timeout",
      "5s",
    ],
    env,
  );
  ctx.onCleanup(() => ca.stop());
  const origin = await ca.start();
  const rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  const admin = {
    cert: readFileSync(join(dataDir, "admin", "cert.pem"), "utf8"),
    key: readFileSync(join(dataDir, "admin", "key.pem"), "utf8"),
  };
  const tokens = await mintJoinTokens(dataDir, origin, Array(READY_ORDERS + 1).fill(SPIFFE_ID), ctx.log);
  const kit = await makeKit(origin, rootPem, tokens, ctx.settings.seed);
  ctx.onCleanup(kit.close);

  const agent = new Agent({ keepAlive: true, maxSockets: ctx.settings.concurrency, ca: rootPem });
  ctx.onCleanup(() => agent.destroy());
  const send = async (r: HostileRequest): Promise<Omit<Reply, "ms">> => {
    if (r.raw) return rawExchange(origin, rootPem, r.raw, 15_000);
    const reply = await request(r.url, {
      method: r.method,
      headers: r.headers,
      body: r.body,
      ca: rootPem,
      ...(r.admin ? admin : {}),
      agent: r.admin ? undefined : agent,
      timeoutMs: 15_000,
    });
    const nonce = reply.headers["replay-nonce"];
    if (typeof nonce === "string") kit.pool.push(nonce);
    return reply;
  };

  const generators = Object.values(GENERATORS);
  const tallies = new Map<string, Tally>();
  const zeros = {
    serverErrors5xx: 0,
    accepted2xx: 0,
    notProblemDocuments: 0,
    noResponse: 0,
    healthFailures: 0,
  };
  const examples: string[] = [];
  const note = (line: string) => {
    if (examples.length < 12 && !examples.includes(line)) {
      examples.push(line);
      ctx.log(line);
    }
  };
  let sent = 0;
  let refusedIn200 = 0;
  let bareRefusals = 0;
  let next = 0;
  const total = ctx.settings.requests;
  const warmup = Math.min(300, Math.floor(total / 10));
  let rssBaselineKiB = 0;
  let rssMaxKiB = 0;
  const rssSeries: [number, number][] = [];
  const worker = async () => {
    while (next < total && !ctx.overdue()) {
      const i = next++;
      if (i === warmup) {
        await sleep(1000);
        rssBaselineKiB = sampleProcess(ca.pid).rssKiB ?? 0;
      }
      const req = await generators[i % generators.length](kit.kit);
      const reply = await send(req);
      sent++;
      const t = tallies.get(req.kind) ?? { requests: 0, byStatus: {} };
      t.requests++;
      const status = String(reply.status);
      t.byStatus[status] = (t.byStatus[status] ?? 0) + 1;
      tallies.set(req.kind, t);
      if (reply.status === 0) {
        zeros.noResponse++;
        note(
          `${req.kind}: no response (${req.method} ${req.url.slice(0, 80)}: ${"error" in reply ? reply.error : "closed"})`,
        );
      } else if (reply.status >= 500) {
        zeros.serverErrors5xx++;
        note(`${req.kind}: ${reply.status} ${reply.body.toString("utf8").slice(0, 200)}`);
      } else if (reply.status === 200 && req.refusedIn200?.(reply.body.toString("utf8"))) {
        refusedIn200++;
      } else if (reply.status < 400) {
        zeros.accepted2xx++;
        note(`${req.kind}: accepted with ${reply.status} (${req.method} ${req.url.slice(0, 100)})`);
      } else if (req.bareRefusal && reply.status === 400) {
        bareRefusals++;
      } else if (!problemOf(reply)) {
        zeros.notProblemDocuments++;
        note(
          `${req.kind}: ${reply.status} without a problem document (${String(reply.headers["content-type"] ?? "no content type")})`,
        );
      }
      const n = sent;
      if (n % 500 === 0) {
        const rss = sampleProcess(ca.pid).rssKiB ?? 0;
        rssMaxKiB = Math.max(rssMaxKiB, rss);
        // The series shows whether memory grows with the requests or levels off.
        if (n % Math.max(500, Math.floor(total / 10 / 500) * 500) === 0) rssSeries.push([n, mib(rss)]);
        if (n % 2000 === 0) ctx.log(`${n}/${total} requests, RSS ${mib(rss)} MiB`);
        if ((await health(origin, rootPem)).status !== 200) zeros.healthFailures++;
      }
    }
  };
  const t0 = Date.now();
  await Promise.all(Array.from({ length: ctx.settings.concurrency }, worker));
  const seconds = (Date.now() - t0) / 1000;
  agent.destroy();
  // Memory after the storm, once idle for a moment.
  await sleep(5000);
  const after = ca.running ? sampleProcess(ca.pid) : undefined;
  const rssAfterKiB = after?.rssKiB ?? 0;
  const allowedKiB = rssBaselineKiB * (1 + RSS_MARGIN.share) + RSS_MARGIN.mib * 1024;
  const finalHealth = (await health(origin, rootPem)).status;
  const internalErrors = ca.errorLines();
  const crashes = ca.unexpectedExits;
  const stopCode = await ca.stop();
  return {
    zeros: {
      ...zeros,
      crashes,
      healthFailures: zeros.healthFailures + (finalHealth === 200 ? 0 : 1),
      internalErrorsLogged: internalErrors.length,
      rssNotBackToBaseline: rssAfterKiB > 0 && rssAfterKiB <= allowedKiB ? 0 : 1,
      uncleanStop: stopCode === 0 ? 0 : 1,
      tooFewRequests: sent >= total ? 0 : 1,
    },
    figures: {
      requests: sent,
      kinds: tallies.size,
      failedChallengesAnswered200: refusedIn200,
      bare400WithoutHost: bareRefusals,
      seconds: Math.round(seconds),
      requestsPerSecond: Math.round(sent / seconds),
      rssMiB: {
        baseline: mib(rssBaselineKiB),
        maxDuring: mib(rssMaxKiB),
        after: mib(rssAfterKiB),
        peak: mib(after?.peakRssKiB ?? 0),
        allowed: mib(allowedKiB),
        afterRequests: rssSeries,
      },
      byKind: Object.fromEntries(tallies),
      ...(examples.length > 0 ? { examples } : {}),
      ...(internalErrors.length > 0 ? { internalErrors: internalErrors.slice(0, 5) } : {}),
    },
  };
}

/** Accounts, objects and material the generators aim at, made through the ordinary ACME flow. */
async function makeKit(origin: string, ca: string, tokens: string[], seed: number) {
  const directoryUrl = `${origin}/acme/directory`;
  const client = async () => {
    const key = ecKey();
    const c = await AcmeClient.connect({ directoryUrl, ca, accountKey: key });
    await c.newAccount();
    return { c, key, kid: c.accountUrl! };
  };
  const a = await client();
  const b = await client();
  const attest = (c: AcmeClient, token: string) => async (_authz: unknown, ch: { url: string }) =>
    c.attest(ch.url, "join_token", joinTokenEvidence(token));

  // A's certificate, from a whole order: its order, authorization and challenge are the targets.
  const heldKey: KeyObject = ecKey();
  const obtained = await a.c.obtainCertificate({
    identifiers: [{ type: "spiffe", value: SPIFFE_ID }],
    csrDer: buildCsr({ key: heldKey, spiffeId: SPIFFE_ID }),
    authorize: attest(a.c, tokens[0]),
  });
  const authz = await a.c.getAuthorization(obtained.order.authorizations[0]);
  const chain = pemDecodeAll(obtained.pem, "CERTIFICATE", "chain");
  new X509Certificate(chain[0]); // parses, or the setup is wrong

  // Orders left ready, for finalize with hostile CSRs.
  const readyOrders: string[] = [];
  for (const token of tokens.slice(1)) {
    const order = await a.c.newOrder([{ type: "spiffe", value: SPIFFE_ID }]);
    const z = await a.c.getAuthorization(order.authorizations[0]);
    await a.c.attest(z.challenges[0].url, "join_token", joinTokenEvidence(token));
    readyOrders.push(order.url);
  }
  // Orders left pending, for answers that are malformed (they leave the challenge pending).
  const pendingChallenges: string[] = [];
  for (let i = 0; i < 3; i++) {
    const order = await a.c.newOrder([{ type: "spiffe", value: SPIFFE_ID }]);
    pendingChallenges.push((await a.c.getAuthorization(order.authorizations[0])).challenges[0].url);
  }
  const freshChallenge = async () => {
    const order = await a.c.newOrder([{ type: "spiffe", value: SPIFFE_ID }]);
    return (await a.c.getAuthorization(order.authorizations[0])).challenges[0].url;
  };
  b.c.close();

  const pool: string[] = [];
  const nonce = async () => {
    const pooled = pool.pop();
    if (pooled) return pooled;
    const r = await request(`${origin}/acme/new-nonce`, { method: "HEAD", ca });
    return String(r.headers["replay-nonce"]);
  };
  const kit: Kit = {
    origin,
    trustDomain: TD,
    rng: seeded(seed),
    nonce,
    a: { key: a.key, kid: a.kid },
    b: { key: b.key, kid: b.kid },
    order: {
      url: obtained.order.url,
      authz: authz.url,
      challenge: authz.challenges[0].url,
      certificate: obtained.order.certificate!,
    },
    readyOrders,
    pendingChallenges,
    freshChallenge,
    held: { chain, key: heldKey },
    csrs: hostileCsrs(SPIFFE_ID, TD),
    spent: async () => {
      const url = obtained.order.url;
      const body = JSON.stringify(flattenedJws(a.key, { nonce: await nonce(), url, kid: a.kid }, null));
      const first = await request(url, {
        method: "POST",
        headers: { "content-type": "application/jose+json" },
        body,
        ca,
      });
      const fresh = first.headers["replay-nonce"];
      if (typeof fresh === "string") pool.push(fresh);
      return { url, body };
    },
  };
  return { kit, pool, close: () => a.c.close() };
}

runDrill<Settings>({
  name: "hostile-input",
  about:
    "Sends at least 10,000 malformed and hostile requests to the ACME and admin endpoints of a real CA:\n" +
    "no 5xx, no 2xx, an RFC 7807 problem for each, no crash, /health throughout, RSS back to baseline.",
  settings: {
    requests: { full: 10_000, short: 600, help: "hostile requests to send" },
    concurrency: { full: 8, short: 4, help: "requests in flight" },
    seed: { full: 18, short: 18, help: "seed of the generator's choices" },
  },
  deadlineSeconds: { full: 900, short: 120 },
  run,
});
