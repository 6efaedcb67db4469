import { isStintError } from "../../common/errors";
import {
  applyDelta,
  decodeFeed,
  diffFeeds,
  encodedSize,
  encodeFeed,
  type FeedDelta,
  FeedIndex,
  type FeedSnapshot,
  type IssuerSet,
  log2Binomial,
} from "../../formats/feed";
import { golombDecode, golombEncode, golombParameter } from "../../formats/golomb";
import { seeded } from "../../scripts/bench/seeded";
import vectors from "../vectors/feed.json";

/** r distinct indices of [lo, hi), sorted. */
function randomSet(rand: () => number, lo: number, hi: number, r: number): number[] {
  const picked = new Set<number>();
  while (picked.size < r) picked.add(lo + Math.floor(rand() * (hi - lo)));
  return [...picked].sort((a, b) => a - b);
}

const T0 = new Date("2025-06-01T00:00:00.123Z");
const T1 = new Date("2025-06-01T01:00:00.123Z");

function snapshot(issuers: IssuerSet[], over: Partial<FeedSnapshot> = {}): FeedSnapshot {
  return {
    kind: "snapshot",
    trustDomain: "example.org",
    sequence: 1,
    thisUpdate: T0,
    nextUpdate: T1,
    maxClockSkew: 300_000,
    issuers,
    revokedIssuers: [],
    retiredIssuers: [],
    ...over,
  };
}

const id = (n: number): string => n.toString(16).padStart(16, "0");

function expectMalformed(fn: () => unknown, message?: string | RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(isStintError(thrown, "ERR_MALFORMED")).toBe(true);
  if (message) expect((thrown as Error).message).toMatch(message);
}

describe("set coding", () => {
  const cases: [string, number, number, number][] = [
    ["empty set", 0, 1000, 0],
    ["all revoked", 0, 1000, 1000],
    ["one revoked", 0, 1000, 1],
    ["empty window", 500, 500, 0],
    ["one-index window, revoked", 7, 8, 1],
    ["large lo", 2 ** 53 - 5000, 2 ** 53 - 1, 300],
    ["dense", 10, 1010, 700],
    ["sparse", 0, 10_000_000, 20],
  ];
  it.each(cases)("round-trips %s", (_name, lo, hi, r) => {
    const rand = seeded(hi - lo + r);
    const revoked = randomSet(rand, lo, hi, r);
    const doc = snapshot([{ issuerId: id(1), lo, hi, revoked }]);
    const body = encodeFeed(doc);
    expect(body.length).toBe(encodedSize(doc));
    expect(decodeFeed(body)).toEqual(doc);
  });

  it("round-trips random sets with every Golomb parameter shape (1, powers of two, others)", () => {
    const rand = seeded(7);
    for (let trial = 0; trial < 300; trial++) {
      const lo = Math.floor(rand() * 1e6);
      const width = 1 + Math.floor(rand() * 5000);
      const r = Math.floor(rand() * rand() * width);
      const set = randomSet(rand, lo, lo + width, r);
      for (const m of [1, 2, 3, 8, golombParameter(width, Math.max(r, 1)), width]) {
        // join(): toEqual on thousands of numbers costs seconds here
        expect(golombDecode(golombEncode(set, lo, m), r, lo, lo + width, m).join()).toBe(set.join());
      }
    }
  });

  it("stays within 1.01 × log2 C(U, R) for U = 1,000,000 and R = 10,000 (whole issuer record)", () => {
    const U = 1_000_000;
    const R = 10_000;
    const revoked = randomSet(seeded(2025), 0, U, R);
    const empty = encodeFeed(snapshot([]));
    const body = encodeFeed(snapshot([{ issuerId: id(1), lo: 0, hi: U, revoked }]));
    const bits = (body.length - empty.length) * 8;
    const bound = log2Binomial(U, R);
    expect(bound).toBeGreaterThan(80_780);
    expect(bound).toBeLessThan(80_790);
    expect(bits / bound).toBeLessThanOrEqual(1.01);
  });

  it("computes log2 C(u, r)", () => {
    expect(log2Binomial(10, 0)).toBe(0);
    expect(log2Binomial(10, 10)).toBe(0);
    expect(log2Binomial(10, 3)).toBeCloseTo(Math.log2(120), 10);
    expect(log2Binomial(52, 5)).toBeCloseTo(Math.log2(2_598_960), 9);
  });
});

