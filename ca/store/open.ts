import { join } from "node:path";
import { StintError } from "../../common/errors";
import type { Store } from "../store";
import type { AcmeStateStore } from "../store-acme";
import { SqliteStore } from "./sqlite";

/** The store's file name inside a data directory. */
export const STORE_FILE = "stint.db";

export interface OpenStoreOptions {
  /** Make a new store if there is none yet. */
  create?: boolean;
  /** A postgres:// or postgresql:// URL selects the shared PostgreSQL backend; empty means SQLite in the data directory. */
  url?: string;
}

/** Everything the CA server needs from its store; both backends provide it. */
export type CaStore = Store & AcmeStateStore;

/** True for a URL that selects the PostgreSQL backend. */
export function isPostgresUrl(url: string): boolean {
  return /^postgres(?:ql)?:\/\//i.test(url);
}

/** Opens the CA's store: PostgreSQL when a URL is given, else `<dataDir>/stint.db`. */
export async function openStore(dataDir: string, opts: OpenStoreOptions = {}): Promise<CaStore> {
  const url = opts.url ?? "";
  if (url === "") return SqliteStore.open(join(dataDir, STORE_FILE), { create: opts.create });
  if (!isPostgresUrl(url)) {
    // The URL itself is not shown: it may hold a password.
    throw new StintError("ERR_CONFIG", "store URL must start with postgres:// or postgresql://");
  }
  // Loaded on demand, so SQLite-only installs never load the PostgreSQL driver.
  const { PostgresStore } = await import("./postgres");
  return PostgresStore.open(url, { create: opts.create });
}
