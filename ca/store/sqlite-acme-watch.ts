import type Database from "better-sqlite3";
import type { ChangeWatch } from "./acme-cache";

/**
 * SQLite's `PRAGMA data_version` changes when another connection (another
 * process on the same file) commits, and never for this connection's own
 * commits: exactly when the ACME cache must forget what it holds.
 *
 * Asking costs about as much as reading a row (SQLite opens a read
 * transaction on the WAL to answer), so it is asked once per turn of the
 * event loop: reads in one turn happen with no I/O between them, as if at
 * one instant, and a commit made elsewhere before a request arrives is
 * always seen by that request.
 */
export function sqliteChangeWatch(db: Database.Database): ChangeWatch {
  const version = db.prepare<[], number>("PRAGMA data_version").pluck();
  let last = version.get();
  let askedThisTurn = false;
  const nextTurn = () => {
    askedThisTurn = false;
  };
  return {
    changedElsewhere(): boolean {
      if (askedThisTurn) return false;
      let now: number | undefined;
      try {
        now = version.get();
      } catch {
        // Closed: say so, and let the read that follows fail with the store's own message.
        return true;
      }
      askedThisTurn = true;
      setImmediate(nextTurn);
      if (now === last) return false;
      last = now;
      return true;
    },
  };
}
