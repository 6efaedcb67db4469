import type { IssuerProgress, RevocationWindow } from "../store";

/**
 * The revocation feed's rows, shared by both backends: per-issuer windows of
 * unexpired sequence numbers and the revoked sequences among them, both
 * ordered by issuer (and sequence), merged into RevocationWindow records.
 * PostgreSQL returns bigint columns as strings, hence Number().
 */
export function windowsFrom(
  windows: readonly { issuer_id: string; lo: number | string; hi: number | string }[],
  revoked: readonly { issuer_id: string; sequence: number | string }[],
): RevocationWindow[] {
  const byIssuer = new Map<string, RevocationWindow>();
  for (const w of windows) {
    byIssuer.set(w.issuer_id, { issuerId: w.issuer_id, lo: Number(w.lo), hi: Number(w.hi), revoked: [] });
  }
  for (const r of revoked) byIssuer.get(r.issuer_id)?.revoked.push(Number(r.sequence));
  return [...byIssuer.values()];
}

/**
 * Store.issuerProgress in one statement both backends run ($1, $2 become ? for
 * SQLite). A certificate counts as replaced once its SPIFFE ID has a later
 * certificate (by notBefore) from another issuer.
 */
export const ISSUER_PROGRESS_SQL = `
  SELECT COUNT(*) AS live,
         COALESCE(SUM(CASE WHEN c.spiffe_id IS NULL OR NOT EXISTS (
           SELECT 1 FROM certificates n
           WHERE n.spiffe_id = c.spiffe_id AND n.issuer_id <> c.issuer_id AND n.not_before >= c.not_before
         ) THEN 1 ELSE 0 END), 0) AS unreplaced,
         MAX(c.not_after) AS last_not_after
  FROM certificates c
  WHERE c.issuer_id = $1 AND c.not_after > $2 AND c.revoked_at IS NULL`;

export interface ProgressRow {
  live: number | string;
  unreplaced: number | string;
  last_not_after: number | string | null;
}

export function progressFrom(row: ProgressRow): IssuerProgress {
  return {
    live: Number(row.live),
    unreplaced: Number(row.unreplaced),
    lastNotAfter: row.last_not_after === null ? null : new Date(Number(row.last_not_after)),
  };
}
