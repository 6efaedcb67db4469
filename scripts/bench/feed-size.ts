import { decodeFeed, encodeFeed, FeedIndex, type FeedSnapshot, log2Binomial } from "../../formats/feed";
import { golombBits, golombParameter } from "../../formats/golomb";
import { windowRows } from "./feed-window";
import { seeded } from "./seeded";

/**
 * Size and speed of the revocation feed's set coding (docs/feed.md): one
 * issuer with a window of U indices and R revoked, chosen uniformly at random
 * with a fixed seed, so sizes are the same on every run (times are not).
 *   bits       the issuer's whole record (id, window, count, parameter, length, stream) × 8
 *   streamBits the Golomb stream alone
 *   bound      log2 C(U, R), the fewest bits any code can use
 *   bytes      the whole body of a one-issuer snapshot
 * Then the feed against the certificates actually issued, not the window
 * (scripts/bench/feed-window.ts). Prints {codec, windows} as JSON on stdout.
 *   npm run bench:feed
 */

function randomSet(rand: () => number, u: number, r: number): number[] {
  const picked = new Set<number>();
  while (picked.size < r) picked.add(Math.floor(rand() * u));
  return [...picked].sort((a, b) => a - b);
}

/** Mean milliseconds per call over at least `minMs` of calls, after three warm-up calls. */
function timeMs(fn: () => unknown, minMs = 300): { ms: number; calls: number } {
  for (let i = 0; i < 3; i++) fn();
  let n = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < minMs) {
    fn();
    n++;
    elapsed = Number(process.hrtime.bigint() - start) / 1e6;
  }
  return { ms: elapsed / n, calls: n + 3 };
}

const round = (x: number, digits: number) => Number(x.toFixed(digits));

function row(u: number, r: number) {
  const revoked = randomSet(seeded(r), u, r);
  const doc = (issuers: FeedSnapshot["issuers"]): FeedSnapshot => ({
    kind: "snapshot",
    trustDomain: "bench.example",
    sequence: 1,
    thisUpdate: new Date("2025-01-01T00:00:00Z"),
    nextUpdate: new Date("2025-01-01T01:00:00Z"),
    maxClockSkew: 300_000,
    issuers,
    revokedIssuers: [],
    retiredIssuers: [],
  });
  const snapshot = doc([{ issuerId: "0011223344556677", lo: 0, hi: u, revoked }]);
  const body = encodeFeed(snapshot);
  const bits = (body.length - encodeFeed(doc([])).length) * 8;
  const bound = log2Binomial(u, r);
  const encodeMs = timeMs(() => encodeFeed(snapshot)).ms;
  const decodeMs = timeMs(() => decodeFeed(body)).ms;
  const index = new FeedIndex(decodeFeed(body) as FeedSnapshot);
  const probes = Float64Array.from({ length: 1 << 20 }, seeded(1));
  for (let i = 0; i < probes.length; i++) probes[i] = Math.floor(probes[i] * u);
  let revokedHits = 0;
  const lookups = timeMs(() => {
    for (let i = 0; i < probes.length; i++)
      if (index.status("0011223344556677", probes[i]) === "revoked") revokedHits++;
  });
  return {
    u,
    r,
    bits,
    streamBits: golombBits(revoked, 0, golombParameter(u, r)),
    bound: round(bound, 1),
    ratio: round(bits / bound, 4),
    bytes: body.length,
    encodeMs: round(encodeMs, 3),
    decodeMs: round(decodeMs, 3),
    lookupsPerSecond: Math.round((probes.length / lookups.ms) * 1000),
    /** Share of random lookups answered "revoked": about r / u, and keeps the loop from being optimised away. */
    revokedShare: round(revokedHits / (lookups.calls * probes.length), 5),
  };
}

async function main() {
  const codec = [100, 1_000, 10_000, 100_000].map((r) => {
    process.stderr.write(`bench: feed size for U = 1000000, R = ${r}…\n`);
    return row(1_000_000, r);
  });
  const windows = await windowRows();
  process.stdout.write(`${JSON.stringify({ codec, windows }, null, 2)}\n`);
}

void main();
