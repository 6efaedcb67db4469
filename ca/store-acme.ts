import type { AuditEvent } from "./store";

/**
 * Storage for enrollment state: ACME accounts, orders and authorizations,
 * registration entries and join tokens. Declared apart from the issuance
 * `Store` so each reads on its own; every backend implements both.
 *
 * State changes that race (an order finalized twice, a join token used
 * twice, an authorization validated while it expires) are compare-and-set:
 * the caller names the status it expects and the store refuses with
 * ERR_STORE_CONFLICT when another request got there first.
 */

export type AccountStatus = "valid" | "deactivated" | "revoked";

export interface AccountRecord {
  id: string;
  /** RFC 7638 thumbprint of the current key; unique across accounts. */
  thumbprint: string;
  /** The public JWK (only public members). */
  jwk: Record<string, unknown>;
  status: AccountStatus;
  contact: string[];
  createdAt: Date;
}

export type IdentifierType = "spiffe" | "dns";
export interface Identifier {
  type: IdentifierType;
  value: string;
}

export type OrderStatus = "pending" | "ready" | "processing" | "valid" | "invalid";

export interface OrderRecord {
  id: string;
  accountId: string;
  status: OrderStatus;
  identifiers: Identifier[];
  authorizationIds: string[];
  expires: Date;
  /** Serial of the issued certificate once valid. */
  certificateSerial: string | null;
  /** ARI: serial of the certificate this order replaces (RFC 9773 "replaces"). */
  replaces: string | null;
  /** Problem document when invalid. */
  error: Record<string, unknown> | null;
  createdAt: Date;
}

export type AuthorizationStatus = "pending" | "valid" | "invalid" | "deactivated" | "expired" | "revoked";
export type ChallengeStatus = "pending" | "processing" | "valid" | "invalid";

export interface ChallengeRecord {
  id: string;
  type: "attest-01" | "http-01";
  token: string;
  status: ChallengeStatus;
  validated: Date | null;
  error: Record<string, unknown> | null;
}

export interface AuthorizationRecord {
  id: string;
  accountId: string;
  identifier: Identifier;
  status: AuthorizationStatus;
  expires: Date;
  challenges: ChallengeRecord[];
  /** For spiffe identifiers: the registration entry the attestation matched. */
  entryId: string | null;
  /** Selectors the attestation produced (never the evidence itself). */
  selectors: string[];
  /** The attestation that made it valid (AttestationRecord.id); null for dns identifiers. */
  attestationId: string | null;
}

/**
 * One successful attestation (schema 4), written with its `attest.ok` audit
 * record and never changed: what certificates issued under it point to.
 */
export interface AttestationRecord {
  id: string;
  at: Date;
  accountId: string;
  authorizationId: string;
  /** The attestor: join_token, k8s_sat, x509pop ("unknown" for those recovered by the schema-4 migration). */
  method: string;
  spiffeId: string;
  /** Selectors the evidence proved. */
  selectors: string[];
  /** A non-secret reference to the evidence (the join token's id, the service account, the certificate's fingerprint). */
  evidence: string;
  /** The entry that matched, with its selectors and entryHash() at that moment. */
  entryId: string;
  entrySelectors: string[];
  entryHash: string;
}

export interface EntryRecord {
  id: string;
  spiffeId: string;
  selectors: string[];
  dnsNames: string[];
  /** Certificate lifetime for this workload; null means the policy default. */
  ttlMs: number | null;
  createdAt: Date;
  /**
   * The node agent's SPIFFE ID (schema 6): only that agent may obtain this
   * entry's SVIDs, through the agent API (acme/agent-api.ts), never through
   * ACME orders. Null or absent: an ordinary entry.
   */
  parent?: string | null;
}

export interface JoinTokenRecord {
  id: string;
  /** Hex SHA-256 of the secret; the secret itself is never stored. */
  hash: string;
  spiffeId: string;
  expiresAt: Date;
  usedAt: Date | null;
  createdAt: Date;
}

/**
 * The token found by its hash: taken now (consumeJoinToken), still usable
 * (findJoinToken), or already used or expired (ids are not secret).
 */
export interface JoinTokenUse {
  outcome: "taken" | "usable" | "used" | "expired";
  id: string;
  spiffeId: string;
}

/** A join token recordAttestation takes in the transaction that makes its authorization valid. */
export interface JoinTokenSpend {
  hash: string;
  now: Date;
  /** The `token.spend` audit record, appended in that transaction too. */
  spend: (token: { id: string; spiffeId: string }) => AuditEvent;
}

