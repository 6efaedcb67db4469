import { StintError } from "../common/errors";
import { ByteReader, malformed, uvarint, uvarintSize } from "./feed-bytes";
import { golombBits, golombDecode, golombEncode, golombParameter } from "./golomb";
import { MAX_SEQUENCE } from "./serial";
import { trustDomainProblem } from "./spiffe";

/**
 * The revocation feed (docs/feed.md), shared by the CA that builds it (ca/)
 * and the verifiers that read it (verify/). Every certificate's serial
 * carries a dense per-issuer index (formats/serial.ts), so an issuer's
 * revoked set is a subset of the window [lo, hi) of its unexpired indices;
 * each set is Golomb-coded (formats/golomb.ts) in close to log2 C(U, R) bits.
 *
 *   encodeFeed(doc) / decodeFeed(body)   body bytes of a FeedSnapshot or FeedDelta;
 *                                        decoding is strict (StintError ERR_MALFORMED)
 *   encodedSize(doc)                     encodeFeed(doc).length without encoding,
 *                                        to choose between a delta and a snapshot
 *   diffFeeds(from, to) / applyDelta(base, delta)
 *   FeedIndex(snapshot).status(issuerId, index)   "revoked" | "good" | "not-covered"
 *   signFeed / parseSignedFeed / verifyFeedSignature / feedSignerProblem
 *                                        the signed envelope (formats/feed-envelope.ts)
 *   log2Binomial(u, r)                   the size bound, for reports
 *
 * Issuer ids are 16 lowercase hex digits: the first 8 bytes of the issuer's
 * subject key identifier. Encoding refuses invalid documents with the same
 * error code, so a CA bug cannot publish a feed its verifiers would refuse.
 */

export {
  feedSignerProblem,
  parseSignedFeed,
  type SignedFeed,
  signFeed,
  verifyFeedSignature,
} from "./feed-envelope";
export { log2Binomial } from "./golomb";

/** The version encodeFeed writes; decodeFeed also reads version 1 (no skew bound, no retired issuers). */
export const FEED_VERSION = 2;
const FEED_VERSION_1 = 1;
/** The largest maxClockSkew a feed may publish: one day. */
export const MAX_FEED_CLOCK_SKEW = 86_400_000;
/** "STFD": the first bytes of every body; never 0x30, so a body cannot pass for DER a CA key also signs. */
export const FEED_MAGIC = Buffer.from("STFD", "ascii");
const KIND_SNAPSHOT = 1;
const KIND_DELTA = 2;
const ID_BYTES = 8;
/** Issuer id + lo + width + count, each at least one byte. */
const MIN_ISSUER_BYTES = ID_BYTES + 3;

export interface IssuerSet {
  issuerId: string;
  lo: number;
  hi: number;
  /** Sorted, unique, lo <= i < hi. */
  revoked: number[];
}

export interface FeedSnapshot {
  kind: "snapshot";
  trustDomain: string;
  sequence: number;
  thisUpdate: Date;
  nextUpdate: Date;
  /**
   * Milliseconds past a certificate's notAfter during which a revoked
   * certificate stays listed: the largest clock skew a verifier may allow on
   * expiry and still rely on this feed (0 in version 1 feeds).
   */
  maxClockSkew: number;
  issuers: IssuerSet[];
  /** Tainted intermediates: every certificate they issued is revoked. */
  revokedIssuers: string[];
  /** Retired or tainted issuers, not revoked: their certificates stay good, but their keys may no longer sign feeds. */
  retiredIssuers: string[];
}

export interface IssuerDelta {
  issuerId: string;
  /** The issuer's new window. */
  lo: number;
  hi: number;
  /** Indices newly revoked, sorted, unique, within the new window. */
  added: number[];
}

export interface FeedDelta {
  kind: "delta";
  trustDomain: string;
  fromSequence: number;
  sequence: number;
  thisUpdate: Date;
  nextUpdate: Date;
  maxClockSkew: number;
  issuers: IssuerDelta[];
  /** Dropped from both the windows and the revoked issuers before `issuers` applies. */
  removedIssuers: string[];
  /** Revoked issuers added. */
  revokedIssuers: string[];
  /** The whole list (it replaces the base's): a short list, and an issuer leaves it when revoked. */
  retiredIssuers: string[];
}

