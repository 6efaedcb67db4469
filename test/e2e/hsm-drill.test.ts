import { generateKeyPairSync } from "node:crypto";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ADMIN_PATHS, type AdminJoinToken } from "../../acme/admin";
import { AcmeClient, AcmeProblem, joinTokenEvidence } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { AdminClient } from "../../cli/admin-client";
import { pemDecodeAll, toPem } from "../../formats/pem";
import { type ServerProcess, startServer, stint, tokenCaEnv } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";
import { type SoftHsmToken, softHsmToken } from "../helpers/softhsm";

/**
 * The HSM drill (issue 15): a CA whose keys are in a SoftHSM token serves
 * ACME clients; mid-load the token is pulled away (its directory moved: CI
 * runs as root, where chmod 000 stops nothing) and later put back. Requests
 * failing meanwhile get a serverInternal problem and leave nothing behind;
 * every stored certificate verifies with OpenSSL; the audit chain holds;
 * sequence numbers spent by failures are never reused; issuance resumes on
 * the same process once the token is back.
 */

const TD = "hsm-drill.example";
const WORKERS = 4;
const dir = tempDir("stint-hsm-drill-");
const dataDir = join(dir, "ca");
let hsm: SoftHsmToken;
let server: ServerProcess;

const newKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  hsm = softHsmToken({ label: "stint-drill" });
  server = await startServer(
    [
      "--insecure-no-passphrase",
      "--data-dir",
      dataDir,
      "--trust-domain",
      TD,
      "--acme-rate-limit-per-address",
      "0",
      "--acme-rate-limit-per-account",
      "0",
    ],
    tokenCaEnv(hsm),
  );
}, 120_000);

