import type Database from "better-sqlite3";
import { type ErrorCode, StintError } from "../../common/errors";
import { canonicalJson } from "../audit";
import type { AuditRecord, CertificateBinding, CertificateRecord, IssuerRecord, IssuerState } from "../store";
import { BINDING_COLUMNS, type BindingRow, ENTRY_COLUMNS } from "./acme-common";
import type { EntryRow } from "./sqlite-acme-rows";

/**
 * How records map to SQLite rows: dates as integer milliseconds, DER as
 * BLOB, name lists as JSON text. Every statement the store runs is prepared
 * here, once per connection.
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
  dns_names: string;
  ip_addresses: string;
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
  details: string;
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

/** Duck-typed: better-sqlite3 binds SqliteError to the first realm that loads it (jest runs several). */
export function sqliteCode(err: unknown): string | undefined {
  const code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === "string" && code.startsWith("SQLITE_") ? code : undefined;
}

/** Turns a constraint failure into the store's own error; anything else passes through. */
export function rethrowConstraint(
  err: unknown,
  mapping: Partial<Record<string, [ErrorCode, string]>>,
): never {
  const code = sqliteCode(err);
  const mapped = code === undefined ? undefined : mapping[code];
  if (mapped === undefined) throw err;
  throw new StintError(mapped[0], mapped[1], { cause: err });
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
    dnsNames: JSON.parse(r.dns_names) as string[],
    ipAddresses: JSON.parse(r.ip_addresses) as string[],
    notBefore: new Date(r.not_before),
    notAfter: new Date(r.not_after),
    der: r.der,
    revokedAt: r.revoked_at === null ? null : new Date(r.revoked_at),
    revocationReason: r.revocation_reason,
  };
}

export function bindingParams(serial: string, b: CertificateBinding) {
  return {
    serial,
    entryId: b.entryId,
    entryHash: b.entryHash,
    attestationId: b.attestationId,
    renews: b.renews,
    requestedBy: b.requestedBy,
  };
}

