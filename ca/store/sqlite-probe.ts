import { closeSync, openSync, readSync, statSync } from "node:fs";
import Database from "better-sqlite3";
import { StintError } from "../../common/errors";
import {
  LATEST_VERSION,
  newerVersionError,
  STORE_FORMAT,
  STORE_FORMAT_KEY,
  schemaVersion,
} from "./sqlite-migrations";

/**
 * Looks at a store file before anything opens it for writing, so that a
 * corrupt, foreign or too-new database is refused with one clear error and
 * left exactly as it was: same bytes, same mtime, no -wal or -shm beside it.
 */

export type ProbeResult =
  | { kind: "missing" }
  /** A zero-length or table-less SQLite file: safe to initialize. */
  | { kind: "empty" }
  | { kind: "stint"; version: number };

const SQLITE_MAGIC = Buffer.from("SQLite format 3\0", "latin1");
const HEADER_SIZE = 100;
/** Header byte 18 is 2 when the database is in WAL mode. */
const WAL_MODE_OFFSET = 18;

export function corruptError(path: string, detail?: string): StintError {
  const why = detail === undefined ? "" : ` (${detail})`;
  return new StintError(
    "ERR_STORE_CORRUPT",
    `${path} is not a Stint database (not SQLite, or damaged)${why}; restore it from backup or point --data-dir elsewhere`,
  );
}

function fileSize(path: string): number | null {
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new StintError("ERR_FILE", `${path} is not a regular file`);
    return st.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

function readHeader(path: string): Buffer {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(HEADER_SIZE);
    const n = readSync(fd, buf, 0, HEADER_SIZE, 0);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens the file for reading without leaving a trace. A read-only connection
 * would create -wal/-shm for a WAL database and never remove them, so when no
 * -wal exists we open read-write with query_only: nothing is written, and
 * closing the last connection deletes the files it created. When a -wal
 * exists (another process has the store open, or one crashed) we must not
 * checkpoint it into a file that may not be ours, so we open read-only.
 */
function openForProbe(path: string, walMode: boolean): Database.Database {
  const walExists = fileSize(`${path}-wal`) !== null;
  if (walExists || !walMode) return new Database(path, { readonly: true, fileMustExist: true });
  const db = new Database(path, { fileMustExist: true });
  db.pragma("query_only = ON");
  return db;
}

function isCorruption(err: unknown): boolean {
  const code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === "string" && (code.startsWith("SQLITE_CORRUPT") || code === "SQLITE_NOTADB");
}

function inspect(db: Database.Database, path: string): ProbeResult {
  const tables = (
    db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as {
      name: string;
    }[]
  ).map((r) => r.name);
  if (tables.length === 0) return { kind: "empty" };

  let format: string | undefined;
  if (tables.includes("meta")) {
    try {
      const row = db.prepare("SELECT value FROM meta WHERE key = ?").get(STORE_FORMAT_KEY) as
        | { value: unknown }
        | undefined;
      format = typeof row?.value === "string" ? row.value : undefined;
    } catch (err) {
      if (isCorruption(err)) throw err;
      // Someone else's `meta` table with other columns: foreign, reported below.
    }
  }
  if (format !== STORE_FORMAT) {
    const shown = tables.slice(0, 5).join(", ") + (tables.length > 5 ? ", …" : "");
    throw new StintError(
      "ERR_STORE_FOREIGN",
      `${path} is an SQLite database but not a Stint store (it has tables: ${shown}); ` +
        "point --data-dir at a Stint data directory, or move this file away",
    );
  }

  const version = schemaVersion(db);
  if (version === 0) throw corruptError(path, "schema_migrations is missing");
  if (version > LATEST_VERSION) throw newerVersionError(path, version);

  // quick_check reads every page but skips index cross-checks: a full scan, not the O(N log N) integrity_check.
  const problems = (db.pragma("quick_check(3)") as { quick_check: string }[]).map((r) => r.quick_check);
  if (problems.length !== 1 || problems[0] !== "ok") throw corruptError(path, problems.join("; "));
  return { kind: "stint", version };
}

export function probeStoreFile(path: string): ProbeResult {
  const size = fileSize(path);
  if (size === null) return { kind: "missing" };
  const walSize = fileSize(`${path}-wal`) ?? 0;
  // A zero-length file is what a crash between creating the file and the first commit leaves.
  if (size === 0 && walSize === 0) return { kind: "empty" };

  const header = readHeader(path);
  if (
    size > 0 &&
    (header.length < HEADER_SIZE || !header.subarray(0, SQLITE_MAGIC.length).equals(SQLITE_MAGIC))
  ) {
    throw corruptError(path);
  }

  let db: Database.Database | undefined;
  try {
    db = openForProbe(path, size === 0 || header[WAL_MODE_OFFSET] === 2);
    return inspect(db, path);
  } catch (err) {
    if (isCorruption(err)) throw corruptError(path, (err as Error).message);
    throw err;
  } finally {
    db?.close();
  }
}
