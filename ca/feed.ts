import type { Logger } from "../common/logger";
import { type Repetition, repeatEvery } from "../common/repeat";
import { diffFeeds, encodeFeed, type FeedDelta, type FeedSnapshot, type IssuerSet } from "../formats/feed";
import type { IssuerRecord } from "./store";

/**
 * The CA's revocation feed (docs/feed.md): a signed snapshot of every
 * issuer's revoked set within the window of its unexpired certificates,
 * rebuilt whenever the revoked set changes and at a third of its validity
 * (so a verifier, or a file an agent syncs, never holds one past its
 * nextUpdate), plus deltas from recent sequence numbers. A revocation made
 * through this server is published as soon as it commits (revoked()); the
 * store is also polled for changes (one cheap count), so revocations made by
 * another process — a `stint ca revoke` beside the server, another replica on
 * PostgreSQL — reach the feed within a poll interval.
 */

/** What the feed needs from storage, declared by its consumer. */
export interface FeedStore {
  /** Changes whenever any certificate is revoked: a cheap change detector. */
  revokedCount(): Promise<number>;
  /** Per issuer: the window [lo, hi) of sequence numbers of its unexpired certificates and the revoked ones among them. */
  revocationWindows(now: Date): Promise<IssuerSet[]>;
  getMeta(key: string): Promise<string | null>;
  setMeta(key: string, value: string): Promise<void>;
}

/** Signs feed bodies with an issuer the verifiers trust; the Authority implements it, so the key stays there. */
export interface FeedSigner {
  /** The signed envelope (formats/feed.ts signFeed) of `body`; a key in a token answers asynchronously. */
  signFeed(body: Buffer): Buffer | Promise<Buffer>;
  /** Every issuer with its state: retired and tainted ones are listed so verifiers refuse feeds their keys sign. */
  allIssuers(): readonly IssuerRecord[];
}

export interface FeedOptions {
  trustDomain: string;
  store: FeedStore;
  signer: FeedSigner;
  log: Logger;
  /** nextUpdate − thisUpdate; the feed is re-signed at a third of it. */
  validityMs: number;
  /**
   * How long past its notAfter a revoked certificate stays listed, published
   * as the feed's maxClockSkew: verifiers tolerate at most this much skew on
   * expiry (default 5 minutes; verifiers default to 30 s).
   */
  maxClockSkewMs?: number;
  /** How often the store is asked whether anything was revoked. */
  pollMs: number;
  /** Revoked issuers (tainted intermediates), once rotation exists. */
  revokedIssuers?: () => string[];
}

/** Snapshots kept for deltas: a verifier further behind gets a snapshot. */
const HISTORY = 64;
const SEQUENCE_KEY = "feed_sequence";
export const DEFAULT_FEED_CLOCK_SKEW_MS = 300_000;

export interface Published {
  sequence: number;
  snapshot: FeedSnapshot;
  /** The signed envelope of the snapshot. */
  envelope: Buffer;
}

/** A subscriber: told of every new snapshot, and told to finish when the service stops (server shutdown). */
export interface FeedListener {
  publish(p: Published): void;
  close(): void;
}

export class FeedService {
  private history: Published[] = [];
  private readonly deltas = new Map<number, Buffer>();
  private listeners = new Set<FeedListener>();
  private lastRevokedCount = -1;
  private watch: Repetition | null = null;
  private building: Promise<void> | null = null;
  /** The build asked for while one was under way: that one may have read the store too early. */
  private next: Promise<void> | null = null;

  constructor(private readonly opts: FeedOptions) {}

  /** Builds the first snapshot and starts watching for revocations. */
  async start(): Promise<void> {
    await this.rebuild("start");
    this.watch = repeatEvery(
      this.opts.pollMs,
      async () => {
        const count = await this.opts.store.revokedCount();
        const current = this.current();
        const stale = Date.now() >= current.snapshot.thisUpdate.getTime() + this.opts.validityMs / 3;
        if (count !== this.lastRevokedCount || stale) await this.rebuild(stale ? "refresh" : "revocation");
      },
      (err) => this.opts.log.error("revocation feed update failed", { error: err }),
    );
  }

  stop(): void {
    this.watch?.stop();
    this.watch = null;
    for (const listener of this.listeners) listener.close();
    this.listeners.clear();
  }