export function auditFromRow(r: AuditRow): AuditRecord {
  return {
    seq: r.seq,
    at: new Date(r.at),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    details: JSON.parse(r.details) as Record<string, unknown>,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

export function issuerParams(i: IssuerRecord) {
  return {
    id: i.id,
    kind: i.kind,
    parentId: i.parentId,
    state: i.state,
    subject: i.subject,
    certDer: i.certDer,
    keyPath: i.keyPath,
    notBefore: i.notBefore.getTime(),
    notAfter: i.notAfter.getTime(),
    createdAt: i.createdAt.getTime(),
  };
}

export function certificateParams(c: CertificateRecord) {
  return {
    serial: c.serial,
    issuerId: c.issuerId,
    sequence: c.sequence,
    spiffeId: c.spiffeId,
    dnsNames: JSON.stringify(c.dnsNames),
    ipAddresses: JSON.stringify(c.ipAddresses),
    notBefore: c.notBefore.getTime(),
    notAfter: c.notAfter.getTime(),
    der: c.der,
    revokedAt: c.revokedAt === null ? null : c.revokedAt.getTime(),
    revocationReason: c.revocationReason,
  };
}

/** Details are stored in canonical form, so the text in the table is exactly what was hashed. */
export function auditParams(r: AuditRecord) {
  return {
    seq: r.seq,
    at: r.at.getTime(),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    details: canonicalJson(r.details),
    prevHash: r.prevHash,
    hash: r.hash,
  };
}

export type Statements = ReturnType<typeof prepareStatements>;

export function prepareStatements(db: Database.Database) {
  return {
    getMeta: db.prepare<[string], { value: string }>("SELECT value FROM meta WHERE key = ?"),
    setMeta: db.prepare<{ key: string; value: string }>(
      "INSERT INTO meta (key, value) VALUES (@key, @value) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    ),
    insertIssuer: db.prepare<ReturnType<typeof issuerParams>>(
      `INSERT INTO issuers (${ISSUER_COLUMNS}) VALUES (@id, @kind, @parentId, @state, @subject, @certDer, @keyPath, @notBefore, @notAfter, @createdAt)`,
    ),
    listIssuers: db.prepare<[], IssuerRow>(`SELECT ${ISSUER_COLUMNS} FROM issuers ORDER BY created_at, id`),
    getIssuer: db.prepare<[string], IssuerRow>(`SELECT ${ISSUER_COLUMNS} FROM issuers WHERE id = ?`),
    setIssuerState: db.prepare<[IssuerState, string]>("UPDATE issuers SET state = ? WHERE id = ?"),
    reserve: db.prepare<[number, string, number], { first: number }>(
      "UPDATE issuers SET next_sequence = next_sequence + ? WHERE id = ? RETURNING next_sequence - ? AS first",
    ),
    insertCertificate: db.prepare<ReturnType<typeof certificateParams>>(
      `INSERT INTO certificates (${CERT_COLUMNS}) VALUES (@serial, @issuerId, @sequence, @spiffeId, @dnsNames, @ipAddresses, @notBefore, @notAfter, @der, @revokedAt, @revocationReason)`,
    ),
    getCertificate: db.prepare<[string], CertificateRow>(
      `SELECT ${CERT_COLUMNS} FROM certificates WHERE serial = ?`,
    ),
    certificateExists: db.prepare<[string], { found: number }>(
      "SELECT 1 AS found FROM certificates WHERE serial = ?",
    ),
    revoke: db.prepare<[number, number, string]>(
      "UPDATE certificates SET revoked_at = ?, revocation_reason = ? WHERE serial = ? AND revoked_at IS NULL",
    ),
    countIssued: db.prepare<[], { n: number }>("SELECT count(*) AS n FROM certificates"),
    countUnexpired: db.prepare<[number], { n: number }>(
      "SELECT count(*) AS n FROM certificates WHERE not_after > ?",
    ),
    // Scans the unexpired certificates once per feed build; the feed is rebuilt on revocations, not issuances.
    unexpiredWindows: db.prepare<[number], { issuer_id: string; lo: number; hi: number }>(
      "SELECT issuer_id, MIN(sequence) AS lo, MAX(sequence) + 1 AS hi FROM certificates WHERE not_after > ? GROUP BY issuer_id ORDER BY issuer_id",
    ),
    unexpiredRevoked: db.prepare<[number], { issuer_id: string; sequence: number }>(
      "SELECT issuer_id, sequence FROM certificates WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY issuer_id, sequence",
    ),
    countRevoked: db.prepare<[], { n: number }>(
      "SELECT count(*) AS n FROM certificates WHERE revoked_at IS NOT NULL",
    ),
    auditTail: db.prepare<[], AuditTail>("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"),
    insertAudit: db.prepare<ReturnType<typeof auditParams>>(
      `INSERT INTO audit_log (${AUDIT_COLUMNS}) VALUES (@seq, @at, @actor, @action, @subject, @details, @prevHash, @hash)`,
    ),
    listAudit: db.prepare<[number, number], AuditRow>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`,
    ),
  };
}

export type BindingStatements = ReturnType<typeof prepareBindingStatements>;

/** Apart from prepareStatements, which needs only the tables of schema 1. */
export function prepareBindingStatements(db: Database.Database) {
  return {
    insertBinding: db.prepare<ReturnType<typeof bindingParams>>(
      `INSERT INTO certificate_bindings (${BINDING_COLUMNS}) VALUES (@serial, @entryId, @entryHash, @attestationId, @renews, @requestedBy)`,
    ),
    getBinding: db.prepare<[string], BindingRow>(
      `SELECT ${BINDING_COLUMNS} FROM certificate_bindings WHERE serial = ?`,
    ),
    boundEntry: db.prepare<[string], EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM entries WHERE id = ?`),
  };
}
