import type Database from "better-sqlite3";
import type {
  AccountRecord,
  AttestationRecord,
  AuthorizationRecord,
  EntryRecord,
  Identifier,
  JoinTokenRecord,
  OrderRecord,
} from "../store-acme";
import {
  ACCOUNT_COLUMNS,
  ATTESTATION_COLUMNS,
  AUTHORIZATION_COLUMNS,
  challengesFromJson,
  challengesJson,
  ENTRY_COLUMNS,
  JOIN_TOKEN_COLUMNS,
  jsonOrNull,
  ORDER_COLUMNS,
} from "./acme-common";

/**
 * How ACME state maps to SQLite rows, as in sqlite-rows.ts: dates as integer
 * milliseconds, lists and objects as JSON text.
 */

export interface AccountRow {
  id: string;
  thumbprint: string;
  jwk: string;
  status: AccountRecord["status"];
  contact: string;
  created_at: number;
}

export interface OrderRow {
  id: string;
  account_id: string;
  status: OrderRecord["status"];
  identifiers: string;
  authorization_ids: string;
  expires: number;
  certificate_serial: string | null;
  replaces: string | null;
  error: string | null;
  created_at: number;
}

export interface AuthorizationRow {
  id: string;
  account_id: string;
  identifier: string;
  status: AuthorizationRecord["status"];
  expires: number;
  challenges: string;
  entry_id: string | null;
  selectors: string;
  attestation_id: string | null;
}

export interface AttestationRow {
  id: string;
  at: number;
  account_id: string;
  authorization_id: string;
  method: string;
  spiffe_id: string;
  selectors: string;
  evidence: string;
  entry_id: string;
  entry_selectors: string;
  entry_hash: string;
}

export interface EntryRow {
  id: string;
  spiffe_id: string;
  selectors: string;
  dns_names: string;
  ttl_ms: number | null;
  created_at: number;
  parent: string | null;
}

export function accountFromRow(r: AccountRow): AccountRecord {
  return {
    id: r.id,
    thumbprint: r.thumbprint,
    jwk: JSON.parse(r.jwk) as Record<string, unknown>,
    status: r.status,
    contact: JSON.parse(r.contact) as string[],
    createdAt: new Date(r.created_at),
  };
}

export function orderFromRow(r: OrderRow): OrderRecord {
  return {
    id: r.id,
    accountId: r.account_id,
    status: r.status,
    identifiers: JSON.parse(r.identifiers) as Identifier[],
    authorizationIds: JSON.parse(r.authorization_ids) as string[],
    expires: new Date(r.expires),
    certificateSerial: r.certificate_serial,
    replaces: r.replaces,
    error: r.error === null ? null : (JSON.parse(r.error) as Record<string, unknown>),
    createdAt: new Date(r.created_at),
  };
}

export function authorizationFromRow(r: AuthorizationRow): AuthorizationRecord {
  return {
    id: r.id,
    accountId: r.account_id,
    identifier: JSON.parse(r.identifier) as Identifier,
    status: r.status,
    expires: new Date(r.expires),
    challenges: challengesFromJson(JSON.parse(r.challenges)),
    entryId: r.entry_id,
    selectors: JSON.parse(r.selectors) as string[],
    attestationId: r.attestation_id,
  };
}

export function attestationFromRow(r: AttestationRow): AttestationRecord {
  return {
    id: r.id,
    at: new Date(r.at),
    accountId: r.account_id,
    authorizationId: r.authorization_id,
    method: r.method,
    spiffeId: r.spiffe_id,
    selectors: JSON.parse(r.selectors) as string[],
    evidence: r.evidence,
    entryId: r.entry_id,
    entrySelectors: JSON.parse(r.entry_selectors) as string[],
    entryHash: r.entry_hash,
  };
}

export function entryFromRow(r: EntryRow): EntryRecord {
  return {
    id: r.id,
    spiffeId: r.spiffe_id,
    selectors: JSON.parse(r.selectors) as string[],
    dnsNames: JSON.parse(r.dns_names) as string[],
    ttlMs: r.ttl_ms,
    createdAt: new Date(r.created_at),
    // Only when set, so an ordinary entry reads back exactly as it was written.
    ...(r.parent !== null && { parent: r.parent }),
  };
}