export interface AcmeStateStore {
  /** Creates the account, or returns the existing one for the same thumbprint (newAccount is idempotent). */
  createAccount(
    account: AccountRecord,
    audit: AuditEvent,
  ): Promise<{ account: AccountRecord; created: boolean }>;
  getAccount(id: string): Promise<AccountRecord | null>;
  getAccountByThumbprint(thumbprint: string): Promise<AccountRecord | null>;
  updateAccount(
    id: string,
    patch: { status?: AccountStatus; contact?: string[] },
    audit: AuditEvent,
  ): Promise<AccountRecord>;
  /** keyChange: ERR_STORE_CONFLICT when the new key already belongs to an account. */
  changeAccountKey(
    id: string,
    oldThumbprint: string,
    jwk: Record<string, unknown>,
    thumbprint: string,
    audit: AuditEvent,
  ): Promise<AccountRecord>;

  /** Stores an order with its new authorizations in one transaction. */
  createOrder(order: OrderRecord, authorizations: AuthorizationRecord[]): Promise<void>;
  getOrder(id: string): Promise<OrderRecord | null>;
  /** Compare-and-set on status; ERR_STORE_CONFLICT when the order is no longer in `expect`. */
  updateOrder(
    id: string,
    expect: OrderStatus,
    patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
  ): Promise<OrderRecord>;
  /**
   * The account's orders that are not invalid, oldest first, after the order
   * `after` (an id from a previous page) and at most `limit` of them: the
   * account's orders list (RFC 8555 7.1.2.1).
   */
  listAccountOrders(accountId: string, page: { after?: string; limit: number }): Promise<OrderRecord[]>;
  /** Orders left "processing", oldest first, at most `limit`: what a crash in the middle of finalize strands. */
  listProcessingOrders(limit: number): Promise<OrderRecord[]>;
  /**
   * The serial of a certificate issued under this attestation (a first
   * issuance, not a renewal) that no order holds yet, or null: what a finalize
   * interrupted between issuing and marking its order valid leaves behind.
   */
  unclaimedCertificate(attestationId: string): Promise<string | null>;
  /** The account whose order produced this certificate (revokeCert by account), or null. */
  accountOfCertificate(serial: string): Promise<string | null>;
  getAuthorization(id: string): Promise<AuthorizationRecord | null>;
  /** Compare-and-set on status, replacing challenges/entry/selectors as given. */
  updateAuthorization(
    id: string,
    expect: AuthorizationStatus,
    patch: Partial<Pick<AuthorizationRecord, "status" | "challenges" | "entryId" | "selectors">>,
  ): Promise<AuthorizationRecord>;
  /**
   * Records a successful attestation and makes its authorization valid with
   * it (entry, selectors, attestation id, `challenges`), in one transaction
   * with the audit record; compare-and-set from `expect` as updateAuthorization.
   * With `token`, the join token is taken in the same transaction, so a crash
   * never leaves a token spent for an authorization still pending; when it can
   * no longer be taken (used meanwhile, expired), nothing is written and
   * ERR_ATTESTATION says why.
   */
  recordAttestation(
    attestation: AttestationRecord,
    expect: AuthorizationStatus,
    challenges: ChallengeRecord[],
    audit: AuditEvent,
    token?: JoinTokenSpend,
  ): Promise<AuthorizationRecord>;
  getAttestation(id: string): Promise<AttestationRecord | null>;

  createEntry(entry: EntryRecord, audit: AuditEvent): Promise<void>;
  getEntry(id: string): Promise<EntryRecord | null>;
  /** Entries in (spiffeId, createdAt, id) order; `parent`: only those parented to this agent ID. */
  listEntries(filter: { spiffeId?: string; parent?: string }): Promise<EntryRecord[]>;
  /** ERR_NOT_FOUND when there is no such entry. */
  deleteEntry(id: string, audit: AuditEvent): Promise<void>;

  createJoinToken(token: JoinTokenRecord, audit: AuditEvent): Promise<void>;
  /** The token with this hash as of `now` (usable, used, expired), without taking it; null when unknown. */
  findJoinToken(hash: string, now: Date): Promise<JoinTokenUse | null>;
  /**
   * Marks the token with this hash used, atomically: of two concurrent calls
   * exactly one gets outcome "taken"; the other gets "used". When it takes the
   * token it appends `spend(token)` to the audit log in the same transaction,
   * so no token is ever spent unrecorded. Null when no token has this hash.
   */
  consumeJoinToken(
    hash: string,
    now: Date,
    spend: (token: { id: string; spiffeId: string }) => AuditEvent,
  ): Promise<JoinTokenUse | null>;
}
