import type Database from "better-sqlite3";
import type { ChangeWatch } from "./acme-cache";

/**
 * SQLite's `PRAGMA data_version` changes when another connection (another
 * process on the same file) commits, and never for this connection's own
 * commits: exactly when the ACME cache must forget what it holds. One
 * prepared statement, about a microsecond, no table read.
 */
export function sqliteChangeWatch(db: Database.Database): ChangeWatch {
  const version = db.prepare<[], number>("PRAGMA data_version").pluck();
  let last = version.get();
  return {
    changedElsewhere(): boolean {
      let now: number | undefined;
      try {
        now = version.get();
      } catch {
        // Closed: say so, and let the read that follows fail with the store's own message.
        return true;
      }
      if (now === last) return false;
      last = now;
      return true;
    },
  };
}
