import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

/**
 * A real PostgreSQL for the store tests. Jest's global setup starts one
 * throwaway cluster (or adopts STINT_TEST_PG_URL) and hands its URL to the
 * workers through the environment; each test then gets its own database.
 */

/** Superuser URL of the server the tests use; set by the global setup or by the caller. */
export const URL_ENV = "STINT_TEST_PG_URL";
/** Set by the global setup when it could not provide a server, so PostgreSQL tests fail with the reason. */
const ERROR_ENV = "STINT_TEST_PG_ERROR";
/** The temporary directory of a cluster this run started, for the teardown. */
const OWNED_DIR_ENV = "STINT_TEST_PG_OWNED_DIR";

const BIN = "/usr/lib/postgresql/15/bin";
export const MISSING_MESSAGE =
  "PostgreSQL 15 is needed for the store tests: apt-get install -y postgresql-15, or set STINT_TEST_PG_URL";
/** A role the throwaway cluster makes log in with a password, so tests can see an authentication failure. */
export const PASSWORD_ROLE = "stint_auth_test";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr !== null ? resolve(addr.port) : reject(addr)));
    });
  });
}

/** initdb and the server refuse to run as root, so as root they run as the `postgres` OS user. */
function runPg(tool: string, args: string[]): string {
  const bin = join(BIN, tool);
  const asRoot = process.getuid?.() === 0;
  const [cmd, argv] = asRoot ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
  return execFileSync(cmd, argv, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

async function startCluster(): Promise<{ url: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "stint-pg-"));
  if (process.getuid?.() === 0) {
    const uid = execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim();
    const gid = execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim();
    chownSync(dir, Number(uid), Number(gid));
  }
  const data = join(dir, "data");
  try {
    // --no-sync only skips flushing initdb's own files; the server keeps fsync on, as in production.
    runPg("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
    const hba = join(data, "pg_hba.conf");
    writeFileSync(hba, `host all ${PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n${readFileSync(hba, "utf8")}`);
    // A port can be taken between freePort() and the server binding it; try a few.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const opts = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=on -c max_connections=200`;
      try {
        runPg("pg_ctl", ["-D", data, "-l", join(dir, "server.log"), "-w", "-t", "30", "-o", opts, "start"]);
        return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, dir };
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  } catch (err) {
    const log = join(dir, "server.log");
    const tail = existsSync(log) ? `\n${readFileSync(log, "utf8").slice(-2000)}` : "";
    rmSync(dir, { recursive: true, force: true });
    const out = (err as { stderr?: string }).stderr ?? "";
    throw new Error(`could not start a test PostgreSQL: ${(err as Error).message}${out}${tail}`);
  }
}

/** Jest global setup: provides a server for every worker, or records why there is none. */
export async function globalSetup(): Promise<void> {
  if (process.env[URL_ENV]) return;
  if (!existsSync(join(BIN, "pg_ctl"))) {
    process.env[ERROR_ENV] = MISSING_MESSAGE;
    return;
  }
  const { url, dir } = await startCluster();
  process.env[URL_ENV] = url;
  process.env[OWNED_DIR_ENV] = dir;
}

/** Jest global teardown: stops the cluster the setup started (never an adopted one) and deletes it. */
export default async function globalTeardown(): Promise<void> {
  const dir = process.env[OWNED_DIR_ENV];
  if (!dir) return;
  try {
    runPg("pg_ctl", ["-D", join(dir, "data"), "-m", "fast", "-w", "stop"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    delete process.env[OWNED_DIR_ENV];
    delete process.env[URL_ENV];
  }
}

/** The server's superuser URL; throws the setup's reason when there is none, so the test fails loudly. */
export function serverUrl(): string {
  const url = process.env[URL_ENV];
  if (url) return url;
  throw new Error(process.env[ERROR_ENV] ?? MISSING_MESSAGE);
}

/** `url` with its database replaced. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Runs statements as the superuser on one database (default: the server's own). */
export async function adminQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(
  sql: string,
  params: unknown[] = [],
  database?: string,
): Promise<R[]> {
  const base = serverUrl();
  const client = new pg.Client({ connectionString: database ? withDatabase(base, database) : base });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  name: string;
  url: string;
  /** Runs SQL on this database as the superuser. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<R[]>;
  /** Drops the database, ending any connection a failed test left open. */
  drop(): Promise<void>;
}

/** A new, empty database of its own, so tests never see each other's rows. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `stint_test_${randomBytes(6).toString("hex")}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  return {
    name,
    url: withDatabase(serverUrl(), name),
    query: (sql, params) => adminQuery(sql, params, name),
    drop: async () => {
      await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}
