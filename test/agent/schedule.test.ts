import { Backoff, crlRefreshTime, renewalTime, retryRoundsMs } from "../../agent/schedule";

const nb = new Date("2030-01-01T00:00:00.000Z");
const LIFE = 3_000_000; // 50 minutes: 60% and 10% of it are whole milliseconds
const at = (ms: number) => new Date(nb.getTime() + ms);
const na = at(LIFE);
const fixed = (r: number) => () => r;

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

describe("renewalTime without ARI", () => {
  it("lands on fraction ± jitter of the lifetime, at the bounds for random 0 and 1", () => {
    const base = { notBefore: nb, notAfter: na, now: nb };
    expect(renewalTime({ ...base, random: fixed(0) })).toEqual(at(1_800_000 - 300_000));
    expect(renewalTime({ ...base, random: fixed(0.5) })).toEqual(at(1_800_000));
    expect(renewalTime({ ...base, random: fixed(1) })).toEqual(at(1_800_000 + 300_000));
    expect(renewalTime({ ...base, fraction: 0.5, jitter: 0, random: fixed(0.9) })).toEqual(at(1_500_000));
  });

  it("stays inside the bounds with the default random source", () => {
    for (let i = 0; i < 200; i++) {
      const t = renewalTime({ notBefore: nb, notAfter: na, now: nb }).getTime() - nb.getTime();
      expect(t).toBeGreaterThanOrEqual(1_500_000);
      expect(t).toBeLessThanOrEqual(2_100_000);
    }
  });

  it("is never later than notAfter minus the longest of 1 s, 10% of the lifetime and the retry rounds", () => {
    const late = { notBefore: nb, notAfter: na, now: nb, fraction: 0.95, jitter: 0.5 };
    expect(renewalTime({ ...late, random: fixed(1) })).toEqual(at(LIFE - 300_000));
    // A 5 s certificate: 10% is 500 ms, so the 1 s floor applies.
    expect(renewalTime({ ...late, notAfter: at(5_000), random: fixed(1) })).toEqual(at(4_000));
    // Four rounds of a 1 s → 5 min backoff take 15 s at most; for a 100 s certificate that beats 10%.
    const rounds = retryRoundsMs({ baseMs: 1000, capMs: 300_000 });
    expect(rounds).toBe(15_000);
    expect(renewalTime({ ...late, notAfter: at(100_000), retryMarginMs: rounds, random: fixed(1) })).toEqual(
      at(85_000),
    );
    // Capped rounds: 4 × 10 s.
    expect(retryRoundsMs({ baseMs: 60_000, capMs: 10_000 })).toBe(40_000);
  });

  it("is never before notBefore, even with a large jitter", () => {
    expect(
      renewalTime({ notBefore: nb, notAfter: na, now: nb, fraction: 0.1, jitter: 0.5, random: fixed(0) }),
    ).toEqual(nb);
  });

  it("is never earlier than now", () => {
    const now = at(2_500_000);
    expect(renewalTime({ notBefore: nb, notAfter: na, now, random: fixed(0) })).toEqual(now);
    const expired = at(LIFE + 60_000);
    expect(renewalTime({ notBefore: nb, notAfter: na, now: expired, random: fixed(1) })).toEqual(expired);
  });

  it("rejects a fraction or jitter out of range", () => {
    const base = { notBefore: nb, notAfter: na, now: nb };
    expect(thrown(() => renewalTime({ ...base, fraction: 1 }))).toMatchObject({
      code: "ERR_CONFIG",
      message: "renewal fraction must be between 0 and 1 (exclusive), got 1",
    });
    expect(thrown(() => renewalTime({ ...base, jitter: -0.1 }))).toMatchObject({
      code: "ERR_CONFIG",
      message: "renewal jitter must be at least 0 and below 1, got -0.1",
    });
  });
});

describe("renewalTime with an ARI window", () => {
  const ari = { start: at(1_000_000), end: at(1_600_000) };
  const base = { notBefore: nb, notAfter: na, now: nb, ari };

  it("picks uniformly inside [start, end], ignoring fraction and jitter", () => {
    expect(renewalTime({ ...base, random: fixed(0) })).toEqual(ari.start);
    expect(renewalTime({ ...base, random: fixed(0.5) })).toEqual(at(1_300_000));
    expect(renewalTime({ ...base, random: fixed(1) })).toEqual(ari.end);
    expect(renewalTime({ ...base, fraction: 0.9, jitter: 0, random: fixed(0) })).toEqual(ari.start);
  });

  it("renews now when the window is already past", () => {
    const now = at(1_700_000);
    expect(renewalTime({ ...base, now, random: fixed(0) })).toEqual(now);
    expect(renewalTime({ ...base, now, random: fixed(1) })).toEqual(now);
  });

  it("renews now when the chosen instant in a window that has begun is past", () => {
    const now = at(1_200_000);
    expect(renewalTime({ ...base, now, random: fixed(0) })).toEqual(now);
    expect(renewalTime({ ...base, now, random: fixed(1) })).toEqual(ari.end);
  });

  it("still keeps the margin before notAfter", () => {
    const lateAri = { start: at(LIFE - 400_000), end: na };
    expect(renewalTime({ ...base, ari: lateAri, random: fixed(1) })).toEqual(at(LIFE - 300_000));
  });

  it("renews now inside a pulled-forward window, even past the margin", () => {
    const now = at(LIFE - 100_000);
    const urgent = { start: now, end: at(LIFE) };
    expect(renewalTime({ ...base, now, ari: urgent, random: fixed(0.7) })).toEqual(now);
  });

  it("falls back to the fraction for an invalid window (end not after start)", () => {
    const bad = { start: at(1_600_000), end: at(1_000_000) };
    expect(renewalTime({ ...base, ari: bad, random: fixed(0.5) })).toEqual(at(1_800_000));
    expect(renewalTime({ ...base, ari: null, random: fixed(0.5) })).toEqual(at(1_800_000));
  });
});

