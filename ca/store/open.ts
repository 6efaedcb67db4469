import { join } from "node:path";
import type { Store } from "../store";
import { SqliteStore } from "./sqlite";

/** The store's file name inside a data directory. */
export const STORE_FILE = "stint.db";

/** Opens the data directory's store; `create` makes a new one if there is none yet. */
export function openStore(dataDir: string, opts: { create?: boolean } = {}): Promise<Store> {
  return SqliteStore.open(join(dataDir, STORE_FILE), opts);
}
