/**
 * The storage interface the authority needs, declared here by its consumer.
 * Backends in ca/store/ implement it; nothing outside ca/store/ speaks SQL.
 *
 * Every method is async so a networked backend (PostgreSQL, for several CA
 * replicas) fits the same shape as the embedded SQLite one. A promise that
 * resolves means the write is durable (committed and synced).
 */

export type IssuerState = "prepared" | "active" | "retired" | "tainted";
export type IssuerKind = "root" | "intermediate";

export interface IssuerRecord {
  /** Stable short id: lowercase hex of the first 8 bytes of the subject key identifier. */
  id: string;
  kind: IssuerKind;
  /** Issuer that signed this one; null for a self-signed root. */
  parentId: string | null;
  state: IssuerState;
  /** Subject DN as text, for people. */
  subject: string;
  certDer: Buffer;
  /** Path of the encrypted private key, relative to the data directory; null when the key is offline. */
  keyPath: string | null;
  notBefore: Date;
  notAfter: Date;
  createdAt: Date;
}

export interface CertificateRecord {
  /** Lowercase hex of the serial number's content octets (see docs/serial-numbers.md). */
  serial: string;
  issuerId: string;
  /** The dense per-issuer index carried in the serial's low 64 bits. */
  sequence: number;
  spiffeId: string | null;
  dnsNames: string[];
  ipAddresses: string[];
  notBefore: Date;
  notAfter: Date;
  der: Buffer;
  revokedAt: Date | null;
  /** RFC 5280 CRLReason code; null while not revoked. */
  revocationReason: number | null;
}

/**
 * What a workload certificate was issued under (schema 4): the registration
 * entry and the attestation that proved it. Written with the certificate and
 * never changed, so "who attested what" does not depend on mutable rows.
 */
export interface CertificateBinding {
  entryId: string;
  /**
   * entryHash() (ca/entries.ts) of the entry as the issuer read it before
   * signing. The store re-reads the entry in the transaction that records the
   * certificate and refuses with ERR_UNAUTHORIZED when it is gone or hashes
   * otherwise. "" only for bindings the schema-4 migration recovered.
   */
  entryHash: string;
  /** The attestation its holder passed (finalize; renew-cert keeps it); null when a node agent asked for it. */
  attestationId: string | null;
  /** The certificate this one renews without a new attestation (renew-cert); null for the first. */
  renews: string | null;
  /**
   * The node agent (its SPIFFE ID) that obtained it through the agent API for
   * a workload on its host, proven to the agent, not to us; null for ACME.
   * Exactly one of this and attestationId is set.
   */
  requestedBy: string | null;
}

/**
 * The ACME order a certificate is issued for (finalize). The order moves from
 * processing to valid, holding the serial, in the transaction that records
 * the certificate: one commit instead of two, and no crash can leave a
 * certificate its order does not hold, or an order holding no certificate.
 */
export interface OrderCompletion {
  orderId: string;
}

/** What the caller says happened; the store adds sequence, time order and the hash chain. */
export interface AuditEvent {
  at: Date;
  /** Who did it: "cli", "server", an admin certificate's SPIFFE ID, an ACME account URL. */
  actor: string;
  /** Dotted verb, e.g. "issuer.create", "cert.issue", "cert.revoke". */
  action: string;
  /** What it was done to: an issuer id, a serial, a SPIFFE ID. */
  subject: string;
  /** Non-secret details only. */
  details: Record<string, unknown>;
}

export interface AuditRecord extends AuditEvent {
  /** 1, 2, 3, … with no gaps. */
  seq: number;
  /** Hex SHA-256 of the previous record's `hash` ("" for the first record). */
  prevHash: string;
  /** Hex SHA-256 over prevHash and this record's canonical form (ca/audit.ts). */
  hash: string;
}

export interface CertificateFilter {
  issuerId?: string;
  spiffeId?: string;
  /** Only certificates bound to this registration entry. */
  entryId?: string;
  /** Only certificates whose notAfter is after this time. */
  unexpiredAt?: Date;
  /** Only certificates whose SPIFFE ID starts with this (the console's ID search). */
  spiffeIdPrefix?: string;
  /** Page after this serial, in serial order. */
  afterSerial?: string;
  limit?: number;
}