describe("FeedIndex", () => {
  it("answers exactly for every index in a 100k window, and not-covered outside it", () => {
    const lo = 5_000_000;
    const hi = lo + 100_000;
    const revoked = randomSet(seeded(42), lo, hi, 1_500);
    const decoded = decodeFeed(encodeFeed(snapshot([{ issuerId: id(9), lo, hi, revoked }])));
    const index = new FeedIndex(decoded as FeedSnapshot);
    const truth = new Set(revoked);
    let mismatches = 0;
    for (let i = lo; i < hi; i++) {
      if (index.status(id(9), i) !== (truth.has(i) ? "revoked" : "good")) mismatches++;
    }
    expect(mismatches).toBe(0);
    for (const outside of [0, lo - 1, hi, hi + 1, 2 ** 53, -1, 1.5, Number.NaN]) {
      expect(index.status(id(9), outside)).toBe("not-covered");
    }
    expect(index.status(id(8), lo)).toBe("not-covered");
  });

  it("reports every index of a revoked issuer as revoked", () => {
    const index = new FeedIndex(
      snapshot([{ issuerId: id(1), lo: 0, hi: 10, revoked: [] }], { revokedIssuers: [id(1), id(2)] }),
    );
    expect(index.status(id(1), 3)).toBe("revoked");
    expect(index.status(id(2), 123456)).toBe("revoked");
  });
});

describe("deltas", () => {
  function evolve(from: FeedSnapshot, rand: () => number): FeedSnapshot {
    const issuers: IssuerSet[] = [];
    for (const i of from.issuers) {
      if (rand() < 0.1) continue; // expired issuer
      const lo = i.lo + Math.floor(rand() * 200);
      const hi = Math.max(lo, i.hi + Math.floor(rand() * 300));
      const kept = i.revoked.filter((x) => x >= lo && x < hi);
      const fresh = randomSet(rand, lo, hi, Math.min(hi - lo, Math.floor(rand() * 20)));
      issuers.push({
        issuerId: i.issuerId,
        lo,
        hi,
        revoked: [...new Set([...kept, ...fresh])].sort((a, b) => a - b),
      });
    }
    if (rand() < 0.5)
      issuers.push({ issuerId: id(1000 + Math.floor(rand() * 1e6)), lo: 1, hi: 50, revoked: [3, 4] });
    const revokedIssuers = [...from.revokedIssuers];
    if (rand() < 0.3) revokedIssuers.push(id(5_000_000 + Math.floor(rand() * 1e6)));
    const retiredIssuers = from.retiredIssuers.filter(() => rand() < 0.8);
    if (rand() < 0.3) retiredIssuers.push(id(7_000_000 + Math.floor(rand() * 1e6)));
    return snapshot(
      [...new Map(issuers.map((i) => [i.issuerId, i])).values()].sort((a, b) =>
        a.issuerId < b.issuerId ? -1 : 1,
      ),
      {
        sequence: from.sequence + 1 + Math.floor(rand() * 3),
        thisUpdate: new Date(from.thisUpdate.getTime() + 60_000),
        nextUpdate: new Date(from.nextUpdate.getTime() + 60_000),
        maxClockSkew: Math.floor(rand() * 600_000),
        revokedIssuers: [...new Set(revokedIssuers)].sort(),
        retiredIssuers: [...new Set(retiredIssuers)].sort(),
      },
    );
  }

  it("diff then apply gives the target, through the wire format, over many random steps", () => {
    const rand = seeded(99);
    let current = snapshot(
      [1, 2, 3].map((n) => ({ issuerId: id(n), lo: 100, hi: 1100, revoked: randomSet(rand, 100, 1100, 30) })),
    );
    for (let step = 0; step < 100; step++) {
      const next = evolve(current, rand);
      const delta = diffFeeds(current, next);
      const wire = decodeFeed(encodeFeed(delta)) as FeedDelta;
      expect(wire).toEqual(delta);
      expect(encodedSize(delta)).toBe(encodeFeed(delta).length);
      expect(applyDelta(current, wire)).toEqual(next);
      current = next;
    }
  });

  it("is small when little changed", () => {
    const rand = seeded(5);
    const from = snapshot([
      { issuerId: id(1), lo: 0, hi: 1_000_000, revoked: randomSet(rand, 0, 1_000_000, 10_000) },
    ]);
    const revoked = [...from.issuers[0].revoked, 1_000_005].sort((a, b) => a - b);
    const to = snapshot([{ issuerId: id(1), lo: 0, hi: 1_000_010, revoked }], { sequence: 2 });
    const delta = diffFeeds(from, to);
    expect(delta.issuers).toEqual([{ issuerId: id(1), lo: 0, hi: 1_000_010, added: [1_000_005] }]);
    expect(encodedSize(delta)).toBeLessThan(60);
    expect(encodedSize(to)).toBeGreaterThan(10_000);
  });

  it("resends an issuer whole when an index left its set or a revoked issuer was dropped", () => {
    const from = snapshot([{ issuerId: id(1), lo: 0, hi: 100, revoked: [5, 6] }], {
      revokedIssuers: [id(7)],
    });
    const to = snapshot([{ issuerId: id(1), lo: 0, hi: 100, revoked: [6] }], { sequence: 2 });
    const delta = diffFeeds(from, to);
    expect(delta.removedIssuers).toEqual([id(1), id(7)]);
    expect(applyDelta(from, delta)).toEqual(to);
  });

  it("refuses a delta from another sequence or another trust domain", () => {
    const base = snapshot([], { sequence: 4 });
    const delta = diffFeeds(base, snapshot([], { sequence: 5 }));
    expectMalformed(
      () => applyDelta(snapshot([], { sequence: 3 }), delta),
      "feed: delta from sequence 4 does not apply to sequence 3",
    );
    expectMalformed(
      () => applyDelta({ ...base, trustDomain: "other.org" }, delta),
      "feed: delta is for trust domain example.org, not other.org",
    );
    expectMalformed(() => diffFeeds(base, base), /must move forward/);
  });
});

