import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { AcmeClient, type AcmeProblem } from "../../agent/acme-client";
import { exportJwk, jwkThumbprint } from "../../formats/jose";
import { type ServerProcess, startServer } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * The server keeps imported account keys in memory, by thumbprint. A change
 * to an account made elsewhere (another replica, or another process on the
 * same store) must still take effect on the very next request: here the
 * change is written straight into the store, behind the server's back.
 */

const TD = "replica.example";
const dir = tempDir("stint-acme-replica-");
const dataDir = join(dir, "ca");
let server: ServerProcess;
let rootPem: string;

beforeAll(async () => {
  server = await startServer(["--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", TD]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
}, 60_000);

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const newKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const order = (c: AcmeClient) => c.newOrder([{ type: "spiffe", value: `spiffe://${TD}/w/1` }]);
const problemOf = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: AcmeProblem) => e,
  );

async function client(key: KeyObject, accountUrl?: string): Promise<AcmeClient> {
  return AcmeClient.connect({
    directoryUrl: `${server.url}/acme/directory`,
    ca: rootPem,
    accountKey: key,
    accountUrl,
  });
}

/** Another writer on the same store: what a second replica's request would commit. */
function elsewhere(write: (db: Database.Database, id: string) => void, accountUrl: string): void {
  const db = new Database(join(dataDir, "stint.db"));
  try {
    db.pragma("busy_timeout = 5000");
    write(db, accountUrl.slice(accountUrl.lastIndexOf("/") + 1));
  } finally {
    db.close();
  }
}

it("refuses an account deactivated by another writer at once, though its key is cached", async () => {
  const c = await client(newKey());
  await c.newAccount();
  await order(c); // the key is now imported and cached
  elsewhere(
    (db, id) => db.prepare("UPDATE accounts SET status = 'deactivated' WHERE id = ?").run(id),
    c.accountUrl!,
  );
  const problem = await problemOf(order(c));
  expect(problem).toMatchObject({
    type: "urn:ietf:params:acme:error:unauthorized",
    detail: expect.stringContaining("deactivated"),
  });
});

it("follows a key change made by another writer at once: the old key is refused, the new one works", async () => {
  const oldKey = newKey();
  const c = await client(oldKey);
  await c.newAccount();
  await order(c);
  const next = newKey();
  const jwk = exportJwk(next);
  elsewhere(
    (db, id) =>
      db
        .prepare("UPDATE accounts SET jwk = ?, thumbprint = ? WHERE id = ?")
        .run(JSON.stringify(jwk), jwkThumbprint(next), id),
    c.accountUrl!,
  );
  const problem = await problemOf(order(c));
  expect(problem).toMatchObject({
    type: "urn:ietf:params:acme:error:malformed",
    detail: "JWS signature does not verify",
  });
  const withNewKey = await client(next, c.accountUrl);
  await expect(order(withNewKey)).resolves.toMatchObject({ status: "pending" });
});