export type FeedDocument = FeedSnapshot | FeedDelta;
export type Status = "revoked" | "good" | "not-covered";

const ISSUER_ID = /^[0-9a-f]{16}$/;

// ---------- checking documents before encoding ----------

interface Window {
  issuerId: string;
  lo: number;
  hi: number;
  set: number[];
}

const windowsOf = (doc: FeedDocument): Window[] =>
  doc.kind === "snapshot"
    ? doc.issuers.map((i) => ({ issuerId: i.issuerId, lo: i.lo, hi: i.hi, set: i.revoked }))
    : doc.issuers.map((i) => ({ issuerId: i.issuerId, lo: i.lo, hi: i.hi, set: i.added }));

const isIndex = (n: number): boolean => Number.isSafeInteger(n) && n >= 0 && n <= MAX_SEQUENCE;
const byId = <T extends { issuerId: string }>(a: T, b: T): number => (a.issuerId < b.issuerId ? -1 : 1);

function checkIds(ids: readonly string[], what: string): string[] {
  const sorted = [...ids].sort();
  sorted.forEach((id, i) => {
    if (!ISSUER_ID.test(id))
      throw malformed(`${what} "${String(id).slice(0, 40)}" is not 16 lowercase hex digits`);
    if (i > 0 && sorted[i - 1] === id) throw malformed(`${what} ${id} is listed twice`);
  });
  return sorted;
}

function checkWindow(w: Window): void {
  if (!isIndex(w.lo) || !isIndex(w.hi) || w.hi < w.lo) {
    throw malformed(`issuer ${w.issuerId}: window [${w.lo}, ${w.hi}) is not a range of indices`);
  }
  let prev = w.lo - 1;
  for (const v of w.set) {
    if (!Number.isSafeInteger(v) || v <= prev || v >= w.hi) {
      throw malformed(
        `issuer ${w.issuerId}: index ${v} is out of order, repeated or outside [${w.lo}, ${w.hi})`,
      );
    }
    prev = v;
  }
}

function timeMs(d: Date, what: string): number {
  const ms = d instanceof Date ? d.getTime() : Number.NaN;
  if (!isIndex(ms)) throw malformed(`${what} is not a time after 1970`);
  return ms;
}

/** Validates `doc` and returns its parts in wire order. */
function checked(doc: FeedDocument) {
  const problem = trustDomainProblem(String(doc.trustDomain));
  if (problem) throw malformed(problem);
  if (!isIndex(doc.sequence)) throw malformed(`sequence ${doc.sequence} is not a non-negative integer`);
  if (doc.kind === "delta" && !(isIndex(doc.fromSequence) && doc.fromSequence < doc.sequence)) {
    throw malformed(`delta fromSequence ${doc.fromSequence} is not below sequence ${doc.sequence}`);
  }
  const thisMs = timeMs(doc.thisUpdate, "thisUpdate");
  const nextMs = timeMs(doc.nextUpdate, "nextUpdate");
  if (nextMs <= thisMs) throw malformed("nextUpdate is not after thisUpdate");
  if (
    !(
      Number.isSafeInteger(doc.maxClockSkew) &&
      doc.maxClockSkew >= 0 &&
      doc.maxClockSkew <= MAX_FEED_CLOCK_SKEW
    )
  ) {
    throw malformed(`maxClockSkew ${doc.maxClockSkew} is not 0..${MAX_FEED_CLOCK_SKEW} milliseconds`);
  }
  const windows = windowsOf(doc).sort(byId);
  checkIds(
    windows.map((w) => w.issuerId),
    "issuer id",
  );
  for (const w of windows) checkWindow(w);
  return {
    thisMs,
    nextMs,
    windows,
    removed: doc.kind === "delta" ? checkIds(doc.removedIssuers, "removed issuer") : [],
    revokedIssuers: checkIds(doc.revokedIssuers, "revoked issuer"),
    retiredIssuers: checkIds(doc.retiredIssuers, "retired issuer"),
  };
}

// ---------- encoding ----------

const setParameter = (w: Window): number => golombParameter(w.hi - w.lo, w.set.length);