describe("strict decoding", () => {
  const rand = seeded(3);
  const doc = snapshot(
    [
      { issuerId: id(1), lo: 10, hi: 5000, revoked: randomSet(rand, 10, 5000, 200) },
      { issuerId: id(2), lo: 0, hi: 0, revoked: [] },
    ],
    { revokedIssuers: [id(3)] },
  );
  const body = encodeFeed(doc);
  const hex = (s: string) => Buffer.from(s.replace(/\s/g, ""), "hex");
  // magic, version 1, snapshot, "a.b", sequence 1, thisUpdate 1, nextUpdate 2: the layout version 2 extends
  const head = "53544644 01 01 03 612e62 01 01 02";
  // the same in version 2, with maxClockSkew 300000 ms
  const head2 = "53544644 02 01 03 612e62 01 01 02 e0a712";

  it("refuses every truncation and any trailing byte", () => {
    for (let n = 0; n < body.length; n++) expectMalformed(() => decodeFeed(body.subarray(0, n)));
    expectMalformed(
      () => decodeFeed(Buffer.concat([body, Buffer.from([0])])),
      "feed: 1 trailing bytes after the body",
    );
  });

  it("refuses corrupted bytes with ERR_MALFORMED only (or decodes them to a valid document)", () => {
    const r = seeded(11);
    for (let trial = 0; trial < 3000; trial++) {
      const mutated = Buffer.from(body);
      for (let k = 0; k < 1 + Math.floor(r() * 3); k++)
        mutated[Math.floor(r() * mutated.length)] = Math.floor(r() * 256);
      try {
        const decoded = decodeFeed(mutated);
        expect(decodeFeed(encodeFeed(decoded))).toEqual(decoded); // whatever decodes is a valid document
      } catch (err) {
        expect(isStintError(err, "ERR_MALFORMED")).toBe(true);
      }
    }
  });

  it.each([
    ["a bad magic", "53544645 01 01", 'feed: body does not start with "STFD"'],
    ["an unknown version", "53544644 03 01", "feed: unsupported version 3"],
    ["an unknown kind", "53544644 01 03", "feed: unknown kind 3"],
    ["an invalid trust domain", "53544644 01 01 03 412e42", 'trust domain "A.B" may contain only'],
    [
      "a non-minimal varint",
      "53544644 01 01 03 612e62 8100",
      "feed: sequence at byte 10 is not minimally encoded",
    ],
    ["a varint over 8 bytes", "53544644 01 01 03 612e62 ffffffffffffffff01", "longer than 8 bytes"],
    ["a varint over 2^53", "53544644 01 01 03 612e62 8080808080808010", "exceeds 2^53 - 1"],
    [
      "nextUpdate before thisUpdate",
      "53544644 01 01 03 612e62 01 02 01",
      "feed: nextUpdate is not after thisUpdate",
    ],
    [
      "a delta not moving forward",
      "53544644 01 02 03 612e62 05 05 01 02 00 00 00",
      "fromSequence 5 is not below",
    ],
    ["a huge issuer count", `${head} ffffffffffff0f`, /issuer count 70368744177663 at byte 13 cannot fit/],
    [
      "unsorted issuers",
      `${head} 02 0000000000000002 00 00 00 0000000000000001 00 00 00 00`,
      "not in ascending order",
    ],
    [
      "duplicate revoked issuers",
      `${head} 00 02 0000000000000003 0000000000000003`,
      "not in ascending order",
    ],
    ["a window past 2^53", `${head} 01 0000000000000001 feffffffffffff0f 02 00 00`, "window end exceeds"],
    [
      "more indices than the window",
      `${head} 01 0000000000000001 00 02 03 01 01 00 00`,
      "3 indices in a window of 2",
    ],
    [
      "Golomb parameter 0",
      `${head} 01 0000000000000001 00 0a 01 00 01 00 00`,
      "Golomb parameter 0 is outside [1, 10]",
    ],
    [
      "Golomb parameter over the window",
      `${head} 01 0000000000000001 00 0a 01 0b 01 00 00`,
      "outside [1, 10]",
    ],
    [
      "more indices than stream bits",
      `${head} 01 0000000000000001 00 ff0f 09 01 01 00 00`,
      "9 indices cannot fit in 1 bytes",
    ],
    ["an all-ones stream", `${head} 01 0000000000000001 00 0a 01 01 02 ffff 00`, "index beyond the window"],
    [
      "an index past the window",
      `${head} 01 0000000000000001 00 0a 02 01 02 ff80 00`,
      "index beyond the window",
    ],
    [
      "a stream that ends early",
      `${head} 01 0000000000000001 00 e803 03 01 01 fe 00`,
      "set stream ends early",
    ],
    [
      "a stream with spare bytes",
      `${head} 01 0000000000000001 00 0a 01 01 02 00 00 00`,
      "set stream has trailing bytes",
    ],
    [
      "non-zero padding",
      `${head} 01 0000000000000001 00 0a 01 01 01 01 00`,
      "set stream padding is not zero",
    ],
    ["a stream longer than the body", `${head} 01 0000000000000001 00 0a 01 01 05 00`, "truncated: issuer"],
    ["a huge revoked-issuer count", `${head} 00 ffffffffffffff0f`, "revoked issuer count"],
  ])("refuses %s", (_name, bytes, message) => {
    expectMalformed(() => decodeFeed(hex(bytes)), message);
  });

  it("accepts the minimal document those cases start from", () => {
    expect(decodeFeed(hex(`${head} 00 00`))).toMatchObject({ trustDomain: "a.b", sequence: 1, issuers: [] });
    expect(decodeFeed(hex(`${head} 01 0000000000000001 00 0a 01 01 01 00 00`))).toMatchObject({
      issuers: [{ issuerId: id(1), lo: 0, hi: 10, revoked: [0] }],
    });
  });

  it.each([
    ["a version 2 body without its retired issuers", `${head2} 00 00`, "truncated: retired issuer count"],
    ["a maxClockSkew over a day", "53544644 02 01 03 612e62 01 01 02 81b89929 00 00 00", "over 86400000"],
    [
      "unsorted retired issuers",
      `${head2} 00 00 02 0000000000000002 0000000000000001`,
      "not in ascending order",
    ],
  ])("refuses %s", (_name, bytes, message) => {
    expectMalformed(() => decodeFeed(hex(bytes)), message);
  });

  it("reads version 1 bodies as publishing no expiry overlap and no retired issuers", () => {
    expect(decodeFeed(hex(`${head} 00 00`))).toMatchObject({ maxClockSkew: 0, retiredIssuers: [] });
    expect(decodeFeed(hex(`${head2} 00 00 01 0000000000000005`))).toMatchObject({
      maxClockSkew: 300_000,
      retiredIssuers: [id(5)],
    });
  });

  it("refuses non-bytes", () => {
    expectMalformed(() => decodeFeed("STFD" as unknown as Buffer), "feed: body is not bytes");
  });
});

