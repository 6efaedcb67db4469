import { generateKeyPairSync } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ADMIN_PATHS, type AdminJoinToken } from "../../acme/admin";
import { AcmeClient, AcmeProblem, joinTokenEvidence, type Order } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { AdminClient } from "../../cli/admin-client";
import { pemDecodeAll } from "../../formats/pem";
import { freePort } from "../helpers/agent";
import { type ServerProcess, startServer } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * The server keeps ACME state in memory (ca/store/acme-cache.ts), written
 * through to SQLite. Under load, `kill -9` lands in every step of the flow
 * (newOrder, authorization read, attest-01, finalize, download) at least
 * once; clients retry the step they were in against the restarted CA. Every
 * certificate a client got back must be in the store after the last crash,
 * and every client must complete. After each crash, before the restart, no
 * certificate may be recorded without its order holding it, or the reverse.
 */

const TD = "crash.example";
const dir = tempDir("stint-acme-crash-");
const dataDir = join(dir, "ca");
const WORKERS = 4;
const STEPS = ["newOrder", "authorization", "challenge", "finalize", "download"] as const;
type Step = (typeof STEPS)[number];
const MAX_KILLS = 25;

let port: number;
let server: ServerProcess;
let rootPem: string;
/** Resolves when the current server listens; replaced at each crash. */
let up: Promise<void> = Promise.resolve();

const newKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function start(): Promise<void> {
  server = await startServer([
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--trust-domain",
    TD,
    "--acme-rate-limit-per-address",
    "0",
    "--acme-rate-limit-per-account",
    "0",
    "--listen",
    `127.0.0.1:${port}`,
  ]);
}

/**
 * What the store holds as the crash left it, before the restart's order
 * recovery tidies anything: finalize writes the certificate and its order's
 * valid status in one commit, so no certificate is recorded without the
 * order that holds it, and no order holds a certificate that is not recorded.
 */
const unpaired: string[] = [];
function checkPairs(): void {
  const db = new Database(join(dataDir, "stint.db"), { fileMustExist: true });
  try {
    const rows = db
      .prepare<[], { serial: string; why: string }>(
        `SELECT b.serial, 'certificate held by no order' AS why FROM certificate_bindings AS b
           WHERE NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.certificate_serial = b.serial)
         UNION ALL
         SELECT o.certificate_serial, 'order ' || o.id || ' is ' || o.status FROM orders AS o
           WHERE (o.status = 'valid') <> (o.certificate_serial IS NOT NULL)
              OR (o.certificate_serial IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM certificates AS c WHERE c.serial = o.certificate_serial))`,
      )
      .all();
    unpaired.push(...rows.map((r) => `${r.serial}: ${r.why}`));
  } finally {
    db.close();
  }
}

/** kill -9, then the same command on the same port: what a supervisor does after a crash. */
async function crash(): Promise<void> {
  let restarted!: () => void;
  up = new Promise((r) => {
    restarted = r;
  });
  const exited = new Promise((r) => server.child.once("exit", r));
  server.child.kill("SIGKILL");
  await exited;
  checkPairs();
  await start();
  restarted();
}

beforeAll(async () => {
  port = await freePort();
  await start();
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
}, 60_000);

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function joinTokens(n: number): Promise<{ spiffeId: string; token: string }[]> {
  const admin = await AdminClient.fromFlags({ "data-dir": dataDir, server: server.url });
  const out: { spiffeId: string; token: string }[] = [];
  for (let i = 0; i < n; i++) {
    const spiffeId = `spiffe://${TD}/w/${i}`;
    const made = await admin.post<AdminJoinToken>(ADMIN_PATHS.joinTokens, { spiffeId, ttl: "1h" });
    out.push({ spiffeId, token: made.token });
  }
  return out;
}