  current(): Published {
    const last = this.history[this.history.length - 1];
    if (!last) throw new Error("the revocation feed has not been built yet");
    return last;
  }

  /**
   * The signed delta from `since` to the current sequence, or null when a
   * snapshot is smaller, `since` is unknown, or the delta could not be signed
   * (a token away): the snapshot serves then.
   */
  async deltaSince(since: number): Promise<Buffer | null> {
    const current = this.current();
    if (since === current.sequence) return null;
    const from = this.history.find((p) => p.sequence === since);
    if (!from) return null;
    const key = since;
    let envelope = this.deltas.get(key);
    if (!envelope) {
      const delta: FeedDelta = diffFeeds(from.snapshot, current.snapshot);
      const body = encodeFeed(delta);
      try {
        envelope = await this.opts.signer.signFeed(body);
      } catch (err) {
        this.opts.log.warn("revocation feed delta not signed; serving the snapshot", { error: err });
        return null;
      }
      // A rebuild while the token signed made this delta stale: serve the new snapshot instead.
      if (current !== this.current()) return null;
      this.deltas.set(key, envelope);
    }
    return envelope.length < current.envelope.length ? envelope : null;
  }

  /** Returns the unsubscribe function. */
  subscribe(listener: FeedListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Publishes a revocation this process has just committed, without waiting
   * for the next poll; resolves once followers of /feed/events were told.
   */
  revoked(): Promise<void> {
    return this.rebuild("revocation");
  }

  /**
   * Rebuilds now, one build at a time; the next sequence number is durable
   * before the feed that carries it is served. A call during a build gets a
   * build after it (shared by every such call), since the running one may
   * have read the store before the change that prompted this call.
   */
  rebuild(why: string): Promise<void> {
    if (!this.building) {
      this.building = this.build(why).finally(() => {
        this.building = null;
      });
      return this.building;
    }
    if (!this.next) {
      const after = () => {
        this.next = null;
        return this.rebuild(why);
      };
      this.next = this.building.then(after, after);
    }
    return this.next;
  }

  private async build(why: string): Promise<void> {
    const { store, signer } = this.opts;
    const revokedCount = await store.revokedCount();
    const now = new Date();
    const maxClockSkew = this.opts.maxClockSkewMs ?? DEFAULT_FEED_CLOCK_SKEW_MS;
    const sequence = Number((await store.getMeta(SEQUENCE_KEY)) ?? "0") + 1;
    // Stored first: after a restart the sequence only moves forward, as verifiers require.
    await store.setMeta(SEQUENCE_KEY, String(sequence));
    const revokedIssuers = this.opts.revokedIssuers?.() ?? [];
    const snapshot: FeedSnapshot = {
      kind: "snapshot",
      trustDomain: this.opts.trustDomain,
      sequence,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + this.opts.validityMs),
      maxClockSkew,
      // Certificates count as unexpired until notAfter + maxClockSkew, so no verifier accepts a revoked one the feed dropped.
      issuers: await store.revocationWindows(new Date(now.getTime() - maxClockSkew)),
      revokedIssuers,
      retiredIssuers: retiredSigners(signer.allIssuers(), revokedIssuers, now),
    };
    const body = encodeFeed(snapshot);
    const published: Published = { sequence, snapshot, envelope: await signer.signFeed(body) };
    this.history.push(published);
    if (this.history.length > HISTORY) this.history.shift();
    this.deltas.clear();
    this.lastRevokedCount = revokedCount;
    this.opts.log.info("revocation feed published", {
      sequence,
      why,
      revoked: snapshot.issuers.reduce((n, i) => n + i.revoked.length, 0),
      bytes: published.envelope.length,
    });
    for (const listener of this.listeners) listener.publish(published);
  }
}

/**
 * Issuers whose keys may no longer sign feeds although their certificates
 * stay good: retired and tainted ones (revoked ones are listed as revoked),
 * until their own certificate expires and no verifier would accept them anyway.
 */
export function retiredSigners(
  issuers: readonly IssuerRecord[],
  revoked: readonly string[],
  now: Date,
): string[] {
  return issuers
    .filter((i) => (i.state === "retired" || i.state === "tainted") && !revoked.includes(i.id))
    .filter((i) => i.notAfter.getTime() > now.getTime())
    .map((i) => i.id)
    .sort();
}