/** One entry of a CRL (ca/crl.ts): what the store knows of a revoked certificate. */
export interface RevokedCertificate {
  serial: string;
  revokedAt: Date;
  /** RFC 5280 CRLReason code. */
  reason: number;
}

/**
 * One issuer's part of the revocation feed: the window [lo, hi) of sequence
 * numbers of its unexpired certificates and the revoked ones among them, sorted.
 */
export interface RevocationWindow {
  issuerId: string;
  lo: number;
  hi: number;
  revoked: number[];
}

/** How far a fleet has moved off one issuer (rotation, taint): its live certificates and those not yet replaced. */
export interface IssuerProgress {
  /** Unexpired, unrevoked certificates the issuer signed. */
  live: number;
  /**
   * Those of them whose SPIFFE ID has no later certificate from another issuer
   * (certificates without a SPIFFE ID always count: nothing says what replaced them).
   */
  unreplaced: number;
  /** The latest notAfter among the live ones; null when there are none. */
  lastNotAfter: Date | null;
}

/** Live certificates expiring in one bucket of an expiry timeline (the console's Fleet view). */
export interface ExpiryBucket {
  start: Date;
  count: number;
}

/**
 * One SPIFFE ID's renewals that came late: the successor was issued after
 * its predecessor's renewal window closed (the Fleet view).
 */
export interface LateRenewals {
  spiffeId: string;
  /** Late renewals of the ID in the period asked about. */
  count: number;
  /** The latest of them. */
  latest: {
    predecessor: string;
    successor: string;
    renewedAt: Date;
    windowEnd: Date;
    predecessorNotAfter: Date;
  };
}

/** A join token as the console lists it: never its hash (ids are not secret). */
export interface JoinTokenSummary {
  id: string;
  spiffeId: string;
  createdAt: Date;
  expiresAt: Date;
  usedAt: Date | null;
}

/** A search of the audit log, newest first (the console's Audit view). */
export interface AuditQuery {
  actor?: string;
  action?: string;
  /** Matches a record's subject exactly, or anywhere in its details (a SPIFFE ID, a serial). */
  text?: string;
  from?: Date;
  /** Exclusive. */
  to?: Date;
  /** Page: only records older than this seq. */
  beforeSeq?: number;
  limit: number;
}

export interface CertificateCounts {
  issued: number;
  unexpired: number;
  revoked: number;
}

/**
 * A console login code or session (acme/console/sessions.ts), kept in the
 * store so that every replica knows it, by the SHA-256 of its secret so that
 * the store alone replays nothing.
 */
export interface ConsoleGrant {
  /** Hex SHA-256 of the secret: the code in a login URL, or a session cookie. */
  hash: string;
  kind: "code" | "session";
  /** Who logged in, as `stint console login` named them. */
  user: string;
  expiresAt: Date;
}

/** At most this many console codes, and as many sessions, are kept; the soonest to expire go first. */
export const MAX_CONSOLE_GRANTS = 1000;

export interface Store {
  readonly backend: string;

  /** Reads a value from the store's key/value metadata (trust domain, creation time). */
  getMeta(key: string): Promise<string | null>;
  setMeta(key: string, value: string): Promise<void>;
  /**
   * Atomically adds one to the counter kept in metadata under `key` (absent
   * counts as 0) and returns the new value, durably: two processes or replicas
   * never get the same number (CRL numbers). ERR_STORE_CORRUPT if the value is not a counter.
   */
  incrementMeta(key: string): Promise<number>;
  /** Sets `key` to `value` unless it has a value already; returns the value kept (the first writer's, across replicas). */
  initMeta(key: string, value: string): Promise<string>;

  /** Records a console code or session, first dropping expired ones and the soonest of its kind to expire beyond MAX_CONSOLE_GRANTS. */
  putConsoleGrant(grant: ConsoleGrant, now: Date): Promise<void>;
  /** Spends a login code: deleted by the one call (on any replica) that gets it back; null if unknown, spent or expired. */
  takeConsoleCode(hash: string, now: Date): Promise<ConsoleGrant | null>;
  /** The session with this hash while it is unexpired, else null. */
  findConsoleSession(hash: string, now: Date): Promise<ConsoleGrant | null>;
  /** Ends a session (logout); nothing if there is none. */
  deleteConsoleSession(hash: string): Promise<void>;

