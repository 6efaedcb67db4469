import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { AcmeClient, AcmeProblem, type Challenge, joinTokenEvidence } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { openStore } from "../../ca/store/open";
import { freePort, mintJoinTokens } from "../bench/acme-load/servers";
import { type DrillContext, runDrill } from "./harness";
import { throwawayDatabase } from "./postgres";
import { CaServer, stintJson } from "./processes";

/**
 * One join token redeemed at the same moment through two CA replicas on one
 * PostgreSQL store, by two ACME accounts, round after round: exactly one
 * attest-01 may succeed each round, only its order may be finalized, the
 * store must hold one certificate for the round's SPIFFE ID and one
 * accepted spend in the audit log.
 *   npm run drill:token-race [-- --short] [--rounds 50]
 */

interface Settings extends Record<string, number> {
  rounds: number;
}

const TD = "race.example";

function accountKey(): KeyObject {
  // DER round trip: see newKey in issuance.ts (a Node 20 keygen/JWK-export deadlock).
  const { privateKey } = generateKeyPairSync("ec", {
    namedCurve: "P-256",
    privateKeyEncoding: { format: "der", type: "pkcs8" },
    publicKeyEncoding: { format: "der", type: "spki" },
  });
  return createPrivateKey({ key: privateKey, format: "der", type: "pkcs8" });
}

/** What one side of a round got back for its attest-01. */
type Outcome = "valid" | "refused" | "error";

async function attestOutcome(client: AcmeClient, challenge: Challenge, token: string): Promise<Outcome> {
  try {
    const answered = await client.attest(challenge.url, "join_token", joinTokenEvidence(token));
    return answered.status === "valid" ? "valid" : "refused";
  } catch (err) {
    // A problem document is a refusal (4xx); anything else (5xx, no answer) is an error.
    return err instanceof AcmeProblem && err.status >= 400 && err.status < 500 ? "refused" : "error";
  }
}

async function run(ctx: DrillContext<Settings>) {
  const { db, close } = await throwawayDatabase(ctx.log);
  ctx.onCleanup(close);
  const dataDir = join(ctx.tempDir("token-race"), "ca");
  const env = { STINT_DATA_DIR: dataDir, STINT_TRUST_DOMAIN: TD, STINT_STORE_URL: db.url };
  process.env.STINT_STORE_URL = db.url; // for the admin client that makes the tokens
  stintJson(["ca", "init", "--insecure-no-passphrase"], env);
  const replicas = [];
  for (const name of ["A", "B"]) {
    const port = await freePort();
    const ca = new CaServer(
      `replica ${name}`,
      ["--insecure-no-passphrase", "--listen", `127.0.0.1:${port}`],
      env,
    );
    ctx.onCleanup(() => ca.stop());
    replicas.push(ca);
  }
  await Promise.all(replicas.map((r) => r.start()));
  const rounds = ctx.settings.rounds;
  const ids = Array.from({ length: rounds }, (_, i) => `spiffe://${TD}/race/${i}`);
  const tokens = await mintJoinTokens(dataDir, replicas[0].url, ids, ctx.log);

  // Each account talks only to its own replica: the requests of a round reach two processes.
  const ca = readFileSync(join(dataDir, "root.pem"), "utf8");
  const clients = await Promise.all(
    replicas.map(async (r) => {
      const c = await AcmeClient.connect({
        directoryUrl: `${r.url}/acme/directory`,
        ca,
        accountKey: accountKey(),
      });
      await c.newAccount();
      return c;
    }),
  );

  let doubleSpends = 0;
  let noWinner = 0;
  let errors = 0;
  let loserFinalized = 0;
  const winsByReplica = [0, 0];
  for (let round = 0; round < rounds && !ctx.overdue(); round++) {
    const spiffeId = ids[round];
    const prepared = await Promise.all(
      clients.map(async (c) => {
        const order = await c.newOrder([{ type: "spiffe", value: spiffeId }]);
        const authz = await c.getAuthorization(order.authorizations[0]);
        const challenge = authz.challenges.find((x) => x.type === "attest-01")!;
        return { c, order, challenge };
      }),
    );
    // Both answers leave in the same turn of the event loop, one to each replica.
    const outcomes = await Promise.all(prepared.map((p) => attestOutcome(p.c, p.challenge, tokens[round])));
    const winners = outcomes.filter((o) => o === "valid").length;
    if (winners > 1) doubleSpends++;
    if (winners === 0) noWinner++;
    errors += outcomes.filter((o) => o === "error").length;
    for (const [i, p] of prepared.entries()) {
      const key = accountKey();
      const won = outcomes[i] === "valid";
      if (won) winsByReplica[i]++;
      // The winner finalizes; the loser must not be able to, whatever it tries.
      const order = await p.c.getOrder(p.order.url);
      if (order.status !== "ready") {
        if (won) throw new Error(`round ${round}: the winner's order is ${order.status}, not ready`);
        continue;
      }
      if (!won) loserFinalized++;
      const done = await p.c.finalize(order, buildCsr({ key, spiffeId }));
      if (done.status !== "valid") throw new Error(`round ${round}: finalize left the order ${done.status}`);
    }
    if ((round + 1) % 10 === 0) ctx.log(`${round + 1}/${rounds} rounds`);
  }
  for (const c of clients) c.close();
  const stopCodes = [];
  for (const r of replicas) stopCodes.push(await r.stop());

  // The store's account of it: one certificate per SPIFFE ID, one accepted spend per token.
  const store = await openStore(dataDir, { url: db.url });
  let certificatesPerId = 0;
  let extraCertificates = 0;
  const spends = new Map<string, number>();
  try {
    for (const id of ids) {
      const n = (await store.listCertificates({ spiffeId: id })).length;
      if (n === 1) certificatesPerId++;
      if (n > 1) extraCertificates += n - 1;
    }
    for (let after = 0; ; ) {
      const page = await store.listAudit(after, 1000);
      if (page.length === 0) break;
      for (const r of page) {
        if (r.action === "token.spend" && r.details.outcome === "accepted")
          spends.set(r.subject, (spends.get(r.subject) ?? 0) + 1);
      }
      after = page[page.length - 1].seq;
    }
  } finally {
    await store.close();
  }
  const acceptedTwice = [...spends.values()].filter((n) => n > 1).length;
  return {
    zeros: {
      tokenDoubleSpends: doubleSpends,
      roundsWithoutWinner: noWinner,
      loserOrdersFinalized: loserFinalized,
      extraCertificates,
      spendsAcceptedTwice: acceptedTwice,
      attestErrors: errors,
      crashes: replicas.reduce((n, r) => n + r.unexpectedExits, 0),
      uncleanStops: stopCodes.filter((c) => c !== 0).length,
    },
    figures: {
      rounds,
      winsByReplica: { A: winsByReplica[0], B: winsByReplica[1] },
      idsWithOneCertificate: certificatesPerId,
      tokensSpent: spends.size,
    },
  };
}

runDrill<Settings>({
  name: "token-race",
  about:
    "Redeems each join token at the same moment through two CA replicas on one PostgreSQL store, from two\n" +
    "ACME accounts: exactly one attest-01 succeeds per round, and the store records one certificate and\n" +
    "one accepted spend per token.",
  settings: { rounds: { full: 50, short: 8, help: "tokens raced, one per round" } },
  deadlineSeconds: { full: 600, short: 120 },
  run,
});
