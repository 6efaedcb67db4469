import pg from "pg";
import { type ErrorCode, StintError } from "../../common/errors";
import { canonicalJson } from "../audit";
import type { AuditRecord, CertificateBinding, CertificateRecord, IssuerRecord, IssuerState } from "../store";

/**
 * How records map to PostgreSQL rows: dates as bigint milliseconds (exact,
 * and the same as the SQLite backend), DER as bytea, name lists as text[],
 * audit details as the canonical JSON text that was hashed.
 */

export interface IssuerRow {
  id: string;
  kind: IssuerRecord["kind"];
  parent_id: string | null;
  state: IssuerState;
  subject: string;
  cert_der: Buffer;
  key_path: string | null;
  not_before: number;
  not_after: number;
  created_at: number;
}

export interface CertificateRow {
  serial: string;
  issuer_id: string;
  sequence: number;
  spiffe_id: string | null;
  dns_names: string[];
  ip_addresses: string[];
  not_before: number;
  not_after: number;
  der: Buffer;
  revoked_at: number | null;
  revocation_reason: number | null;
}

export interface AuditRow {
  seq: number;
  at: number;
  actor: string;
  action: string;
  subject: string;
  /** A json column: node-postgres hands it over parsed. */
  details: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

/** The last audit record as seen inside the current write transaction. */
export interface AuditTail {
  seq: number;
  hash: string;
}

export const ISSUER_COLUMNS =
  "id, kind, parent_id, state, subject, cert_der, key_path, not_before, not_after, created_at";
export const CERT_COLUMNS =
  "serial, issuer_id, sequence, spiffe_id, dns_names, ip_addresses, not_before, not_after, der, revoked_at, revocation_reason";
export const AUDIT_COLUMNS = "seq, at, actor, action, subject, details, prev_hash, hash";

const INT8_OID = 20;

/**
 * bigint columns (timestamps, sequences, counts) as numbers instead of
 * node-postgres's default strings; every value we store is a safe integer.
 */
export function storeTypes(): pg.TypeOverrides {
  const types = new pg.TypeOverrides();
  types.setTypeParser(INT8_OID, (text: string) => {
    const n = Number(text);
    if (!Number.isSafeInteger(n)) throw new RangeError(`bigint ${text} does not fit a JavaScript number`);
    return n;
  });
  return types;
}

/**
 * Writes staged during a batch go to the server in one statement: a JSON
 * array per table, unpacked by json_to_recordset. One round trip for a
 * thousand certificates is what makes group commit pay over a network.
 */
export const FLUSH_SQL = `
  WITH certs AS (
    INSERT INTO certificates (${CERT_COLUMNS})
    SELECT serial, issuer_id, sequence, spiffe_id, dns_names, ip_addresses, not_before, not_after,
           decode(der, 'base64'), revoked_at, revocation_reason
    FROM json_to_recordset($1::json) AS r (
      serial text, issuer_id text, sequence bigint, spiffe_id text, dns_names text[], ip_addresses text[],
      not_before bigint, not_after bigint, der text, revoked_at bigint, revocation_reason integer)
  ), bindings AS (
    -- Foreign keys are checked at the end of the statement, when the certificates are in.
    INSERT INTO certificate_bindings (serial, entry_id, entry_hash, attestation_id, renews, requested_by)
    SELECT serial, entry_id, entry_hash, attestation_id, renews, requested_by
    FROM json_to_recordset($3::json) AS b (
      serial text, entry_id text, entry_hash text, attestation_id text, renews text, requested_by text)
  )
  INSERT INTO audit_log (${AUDIT_COLUMNS})
  SELECT seq, at, actor, action, subject, details::json, prev_hash, hash
  FROM json_to_recordset($2::json) AS a (
    seq bigint, at bigint, actor text, action text, subject text, details text, prev_hash text, hash text)`;

export function certificatesJson(certs: readonly CertificateRecord[]): string {
  return JSON.stringify(
    certs.map((c) => ({
      serial: c.serial,
      issuer_id: c.issuerId,
      sequence: c.sequence,
      spiffe_id: c.spiffeId,
      dns_names: c.dnsNames,
      ip_addresses: c.ipAddresses,
      not_before: c.notBefore.getTime(),
      not_after: c.notAfter.getTime(),
      der: c.der.toString("base64"),
      revoked_at: c.revokedAt === null ? null : c.revokedAt.getTime(),
      revocation_reason: c.revocationReason,
    })),
  );
}

export function bindingsJson(bindings: readonly { serial: string; binding: CertificateBinding }[]): string {
  return JSON.stringify(
    bindings.map(({ serial, binding: b }) => ({
      serial,
      entry_id: b.entryId,
      entry_hash: b.entryHash,
      attestation_id: b.attestationId,
      renews: b.renews,
      requested_by: b.requestedBy,
    })),
  );
}

/** Details travel as a string inside the JSON, so the stored text is exactly the canonical text hashed. */
export function auditJson(records: readonly AuditRecord[]): string {
  return JSON.stringify(
    records.map((r) => ({
      seq: r.seq,
      at: r.at.getTime(),
      actor: r.actor,
      action: r.action,
      subject: r.subject,
      details: canonicalJson(r.details),
      prev_hash: r.prevHash,
      hash: r.hash,
    })),
  );
}

export function issuerParams(i: IssuerRecord): unknown[] {
  return [
    i.id,
    i.kind,
    i.parentId,
    i.state,
    i.subject,
    i.certDer,
    i.keyPath,
    i.notBefore.getTime(),
    i.notAfter.getTime(),
    i.createdAt.getTime(),
  ];
}

export function issuerFromRow(r: IssuerRow): IssuerRecord {
  return {
    id: r.id,
    kind: r.kind,
    parentId: r.parent_id,
    state: r.state,
    subject: r.subject,
    certDer: r.cert_der,
    keyPath: r.key_path,
    notBefore: new Date(r.not_before),
    notAfter: new Date(r.not_after),
    createdAt: new Date(r.created_at),
  };
}

export function certificateFromRow(r: CertificateRow): CertificateRecord {
  return {
    serial: r.serial,
    issuerId: r.issuer_id,
    sequence: r.sequence,
    spiffeId: r.spiffe_id,
    dnsNames: r.dns_names,
    ipAddresses: r.ip_addresses,
    notBefore: new Date(r.not_before),
    notAfter: new Date(r.not_after),
    der: r.der,
    revokedAt: r.revoked_at === null ? null : new Date(r.revoked_at),
    revocationReason: r.revocation_reason,
  };
}

export function auditFromRow(r: AuditRow): AuditRecord {
  return {
    seq: r.seq,
    at: new Date(r.at),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    details: r.details,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/**
 * The SQLSTATE of a server error, duck-typed like sqliteCode (jest loads pg
 * once per test realm); `severity` tells it from a Node socket error's code.
 */
export function pgCode(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null || !("severity" in err)) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * Errors that belong to one write (bad input, a constraint, a refusal of
 * ours) rather than to the transaction (connection, deadlock, shutdown).
 */
export function isWriteError(err: unknown): boolean {
  const code = pgCode(err);
  if (code !== undefined) return code.startsWith("22") || code.startsWith("23");
  const errno = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  // Node socket errors (ECONNRESET, …) carry a string code; our own checks and StintErrors are the write's.
  return err instanceof StintError || typeof errno !== "string";
}

/** The store's own error for a violation of a named constraint; any other error is returned as it is. */
export function mapConstraint(err: unknown, mapping: Partial<Record<string, [ErrorCode, string]>>): unknown {
  const constraint =
    typeof err === "object" && err !== null ? (err as { constraint?: unknown }).constraint : undefined;
  const mapped =
    pgCode(err)?.startsWith("23") && typeof constraint === "string" ? mapping[constraint] : undefined;
  return mapped === undefined ? err : new StintError(mapped[0], mapped[1], { cause: err });
}