it("loses no returned certificate to kill -9 in any ACME step, and retrying clients complete", async () => {
  const tokens = await joinTokens(300);
  const inFlight = new Map<Step, number>(STEPS.map((s) => [s, 0]));
  const killedDuring = new Set<Step>();
  const returned: { client: AcmeClient; der: Buffer; order: string }[] = [];
  let killing = true;

  /** One step, retried after a crash until it gets an answer; a refusal (a problem document) is a failure. */
  async function step<T>(name: Step, run: (retry: boolean) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      inFlight.set(name, inFlight.get(name)! + 1);
      try {
        return await run(attempt > 0);
      } catch (err) {
        if (err instanceof AcmeProblem || attempt > 200) throw err;
        await up;
        await sleep(50);
      } finally {
        inFlight.set(name, inFlight.get(name)! - 1);
      }
    }
  }

  async function obtain(c: AcmeClient, spiffeId: string, token: string): Promise<void> {
    const csr = buildCsr({ key: newKey(), spiffeId });
    const order = await step("newOrder", () => c.newOrder([{ type: "spiffe", value: spiffeId }]));
    const authz = await step("authorization", () => c.getAuthorization(order.authorizations[0]));
    const challenge = authz.challenges.find((ch) => ch.type === "attest-01")!;
    await step("challenge", async (retry) => {
      // The answer may have been recorded before the crash: then the token is spent and the authorization valid.
      if (retry && (await c.getAuthorization(authz.url)).status === "valid") return;
      const answered = await c.attest(challenge.url, "join_token", joinTokenEvidence(token));
      expect(answered.status).toBe("valid");
    });
    const valid: Order = await step("finalize", async (retry) => {
      // As the agent does: straight to finalize after the synchronous attest-01.
      if (!retry) return c.finalize(order, csr);
      const now = await c.getOrder(order.url);
      if (now.status === "valid") return now;
      if (now.status !== "ready" && now.status !== "pending")
        throw new Error(`order is ${now.status} after the restart`);
      return c.finalize(now, csr);
    });
    expect(valid.status).toBe("valid");
    const pem = await step("download", () => c.downloadCertificate(valid.certificate!));
    returned.push({ client: c, der: pemDecodeAll(pem, "CERTIFICATE", "chain")[0], order: order.url });
  }

  const clients: AcmeClient[] = [];
  for (let i = 0; i < WORKERS; i++) {
    const c = await AcmeClient.connect({
      directoryUrl: `${server.url}/acme/directory`,
      ca: rootPem,
      accountKey: newKey(),
      badNonceRetries: 10,
    });
    await c.newAccount();
    clients.push(c);
  }
  const worker = async (c: AcmeClient): Promise<number> => {
    let done = 0;
    while (killing || done < 2) {
      const next = tokens.pop();
      if (!next) break;
      await obtain(c, next.spiffeId, next.token);
      done++;
      // Paced, so the kills find every step in flight before the tokens run out.
      await sleep(30);
    }
    return done;
  };

  const killer = async (): Promise<number> => {
    let kills = 0;
    while (kills < MAX_KILLS && STEPS.some((s) => !killedDuring.has(s))) {
      await sleep(200 + Math.random() * 500);
      for (const [s, n] of inFlight) if (n > 0) killedDuring.add(s);
      await crash();
      kills++;
    }
    killing = false;
    return kills;
  };

  const [kills, ...done] = await Promise.all([killer(), ...clients.map(worker)]);
  expect(done.every((n) => n >= 2)).toBe(true);
  expect([...killedDuring].sort()).toEqual([...STEPS].sort());
  expect(kills).toBeGreaterThan(0);

  // One more crash after the last answer: what was returned must have been durable.
  await crash();
  expect(unpaired).toEqual([]);
  const db = new Database(join(dataDir, "stint.db"), { readonly: true });
  try {
    const stored = db.prepare<[Buffer], { n: number }>(
      "SELECT count(*) AS n FROM certificates WHERE der = ?",
    );
    for (const r of returned) expect(stored.get(r.der)?.n).toBe(1);
  } finally {
    db.close();
  }
  // And the restarted CA, its memory empty, serves each order as valid with that certificate.
  for (const c of clients) {
    for (const r of returned.filter((x) => x.client === c)) {
      const order = await step("authorization", () => c.getOrder(r.order));
      expect(order.status).toBe("valid");
      const pem = await step("download", () => c.downloadCertificate(order.certificate!));
      expect(pemDecodeAll(pem, "CERTIFICATE", "chain")[0].equals(r.der)).toBe(true);
    }
    c.close();
  }
  expect(returned.length).toBeGreaterThanOrEqual(WORKERS * 2);
}, 240_000);