describe("Backoff", () => {
  const now = new Date("2030-01-01T00:00:00Z");

  it("grows exponentially up to the cap, with random 1 giving the ceiling", () => {
    const b = new Backoff({ baseMs: 1000, capMs: 10_000, random: fixed(1) });
    const waits = Array.from({ length: 6 }, () => b.next(now));
    expect(waits).toEqual([1000, 2000, 4000, 8000, 10_000, 10_000]);
    expect(b.attempts).toBe(6);
  });

  it("uses full jitter: random 0 waits 0, random r waits r × ceiling", () => {
    const zero = new Backoff({ random: fixed(0) });
    expect([zero.next(now), zero.next(now), zero.next(now)]).toEqual([0, 0, 0]);
    const half = new Backoff({ baseMs: 1000, random: fixed(0.5) });
    expect([half.next(now), half.next(now), half.next(now)]).toEqual([500, 1000, 2000]);
  });

  it("keeps every wait within [0, ceiling] with the default random source", () => {
    const b = new Backoff({ baseMs: 100, capMs: 1000 });
    for (let i = 0; i < 50; i++) {
      const w = b.next(now);
      expect(w).toBeGreaterThanOrEqual(0);
      expect(w).toBeLessThanOrEqual(Math.min(1000, 100 * 2 ** i));
    }
  });

  it("defaults to 1 s doubling up to 5 minutes", () => {
    const b = new Backoff({ random: fixed(1) });
    expect(b.next(now)).toBe(1000);
    for (let i = 0; i < 20; i++) b.next(now);
    expect(b.next(now)).toBe(300_000);
  });

  it("survives a very long failure streak without overflow", () => {
    const b = new Backoff({ random: fixed(1) });
    for (let i = 0; i < 2000; i++) b.next(now);
    expect(b.next(now)).toBe(300_000);
  });

  it("waits at most half the time left before the deadline, and 0 once it has passed", () => {
    const b = new Backoff({ baseMs: 60_000, capMs: 600_000, random: fixed(1) });
    // A retry landing on the deadline itself comes too late: the certificate has just expired.
    expect(b.next(now, new Date(now.getTime() + 30_000))).toBe(15_000);
    expect(b.next(now, new Date(now.getTime() + 1_000_000))).toBe(120_000);
    expect(b.next(now, new Date(now.getTime() - 5000))).toBe(0);
    expect(b.next(now, null)).toBe(480_000);
  });

  it("reset starts over", () => {
    const b = new Backoff({ baseMs: 1000, random: fixed(1) });
    b.next(now);
    b.next(now);
    b.reset();
    expect(b.attempts).toBe(0);
    expect(b.next(now)).toBe(1000);
  });

  it("rejects a base or cap that is not positive", () => {
    expect(thrown(() => new Backoff({ baseMs: 0 }))).toMatchObject({
      code: "ERR_CONFIG",
      message: "backoff base and cap must be positive, got base 0 ms and cap 300000 ms",
    });
  });
});

describe("crlRefreshTime", () => {
  const now = new Date("2030-01-01T00:00:00.000Z");
  const inMs = (ms: number) => new Date(now.getTime() + ms);
  const HOUR = 3_600_000;
  const base = { now, nextUpdate: inMs(HOUR), maxMs: 24 * HOUR };

  it("after a good fetch: 40–60% of the remaining validity", () => {
    expect(crlRefreshTime({ ...base, random: fixed(0) })).toEqual(inMs(0.4 * HOUR));
    expect(crlRefreshTime({ ...base, random: fixed(0.5) })).toEqual(inMs(0.5 * HOUR));
    expect(crlRefreshTime({ ...base, random: fixed(0.999999) })).toEqual(inMs(Math.floor(0.5999998 * HOUR)));
    for (let i = 0; i < 200; i++) {
      const t = crlRefreshTime(base).getTime() - now.getTime();
      expect(t).toBeGreaterThanOrEqual(0.4 * HOUR);
      expect(t).toBeLessThan(0.6 * HOUR);
    }
  });

  it("is never later than maxMs (a root CRL valid for years is still fetched again) nor sooner than 1 s", () => {
    const years = { ...base, nextUpdate: inMs(10 * 365 * 24 * HOUR), maxMs: 300_000, random: fixed(0.5) };
    expect(crlRefreshTime(years)).toEqual(inMs(300_000));
    expect(crlRefreshTime({ ...base, nextUpdate: inMs(1500), random: fixed(0) })).toEqual(inMs(1000));
  });

  it("after a failure: about 30 s, sooner while the held CRL has little left", () => {
    expect(crlRefreshTime({ ...base, failed: true, random: fixed(0.5) })).toEqual(inMs(30_000));
    expect(crlRefreshTime({ ...base, failed: true, random: fixed(0) })).toEqual(inMs(24_000));
    // 60 s left: a quarter of it (with random 0.5), so a second and third try still come before nextUpdate.
    expect(crlRefreshTime({ ...base, nextUpdate: inMs(60_000), failed: true, random: fixed(0.5) })).toEqual(
      inMs(15_000),
    );
  });

  it("with no CRL held, or one already past nextUpdate: the failure delay", () => {
    expect(crlRefreshTime({ ...base, nextUpdate: null, random: fixed(0.5) })).toEqual(inMs(30_000));
    expect(crlRefreshTime({ ...base, nextUpdate: inMs(-5000), random: fixed(0.5) })).toEqual(inMs(30_000));
  });
});
