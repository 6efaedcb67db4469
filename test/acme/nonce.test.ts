import { randomBytes } from "node:crypto";
import { MemoryNonceLedger, NONCE_LENGTH, type NonceLedger, NonceService } from "../../acme/nonce";

const RETRY = "retry with the nonce from this response's Replay-Nonce header";
const bad = (message: string) => expect.objectContaining({ code: "ERR_BAD_NONCE", check: "nonce", message });

function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

it("issues distinct base64url nonces of a fixed length", () => {
  const svc = new NonceService({ ledger: new MemoryNonceLedger() });
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const n = svc.issue();
    expect(n).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(n).toHaveLength(NONCE_LENGTH);
    seen.add(n);
  }
  expect(seen.size).toBe(1000);
});

it("accepts a nonce once", async () => {
  const svc = new NonceService({ ledger: new MemoryNonceLedger() });
  const n = svc.issue();
  await expect(svc.consume(n)).resolves.toBeUndefined();
  await expect(svc.consume(n)).rejects.toEqual(bad(`nonce has already been used; ${RETRY}`));
});

it("lets exactly one of several concurrent consumers win", async () => {
  const svc = new NonceService({ ledger: new MemoryNonceLedger() });
  for (let i = 0; i < 20; i++) {
    const n = svc.issue();
    const results = await Promise.allSettled([svc.consume(n), svc.consume(n), svc.consume(n)]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
  }
});

it("expires nonces after the TTL", async () => {
  const c = clock();
  const svc = new NonceService({ ledger: new MemoryNonceLedger(c.now), now: c.now, ttlMs: 60_000 });
  const early = svc.issue();
  const late = svc.issue();
  c.advance(59_999);
  await expect(svc.consume(early)).resolves.toBeUndefined();
  c.advance(1);
  await expect(svc.consume(late)).rejects.toEqual(
    bad(`nonce has expired (nonces are valid for 60 s); ${RETRY}`),
  );
});

it("refuses nonces this CA did not issue: tampered, foreign key, or from before a restart", async () => {
  const key = randomBytes(32);
  const svc = new NonceService({ ledger: new MemoryNonceLedger(), key });
  const foreign = new NonceService({ ledger: new MemoryNonceLedger() }).issue();
  const notOurs = bad(`nonce was not issued by this CA (or the CA has restarted since); ${RETRY}`);
  await expect(svc.consume(foreign)).rejects.toEqual(notOurs);

  const n = svc.issue();
  const bytes = Buffer.from(n, "base64url");
  for (const offset of [0, 5, 6, 21, 22, 37]) {
    const tampered = Buffer.from(bytes);
    tampered[offset]! ^= 1;
    await expect(svc.consume(tampered.toString("base64url"))).rejects.toEqual(notOurs);
  }
  // A process restart without a configured key draws a new one: old nonces die with it.
  const restarted = new NonceService({ ledger: new MemoryNonceLedger() });
  await expect(restarted.consume(svc.issue())).rejects.toEqual(notOurs);
  // A shared key (replicas) accepts the other's nonces.
  const replica = new NonceService({ ledger: new MemoryNonceLedger(), key });
  await expect(replica.consume(n)).resolves.toBeUndefined();
});

it("refuses malformed nonces without touching the ledger", async () => {
  const ledger: NonceLedger = { markUsed: jest.fn(async () => true) };
  const svc = new NonceService({ ledger });
  const good = svc.issue();
  const malformed = bad(`nonce is malformed (not a nonce this CA issues); ${RETRY}`);
  // The last character carries 2 unused bits: setting one spells the same bytes non-canonically.
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const canonicalBreak = good.slice(0, -1) + alphabet[alphabet.indexOf(good.at(-1)!) | 1];
  const junk = ["", "abc", good + "A", good.slice(1), good.slice(0, -1) + "=", good.replace(/^./, "+")];
  for (const n of [...junk, canonicalBreak]) {
    await expect(svc.consume(n)).rejects.toEqual(malformed);
  }
  await expect(svc.consume(42 as unknown as string)).rejects.toEqual(malformed);
  expect(ledger.markUsed).not.toHaveBeenCalled();
});

it("hostile mode refuses a share of VALID nonces, and never burns them", async () => {
  const all = new NonceService({ ledger: new MemoryNonceLedger(), rejectShare: 1 });
  const n = all.issue();
  const hostile = bad(
    `nonce refused on purpose: this CA is in test mode and rejects a share of valid nonces; ${RETRY}`,
  );
  await expect(all.consume(n)).rejects.toEqual(hostile);
  await expect(all.consume(n)).rejects.toEqual(hostile);

  const none = new NonceService({ ledger: new MemoryNonceLedger(), rejectShare: 0, random: () => 0 });
  for (let i = 0; i < 50; i++) await expect(none.consume(none.issue())).resolves.toBeUndefined();

  const draws = [0.1, 0.9, 0.29, 0.3];
  const some = new NonceService({
    ledger: new MemoryNonceLedger(),
    rejectShare: 0.3,
    random: () => draws.shift()!,
  });
  const outcomes = [];
  for (let i = 0; i < 4; i++)
    outcomes.push(
      await some.consume(some.issue()).then(
        () => "ok",
        () => "refused",
      ),
    );
  expect(outcomes).toEqual(["refused", "ok", "refused", "ok"]);
});

it("the memory ledger forgets expired nonces, so its size stays bounded", async () => {
  const c = clock();
  const ledger = new MemoryNonceLedger(c.now);
  const svc = new NonceService({ ledger, now: c.now, ttlMs: 1000 });
  for (let i = 0; i < 5000; i++) await svc.consume(svc.issue());
  expect(ledger.size).toBe(5000);
  c.advance(1000);
  await svc.consume(svc.issue());
  expect(ledger.size).toBe(1);
  // An expired nonce is refused by the ledger itself, whatever the caller believes.
  expect(await ledger.markUsed("x", c.now())).toBe(false);
  expect(await ledger.markUsed("y", c.now() + 1)).toBe(true);
  expect(await ledger.markUsed("y", c.now() + 1)).toBe(false);
});

it("refuses bad settings", () => {
  const ledger = new MemoryNonceLedger();
  const config = (message: string) => expect.objectContaining({ code: "ERR_CONFIG", message });
  expect(() => new NonceService({ ledger, ttlMs: 0 })).toThrow(
    config("nonce TTL must be a positive whole number of milliseconds"),
  );
  expect(() => new NonceService({ ledger, key: Buffer.alloc(16) })).toThrow(
    config("nonce HMAC key must be at least 32 bytes"),
  );
  expect(() => new NonceService({ ledger, rejectShare: 1.5 })).toThrow(
    config("nonce rejection share must be between 0 and 1"),
  );
});
