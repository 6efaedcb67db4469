import type { RevocationWindow } from "../store";

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