  /** Inserts an issuer and its audit record in one transaction. */
  putIssuer(issuer: IssuerRecord, audit: AuditEvent): Promise<void>;
  listIssuers(): Promise<IssuerRecord[]>;
  getIssuer(id: string): Promise<IssuerRecord | null>;
  setIssuerState(id: string, state: IssuerState, audit: AuditEvent): Promise<void>;

  /**
   * Durably reserves `count` consecutive sequence numbers for an issuer and
   * returns the first. Reserved numbers are never handed out again, even if
   * the process dies before using them (gaps are harmless; reuse is not).
   */
  reserveSequences(issuerId: string, count: number): Promise<number>;

  /**
   * Records an issued certificate together with its audit record and, for a
   * workload certificate issued under an entry, its binding; resolves once
   * durable. With a binding, ERR_UNAUTHORIZED (nothing written) when the
   * entry no longer exists or no longer hashes to `binding.entryHash`. With
   * `completes`, the order is made valid with this serial in the same
   * transaction; ERR_STORE_CONFLICT (nothing written) when it is no longer processing.
   */
  insertCertificate(
    cert: CertificateRecord,
    audit: AuditEvent,
    binding?: CertificateBinding,
    completes?: OrderCompletion,
  ): Promise<void>;
  getCertificate(serial: string): Promise<CertificateRecord | null>;
  /** The entry and attestation a certificate was issued under, or null (DNS-only, CLI-issued, or unknown). */
  getCertificateBinding(serial: string): Promise<CertificateBinding | null>;
  listCertificates(filter: CertificateFilter): Promise<CertificateRecord[]>;
  /** Marks a certificate revoked; ERR_NOT_FOUND if unknown, ERR_STORE_CONFLICT if already revoked. */
  revokeCertificate(serial: string, reason: number, at: Date, audit: AuditEvent): Promise<void>;
  /** An issuer's revoked certificates with notAfter after `unexpiredAt`, by revocation time then serial. */
  listRevoked(issuerId: string, unexpiredAt: Date): Promise<RevokedCertificate[]>;

  /** Every issuer with unexpired certificates at `now`, by issuer id (the revocation feed). */
  revocationWindows(now: Date): Promise<RevocationWindow[]>;
  /** How many certificates were ever revoked: a cheap change detector for the feed. */
  revokedCount(): Promise<number>;

  /** Live and not-yet-replaced certificates of one issuer at `now` (rotation progress). */
  issuerProgress(issuerId: string, now: Date): Promise<IssuerProgress>;

  /** Certificate totals for status displays and metrics. */
  counts(now: Date): Promise<CertificateCounts>;

  /** Live (unrevoked) certificates expiring in (from, to], counted per `bucketMs`; empty buckets left out. */
  expiryTimeline(from: Date, to: Date, bucketMs: number): Promise<ExpiryBucket[]>;
  /** Unrevoked certificates that expired in (since, now] with no later certificate for their SPIFFE ID, newest first. */
  expiredUnrenewed(since: Date, now: Date, limit: number): Promise<CertificateRecord[]>;
  /**
   * SPIFFE IDs whose certificates issued in (since, now] came late: after
   * `windowEndPercent` of their predecessor's lifetime (the predecessor being
   * the ID's certificate issued just before). Latest first, at most `limit` IDs.
   */
  lateRenewals(since: Date, now: Date, windowEndPercent: number, limit: number): Promise<LateRenewals[]>;
  /**
   * At most `limit` join tokens, outstanding ones (unused, unexpired at `now`)
   * first by expiry, then used or expired ones newest first; never their hashes.
   */
  listJoinTokens(now: Date, limit: number): Promise<JoinTokenSummary[]>;
  /** Audit records matching `q`, newest first. */
  searchAudit(q: AuditQuery): Promise<AuditRecord[]>;

  appendAudit(event: AuditEvent): Promise<AuditRecord>;
  /** Audit records with seq > afterSeq, ascending, at most `limit`. */
  listAudit(afterSeq: number, limit: number): Promise<AuditRecord[]>;

  close(): Promise<void>;
}