function setSize(w: Window): number {
  const n = w.set.length;
  if (n === 0) return 1;
  const m = setParameter(w);
  const len = Math.ceil(golombBits(w.set, w.lo, m) / 8);
  return uvarintSize(n) + uvarintSize(m) + uvarintSize(len) + len;
}

function encodeSet(w: Window): Buffer[] {
  const n = w.set.length;
  if (n === 0) return [uvarint(0)];
  const m = setParameter(w);
  const stream = golombEncode(w.set, w.lo, m);
  return [uvarint(n), uvarint(m), uvarint(stream.length), stream];
}

function headerParts(doc: FeedDocument, thisMs: number, nextMs: number): Buffer[] {
  const td = Buffer.from(doc.trustDomain, "ascii");
  return [
    FEED_MAGIC,
    Buffer.from([FEED_VERSION, doc.kind === "snapshot" ? KIND_SNAPSHOT : KIND_DELTA]),
    uvarint(td.length),
    td,
    uvarint(doc.sequence),
    ...(doc.kind === "delta" ? [uvarint(doc.fromSequence)] : []),
    uvarint(thisMs),
    uvarint(nextMs),
    uvarint(doc.maxClockSkew),
  ];
}

const idBytes = (id: string): Buffer => Buffer.from(id, "hex");
const idList = (ids: string[]): Buffer[] => [uvarint(ids.length), ...ids.map(idBytes)];

/** The body bytes of a snapshot or delta; refuses an invalid document with ERR_MALFORMED. */
export function encodeFeed(doc: FeedDocument): Buffer {
  const c = checked(doc);
  const parts = headerParts(doc, c.thisMs, c.nextMs);
  parts.push(uvarint(c.windows.length));
  for (const w of c.windows) {
    parts.push(idBytes(w.issuerId), uvarint(w.lo), uvarint(w.hi - w.lo), ...encodeSet(w));
  }
  if (doc.kind === "delta") parts.push(...idList(c.removed));
  parts.push(...idList(c.revokedIssuers), ...idList(c.retiredIssuers));
  return Buffer.concat(parts);
}

/** encodeFeed(doc).length, computed without building the body (the Golomb bits are counted, not written). */
export function encodedSize(doc: FeedDocument): number {
  const c = checked(doc);
  let size = headerParts(doc, c.thisMs, c.nextMs).reduce((n, b) => n + b.length, 0);
  size += uvarintSize(c.windows.length);
  for (const w of c.windows) size += ID_BYTES + uvarintSize(w.lo) + uvarintSize(w.hi - w.lo) + setSize(w);
  if (doc.kind === "delta") size += uvarintSize(c.removed.length) + ID_BYTES * c.removed.length;
  for (const ids of [c.revokedIssuers, c.retiredIssuers])
    size += uvarintSize(ids.length) + ID_BYTES * ids.length;
  return size;
}

// ---------- decoding ----------

/** A list of 8-byte ids in strictly ascending order (so each appears once and the encoding is canonical). */
function readIds(r: ByteReader, what: string): string[] {
  const n = r.count(`${what} count`, ID_BYTES);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = r.bytes(ID_BYTES, what).toString("hex");
    if (i > 0 && id <= ids[i - 1]) throw malformed(`${what} ${id} is not in ascending order`);
    ids.push(id);
  }
  return ids;
}

function readWindow(r: ByteReader, prevId: string | null): Window {
  const issuerId = r.bytes(ID_BYTES, "issuer id").toString("hex");
  if (prevId !== null && issuerId <= prevId) throw malformed(`issuer ${issuerId} is not in ascending order`);
  const lo = r.uvarint(`issuer ${issuerId} lo`);
  const width = r.uvarint(`issuer ${issuerId} width`);
  if (lo + width > MAX_SEQUENCE) throw malformed(`issuer ${issuerId}: window end exceeds 2^53 - 1`);
  const hi = lo + width;
  const n = r.uvarint(`issuer ${issuerId} index count`);
  if (n === 0) return { issuerId, lo, hi, set: [] };
  if (n > width) throw malformed(`issuer ${issuerId}: ${n} indices in a window of ${width}`);
  const m = r.uvarint(`issuer ${issuerId} Golomb parameter`);
  const len = r.uvarint(`issuer ${issuerId} stream length`);
  const stream = r.bytes(len, `issuer ${issuerId} set stream`);
  try {
    return { issuerId, lo, hi, set: golombDecode(stream, n, lo, hi, m) };
  } catch (err) {
    throw err instanceof StintError
      ? malformed(`issuer ${issuerId}: ${err.message.replace(/^feed: /, "")}`)
      : err;
  }
}

