import { statSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { openStore, STORE_FILE } from "../../ca/store/open";
import { SqliteStore } from "../../ca/store/sqlite";
import { storeContract } from "./contract";
import { acmeStoreContract } from "./contract-acme";
import { bindingStoreContract } from "./contract-binding";
import { consoleStoreContract } from "./contract-console";
import { tempDir } from "./fixtures";

let dir: string;
let cleanup: (() => void) | undefined;
let path: string;

function freshPath(): string {
  ({ dir, cleanup } = tempDir());
  path = join(dir, STORE_FILE);
  return path;
}

afterEach(() => {
  cleanup?.();
  cleanup = undefined;
});

storeContract("sqlite", () => SqliteStore.open(freshPath(), { create: true }), {
  reopen: () => SqliteStore.open(path),
  // A second connection beside the store's own, as another process with the file would have.
  sql: async (statement) => {
    const raw = new Database(path);
    try {
      raw.exec(statement);
    } catch (err) {
      // better-sqlite3's SqliteError comes from the realm of the first test file that loaded it, which jest's
      // toThrow does not recognise as an Error in later files of the same worker; rethrow one it does.
      throw new Error((err as Error).message);
    } finally {
      raw.close();
    }
  },
  dropUpdateTrigger: "DROP TRIGGER audit_log_no_update",
});

acmeStoreContract("sqlite", () => SqliteStore.open(freshPath(), { create: true }), {
  reopen: () => SqliteStore.open(path),
});

bindingStoreContract("sqlite", () => SqliteStore.open(freshPath(), { create: true }), {
  reopen: () => SqliteStore.open(path),
  sql: async (statement) => {
    const raw = new Database(path);
    try {
      raw.exec(statement);
    } catch (err) {
      throw new Error((err as Error).message); // see storeContract above
    } finally {
      raw.close();
    }
  },
  toSchema3: [
    "DROP TABLE console_grants",
    "DROP INDEX certificates_not_before",
    "DROP INDEX certificates_spiffe_id_not_before",
    "DROP INDEX entries_parent",
    "ALTER TABLE entries DROP COLUMN parent",
    "DROP TABLE certificate_bindings",
    "DROP TABLE attestations",
    "ALTER TABLE authorizations DROP COLUMN attestation_id",
    "DELETE FROM schema_migrations WHERE version >= 4",
  ],
});

describe("SqliteStore", () => {
  let store: SqliteStore;
  beforeEach(async () => {
    store = await SqliteStore.open(freshPath(), { create: true });
  });
  afterEach(async () => {
    await store.close();
  });

  it("creates the file 0600", async () => {
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(store.backend).toBe("sqlite");
  });

  it("openStore opens <dataDir>/stint.db", async () => {
    await store.setMeta("marker", "here");
    await store.close();
    const viaFactory = await openStore(dir);
    expect(viaFactory.backend).toBe("sqlite");
    expect(await viaFactory.getMeta("marker")).toBe("here");
    await viaFactory.close();
    const emptyUrl = await openStore(dir, { url: "" });
    expect(await emptyUrl.getMeta("marker")).toBe("here");
    await emptyUrl.close();
    store = await SqliteStore.open(path);
  });

  it("openStore refuses a store URL of another kind without showing it", async () => {
    await expect(openStore(dir, { url: "mysql://root:hunter2@db/stint" })).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: "store URL must start with postgres:// or postgresql://",
    });
  });
});

consoleStoreContract(
  "sqlite",
  () => SqliteStore.open(freshPath(), { create: true }),
  () => SqliteStore.open(path),
);
