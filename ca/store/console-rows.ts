import type { AuditQuery, ConsoleGrant, JoinTokenSummary, LateRenewals } from "../store";

/**
 * The security console's queries (Store.expiryTimeline, expiredUnrenewed,
 * lateRenewals, listJoinTokens, searchAudit), written once with $1, $2 … placeholders for both backends;
 * SQLite runs them through sqliteNamed. Each is bounded by an index range
 * (certificates_not_after, audit_log's primary key) and a LIMIT, so a page
 * costs the same with 100,000 certificates as with 100.
 */

/** Live certificates per bucket of `bucketMs` after $1, up to $2. */
export const EXPIRY_TIMELINE_SQL = `
  SELECT CAST((not_after - $1) / $3 AS BIGINT) AS bucket, COUNT(*) AS n
  FROM certificates
  WHERE not_after > $1 AND not_after <= $2 AND revoked_at IS NULL
  GROUP BY 1 ORDER BY 1`;

/**
 * Unrevoked certificates that expired in ($1, $2] while no later certificate
 * names their SPIFFE ID: the workload stopped renewing.
 */
export const expiredUnrenewedSql = (columns: string) => `
  SELECT ${columns.replace(/(^|, )/g, "$1c.")}
  FROM certificates c
  WHERE c.not_after > $1 AND c.not_after <= $2 AND c.revoked_at IS NULL AND c.spiffe_id IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.spiffe_id = c.spiffe_id AND n.not_after > c.not_after)
  ORDER BY c.not_after DESC, c.serial
  LIMIT $3`;

/**
 * Renewals issued in ($1, $2] after $3 percent of their predecessor's
 * lifetime, per SPIFFE ID: how many, and the latest. The predecessor is found
 * by certificates_spiffe_id_not_before; integer percent keeps the arithmetic
 * in bigint on PostgreSQL.
 */
export const LATE_RENEWALS_SQL = `
  WITH late AS (
    SELECT n.spiffe_id, n.serial AS successor, n.not_before AS renewed_at, p.serial AS predecessor,
      p.not_before + (p.not_after - p.not_before) * $3 / 100 AS window_end, p.not_after AS predecessor_not_after
    FROM certificates n
    JOIN certificates p ON p.serial = (
      SELECT q.serial FROM certificates q
      WHERE q.spiffe_id = n.spiffe_id AND q.not_before < n.not_before
      ORDER BY q.not_before DESC, q.serial DESC LIMIT 1)
    WHERE n.not_before > $1 AND n.not_before <= $2 AND n.spiffe_id IS NOT NULL
      AND n.not_before * 100 > p.not_before * 100 + (p.not_after - p.not_before) * $3
  ), ranked AS (
    SELECT late.*, COUNT(*) OVER (PARTITION BY spiffe_id) AS n,
      ROW_NUMBER() OVER (PARTITION BY spiffe_id ORDER BY renewed_at DESC, successor) AS rn
    FROM late
  )
  SELECT spiffe_id, n, successor, predecessor, renewed_at, window_end, predecessor_not_after
  FROM ranked WHERE rn = 1
  ORDER BY renewed_at DESC, spiffe_id
  LIMIT $4`;

export interface LateRenewalRow {
  spiffe_id: string;
  n: number | string;
  successor: string;
  predecessor: string;
  renewed_at: number | string;
  window_end: number | string;
  predecessor_not_after: number | string;
}

export function lateRenewalsFromRow(r: LateRenewalRow): LateRenewals {
  return {
    spiffeId: r.spiffe_id,
    count: Number(r.n),
    latest: {
      predecessor: r.predecessor,
      successor: r.successor,
      renewedAt: new Date(Number(r.renewed_at)),
      windowEnd: new Date(Number(r.window_end)),
      predecessorNotAfter: new Date(Number(r.predecessor_not_after)),
    },
  };
}

/**
 * Join tokens, outstanding first (soonest to expire leading), then used or
 * expired ones newest first. The hash is not selected, so it cannot leak
 * from here. Tokens are few (one per enrolment), so LIMIT bounds the page.
 */
export const JOIN_TOKENS_SQL = `
  SELECT id, spiffe_id, created_at, expires_at, used_at
  FROM join_tokens
  ORDER BY CASE WHEN used_at IS NULL AND expires_at > $1 THEN 0 ELSE 1 END,
    CASE WHEN used_at IS NULL AND expires_at > $1 THEN expires_at ELSE -created_at END,
    id
  LIMIT $2`;