function decodeBody(body: Uint8Array): FeedDocument {
  const r = new ByteReader(body);
  if (!r.bytes(4, "magic").equals(FEED_MAGIC)) throw malformed('body does not start with "STFD"');
  const version = r.byte("version");
  if (version !== FEED_VERSION && version !== FEED_VERSION_1)
    throw malformed(`unsupported version ${version}`);
  const kind = r.byte("kind");
  if (kind !== KIND_SNAPSHOT && kind !== KIND_DELTA) throw malformed(`unknown kind ${kind}`);
  const tdLength = r.uvarint("trust domain length");
  if (tdLength < 1 || tdLength > 255) throw malformed(`trust domain length ${tdLength} is outside 1..255`);
  const trustDomain = r.bytes(tdLength, "trust domain").toString("latin1");
  const problem = trustDomainProblem(trustDomain);
  if (problem) throw malformed(problem);
  const sequence = r.uvarint("sequence");
  const fromSequence = kind === KIND_DELTA ? r.uvarint("fromSequence") : 0;
  if (kind === KIND_DELTA && fromSequence >= sequence) {
    throw malformed(`delta fromSequence ${fromSequence} is not below sequence ${sequence}`);
  }
  const thisUpdate = r.uvarint("thisUpdate");
  const nextUpdate = r.uvarint("nextUpdate");
  if (nextUpdate <= thisUpdate) throw malformed("nextUpdate is not after thisUpdate");
  if (nextUpdate > 8.64e15) throw malformed("nextUpdate is beyond the representable dates");
  const maxClockSkew = version === FEED_VERSION_1 ? 0 : r.uvarint("maxClockSkew");
  if (maxClockSkew > MAX_FEED_CLOCK_SKEW)
    throw malformed(`maxClockSkew ${maxClockSkew} is over ${MAX_FEED_CLOCK_SKEW} milliseconds`);
  const windows: Window[] = [];
  const count = r.count("issuer count", MIN_ISSUER_BYTES);
  for (let i = 0; i < count; i++) windows.push(readWindow(r, i > 0 ? windows[i - 1].issuerId : null));
  const removedIssuers = kind === KIND_DELTA ? readIds(r, "removed issuer") : [];
  const revokedIssuers = readIds(r, "revoked issuer");
  const retiredIssuers = version === FEED_VERSION_1 ? [] : readIds(r, "retired issuer");
  r.expectEnd("body");
  const common = {
    trustDomain,
    sequence,
    thisUpdate: new Date(thisUpdate),
    nextUpdate: new Date(nextUpdate),
    maxClockSkew,
    revokedIssuers,
    retiredIssuers,
  };
  if (kind === KIND_SNAPSHOT) {
    const issuers = windows.map((w) => ({ issuerId: w.issuerId, lo: w.lo, hi: w.hi, revoked: w.set }));
    return { kind: "snapshot", ...common, issuers };
  }
  const issuers = windows.map((w) => ({ issuerId: w.issuerId, lo: w.lo, hi: w.hi, added: w.set }));
  return { kind: "delta", ...common, fromSequence, issuers, removedIssuers };
}

/** Decodes body bytes strictly: any malformed input is a StintError ERR_MALFORMED, with work bounded by its length. */
export function decodeFeed(body: Buffer): FeedDocument {
  if (!(body instanceof Uint8Array)) throw malformed("body is not bytes");
  try {
    return decodeBody(body);
  } catch (err) {
    if (err instanceof StintError) throw err;
    throw new StintError("ERR_MALFORMED", "feed: body is malformed", { cause: err });
  }
}

export { applyDelta, diffFeeds, FeedIndex } from "./feed-delta";
