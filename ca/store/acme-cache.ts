import { Lru } from "../../common/lru";
import type { AuditEvent } from "../store";
import type {
  AccountRecord,
  AccountStatus,
  AcmeStateStore,
  AttestationRecord,
  AuthorizationRecord,
  AuthorizationStatus,
  ChallengeRecord,
  EntryRecord,
  JoinTokenSpend,
  OrderRecord,
  OrderStatus,
} from "../store-acme";
import { AcmeStateDelegate } from "./acme-delegate";

/**
 * ACME state served from memory: accounts, orders, authorizations, entries
 * and attestations as this process last read or wrote them, so the request
 * path does no store reads. Write-through: a record enters the cache only
 * once its write has committed, so a crash loses nothing the store has.
 *
 * Another writer (a second process on the same SQLite file, `stint entry
 * create`, a PostgreSQL replica) may change a row behind this process's back.
 * The backend says whether that can have happened (`ChangeWatch`): SQLite's
 * `PRAGMA data_version` moves on every commit by another connection, and
 * then every mutable record is forgotten before the next read. A backend
 * without such a signal (PostgreSQL, whose replicas write all the time)
 * passes none, and only what never changes (attestations) is kept.
 */

/** Whether anyone but this process may have committed since the last call. */
export interface ChangeWatch {
  changedElsewhere(): boolean;
}

/** Records of each kind kept at most; the least recently used go first. */
export const ACME_CACHE_LIMIT = 20_000;

type EntryFilter = Parameters<AcmeStateStore["listEntries"]>[0];

export class AcmeCache extends AcmeStateDelegate {
  private readonly accounts = new Lru<AccountRecord>(ACME_CACHE_LIMIT);
  private readonly orders = new Lru<OrderRecord>(ACME_CACHE_LIMIT);
  private readonly authorizations = new Lru<AuthorizationRecord>(ACME_CACHE_LIMIT);
  private readonly entries = new Lru<EntryRecord>(ACME_CACHE_LIMIT);
  /** Entries by SPIFFE ID, as listEntries({spiffeId}) returns them. */
  private readonly entryLists = new Lru<EntryRecord[]>(ACME_CACHE_LIMIT);
  /** Attestations are written once and never changed: kept whatever the backend. */
  private readonly attestations = new Lru<AttestationRecord>(ACME_CACHE_LIMIT);
  /**
   * Bumped by every write and every forget: a read that started before one
   * ends after it and must not put what it read (maybe older) in the cache.
   */
  private epoch = 0;

  /** `watch` null: mutable state is always read from the store. */
  constructor(
    protected readonly acme: AcmeStateStore,
    private readonly watch: ChangeWatch | null,
  ) {
    super();
  }

  /** True when mutable records may be served from memory now; forgets them all if another writer committed. */
  private fresh(): boolean {
    if (this.watch === null) return false;
    if (this.watch.changedElsewhere()) this.forgetAll();
    return true;
  }

  private forgetAll(): void {
    this.epoch++;
    this.accounts.clear();
    this.orders.clear();
    this.authorizations.clear();
    this.entries.clear();
    this.entryLists.clear();
  }

  /** Serves `key` from `lru` when fresh, else reads it and keeps it unless a write came in between. */
  private async cached<V>(lru: Lru<V>, key: string, read: () => Promise<V | null>): Promise<V | null> {
    if (!this.fresh()) return read();
    const hit = lru.get(key);
    if (hit !== undefined) return hit;
    const epoch = this.epoch;
    const value = await read();
    if (value !== null && epoch === this.epoch) lru.set(key, value);
    return value;
  }

  /** Runs a write; on success keeps its result, on any failure (a lost compare-and-set) forgets the key. */
  private async through<V>(lru: Lru<V>, key: string, write: () => Promise<V>): Promise<V> {
    this.epoch++;
    try {
      const value = await write();
      this.epoch++;
      if (this.watch !== null) lru.set(key, value);
      return value;
    } catch (err) {
      this.epoch++;
      lru.delete(key);
      throw err;
    }
  }

  // ---------- accounts ----------

