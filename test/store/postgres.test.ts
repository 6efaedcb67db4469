import { setTimeout as sleep } from "node:timers/promises";
import { inspect } from "node:util";
import pg from "pg";
import { verifyAuditChain } from "../../ca/audit";
import { openStore } from "../../ca/store/open";
import { PostgresStore } from "../../ca/store/postgres";
import { placeholders } from "../../ca/store/postgres-acme-rows";
import { createPool } from "../../ca/store/postgres-connect";
import { LATEST_VERSION, MIGRATIONS } from "../../ca/store/postgres-migrations";
import { ISSUER_COLUMNS, issuerParams } from "../../ca/store/postgres-rows";
import { MIGRATIONS as SQLITE_MIGRATIONS } from "../../ca/store/sqlite-migrations";
import { createTestDatabase, PASSWORD_ROLE, type TestDatabase } from "../helpers/postgres";
import { storeContract } from "./contract";
import { acmeStoreContract } from "./contract-acme";
import { bindingStoreContract } from "./contract-binding";
import { consoleStoreContract } from "./contract-console";
import { account, certificate, event, issuer, joinToken } from "./fixtures";

let databases: TestDatabase[] = [];
let db: TestDatabase;

async function freshDatabase(): Promise<TestDatabase> {
  db = await createTestDatabase();
  databases.push(db);
  return db;
}

afterEach(async () => {
  await Promise.all(databases.map((d) => d.drop()));
  databases = [];
});

storeContract("postgres", async () => PostgresStore.open((await freshDatabase()).url, { create: true }), {
  reopen: () => PostgresStore.open(db.url),
  sql: async (statement) => {
    await db.query(statement);
  },
  dropUpdateTrigger: "DROP TRIGGER audit_log_no_update ON audit_log",
});

acmeStoreContract("postgres", async () => PostgresStore.open((await freshDatabase()).url, { create: true }), {
  reopen: () => PostgresStore.open(db.url),
});

bindingStoreContract(
  "postgres",
  async () => PostgresStore.open((await freshDatabase()).url, { create: true }),
  {
    reopen: () => PostgresStore.open(db.url),
    sql: async (statement) => {
      await db.query(statement);
    },
    toSchema3: [
      "DROP TABLE console_grants",
      "DROP INDEX certificates_not_before",
      "DROP INDEX certificates_spiffe_id_not_before",
      "DROP INDEX entries_parent",
      "ALTER TABLE entries DROP COLUMN parent",
      "DROP TABLE certificate_bindings",
      "DROP TABLE attestations",
      "DROP FUNCTION stint_append_only()",
      "ALTER TABLE authorizations DROP COLUMN attestation_id",
      "DROP INDEX orders_processing",
      "DELETE FROM schema_migrations WHERE version >= 4",
    ],
  },
);

