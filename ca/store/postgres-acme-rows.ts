import type {
  AccountRecord,
  AttestationRecord,
  AuthorizationRecord,
  EntryRecord,
  Identifier,
  JoinTokenRecord,
  OrderRecord,
} from "../store-acme";
import { challengesFromJson, challengesJson, jsonOrNull } from "./acme-common";

/**
 * How ACME state maps to PostgreSQL rows, as in postgres-rows.ts: dates as
 * bigint milliseconds, string lists as text[], objects as json. node-postgres
 * hands json columns over parsed; values for them are sent as JSON text,
 * since it would turn a JavaScript array into a PostgreSQL array.
 */

export interface AccountRow {
  id: string;
  thumbprint: string;
  jwk: Record<string, unknown>;
  status: AccountRecord["status"];
  contact: string[];
  created_at: number;
}

export interface OrderRow {
  id: string;
  account_id: string;
  status: OrderRecord["status"];
  identifiers: Identifier[];
  authorization_ids: string[];
  expires: number;
  certificate_serial: string | null;
  replaces: string | null;
  error: Record<string, unknown> | null;
  created_at: number;
}

export interface AuthorizationRow {
  id: string;
  account_id: string;
  identifier: Identifier;
  status: AuthorizationRecord["status"];
  expires: number;
  challenges: unknown;
  entry_id: string | null;
  selectors: string[];
  attestation_id: string | null;
}

export interface AttestationRow {
  id: string;
  at: number;
  account_id: string;
  authorization_id: string;
  method: string;
  spiffe_id: string;
  selectors: string[];
  evidence: string;
  entry_id: string;
  entry_selectors: string[];
  entry_hash: string;
}

export interface EntryRow {
  id: string;
  spiffe_id: string;
  selectors: string[];
  dns_names: string[];
  ttl_ms: number | null;
  created_at: number;
  parent: string | null;
}

export function accountFromRow(r: AccountRow): AccountRecord {
  return {
    id: r.id,
    thumbprint: r.thumbprint,
    jwk: r.jwk,
    status: r.status,
    contact: r.contact,
    createdAt: new Date(r.created_at),
  };
}

export function orderFromRow(r: OrderRow): OrderRecord {
  return {
    id: r.id,
    accountId: r.account_id,
    status: r.status,
    identifiers: r.identifiers,
    authorizationIds: r.authorization_ids,
    expires: new Date(r.expires),
    certificateSerial: r.certificate_serial,
    replaces: r.replaces,
    error: r.error,
    createdAt: new Date(r.created_at),
  };
}

export function authorizationFromRow(r: AuthorizationRow): AuthorizationRecord {
  return {
    id: r.id,
    accountId: r.account_id,
    identifier: r.identifier,
    status: r.status,
    expires: new Date(r.expires),
    challenges: challengesFromJson(r.challenges),
    entryId: r.entry_id,
    selectors: r.selectors,
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
    selectors: r.selectors,
    evidence: r.evidence,
    entryId: r.entry_id,
    entrySelectors: r.entry_selectors,
    entryHash: r.entry_hash,
  };
}

export function entryFromRow(r: EntryRow): EntryRecord {
  return {
    id: r.id,
    spiffeId: r.spiffe_id,
    selectors: r.selectors,
    dnsNames: r.dns_names,
    ttlMs: r.ttl_ms,
    createdAt: new Date(r.created_at),
    // Only when set, so an ordinary entry reads back exactly as it was written.
    ...(r.parent !== null && { parent: r.parent }),
  };
}

/** Parameters in ACCOUNT_COLUMNS order, and likewise below. */
export function accountParams(a: AccountRecord): unknown[] {
  return [a.id, a.thumbprint, JSON.stringify(a.jwk), a.status, a.contact, a.createdAt.getTime()];
}

export function orderParams(o: OrderRecord): unknown[] {
  return [
    o.id,
    o.accountId,
    o.status,
    JSON.stringify(o.identifiers),
    o.authorizationIds,
    o.expires.getTime(),
    o.certificateSerial,
    o.replaces,
    jsonOrNull(o.error),
    o.createdAt.getTime(),
  ];
}

export function authorizationParams(a: AuthorizationRecord): unknown[] {
  return [
    a.id,
    a.accountId,
    JSON.stringify(a.identifier),
    a.status,
    a.expires.getTime(),
    challengesJson(a.challenges),
    a.entryId,
    a.selectors,
    a.attestationId,
  ];
}

export function attestationParams(a: AttestationRecord): unknown[] {
  return [
    a.id,
    a.at.getTime(),
    a.accountId,
    a.authorizationId,
    a.method,
    a.spiffeId,
    a.selectors,
    a.evidence,
    a.entryId,
    a.entrySelectors,
    a.entryHash,
  ];
}

export function entryParams(e: EntryRecord): unknown[] {
  return [e.id, e.spiffeId, e.selectors, e.dnsNames, e.ttlMs, e.createdAt.getTime(), e.parent ?? null];
}

export function joinTokenParams(t: JoinTokenRecord): unknown[] {
  return [
    t.id,
    t.hash,
    t.spiffeId,
    t.expiresAt.getTime(),
    t.usedAt === null ? null : t.usedAt.getTime(),
    t.createdAt.getTime(),
  ];
}

/** `$1, $2, …, $n`, for an INSERT of n columns. */
export function placeholders(n: number): string {
  return Array.from({ length: n }, (_, i) => `$${i + 1}`).join(", ");
}

export type ColumnValues = [column: string, value: unknown][];

/**
 * Takes the token in one statement. When the UPDATE matches nothing, the
 * SELECT says why; it reads the statement's snapshot, from before a
 * concurrent call that took the token first (see refusedToken).
 */
export const CONSUME_JOIN_TOKEN_SQL = `
  WITH taken AS (
    UPDATE join_tokens SET used_at = $2
    WHERE hash = $1 AND used_at IS NULL AND expires_at > $2
    RETURNING id, spiffe_id
  )
  SELECT true AS taken, id, spiffe_id, NULL::bigint AS used_at, NULL::bigint AS expires_at FROM taken
  UNION ALL
  SELECT false, id, spiffe_id, used_at, expires_at FROM join_tokens
  WHERE hash = $1 AND NOT EXISTS (SELECT 1 FROM taken)`;

export interface ConsumeRow {
  taken: boolean;
  id: string;
  spiffe_id: string;
  used_at: number | null;
  expires_at: number | null;
}