describe("encoding refuses documents verifiers would refuse", () => {
  it.each([
    ["an unsorted set", { revoked: [5, 4] }, "index 4 is out of order"],
    ["a repeated index", { revoked: [4, 4] }, "index 4 is out of order"],
    ["an index outside the window", { revoked: [100] }, "outside [0, 100)"],
    ["an inverted window", { lo: 10, hi: 5, revoked: [] }, "window [10, 5) is not a range"],
    ["a bad issuer id", { issuerId: "ABC" }, 'issuer id "ABC" is not 16 lowercase hex digits'],
  ])("%s", (_name, over, message) => {
    expectMalformed(
      () => encodeFeed(snapshot([{ issuerId: id(1), lo: 0, hi: 100, revoked: [], ...over }])),
      message,
    );
  });

  it("sorts issuers and revoked issuers, refusing duplicates", () => {
    const doc = snapshot(
      [
        { issuerId: id(2), lo: 0, hi: 1, revoked: [] },
        { issuerId: id(1), lo: 0, hi: 1, revoked: [] },
      ],
      { revokedIssuers: [id(5), id(4)] },
    );
    const decoded = decodeFeed(encodeFeed(doc)) as FeedSnapshot;
    expect(decoded.issuers.map((i) => i.issuerId)).toEqual([id(1), id(2)]);
    expect(decoded.revokedIssuers).toEqual([id(4), id(5)]);
    expectMalformed(() => encodeFeed({ ...doc, revokedIssuers: [id(4), id(4)] }), "listed twice");
    expectMalformed(() => encodeFeed({ ...doc, nextUpdate: T0 }), "nextUpdate is not after thisUpdate");
    expectMalformed(() => encodeFeed({ ...doc, maxClockSkew: -1 }), "maxClockSkew -1 is not 0..86400000");
    expectMalformed(() => encodeFeed({ ...doc, retiredIssuers: [id(4), id(4)] }), "retired issuer");
  });
});

