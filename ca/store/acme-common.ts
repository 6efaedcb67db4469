import { StintError } from "../../common/errors";
import { canonicalJson } from "../audit";
import { entryHash } from "../entries";
import type { AuditEvent, CertificateBinding } from "../store";
import type {
  AttestationRecord,
  AuthorizationRecord,
  ChallengeRecord,
  EntryRecord,
  JoinTokenRecord,
  JoinTokenUse,
  OrderRecord,
} from "../store-acme";

/**
 * What both backends share for ACME state: how challenges (which carry a
 * date) are kept as JSON, and the rules that must not differ between them.
 */

interface StoredChallenge extends Omit<ChallengeRecord, "validated"> {
  /** Milliseconds, like every other time in the store. */
  validated: number | null;
}

export function challengesJson(challenges: readonly ChallengeRecord[]): string {
  return JSON.stringify(
    challenges.map(
      (c): StoredChallenge => ({
        id: c.id,
        type: c.type,
        token: c.token,
        status: c.status,
        validated: c.validated === null ? null : c.validated.getTime(),
        error: c.error,
      }),
    ),
  );
}

/** `parsed` is the column's JSON already parsed. */
export function challengesFromJson(parsed: unknown): ChallengeRecord[] {
  return (parsed as StoredChallenge[]).map((c) => ({
    ...c,
    validated: c.validated === null ? null : new Date(c.validated),
  }));
}

/**
 * Why a token that was not taken was refused. A token that looks unused and
 * unexpired can only mean another call took it after this one looked.
 */
export function refusedToken(usedAt: number | null, expiresAt: number, now: Date): "used" | "expired" {
  return usedAt === null && expiresAt <= now.getTime() ? "expired" : "used";
}

/** A token's state as findJoinToken reports it. */
export function tokenState(usedAt: number | null, expiresAt: number, now: Date): JoinTokenUse["outcome"] {
  return usedAt === null && expiresAt > now.getTime() ? "usable" : refusedToken(usedAt, expiresAt, now);
}

/** The audit record of a token just taken, checked like the one that created it. */
export function spentAudit(
  spend: (token: { id: string; spiffeId: string }) => AuditEvent,
  token: { id: string; spiffeId: string },
  hash: string,
): AuditEvent {
  const event = spend(token);
  if (canonicalJson(event).includes(hash)) {
    throw new RangeError(`the audit event for spending join token ${token.id} must not carry its hash`);
  }
  return event;
}

/** Why recordAttestation could not take its join token: nothing was written. */
export function tokenNotTaken(use: JoinTokenUse | null): StintError {
  const why =
    use === null
      ? "is not known to this CA"
      : use.outcome === "expired"
        ? "has expired; ask an administrator for a new one"
        : "has already been used; join tokens work only once";
  return new StintError("ERR_ATTESTATION", `join token ${use ? `${use.id} ` : ""}${why}`);
}

/** The hash is what consumeJoinToken takes, so it must never reach the audit log, which admins export. */
export function checkTokenAudit(token: JoinTokenRecord, audit: AuditEvent): void {
  if (canonicalJson(audit).includes(token.hash)) {
    throw new RangeError(`the audit event for join token ${token.id} must not carry its hash`);
  }
}

/** Column lists of the ACME tables, in the order both backends read and write them. */
export const ACCOUNT_COLUMNS = "id, thumbprint, jwk, status, contact, created_at";
export const ORDER_COLUMNS =
  "id, account_id, status, identifiers, authorization_ids, expires, certificate_serial, replaces, error, created_at";
export const AUTHORIZATION_COLUMNS =
  "id, account_id, identifier, status, expires, challenges, entry_id, selectors, attestation_id";
export const ATTESTATION_COLUMNS =
  "id, at, account_id, authorization_id, method, spiffe_id, selectors, evidence, entry_id, entry_selectors, entry_hash";
export const BINDING_COLUMNS = "serial, entry_id, entry_hash, attestation_id, renews, requested_by";

/** A certificate_bindings row as both backends read it (BINDING_COLUMNS). */
export interface BindingRow {
  serial: string;
  entry_id: string;
  entry_hash: string;
  attestation_id: string | null;
  renews: string | null;
  requested_by: string | null;
}

export function bindingFromRow(r: BindingRow): CertificateBinding {
  return {
    entryId: r.entry_id,
    entryHash: r.entry_hash,
    attestationId: r.attestation_id,
    renews: r.renews,
    requestedBy: r.requested_by,
  };
}
export const ENTRY_COLUMNS = "id, spiffe_id, selectors, dns_names, ttl_ms, created_at, parent";
export const JOIN_TOKEN_COLUMNS = "id, hash, spiffe_id, expires_at, used_at, created_at";

/**
 * The newest first issuance under attestation $1 that no order holds (both
 * backends; SQLite's caller swaps the placeholder). The newest, because a
 * finalize retried after a fault of ours may have issued more than once.
 */
export const UNCLAIMED_CERTIFICATE_SQL = `
  SELECT b.serial FROM certificate_bindings AS b JOIN certificates AS c ON c.serial = b.serial
  WHERE b.attestation_id = $1 AND b.renews IS NULL
    AND NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.certificate_serial = b.serial)
  ORDER BY c.not_before DESC, b.serial DESC LIMIT 1`;

/** JSON text for a nullable JSON column. */
export function jsonOrNull(value: unknown): string | null {
  return value === null ? null : JSON.stringify(value);
}

/** A patch as [column, stored value] pairs; keys left undefined are not touched. */
export type ColumnValues = [column: string, value: unknown][];

export function orderPatchColumns(
  patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
): ColumnValues {
  const columns: ColumnValues = [];
  if (patch.status !== undefined) columns.push(["status", patch.status]);
  if (patch.certificateSerial !== undefined) columns.push(["certificate_serial", patch.certificateSerial]);
  if (patch.error !== undefined) columns.push(["error", jsonOrNull(patch.error)]);
  return columns;
}

/** `list` stores a list of strings as the backend keeps it (JSON text in SQLite, an array in PostgreSQL). */
export function authorizationPatchColumns(
  patch: Partial<
    Pick<AuthorizationRecord, "status" | "challenges" | "entryId" | "selectors" | "attestationId">
  >,
  list: (values: string[]) => unknown,
): ColumnValues {
  const columns: ColumnValues = [];
  if (patch.status !== undefined) columns.push(["status", patch.status]);
  if (patch.challenges !== undefined) columns.push(["challenges", challengesJson(patch.challenges)]);
  if (patch.entryId !== undefined) columns.push(["entry_id", patch.entryId]);
  if (patch.selectors !== undefined) columns.push(["selectors", list(patch.selectors)]);
  if (patch.attestationId !== undefined) columns.push(["attestation_id", patch.attestationId]);
  return columns;
}

/** The patch recordAttestation applies: the authorization becomes valid with its attestation. */
export function attestedPatch(attestation: AttestationRecord, challenges: ChallengeRecord[]) {
  return {
    status: "valid",
    challenges,
    entryId: attestation.entryId,
    selectors: attestation.selectors,
    attestationId: attestation.id,
  } as const;
}

/** The binding's entry must exist and hash as it did when the certificate was prepared. */
export function checkBoundEntry(binding: CertificateBinding, entry: EntryRecord | null): void {
  const which = `registration entry ${binding.entryId}`;
  if (entry === null) {
    throw new StintError("ERR_UNAUTHORIZED", `${which} was deleted while the certificate was being issued`);
  }
  if (entryHash(entry) !== binding.entryHash) {
    throw new StintError("ERR_UNAUTHORIZED", `${which} changed while the certificate was being issued`);
  }
}