  override async createAccount(account: AccountRecord, audit: AuditEvent) {
    this.epoch++;
    try {
      // An existing account for the key comes back under its own id, not the proposed one.
      const out = await this.acme.createAccount(account, audit);
      if (this.watch !== null) this.accounts.set(out.account.id, out.account);
      return out;
    } finally {
      this.epoch++;
    }
  }

  override getAccount(id: string) {
    return this.cached(this.accounts, id, () => this.acme.getAccount(id));
  }

  override updateAccount(
    id: string,
    patch: { status?: AccountStatus; contact?: string[] },
    audit: AuditEvent,
  ) {
    return this.through(this.accounts, id, () => this.acme.updateAccount(id, patch, audit));
  }

  override changeAccountKey(
    id: string,
    oldThumbprint: string,
    jwk: Record<string, unknown>,
    thumbprint: string,
    audit: AuditEvent,
  ) {
    return this.through(this.accounts, id, () =>
      this.acme.changeAccountKey(id, oldThumbprint, jwk, thumbprint, audit),
    );
  }

  // ---------- orders and authorizations ----------

  override async createOrder(order: OrderRecord, authorizations: AuthorizationRecord[]) {
    this.epoch++;
    await this.acme.createOrder(order, authorizations);
    this.epoch++;
    if (this.watch === null) return;
    this.orders.set(order.id, order);
    for (const a of authorizations) this.authorizations.set(a.id, a);
  }

  override getOrder(id: string) {
    return this.cached(this.orders, id, () => this.acme.getOrder(id));
  }

  override updateOrder(
    id: string,
    expect: OrderStatus,
    patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
  ) {
    return this.through(this.orders, id, () => this.acme.updateOrder(id, expect, patch));
  }

  /**
   * A write of the store's own that leaves order `id` as `write` returns it
   * (insertCertificate completing the order): kept, or forgotten on failure,
   * like updateOrder's.
   */
  orderWrittenBy(id: string, write: () => Promise<OrderRecord>): Promise<OrderRecord> {
    return this.through(this.orders, id, write);
  }

  override getAuthorization(id: string) {
    return this.cached(this.authorizations, id, () => this.acme.getAuthorization(id));
  }

  override updateAuthorization(
    id: string,
    expect: AuthorizationStatus,
    patch: Partial<Pick<AuthorizationRecord, "status" | "challenges" | "entryId" | "selectors">>,
  ) {
    return this.through(this.authorizations, id, () => this.acme.updateAuthorization(id, expect, patch));
  }

  override async recordAttestation(
    attestation: AttestationRecord,
    expect: AuthorizationStatus,
    challenges: ChallengeRecord[],
    audit: AuditEvent,
    token?: JoinTokenSpend,
  ) {
    const valid = await this.through(this.authorizations, attestation.authorizationId, () =>
      this.acme.recordAttestation(attestation, expect, challenges, audit, token),
    );
    this.attestations.set(attestation.id, attestation);
    return valid;
  }

  override async getAttestation(id: string) {
    const hit = this.attestations.get(id);
    if (hit !== undefined) return hit;
    const read = await this.acme.getAttestation(id);
    if (read !== null) this.attestations.set(id, read);
    return read;
  }

  // ---------- entries ----------

  override getEntry(id: string) {
    return this.cached(this.entries, id, () => this.acme.getEntry(id));
  }

  override async listEntries(filter: EntryFilter) {
    const keys = Object.keys(filter).filter((k) => filter[k as keyof EntryFilter] !== undefined);
    const spiffeId = filter.spiffeId;
    // Only the lookup attest-01 makes on every answer is kept; admin listings read the store.
    if (keys.length !== 1 || spiffeId === undefined) return this.acme.listEntries(filter);
    return (await this.cached(this.entryLists, spiffeId, () => this.acme.listEntries(filter))) ?? [];
  }

  override async createEntry(entry: EntryRecord, audit: AuditEvent) {
    try {
      await this.acme.createEntry(entry, audit);
    } finally {
      this.forgetEntries();
    }
  }

  override async deleteEntry(id: string, audit: AuditEvent) {
    try {
      await this.acme.deleteEntry(id, audit);
    } finally {
      this.forgetEntries();
    }
  }

  private forgetEntries(): void {
    this.epoch++;
    this.entries.clear();
    this.entryLists.clear();
  }
}