describe("known-answer vectors (test/vectors/feed.json)", () => {
  const revive = <T>(doc: Record<string, unknown>): T =>
    ({
      ...doc,
      thisUpdate: new Date(doc.thisUpdate as string),
      nextUpdate: new Date(doc.nextUpdate as string),
    }) as T;

  it.each(["snapshot", "next", "delta"] as const)("encodes and decodes %s", (name) => {
    const v = vectors[name];
    const doc = revive<FeedSnapshot | FeedDelta>(v.doc);
    expect(encodeFeed(doc).toString("hex")).toBe(v.body);
    expect(decodeFeed(Buffer.from(v.body, "hex"))).toEqual(doc);
  });

  it("still decodes a version 1 body, and writes it as version 2", () => {
    const doc = revive<FeedSnapshot>(vectors.version1.doc);
    expect(decodeFeed(Buffer.from(vectors.version1.body, "hex"))).toEqual(doc);
    expect(encodeFeed(doc)[4]).toBe(2);
  });

  it("diffs and applies as recorded, and answers the recorded lookups", () => {
    const snap = revive<FeedSnapshot>(vectors.snapshot.doc);
    const next = revive<FeedSnapshot>(vectors.next.doc);
    expect(diffFeeds(snap, next)).toEqual(revive(vectors.delta.doc));
    expect(applyDelta(snap, revive(vectors.delta.doc))).toEqual(next);
    expect(golombParameter(100, 5)).toBe(vectors.golombParameter);
    const index = new FeedIndex(snap);
    for (const l of vectors.lookups)
      expect([l.issuerId, l.sequence, index.status(l.issuerId, l.sequence)]).toEqual([
        l.issuerId,
        l.sequence,
        l.status,
      ]);
  });
});
