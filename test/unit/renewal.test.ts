import { renewalTime, retryRoundsMs } from "../../agent/schedule";
import { DEFAULT_WINDOW, parseWindow, renewalWindow } from "../../ca/renewal";
import { formatCertId, parseCertId } from "../../formats/ari";

const nb = new Date("2026-11-23T10:00:00Z");
const na = new Date("2026-11-23T11:00:00Z");

describe("renewal windows", () => {
  it("is 50–75% of the lifetime, polled every tenth but at least every five minutes", () => {
    const tenMinutes = new Date(nb.getTime() + 10 * 60_000);
    expect(renewalWindow({ notBefore: nb, notAfter: tenMinutes }, nb)).toMatchObject({
      retryAfterSeconds: 60,
    });
    // An hour-long certificate would be polled every six minutes; a taint must reach it sooner.
    expect(renewalWindow({ notBefore: nb, notAfter: na }, nb)).toEqual({
      start: new Date("2026-11-23T10:30:00Z"),
      end: new Date("2026-11-23T10:45:00Z"),
      retryAfterSeconds: 300,
    });
    // renewal.window "60%-80%"
    expect(renewalWindow({ notBefore: nb, notAfter: na }, nb, { start: 0.6, end: 0.8 })).toMatchObject({
      start: new Date("2026-11-23T10:36:00Z"),
      end: new Date("2026-11-23T10:48:00Z"),
    });
    const day = new Date(nb.getTime() + 86_400_000);
    expect(renewalWindow({ notBefore: nb, notAfter: day }, nb).retryAfterSeconds).toBe(300);
  });

  it("moves to now when the authority pulls it forward, and never past expiry", () => {
    const now = new Date("2026-11-23T10:10:00Z");
    const w = renewalWindow(
      { notBefore: nb, notAfter: na, renewFrom: new Date("2026-11-23T10:05:00Z") },
      now,
    );
    expect(w.start.toISOString()).toBe("2026-11-23T10:05:00.000Z");
    expect(w.end.toISOString()).toBe("2026-11-23T10:10:00.000Z");
    const late = renewalWindow(
      { notBefore: nb, notAfter: na, renewFrom: new Date("2026-11-23T10:58:00Z") },
      new Date("2026-11-23T10:58:00Z"),
    );
    expect(late.end).toEqual(na);
  });

  it("polls short-lived certificates often but not more than once a second", () => {
    const short = renewalWindow({ notBefore: nb, notAfter: new Date(nb.getTime() + 30_000) }, nb);
    expect(short.retryAfterSeconds).toBe(3);
    expect(
      renewalWindow({ notBefore: nb, notAfter: new Date(nb.getTime() + 2000) }, nb).retryAfterSeconds,
    ).toBe(1);
  });
});

/** mulberry32: a small seeded generator, so a failing draw can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("renewal runway", () => {
  const MINUTE = 60_000;
  const backoff = { baseMs: 1000, capMs: 5 * MINUTE };

  it("10,000 agent schedules: none after the window, and at least 25% of the lifetime left", () => {
    const random = seeded(19);
    for (let i = 0; i < 10_000; i++) {
      // Lifetimes from 1 minute to 30 days; the agent asks at any point of the first half.
      const life = Math.floor(MINUTE + random() * 30 * 24 * 60 * MINUTE);
      const notBefore = new Date(nb.getTime() + Math.floor(random() * 1e9));
      const notAfter = new Date(notBefore.getTime() + life);
      const now = new Date(notBefore.getTime() + Math.floor((random() * life) / 2));
      const window = renewalWindow({ notBefore, notAfter }, now);
      const withAri = renewalTime({
        notBefore,
        notAfter,
        now,
        ari: window,
        retryMarginMs: retryRoundsMs(backoff),
        random,
      });
      const fallback = renewalTime({
        notBefore,
        notAfter,
        now,
        retryMarginMs: retryRoundsMs(backoff),
        random,
      });
      const draw = `draw ${i}: life ${life} ms`;
      expect([draw, withAri.getTime() <= window.end.getTime()]).toEqual([draw, true]);
      expect([draw, withAri.getTime() >= window.start.getTime()]).toEqual([draw, true]);
      // The CA's window and the agent's own fallback (60% ± 10%) both leave a quarter of the lifetime.
      const latest = notBefore.getTime() + Math.floor(life * 0.75);
      expect([draw, window.end.getTime() <= latest, fallback.getTime() <= latest]).toEqual([
        draw,
        true,
        true,
      ]);
    }
  });

  it("keeps a pulled-forward window: a revoked certificate is renewed within minutes, even late in its life", () => {
    const random = seeded(20);
    const notAfter = na;
    for (let i = 0; i < 1000; i++) {
      const now = new Date(nb.getTime() + Math.floor(random() * 3_600_000));
      const window = renewalWindow({ notBefore: nb, notAfter, renewFrom: now }, now);
      const at = renewalTime({ notBefore: nb, notAfter, now, ari: window, random }).getTime();
      expect(at).toBeGreaterThanOrEqual(now.getTime());
      expect(at).toBeLessThanOrEqual(Math.min(notAfter.getTime(), now.getTime() + 5 * MINUTE));
    }
  });

  it("reads renewal.window as two percentages, and refuses windows without a runway", () => {
    expect(parseWindow("50%-75%")).toEqual(DEFAULT_WINDOW);
    expect(parseWindow(" 60 % - 90 % ")).toEqual({ start: 0.6, end: 0.9 });
    expect(() => parseWindow("66%-100%")).toThrow(
      expect.objectContaining({
        code: "ERR_CONFIG",
        message:
          '"66%-100%" ends too late: the window must end by 90% so renewals keep a runway before expiry',
      }),
    );
    expect(() => parseWindow("70%-95%")).toThrow(
      expect.objectContaining({
        code: "ERR_CONFIG",
        message:
          '"70%-95%" ends too late: the window must end by 90% so renewals keep a runway before expiry',
      }),
    );
    expect(() => parseWindow("75%-50%")).toThrow(
      expect.objectContaining({ message: '"75%-50%": the window must start before it ends' }),
    );
    expect(() => parseWindow("0.5-0.75")).toThrow(expect.objectContaining({ code: "ERR_CONFIG" }));
  });
});

describe("ARI certificate identifiers", () => {
  it("round-trips the RFC 9773 example", () => {
    // RFC 9773 4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial 00:87:65:43:21
    const text = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE";
    const id = parseCertId(text);
    expect(id.authorityKeyId.toString("hex")).toBe("69885b6b87464041e1b37b847ba0ae2cde01c8d4");
    expect(id.serial.toString("hex")).toBe("0087654321");
    expect(formatCertId(id)).toBe(text);
  });

  it.each([
    "",
    "abc",
    "a.b.c",
    "aYhb.",
    "aY=hb.AIdl",
    "aYhba4dGQEHhs3uEe6CuLN4ByNQ.gA",
    "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AAE",
  ])("refuses %j", (text) => {
    expect(() => parseCertId(text)).toThrow(
      expect.objectContaining({ code: expect.stringMatching(/ERR_MALFORMED|ERR_JOSE/) }),
    );
  });
});
