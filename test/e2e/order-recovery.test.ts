import { spawnSync } from "node:child_process";
import { generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { AcmeClient, joinTokenEvidence, type Order } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { pemDecodeAll } from "../../formats/pem";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * The store as a crash and an operator's tools leave it. A CA killed in the middle of finalize leaves its order "processing". The
 * crash is reproduced by writing that state into the stopped CA's SQLite
 * file; after a restart the client must be able to finish: finalize again
 * when nothing was issued, or download the certificate that was.
 */

const TD = "recovery.example";
const dir = tempDir("stint-order-recovery-");
const dataDir = join(dir, "ca");
const dbPath = join(dataDir, "stint.db");
let server: ServerProcess | undefined;
let rootPem: string;

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const newKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;

async function start(): Promise<void> {
  server = await startServer(["--insecure-no-passphrase", "--data-dir", dataDir]);
}

function admin(args: string[]): string {
  const r = stint([...args, "--data-dir", dataDir, "--server", server!.url]);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** A new client for the account with this key, at the CA's current URL (a restart picks a new port). */
async function accountWith(accountKey: KeyObject): Promise<AcmeClient> {
  const client = await AcmeClient.connect({
    directoryUrl: `${server!.url}/acme/directory`,
    ca: rootPem,
    accountKey,
  });
  await client.newAccount();
  return client;
}

const atCurrentUrl = (url: string) => url.replace(/^https:\/\/[^/]+/, server!.url);

/** An order for `spiffeId`, attested with a join token and ready to finalize. */
async function readyOrder(client: AcmeClient, spiffeId: string): Promise<Order> {
  const { token } = JSON.parse(admin(["token", "create", "--spiffe-id", spiffeId, "--json"]));
  const order = await client.newOrder([{ type: "spiffe", value: spiffeId }]);
  const authz = await client.getAuthorization(order.authorizations[0]);
  const challenge = authz.challenges.find((c) => c.type === "attest-01")!;
  await client.attest(challenge.url, "join_token", joinTokenEvidence(token));
  return client.waitForOrder(order.url, ["ready"], { timeoutMs: 10_000 });
}

const orderId = (order: Order) => order.url.slice(order.url.lastIndexOf("/") + 1);

/** Stops the CA, leaves its database as the interrupted finalize would have, and starts it again. */
async function crashAndRestart(orderIdLeft: string, sql: string): Promise<void> {
  await server!.stop();
  const db = new Database(dbPath);
  try {
    expect(db.prepare(sql).run(orderIdLeft).changes).toBe(1);
  } finally {
    db.close();
  }
  await start();
}

function certificateCount(): number {
  const db = new Database(dbPath, { readonly: true });
  try {
    return (db.prepare("SELECT count(*) AS n FROM certificates").get() as { n: number }).n;
  } finally {
    db.close();
  }
}

beforeAll(async () => {
  const init = stint(["ca", "init", "--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", TD]);
  if (init.code !== 0) throw new Error(`stint ca init failed: ${init.stderr}`);
  await start();
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
}, 60_000);

it("puts an order left processing with nothing issued back to ready, so the client's finalize succeeds", async () => {
  const spiffeId = `spiffe://${TD}/crash/before-issue`;
  const accountKey = newKey();
  const order = await readyOrder(await accountWith(accountKey), spiffeId);
  await crashAndRestart(orderId(order), "UPDATE orders SET status = 'processing' WHERE id = ?");

  const client = await accountWith(accountKey);
  const reread = await client.getOrder(atCurrentUrl(order.url));
  expect(reread.status).toBe("ready");
  const valid = await client.finalize(reread, buildCsr({ key: newKey(), spiffeId }));
  expect(valid.status).toBe("valid");
  const pem = await client.downloadCertificate(valid.certificate!);
  const cert = new X509Certificate(pemDecodeAll(pem, "CERTIFICATE", "chain")[0]);
  expect(cert.subjectAltName).toBe(`URI:${spiffeId}`);
  expect(server!.logs().some((l) => l.includes("recovered orders left processing"))).toBe(true);
}, 60_000);

it("gives an order left processing the certificate already issued for it, without issuing another", async () => {
  const spiffeId = `spiffe://${TD}/crash/after-issue`;
  const accountKey = newKey();
  const first = await accountWith(accountKey);
  const order = await readyOrder(first, spiffeId);
  const valid = await first.finalize(order, buildCsr({ key: newKey(), spiffeId }));
  expect(valid.status).toBe("valid");
  const pem = await first.downloadCertificate(valid.certificate!);
  // The certificate was recorded, then the CA died before marking the order valid.
  await crashAndRestart(
    orderId(order),
    "UPDATE orders SET status = 'processing', certificate_serial = NULL WHERE id = ?",
  );
  const issued = certificateCount();

  const client = await accountWith(accountKey);
  const recovered = await client.getOrder(atCurrentUrl(order.url));
  expect(recovered.status).toBe("valid");
  expect(await client.downloadCertificate(recovered.certificate!)).toBe(pem);
  expect(certificateCount()).toBe(issued);
}, 60_000);

it("reads as intact to Debian's sqlite3 after ACME traffic, as to the bundled SQLite", async () => {
  // Orders without an error (NULL) once failed json_valid CHECKs in sqlite3 before 3.45.
  const c = await accountWith(newKey());
  await readyOrder(c, `spiffe://${TD}/inspected`);
  const check = spawnSync("sqlite3", [dbPath, "PRAGMA integrity_check;"], { encoding: "utf8" });
  expect(check.error).toBeUndefined();
  expect({ stdout: check.stdout.trim(), stderr: check.stderr }).toEqual({ stdout: "ok", stderr: "" });
  const orders = spawnSync("sqlite3", [dbPath, "SELECT count(*) FROM orders WHERE error IS NULL;"], {
    encoding: "utf8",
  });
  expect(Number(orders.stdout.trim())).toBeGreaterThanOrEqual(3);
}, 60_000);