/** host:port/database as the store names it in messages. */
function where(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || "5432"}${u.pathname}`;
}

/** What a refused open must leave unchanged: every relation and function in the database. */
async function schemaSnapshot(d: TestDatabase): Promise<unknown[]> {
  return d.query(
    `SELECT c.relname AS name, c.relkind::text AS kind FROM pg_class c
     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
     UNION ALL SELECT p.proname, 'function' FROM pg_proc p
     JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
     ORDER BY 1`,
  );
}

describe("PostgresStore", () => {
  it("lets two replicas reserve sequences concurrently without overlap", async () => {
    const d = await freshDatabase();
    const a = await PostgresStore.open(d.url, { create: true });
    const b = await PostgresStore.open(d.url);
    try {
      await a.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const firsts = await Promise.all(
        Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).reserveSequences("aa00", 7)),
      );
      const taken = firsts.flatMap((first) => Array.from({ length: 7 }, (_, k) => first + k));
      expect(new Set(taken).size).toBe(1400);
      expect(Math.min(...taken)).toBe(1);
      expect(Math.max(...taken)).toBe(1400);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("keeps one valid audit chain when two replicas write at once", async () => {
    const d = await freshDatabase();
    const a = await PostgresStore.open(d.url, { create: true });
    const b = await PostgresStore.open(d.url);
    try {
      await a.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      // Ten writers per replica, each awaiting its write before the next: many small batches on
      // both sides, contending for the chain.
      let next = 1;
      const writer = async (replica: PostgresStore, side: number) => {
        for (let k = 0; k < 30; k++) {
          const i = next++ * 2 + side;
          await (i % 3 === 0
            ? replica.insertCertificate(certificate("aa00", i), event("cert.issue", String(i)))
            : replica.appendAudit(event("admin.note", String(i))));
        }
      };
      await Promise.all(Array.from({ length: 20 }, (_, w) => writer(w % 2 === 0 ? a : b, w % 2)));
      const records = await b.listAudit(0, 1000);
      expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 601 }, (_, i) => i + 1));
      expect(() => verifyAuditChain(records)).not.toThrow();
      expect((await a.counts(new Date(0))).issued).toBe(
        records.filter((r) => r.action === "cert.issue").length,
      );
      // The replicas' batches really did interleave: the chain passes from one to the other many times.
      const sides = records.slice(1).map((r) => Number(r.subject) % 2);
      const handovers = sides.filter((side, i) => i > 0 && side !== sides[i - 1]).length;
      expect(handovers).toBeGreaterThan(10);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("migrates once when two replicas create the store at the same time", async () => {
    const d = await freshDatabase();
    const stores = await Promise.all([1, 2, 3].map(() => PostgresStore.open(d.url, { create: true })));
    await Promise.all(stores.map((s) => s.close()));
    expect(await d.query("SELECT version FROM schema_migrations ORDER BY version")).toEqual(
      MIGRATIONS.map((m) => ({ version: m.version })),
    );
  });

  it("has the same migrations as the SQLite backend, numbered 1, 2, 3, …", () => {
    const shape = (ms: readonly { version: number; description: string }[]) =>
      ms.map((m) => ({ version: m.version, description: m.description }));
    expect(shape(MIGRATIONS)).toEqual(shape(SQLITE_MIGRATIONS));
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
  });

  it("upgrades a store made at schema version 1", async () => {
    const d = await freshDatabase();
    // What a build that knew only migration 1 left behind, with an issuer in it.
    await d.query("CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)");
    await d.query(MIGRATIONS[0].sql);
    await d.query("INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)");
    await d.query(
      `INSERT INTO issuers (${ISSUER_COLUMNS}) VALUES (${placeholders(10)})`,
      issuerParams(issuer("aa00")),
    );

    const store = await PostgresStore.open(d.url);
    try {
      expect(await d.query("SELECT version FROM schema_migrations ORDER BY version")).toEqual(
        MIGRATIONS.map((m) => ({ version: m.version })),
      );
      expect(await store.getIssuer("aa00")).toEqual(issuer("aa00"));
      const a = account("acct1");
      expect(await store.createAccount(a, event("account.create", a.id))).toEqual({
        account: a,
        created: true,
      });
      expect((await store.listAudit(0, 10)).map((r) => r.action)).toEqual(["account.create"]);
    } finally {
      await store.close();
    }
  });

  it("reports a token taken while consumeJoinToken waited for it as used", async () => {
    const d = await freshDatabase();
    const store = await PostgresStore.open(d.url, { create: true });
    const rival = new pg.Client({ connectionString: d.url });
    await rival.connect();
    try {
      const now = new Date();
      const token = joinToken("0011223344556677", { expiresAt: new Date(now.getTime() + 60_000) });
      await store.createJoinToken(token, event("join_token.create", token.id));
      // Another replica takes the token but has not committed yet.
      await rival.query("BEGIN");
      await rival.query("UPDATE join_tokens SET used_at = $1 WHERE hash = $2", [now.getTime(), token.hash]);
      const pending = store.consumeJoinToken(token.hash, now, (t) => event("token.spend", t.id));
      // Once the store's statement waits on the row lock, its snapshot predates the rival's commit.
      const waiting = "SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'";
      while ((await d.query(waiting, [d.name])).length === 0) await sleep(10);
      await rival.query("COMMIT");
      expect(await pending).toMatchObject({ outcome: "used", id: token.id });
    } finally {
      await rival.end();
      await store.close();
    }
  });

  it("gives a join token to exactly one caller across connections and replicas", async () => {
    const d = await freshDatabase();
    const a = await PostgresStore.open(d.url, { create: true });
    const b = await PostgresStore.open(d.url);
    try {
      const now = new Date();
      const token = joinToken("0011223344556677", { expiresAt: new Date(now.getTime() + 60_000) });
      await a.createJoinToken(token, event("join_token.create", token.id));
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 === 0 ? a : b).consumeJoinToken(token.hash, now, (t) => event("token.spend", t.id)),
        ),
      );
      expect(results.filter((r) => r?.outcome !== "used")).toEqual([
        { outcome: "taken", id: token.id, spiffeId: token.spiffeId },
      ]);
      // A spend is written in the replica's audit batch (with its token.spend record), so each replica's
      // calls share one connection; the replicas' own connections raced each other.
      const [{ n }] = await d.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'stint'",
        [d.name],
      );
      expect(n).toBeGreaterThanOrEqual(2);
      const spends = (await a.listAudit(0, 100)).filter((r) => r.action === "token.spend");
      expect(spends.map((r) => r.subject)).toEqual([token.id]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("does not create a store unless asked", async () => {
    const d = await freshDatabase();
    await expect(PostgresStore.open(d.url)).rejects.toMatchObject({
      code: "ERR_NOT_INITIALIZED",
      message: `PostgreSQL database ${where(d.url)} is empty; create a CA there first (stint ca init), or point store.url at an existing one`,
    });
    expect(await schemaSnapshot(d)).toEqual([]);
  });

  it("refuses a database that holds someone else's tables, writing nothing", async () => {
    const d = await freshDatabase();
    await d.query("CREATE TABLE customers (id serial PRIMARY KEY, name text)");
    await d.query("INSERT INTO customers (name) VALUES ('a')");
    await d.query("CREATE TABLE meta (k text, v text)");
    const before = await schemaSnapshot(d);
    await expect(PostgresStore.open(d.url, { create: true })).rejects.toMatchObject({
      code: "ERR_STORE_FOREIGN",
      message:
        `PostgreSQL database ${where(d.url)} is not a Stint store (it has tables: public.customers, public.meta); ` +
        "point store.url at a Stint database, or at a new empty one",
    });
    expect(await schemaSnapshot(d)).toEqual(before);
    expect(await d.query("SELECT name FROM customers")).toEqual([{ name: "a" }]);
  });

  it("refuses a store written by a newer schema version", async () => {
    const d = await freshDatabase();
    await (await PostgresStore.open(d.url, { create: true })).close();
    await d.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)", [LATEST_VERSION + 7]);
    await expect(PostgresStore.open(d.url, { create: true })).rejects.toMatchObject({
      code: "ERR_STORE_VERSION",
      message: expect.stringContaining(
        `${where(d.url)} was written by a newer Stint (store schema version ${LATEST_VERSION + 7}; this build knows up to ${LATEST_VERSION}); upgrade Stint`,
      ),
    });
  });

  it("refuses TRUNCATE of the audit log", async () => {
    const d = await freshDatabase();
    const store = await PostgresStore.open(d.url, { create: true });
    await store.appendAudit(event("ca.init", "example.org"));
    await store.close();
    await expect(d.query("TRUNCATE audit_log")).rejects.toThrow("audit_log is append-only");
  });

  it("opens through openStore for postgres:// and postgresql:// URLs", async () => {
    const d = await freshDatabase();
    for (const url of [d.url, d.url.replace(/^postgres:/, "postgresql:")]) {
      const store = await openStore("/nonexistent", { url, create: true });
      expect(store.backend).toBe("postgres");
      expect(await store.getMeta("store_format")).toBe("stint");
      await store.close();
    }
  });

  it("commits durably even where the database default says otherwise", async () => {
    const d = await freshDatabase();
    for (const [configured, used] of [
      ["off", "on"],
      ["remote_apply", "remote_apply"],
    ]) {
      await d.query(`ALTER DATABASE ${d.name} SET synchronous_commit = '${configured}'`);
      const pool = createPool(d.url);
      try {
        expect((await pool.query("SHOW synchronous_commit")).rows).toEqual([{ synchronous_commit: used }]);
      } finally {
        await pool.end();
      }
    }
  });
});

describe("PostgresStore never shows the password", () => {
  const password = "Pa55-w0rd!secret";
  const encoded = encodeURIComponent(password);

  function expectHidden(err: unknown): void {
    for (const text of [String(err), inspect(err, { depth: 10 }), JSON.stringify(err)]) {
      expect(text).not.toContain(password);
      expect(text).not.toContain(encoded);
    }
  }

  async function refusal(url: string): Promise<unknown> {
    return PostgresStore.open(url, { create: true }).then(
      () => {
        throw new Error("open should have failed");
      },
      (err: unknown) => err,
    );
  }

  it("when the server is unreachable", async () => {
    const err = await refusal(`postgres://stint:${encoded}@127.0.0.1:1/stint`);
    expect(err).toMatchObject({
      code: "ERR_CONFIG",
      message:
        "cannot connect to PostgreSQL at 127.0.0.1:1/stint: connect ECONNREFUSED 127.0.0.1:1; " +
        "is the server running and reachable there?",
    });
    expectHidden(err);
    const inQuery = await refusal(`postgresql://127.0.0.1:1/stint?user=stint&password=${encoded}`);
    expect(inQuery).toMatchObject({
      code: "ERR_CONFIG",
      message: expect.stringContaining("127.0.0.1:1/stint"),
    });
    expectHidden(inQuery);
  });

  it("when the password is wrong", async () => {
    const d = await freshDatabase();
    await d.query(
      `DO $$ BEGIN CREATE ROLE ${PASSWORD_ROLE} LOGIN PASSWORD 'the-right-one';
       EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
    );
    const u = new URL(d.url);
    const url = `postgres://${PASSWORD_ROLE}:${encoded}@${u.host}${u.pathname}`;
    const err = await refusal(url);
    expect(err).toMatchObject({
      code: "ERR_CONFIG",
      message:
        `cannot connect to PostgreSQL at ${where(d.url)}: password authentication failed for user ` +
        `"${PASSWORD_ROLE}"; check the user and password in store.url`,
    });
    expectHidden(err);
  });

  it("when the URL is malformed", async () => {
    const err = await refusal(`postgres://stint:${password}@[bad/stint`);
    expect(err).toMatchObject({
      code: "ERR_CONFIG",
      message:
        "store URL is not a valid postgres://user:password@host:port/database URL (not shown: it may hold a password)",
    });
    expectHidden(err);
  });

  it("in an open store or its errors", async () => {
    const d = await freshDatabase();
    // The throwaway server trusts local connections, so any password opens it; a configured server has its own.
    const u = new URL(d.url);
    if (u.password === "") u.password = encoded;
    const secret = decodeURIComponent(u.password);
    const store = await PostgresStore.open(u.toString(), { create: true });
    expect(store.location).toBe(where(d.url));
    expect(inspect(store, { depth: 10, showHidden: true })).not.toContain(secret);
    await store.close();
    const closed = await store.getMeta("x").catch((e: unknown) => e);
    expect(closed).toMatchObject({ message: `store ${where(d.url)} is closed` });
    expect(inspect(closed, { depth: 10 })).not.toContain(secret);
  });
});

consoleStoreContract(
  "postgres",
  async () => PostgresStore.open((await freshDatabase()).url, { create: true }),
  () => PostgresStore.open(db.url),
);