afterAll(async () => {
  await server?.stop();
  hsm?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

type Outcome =
  | { ok: true; der: Buffer; chainPem: string; spiffeId: string }
  | { ok: false; spiffeId: string; problem: AcmeProblem };

it("fails requests cleanly while the token is away, records nothing for them, and resumes once it is back", async () => {
  // The keys are in the token, not in the data directory.
  const issuers = new Database(join(dataDir, "stint.db"), { readonly: true })
    .prepare<[], { key_path: string }>("SELECT key_path FROM issuers")
    .all();
  expect(issuers.length).toBeGreaterThanOrEqual(2);
  for (const i of issuers) expect(i.key_path).toMatch(/^pkcs11:token=stint-drill;/);

  const rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  const admin = await AdminClient.fromFlags({ "data-dir": dataDir, server: server.url });
  const tokens: { spiffeId: string; token: string }[] = [];
  for (let i = 0; i < 240; i++) {
    const spiffeId = `spiffe://${TD}/w/${i}`;
    const made = await admin.post<AdminJoinToken>(ADMIN_PATHS.joinTokens, { spiffeId, ttl: "1h" });
    tokens.push({ spiffeId, token: made.token });
  }

  type Phase = "before" | "away" | "back";
  let phase: Phase = "before";
  const outcomes: Record<Phase, Outcome[]> = { before: [], away: [], back: [] };

  async function obtain(c: AcmeClient, spiffeId: string, token: string): Promise<Outcome> {
    const order = await c.newOrder([{ type: "spiffe", value: spiffeId }]);
    const authz = await c.getAuthorization(order.authorizations[0]);
    const challenge = authz.challenges.find((ch) => ch.type === "attest-01")!;
    await c.attest(challenge.url, "join_token", joinTokenEvidence(token));
    try {
      const valid = await c.finalize(order, buildCsr({ key: newKey(), spiffeId }));
      const chainPem = await c.downloadCertificate(valid.certificate!);
      return { ok: true, der: pemDecodeAll(chainPem, "CERTIFICATE", "chain")[0], chainPem, spiffeId };
    } catch (err) {
      if (!(err instanceof AcmeProblem)) throw err;
      return { ok: false, spiffeId, problem: err };
    }
  }

  const clients = await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      const c = await AcmeClient.connect({
        directoryUrl: `${server.url}/acme/directory`,
        ca: rootPem,
        accountKey: newKey(),
        badNonceRetries: 10,
      });
      await c.newAccount();
      return c;
    }),
  );
  let stop = false;
  const worker = async (c: AcmeClient) => {
    while (!stop) {
      const next = tokens.pop();
      if (!next) throw new Error("ran out of join tokens");
      const seenIn = phase;
      const outcome = await obtain(c, next.spiffeId, next.token);
      // Only a request that started and ended in one phase counts for it.
      if (phase === seenIn) outcomes[seenIn].push(outcome);
      if (!outcome.ok) await sleep(150);
    }
  };
  const until = async (what: string, cond: () => boolean, ms = 60_000) => {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(50);
    }
  };
  const okCount = (p: Phase) => outcomes[p].filter((o) => o.ok).length;
  const running = Promise.all(clients.map(worker));
  const away = `${hsm.tokenDir}.away`;
  try {
    await until("issuance before the pull", () => okCount("before") >= 12);
    renameSync(hsm.tokenDir, away);
    phase = "away";
    // Long enough for several reconnect attempts (one a second) to fail too.
    await until("failures while the token is away", () => outcomes.away.filter((o) => !o.ok).length >= 8);
    await sleep(2500);
  } finally {
    try {
      renameSync(away, hsm.tokenDir);
    } catch {
      // Already back (the pull itself failed).
    }
  }
  phase = "back";
  await until("issuance after the token is back", () => okCount("back") >= 12);
  stop = true;
  await running;
  for (const c of clients) c.close();
  expect(server.child.exitCode).toBeNull();

  // Every failure while the token was away is a serverInternal problem document, none a success.
  const failed = outcomes.away.filter((o): o is Extract<Outcome, { ok: false }> => !o.ok);
  expect(failed.length).toBeGreaterThanOrEqual(8);
  for (const f of failed) {
    expect(f.problem.type).toBe("urn:ietf:params:acme:error:serverInternal");
    expect(f.problem.status).toBe(500);
  }
  expect(outcomes.away.filter((o) => o.ok)).toEqual([]);
  // The server logged each under its error id, without the PIN.
  const logs = server.logs().join("\n");
  expect(logs).toContain("ERR_KEY_UNAVAILABLE");
  expect(logs).not.toContain(hsm.pin);

  // Nothing stored for the failed requests; every certificate returned is stored.
  const db = new Database(join(dataDir, "stint.db"), { readonly: true });
  let rows: { serial: string; sequence: number; spiffe_id: string | null; der: Buffer; issuer_id: string }[];
  try {
    rows = db
      .prepare("SELECT serial, sequence, spiffe_id, der, issuer_id FROM certificates")
      .all() as typeof rows;
  } finally {
    db.close();
  }
  const storedIds = new Set(rows.map((r) => r.spiffe_id));
  for (const f of failed) expect(storedIds.has(f.spiffeId)).toBe(false);
  const storedDer = new Set(rows.map((r) => r.der.toString("base64")));
  const issued = [...outcomes.before, ...outcomes.back].filter(
    (o): o is Extract<Outcome, { ok: true }> => o.ok,
  );
  for (const o of issued) expect(storedDer.has(o.der.toString("base64"))).toBe(true);

  // Sequence numbers: distinct per issuer, and those the failures spent stay unused (gaps).
  const leaves = rows.filter((r) => r.spiffe_id?.startsWith(`spiffe://${TD}/w/`));
  const seqs = leaves.map((r) => r.sequence).sort((a, b) => a - b);
  expect(new Set(leaves.map((r) => `${r.issuer_id}/${r.sequence}`)).size).toBe(leaves.length);
  expect(seqs[seqs.length - 1] - seqs[0] + 1 - seqs.length).toBeGreaterThanOrEqual(1);

  // OpenSSL verifies every stored leaf against the root and the intermediate.
  const chain = pemDecodeAll(issued[0].chainPem, "CERTIFICATE", "chain");
  writeFileSync(join(dir, "root.pem"), rootPem);
  writeFileSync(join(dir, "intermediate.pem"), toPem("CERTIFICATE", chain[1]));
  const files = leaves.map((r, i) => {
    const path = join(dir, `leaf-${i}.pem`);
    writeFileSync(path, toPem("CERTIFICATE", r.der));
    return path;
  });
  const verified = openssl([
    "verify",
    "-CAfile",
    join(dir, "root.pem"),
    "-untrusted",
    join(dir, "intermediate.pem"),
    ...files,
  ]);
  expect(
    verified
      .trim()
      .split("\n")
      .filter((l) => !l.endsWith(": OK")),
  ).toEqual([]);
  expect(verified.trim().split("\n")).toHaveLength(files.length);

  // The audit chain is intact.
  const status = stint(["ca", "status", "--data-dir", dataDir]);
  expect(status.stdout).toMatch(/audit log: \d+ records, chain intact/);
  expect(status.code).toBe(0);
}, 240_000);