export function accountParams(a: AccountRecord) {
  return {
    id: a.id,
    thumbprint: a.thumbprint,
    jwk: JSON.stringify(a.jwk),
    status: a.status,
    contact: JSON.stringify(a.contact),
    createdAt: a.createdAt.getTime(),
  };
}

export function orderParams(o: OrderRecord) {
  return {
    id: o.id,
    accountId: o.accountId,
    status: o.status,
    identifiers: JSON.stringify(o.identifiers),
    authorizationIds: JSON.stringify(o.authorizationIds),
    expires: o.expires.getTime(),
    certificateSerial: o.certificateSerial,
    replaces: o.replaces,
    error: jsonOrNull(o.error),
    createdAt: o.createdAt.getTime(),
  };
}

export function authorizationParams(a: AuthorizationRecord) {
  return {
    id: a.id,
    accountId: a.accountId,
    identifier: JSON.stringify(a.identifier),
    status: a.status,
    expires: a.expires.getTime(),
    challenges: challengesJson(a.challenges),
    entryId: a.entryId,
    selectors: JSON.stringify(a.selectors),
    attestationId: a.attestationId,
  };
}

export function attestationParams(a: AttestationRecord) {
  return {
    id: a.id,
    at: a.at.getTime(),
    accountId: a.accountId,
    authorizationId: a.authorizationId,
    method: a.method,
    spiffeId: a.spiffeId,
    selectors: JSON.stringify(a.selectors),
    evidence: a.evidence,
    entryId: a.entryId,
    entrySelectors: JSON.stringify(a.entrySelectors),
    entryHash: a.entryHash,
  };
}

export function entryParams(e: EntryRecord) {
  return {
    id: e.id,
    spiffeId: e.spiffeId,
    selectors: JSON.stringify(e.selectors),
    dnsNames: JSON.stringify(e.dnsNames),
    ttlMs: e.ttlMs,
    createdAt: e.createdAt.getTime(),
    parent: e.parent ?? null,
  };
}

export function joinTokenParams(t: JoinTokenRecord) {
  return {
    id: t.id,
    hash: t.hash,
    spiffeId: t.spiffeId,
    expiresAt: t.expiresAt.getTime(),
    usedAt: t.usedAt === null ? null : t.usedAt.getTime(),
    createdAt: t.createdAt.getTime(),
  };
}

export type ColumnValues = [column: string, value: unknown][];

export type AcmeStatements = ReturnType<typeof prepareAcmeStatements>;

