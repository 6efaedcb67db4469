import { generateKeyPairSync } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ADMIN_PATHS, type AdminJoinToken } from "../../acme/admin";
import { AcmeClient, type AcmeProblem, joinTokenEvidence, type Order } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { AdminClient } from "../../cli/admin-client";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres";

/**
 * finalize records the certificate, its audit record and the order's valid
 * status in one transaction (issue 13, lever 3). The store is made to refuse
 * the order's move to valid (a trigger, as a fault in that write would):
 * then nothing may be recorded, not even the certificate, the order goes
 * back to ready, and a second finalize once the fault is gone leaves exactly
 * one certificate, the one the order holds. Written as two commits, the
 * first finalize left a certificate no order holds.
 */

const TD = "finalize.example";
const newKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const lastSegment = (url: string) => url.slice(url.lastIndexOf("/") + 1);

/** What the test needs of the store the server uses: SQL on it, as the superuser or the file's owner. */
interface StoreAccess {
  refuseValidOrders(): Promise<void>;
  allowValidOrders(): Promise<void>;
  /** The order's row and the certificates recorded for the SPIFFE ID. */
  state(
    orderId: string,
    spiffeId: string,
  ): Promise<{ status: string; serial: string | null; certs: string[] }>;
}

function scenarios(
  backend: string,
  setup: () => Promise<{ dir: string; env: Record<string, string>; args: string[]; store: StoreAccess }>,
) {
  describe(backend, () => {
    let dir: string;
    let server: ServerProcess;
    let store: StoreAccess;
    let client: AcmeClient;
    let admin: AdminClient;

    beforeAll(async () => {
      const s = await setup();
      ({ dir, store } = s);
      const dataDir = join(dir, "ca");
      server = await startServer(["--data-dir", dataDir, "--trust-domain", TD, ...s.args], s.env);
      const rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
      admin = await AdminClient.fromFlags({
        "data-dir": dataDir,
        server: server.url,
        "ca-file": join(dataDir, "root.pem"),
      });
      client = await AcmeClient.connect({
        directoryUrl: `${server.url}/acme/directory`,
        ca: rootPem,
        accountKey: newKey(),
      });
      await client.newAccount();
    }, 120_000);

    afterAll(async () => {
      client?.close();
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    /** An attested order, ready to finalize. */
    async function readyOrder(spiffeId: string): Promise<Order> {
      const made = await admin.post<AdminJoinToken>(ADMIN_PATHS.joinTokens, { spiffeId, ttl: "10m" });
      const order = await client.newOrder([{ type: "spiffe", value: spiffeId }]);
      const authz = await client.getAuthorization(order.authorizations[0]);
      const challenge = authz.challenges.find((ch) => ch.type === "attest-01")!;
      expect((await client.attest(challenge.url, "join_token", joinTokenEvidence(made.token))).status).toBe(
        "valid",
      );
      return order;
    }

    it("records no certificate when the order cannot become valid, and exactly one when it can", async () => {
      const spiffeId = `spiffe://${TD}/one-commit`;
      const order = await readyOrder(spiffeId);
      const id = lastSegment(order.url);

      await store.refuseValidOrders();
      const refused = await client.finalize(order, buildCsr({ key: newKey(), spiffeId })).then(
        () => null,
        (e: AcmeProblem) => e,
      );
      expect(refused).toMatchObject({ type: "urn:ietf:params:acme:error:serverInternal", status: 500 });
      expect(await store.state(id, spiffeId)).toEqual({ status: "ready", serial: null, certs: [] });
      // The server's in-memory copy agrees with the store: ready, not valid.
      expect((await client.getOrder(order.url)).status).toBe("ready");

      await store.allowValidOrders();
      const valid = await client.finalize(order, buildCsr({ key: newKey(), spiffeId }));
      expect(valid.status).toBe("valid");
      const after = await store.state(id, spiffeId);
      expect(after.status).toBe("valid");
      expect(after.certs).toEqual([after.serial]);
      expect(lastSegment(valid.certificate!)).toBe(after.serial);
      expect(await client.downloadCertificate(valid.certificate!)).toContain("BEGIN CERTIFICATE");
    }, 60_000);
  });
}

scenarios("SQLite", async () => {
  const dir = tempDir("stint-finalize-sqlite-");
  const path = join(dir, "ca", "stint.db");
  const sql = <T>(run: (db: Database.Database) => T): T => {
    const db = new Database(path, { fileMustExist: true, timeout: 5000 });
    try {
      return run(db);
    } finally {
      db.close();
    }
  };
  const init = stint([
    "ca",
    "init",
    "--insecure-no-passphrase",
    "--data-dir",
    join(dir, "ca"),
    "--trust-domain",
    TD,
  ]);
  if (init.code !== 0) throw new Error(`stint ca init failed: ${init.stderr}`);
  return {
    dir,
    env: {},
    args: ["--insecure-no-passphrase"],
    store: {
      refuseValidOrders: async () => {
        sql((db) =>
          db.exec(
            "CREATE TRIGGER refuse_valid BEFORE UPDATE OF status ON orders WHEN NEW.status = 'valid'" +
              " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
          ),
        );
      },
      allowValidOrders: async () => {
        sql((db) => db.exec("DROP TRIGGER refuse_valid"));
      },
      state: async (orderId, spiffeId) =>
        sql((db) => {
          const order = db
            .prepare<[string], { status: string; certificate_serial: string | null }>(
              "SELECT status, certificate_serial FROM orders WHERE id = ?",
            )
            .get(orderId)!;
          const certs = db
            .prepare<[string], { serial: string }>("SELECT serial FROM certificates WHERE spiffe_id = ?")
            .all(spiffeId);
          return {
            status: order.status,
            serial: order.certificate_serial,
            certs: certs.map((c) => c.serial),
          };
        }),
    },
  };
});

let pgDb: TestDatabase | undefined;
afterAll(async () => {
  await pgDb?.drop();
});

scenarios("PostgreSQL", async () => {
  const dir = tempDir("stint-finalize-pg-");
  const db = await createTestDatabase();
  pgDb = db;
  const env = { STINT_CA_PASSPHRASE: "finalize passphrase", STINT_STORE_URL: db.url };
  const init = stint(["ca", "init", "--data-dir", join(dir, "ca"), "--trust-domain", TD], env);
  if (init.code !== 0) throw new Error(`stint ca init failed: ${init.stderr}`);
  return {
    dir,
    env,
    args: [],
    store: {
      // check_violation: a fault of this one write, as a constraint would raise.
      refuseValidOrders: async () => {
        await db.query(
          "CREATE FUNCTION refuse_valid() RETURNS trigger LANGUAGE plpgsql AS" +
            " $$ BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; END $$",
        );
        await db.query(
          "CREATE TRIGGER refuse_valid BEFORE UPDATE ON orders FOR EACH ROW" +
            " WHEN (NEW.status = 'valid') EXECUTE FUNCTION refuse_valid()",
        );
      },
      allowValidOrders: async () => {
        await db.query("DROP TRIGGER refuse_valid ON orders");
        await db.query("DROP FUNCTION refuse_valid()");
      },
      state: async (orderId, spiffeId) => {
        const [order] = await db.query<{ status: string; certificate_serial: string | null }>(
          "SELECT status, certificate_serial FROM orders WHERE id = $1",
          [orderId],
        );
        const certs = await db.query<{ serial: string }>(
          "SELECT serial FROM certificates WHERE spiffe_id = $1",
          [spiffeId],
        );
        return { status: order.status, serial: order.certificate_serial, certs: certs.map((c) => c.serial) };
      },
    },
  };
});