/** pg returns bigint columns as strings, SQLite as numbers; both read alike here. */
export interface JoinTokenRow {
  id: string;
  spiffe_id: string;
  created_at: number | string;
  expires_at: number | string;
  used_at: number | string | null;
}

export function joinTokenFromRow(r: JoinTokenRow): JoinTokenSummary {
  return {
    id: r.id,
    spiffeId: r.spiffe_id,
    createdAt: new Date(Number(r.created_at)),
    expiresAt: new Date(Number(r.expires_at)),
    usedAt: r.used_at === null ? null : new Date(Number(r.used_at)),
  };
}

/** Newest first, filtered; `text` matches the subject exactly or anywhere in the details (SPIFFE IDs, serials). */
export function auditSearchSql(columns: string, q: AuditQuery): { sql: string; params: unknown[] } {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (clause: string, ...values: unknown[]) => {
    let text = clause;
    for (const v of values) {
      params.push(v);
      text = text.replace("?", `$${params.length}`);
    }
    where.push(text);
  };
  if (q.actor !== undefined) add("actor = ?", q.actor);
  if (q.action !== undefined) add("action = ?", q.action);
  if (q.text !== undefined)
    add("(subject = ? OR CAST(details AS text) LIKE ?)", q.text, `%${likeEscape(q.text)}%`);
  if (q.from !== undefined) add("at >= ?", q.from.getTime());
  if (q.to !== undefined) add("at < ?", q.to.getTime());
  if (q.beforeSeq !== undefined) add("seq < ?", q.beforeSeq);
  params.push(q.limit);
  const filter = where.length > 0 ? ` WHERE ${where.join(" AND ")}` : "";
  // ESCAPE is spelt per clause; both backends take the same syntax.
  const sql = `SELECT ${columns} FROM audit_log${filter.replace(/LIKE (\$\d+)/, "LIKE $1 ESCAPE '\\'")} ORDER BY seq DESC LIMIT $${params.length}`;
  return { sql, params };
}

const likeEscape = (text: string) => text.replace(/[\\%_]/g, (c) => `\\${c}`);

/** $1, $2 … as SQLite named parameters @p1, @p2 …, so a number may appear twice. */
export function sqliteNamed(sql: string, params: unknown[]): { sql: string; named: Record<string, unknown> } {
  const named: Record<string, unknown> = {};
  params.forEach((v, i) => {
    named[`p${i + 1}`] = v;
  });
  return { sql: sql.replace(/\$(\d+)/g, "@p$1"), named };
}

/** Store.initMeta: the first writer's value stays (both backends). */
export const INIT_META_SQL = "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";

/** Console login codes and sessions (Store.putConsoleGrant and the rest), for both backends. */
const GRANT_COLUMNS = "hash, kind, user_name, expires_at";

export const CONSOLE_GRANT_SQL = {
  insert: `INSERT INTO console_grants (${GRANT_COLUMNS}) VALUES ($1, $2, $3, $4)`,
  dropExpired: "DELETE FROM console_grants WHERE expires_at <= $1",
  /** Leaves at most $1 rows of kind $2 (codes cannot crowd out sessions): the soonest to expire go first. */
  dropOverflow: `
    DELETE FROM console_grants WHERE hash IN (
      SELECT hash FROM console_grants WHERE kind = $2 ORDER BY expires_at, hash
      LIMIT (SELECT CASE WHEN count(*) > $1 THEN count(*) - $1 ELSE 0 END FROM console_grants WHERE kind = $2))`,
  /** Deleted and returned in one statement, so of two replicas redeeming one code only one gets it. */
  take: `DELETE FROM console_grants WHERE hash = $1 AND kind = $2 RETURNING ${GRANT_COLUMNS}`,
  find: `SELECT ${GRANT_COLUMNS} FROM console_grants WHERE hash = $1 AND kind = $2`,
  delete: "DELETE FROM console_grants WHERE hash = $1 AND kind = $2",
};

export interface ConsoleGrantRow {
  hash: string;
  kind: string;
  user_name: string;
  /** A string from PostgreSQL's bigint. */
  expires_at: number | string;
}

export function consoleGrantParams(g: ConsoleGrant): unknown[] {
  return [g.hash, g.kind, g.user, g.expiresAt.getTime()];
}

/** The grant in `row` while unexpired at `now`, else null. */
export function liveConsoleGrant(row: ConsoleGrantRow | undefined, now: Date): ConsoleGrant | null {
  if (!row) return null;
  const expiresAt = new Date(Number(row.expires_at));
  if (expiresAt <= now) return null;
  return { hash: row.hash, kind: row.kind as ConsoleGrant["kind"], user: row.user_name, expiresAt };
}
