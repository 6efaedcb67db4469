import pg from "pg";
import { StintError } from "../../common/errors";
import { pgCode, storeTypes } from "./postgres-rows";

/**
 * The connection URL carries the database password, so it is never shown:
 * errors name the server as host:port/database, and any message that comes
 * back from the driver or the network has the password cut out first.
 */

export interface Target {
  /** host:port/database, for messages. */
  where: string;
  /** Every spelling of the password the URL holds, to scrub from messages. */
  secrets: string[];
}

const POOL_SIZE = 10;
const CONNECT_TIMEOUT_MS = 10_000;
/** Only an explicit "off" loses commits on a server crash; any other value (local, remote_apply, …) is kept. */
const DURABLE_COMMITS =
  "SELECT set_config('synchronous_commit', 'on', false) WHERE current_setting('synchronous_commit') = 'off'";

export function parseTarget(url: string): Target {
  let u: URL | undefined;
  try {
    u = new URL(url);
  } catch {
    // Node's URL error carries the input, password and all, so it is not kept as a cause.
  }
  if (u === undefined || (u.protocol !== "postgres:" && u.protocol !== "postgresql:")) {
    throw new StintError(
      "ERR_CONFIG",
      "store URL is not a valid postgres://user:password@host:port/database URL (not shown: it may hold a password)",
    );
  }
  const q = u.searchParams;
  const host = u.hostname || q.get("host") || "localhost";
  const port = u.port || q.get("port") || "5432";
  const database = safeDecode(u.pathname.slice(1)) || q.get("dbname") || "(default database)";
  const secrets = [u.password, safeDecode(u.password), q.get("password"), q.get("sslpassword")];
  return {
    where: `${host}:${port}/${database}`,
    secrets: [...new Set(secrets.filter((s): s is string => s !== null && s !== ""))],
  };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export function scrub(text: string, target: Target): string {
  let out = text;
  // Longest first, so an encoded spelling is not left half-replaced by a shorter one.
  for (const s of [...target.secrets].sort((a, b) => b.length - a.length)) out = out.split(s).join("***");
  return out;
}

/**
 * One line from whatever the driver threw. Duck-typed: Node's socket errors
 * come from another realm under jest. A failed multi-address connect is an
 * AggregateError with an empty message.
 */
function reasonOf(err: unknown): string {
  if (typeof err !== "object" || err === null) return String(err);
  const { message, errors, name } = err as { message?: unknown; errors?: unknown; name?: unknown };
  if (message === "" && Array.isArray(errors) && errors.length > 0) {
    return [...new Set(errors.map(reasonOf))].join("; ");
  }
  if (typeof message === "string" && message.trim() !== "") return message.replace(/\s+/g, " ").trim();
  return typeof name === "string" ? name : String(err);
}

function hint(err: unknown): string {
  const code = pgCode(err) ?? (err as { code?: unknown } | null)?.code;
  if (code === "28P01" || code === "28000") return "; check the user and password in store.url";
  if (code === "3D000") return "; create the database first, or fix its name in store.url";
  if (code === "ECONNREFUSED" || code === "ENOTFOUND" || code === "ETIMEDOUT") {
    return "; is the server running and reachable there?";
  }
  return "";
}

/**
 * ERR_CONFIG naming the server, never the password. No `cause`: a logger
 * printing the cause chain must not find a secret there either.
 */
export function connectError(err: unknown, target: Target, doing = "cannot connect to"): StintError {
  return new StintError(
    "ERR_CONFIG",
    scrub(`${doing} PostgreSQL at ${target.where}: ${reasonOf(err)}${hint(err)}`, target),
  );
}

/** A pool whose connections commit durably and parse bigint as number. */
export function createPool(url: string): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: POOL_SIZE,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: "stint",
    types: storeTypes(),
    onConnect: async (client) => {
      await client.query(DURABLE_COMMITS);
    },
  });
  // An idle connection dropped by the server: the pool has discarded it, and the next query reports any lasting failure.
  pool.on("error", () => undefined);
  return pool;
}