export function prepareAcmeStatements(db: Database.Database) {
  return {
    insertAccount: db.prepare<ReturnType<typeof accountParams>, AccountRow>(
      `INSERT INTO accounts (${ACCOUNT_COLUMNS}) VALUES (@id, @thumbprint, @jwk, @status, @contact, @createdAt)
       ON CONFLICT (thumbprint) DO NOTHING RETURNING ${ACCOUNT_COLUMNS}`,
    ),
    getAccount: db.prepare<[string], AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE id = ?`),
    getAccountByThumbprint: db.prepare<[string], AccountRow>(
      `SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE thumbprint = ?`,
    ),
    updateAccount: db.prepare<[string | null, string | null, string], AccountRow>(
      `UPDATE accounts SET status = coalesce(?, status), contact = coalesce(?, contact) WHERE id = ?
       RETURNING ${ACCOUNT_COLUMNS}`,
    ),
    changeAccountKey: db.prepare<[string, string, string, string], AccountRow>(
      `UPDATE accounts SET jwk = ?, thumbprint = ? WHERE id = ? AND thumbprint = ? RETURNING ${ACCOUNT_COLUMNS}`,
    ),
    accountExists: db.prepare<[string], { found: number }>("SELECT 1 AS found FROM accounts WHERE id = ?"),

    insertOrder: db.prepare<ReturnType<typeof orderParams>>(
      `INSERT INTO orders (${ORDER_COLUMNS}) VALUES (@id, @accountId, @status, @identifiers, @authorizationIds,
       @expires, @certificateSerial, @replaces, @error, @createdAt)`,
    ),
    getOrder: db.prepare<[string], OrderRow>(`SELECT ${ORDER_COLUMNS} FROM orders WHERE id = ?`),
    orderStatus: db.prepare<[string], { status: string }>("SELECT status FROM orders WHERE id = ?"),
    // The cursor is an order id of the same account; (created_at, id) orders ties the same way on both backends.
    listAccountOrders: db.prepare<[string, string | null, string | null, number], OrderRow>(
      `SELECT ${ORDER_COLUMNS} FROM orders
       WHERE account_id = ? AND status <> 'invalid'
         AND (? IS NULL OR (created_at, id) > (SELECT created_at, id FROM orders WHERE id = ?))
       ORDER BY created_at, id LIMIT ?`,
    ),
    accountOfCertificate: db.prepare<[string], { account_id: string }>(
      "SELECT account_id FROM orders WHERE certificate_serial = ?",
    ),
    insertAuthorization: db.prepare<ReturnType<typeof authorizationParams>>(
      `INSERT INTO authorizations (${AUTHORIZATION_COLUMNS}) VALUES (@id, @accountId, @identifier, @status,
       @expires, @challenges, @entryId, @selectors, @attestationId)`,
    ),
    getAuthorization: db.prepare<[string], AuthorizationRow>(
      `SELECT ${AUTHORIZATION_COLUMNS} FROM authorizations WHERE id = ?`,
    ),
    authorizationStatus: db.prepare<[string], { status: string }>(
      "SELECT status FROM authorizations WHERE id = ?",
    ),
    insertAttestation: db.prepare<ReturnType<typeof attestationParams>>(
      `INSERT INTO attestations (${ATTESTATION_COLUMNS}) VALUES (@id, @at, @accountId, @authorizationId, @method,
       @spiffeId, @selectors, @evidence, @entryId, @entrySelectors, @entryHash)`,
    ),
    getAttestation: db.prepare<[string], AttestationRow>(
      `SELECT ${ATTESTATION_COLUMNS} FROM attestations WHERE id = ?`,
    ),

    insertEntry: db.prepare<ReturnType<typeof entryParams>>(
      `INSERT INTO entries (${ENTRY_COLUMNS}) VALUES (@id, @spiffeId, @selectors, @dnsNames, @ttlMs, @createdAt, @parent)`,
    ),
    getEntry: db.prepare<[string], EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM entries WHERE id = ?`),
    listEntries: db.prepare<[], EntryRow>(
      `SELECT ${ENTRY_COLUMNS} FROM entries ORDER BY spiffe_id, created_at, id`,
    ),
    listEntriesOf: db.prepare<[string], EntryRow>(
      `SELECT ${ENTRY_COLUMNS} FROM entries WHERE spiffe_id = ? ORDER BY spiffe_id, created_at, id`,
    ),
    listEntriesByParent: db.prepare<[string], EntryRow>(
      `SELECT ${ENTRY_COLUMNS} FROM entries WHERE parent = ? ORDER BY spiffe_id, created_at, id`,
    ),
    deleteEntry: db.prepare<[string]>("DELETE FROM entries WHERE id = ?"),

    insertJoinToken: db.prepare<ReturnType<typeof joinTokenParams>>(
      `INSERT INTO join_tokens (${JOIN_TOKEN_COLUMNS}) VALUES (@id, @hash, @spiffeId, @expiresAt, @usedAt, @createdAt)`,
    ),
    takeJoinToken: db.prepare<{ hash: string; now: number }, { id: string; spiffe_id: string }>(
      `UPDATE join_tokens SET used_at = @now WHERE hash = @hash AND used_at IS NULL AND expires_at > @now
       RETURNING id, spiffe_id`,
    ),
    joinTokenState: db.prepare<
      [string],
      { id: string; spiffe_id: string; used_at: number | null; expires_at: number }
    >("SELECT id, spiffe_id, used_at, expires_at FROM join_tokens WHERE hash = ?"),
  };
}
