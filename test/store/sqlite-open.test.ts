import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync, statSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { SqliteStore } from "../../ca/store/sqlite";
import { LATEST_VERSION, MIGRATIONS } from "../../ca/store/sqlite-migrations";
import { issuerParams, prepareStatements } from "../../ca/store/sqlite-rows";
import { account, certificate, event, issuer, snapshot, tempDir } from "./fixtures";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "stint.db");
});
afterEach(() => cleanup());

/** Opening must fail with `expected` and leave the file and its directory exactly as they were. */
async function expectRefused(expected: { code: string; message: unknown }, opts = { create: true }) {
  const before = snapshot(path);
  await expect(SqliteStore.open(path, opts)).rejects.toMatchObject(expected);
  const after = snapshot(path);
  expect(after.bytes.equals(before.bytes)).toBe(true);
  expect(after.mtimeMs).toBe(before.mtimeMs);
  expect(after.siblings).toEqual(before.siblings);
  expect(existsSync(`${path}-wal`)).toBe(false);
  expect(existsSync(`${path}-shm`)).toBe(false);
}

async function makeStore(certs = 0): Promise<void> {
  const store = await SqliteStore.open(path, { create: true });
  await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
  await Promise.all(
    Array.from({ length: certs }, (_, i) => certificate("aa00", i + 1)).map((c) =>
      store.insertCertificate(c, event("cert.issue", c.serial)),
    ),
  );
  await store.close();
}

describe("SqliteStore.open", () => {
  it("numbers migrations 1, 2, 3, … with no gaps", () => {
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
    expect(LATEST_VERSION).toBe(MIGRATIONS.length);
  });

  it("upgrades a store made at schema version 1", async () => {
    // What a build that knew only migration 1 left behind, with an issuer in it.
    const raw = new Database(path);
    raw.pragma("journal_mode = WAL");
    raw.exec(
      "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT",
    );
    raw.exec(MIGRATIONS[0].sql);
    raw.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)").run();
    prepareStatements(raw).insertIssuer.run(issuerParams(issuer("aa00")));
    raw.close();

    const store = await SqliteStore.open(path);
    try {
      const check = new Database(path, { readonly: true });
      expect(check.prepare("SELECT version FROM schema_migrations ORDER BY version").all()).toEqual(
        MIGRATIONS.map((m) => ({ version: m.version })),
      );
      check.close();
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

  it("does not create a store unless asked", async () => {
    await expect(SqliteStore.open(path)).rejects.toMatchObject({
      code: "ERR_NOT_INITIALIZED",
      message: expect.stringContaining(`${path} does not exist; create a CA there first`),
    });
    expect(existsSync(path)).toBe(false);
  });

  it("initializes a zero-length file only when asked", async () => {
    writeFileSync(path, "");
    await expectRefused(
      { code: "ERR_NOT_INITIALIZED", message: expect.stringContaining(`${path} is empty`) },
      { create: false },
    );
    const store = await SqliteStore.open(path, { create: true });
    expect(await store.getMeta("store_format")).toBe("stint");
    await store.close();
  });

  it("reopens an existing store and leaves no -wal/-shm after close", async () => {
    await makeStore(3);
    expect(existsSync(`${path}-wal`)).toBe(false);
    const store = await SqliteStore.open(path);
    expect(await store.listCertificates({})).toHaveLength(3);
    await store.close();
    expect(existsSync(`${path}-shm`)).toBe(false);
  });

  it("refuses a file of random bytes", async () => {
    writeFileSync(path, randomBytes(8192));
    await expectRefused({
      code: "ERR_STORE_CORRUPT",
      message: expect.stringMatching(
        /is not a Stint database \(not SQLite, or damaged\); restore it from backup or point --data-dir elsewhere$/,
      ),
    });
  });

  it("refuses a truncated SQLite header", async () => {
    writeFileSync(path, "SQLite format 3\0");
    await expectRefused({
      code: "ERR_STORE_CORRUPT",
      message: expect.stringContaining(`${path} is not a Stint`),
    });
  });

  it("refuses a Stint store with a page scribbled over", async () => {
    await makeStore(2000);
    // Read-write on purpose: a read-only connection would leave -wal/-shm behind.
    const probe = new Database(path);
    const { rootpage } = probe
      .prepare("SELECT rootpage FROM sqlite_schema WHERE name = 'certificates'")
      .get() as {
      rootpage: number;
    };
    const pageSize = probe.pragma("page_size", { simple: true }) as number;
    probe.close();
    // With 2,000 rows the table's root is an interior page; garbage there breaks the whole b-tree.
    const fd = openSync(path, "r+");
    writeSync(fd, randomBytes(pageSize), 0, pageSize, (rootpage - 1) * pageSize);
    closeSync(fd);

    await expectRefused({
      code: "ERR_STORE_CORRUPT",
      message: expect.stringContaining(`${path} is not a Stint database (not SQLite, or damaged) (`),
    });
  });

  it.each([
    ["rollback-journal", "DELETE"],
    ["WAL", "WAL"],
  ])("refuses a foreign SQLite database (%s mode)", async (_label, journalMode) => {
    const other = new Database(path);
    other.pragma(`journal_mode = ${journalMode}`);
    other.exec(
      "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('a')",
    );
    other.exec("CREATE TABLE meta (k TEXT, v TEXT)");
    other.close();
    await expectRefused({
      code: "ERR_STORE_FOREIGN",
      message: expect.stringContaining(
        `${path} is an SQLite database but not a Stint store (it has tables: meta, users)`,
      ),
    });
  });

  it("refuses a store written by a newer schema version", async () => {
    await makeStore();
    const raw = new Database(path);
    raw.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)").run(LATEST_VERSION + 7);
    raw.close();
    await expectRefused({
      code: "ERR_STORE_VERSION",
      message: expect.stringContaining(
        `(store schema version ${LATEST_VERSION + 7}; this build knows up to ${LATEST_VERSION}); upgrade Stint`,
      ),
    });
  });

  it("opens a store while another connection has it open", async () => {
    await makeStore(1);
    const first = await SqliteStore.open(path);
    const second = await SqliteStore.open(path);
    await first.appendAudit(event("a", "1"));
    await second.appendAudit(event("b", "2"));
    expect((await first.listAudit(0, 10)).map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    await Promise.all([first.close(), second.close()]);
    expect(statSync(path).size).toBeGreaterThan(0);
  });
});
