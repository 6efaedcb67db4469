import type { FeedDelta, FeedSnapshot, IssuerDelta, Status } from "./feed";
import { malformed } from "./feed-bytes";

/**
 * Deltas between feed snapshots and lookups in one (docs/feed.md). A delta
 * applies in four steps: drop `removedIssuers` from both the windows and the
 * revoked issuers; for each issuer entry, keep the old revoked indices inside
 * the new window and add `added` (an issuer not present starts empty); add
 * `revokedIssuers`; take `retiredIssuers` whole. Revocations are never
 * undone, so anything a delta cannot express (an index un-revoked, an issuer
 * un-revoked) diffFeeds handles by removing the issuer and sending it whole.
 */

const sortedById = <T extends { issuerId: string }>(items: T[]): T[] =>
  items.sort((a, b) => (a.issuerId < b.issuerId ? -1 : a.issuerId > b.issuerId ? 1 : 0));

/** Sorted union of two sorted, unique lists. */
function union(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i] < b[j])) out.push(a[i++]);
    else if (i >= a.length || b[j] < a[i]) out.push(b[j++]);
    else {
      out.push(a[i++]);
      j++;
    }
  }
  return out;
}

const within = (xs: readonly number[], lo: number, hi: number): number[] =>
  xs.filter((x) => x >= lo && x < hi);

/** The snapshot `delta` leads to from `base`; refuses a delta for another trust domain or another base sequence. */
export function applyDelta(base: FeedSnapshot, delta: FeedDelta): FeedSnapshot {
  if (delta.trustDomain !== base.trustDomain) {
    throw malformed(`delta is for trust domain ${delta.trustDomain}, not ${base.trustDomain}`);
  }
  if (delta.fromSequence !== base.sequence) {
    throw malformed(`delta from sequence ${delta.fromSequence} does not apply to sequence ${base.sequence}`);
  }
  const issuers = new Map(base.issuers.map((i) => [i.issuerId, i]));
  const revokedIssuers = new Set(base.revokedIssuers);
  for (const id of delta.removedIssuers) {
    issuers.delete(id);
    revokedIssuers.delete(id);
  }
  for (const d of delta.issuers) {
    const kept = within(issuers.get(d.issuerId)?.revoked ?? [], d.lo, d.hi);
    issuers.set(d.issuerId, { issuerId: d.issuerId, lo: d.lo, hi: d.hi, revoked: union(kept, d.added) });
  }
  for (const id of delta.revokedIssuers) revokedIssuers.add(id);
  return {
    kind: "snapshot",
    trustDomain: delta.trustDomain,
    sequence: delta.sequence,
    thisUpdate: delta.thisUpdate,
    nextUpdate: delta.nextUpdate,
    maxClockSkew: delta.maxClockSkew,
    issuers: sortedById([...issuers.values()]),
    revokedIssuers: [...revokedIssuers].sort(),
    retiredIssuers: [...delta.retiredIssuers],
  };
}

/** `added` such that kept ∪ added = target, or null when kept is not a subset of target. */
function additions(kept: readonly number[], target: readonly number[]): number[] | null {
  const added: number[] = [];
  let i = 0;
  for (const t of target) {
    if (i < kept.length && kept[i] < t) return null;
    if (i < kept.length && kept[i] === t) i++;
    else added.push(t);
  }
  return i === kept.length ? added : null;
}

/** The delta that turns `from` into `to` (applyDelta(from, diffFeeds(from, to)) equals `to`). */
export function diffFeeds(from: FeedSnapshot, to: FeedSnapshot): FeedDelta {
  if (from.trustDomain !== to.trustDomain) {
    throw malformed(`cannot diff trust domain ${from.trustDomain} against ${to.trustDomain}`);
  }
  if (!(to.sequence > from.sequence)) {
    throw malformed(`cannot diff sequence ${from.sequence} to ${to.sequence}: it must move forward`);
  }
  const fromIssuers = new Map(from.issuers.map((i) => [i.issuerId, i]));
  const toIds = new Set(to.issuers.map((i) => i.issuerId));
  const fromRevoked = new Set(from.revokedIssuers);
  const toRevoked = new Set(to.revokedIssuers);
  const removed = new Set<string>();
  for (const id of fromIssuers.keys()) if (!toIds.has(id)) removed.add(id);
  for (const id of fromRevoked) if (!toRevoked.has(id)) removed.add(id);

  const issuers: IssuerDelta[] = [];
  for (const t of to.issuers) {
    const f = removed.has(t.issuerId) ? undefined : fromIssuers.get(t.issuerId);
    let added = f ? additions(within(f.revoked, t.lo, t.hi), t.revoked) : null;
    if (f && added === null) removed.add(t.issuerId); // an index left the set inside the window: resend it whole
    if (added === null) added = t.revoked;
    else if (f && f.lo === t.lo && f.hi === t.hi && added.length === 0) continue;
    issuers.push({ issuerId: t.issuerId, lo: t.lo, hi: t.hi, added: [...added] });
  }
  return {
    kind: "delta",
    trustDomain: to.trustDomain,
    fromSequence: from.sequence,
    sequence: to.sequence,
    thisUpdate: to.thisUpdate,
    nextUpdate: to.nextUpdate,
    maxClockSkew: to.maxClockSkew,
    issuers: sortedById(issuers),
    removedIssuers: [...removed].sort(),
    revokedIssuers: to.revokedIssuers.filter((id) => !fromRevoked.has(id) || removed.has(id)).sort(),
    retiredIssuers: [...to.retiredIssuers].sort(),
  };
}

interface IndexedWindow {
  lo: number;
  hi: number;
  revoked: Float64Array;
}

/** Lookups in one snapshot: O(1) to find the issuer, O(log R) binary search in its revoked indices. */
export class FeedIndex {
  private readonly windows = new Map<string, IndexedWindow>();
  private readonly revokedIssuers: Set<string>;

  constructor(doc: FeedSnapshot) {
    for (const i of doc.issuers) {
      this.windows.set(i.issuerId, { lo: i.lo, hi: i.hi, revoked: Float64Array.from(i.revoked) });
    }
    this.revokedIssuers = new Set(doc.revokedIssuers);
  }

  /**
   * "revoked" for a revoked index or any index of a revoked issuer; "good" for
   * any other index in the issuer's window; "not-covered" when the feed says
   * nothing (unknown issuer, index outside [lo, hi)).
   */
  status(issuerId: string, sequence: number): Status {
    if (this.revokedIssuers.has(issuerId)) return "revoked";
    const w = this.windows.get(issuerId);
    if (!w || !Number.isSafeInteger(sequence) || sequence < w.lo || sequence >= w.hi) return "not-covered";
    const xs = w.revoked;
    let a = 0;
    let b = xs.length;
    while (a < b) {
      const mid = (a + b) >>> 1;
      if (xs[mid] < sequence) a = mid + 1;
      else b = mid;
    }
    return a < xs.length && xs[a] === sequence ? "revoked" : "good";
  }

  /** The issuer's window, or null when the feed does not cover it. */
  window(issuerId: string): { lo: number; hi: number } | null {
    const w = this.windows.get(issuerId);
    return w ? { lo: w.lo, hi: w.hi } : null;
  }
}
