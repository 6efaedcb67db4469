import { MemoryNonceLedger, NonceService } from "../../acme/nonce";

/**
 * The memory ledger keeps consumed nonces in a compact form (their MAC bytes,
 * expiry in whole seconds): a replay must still be caught, every other nonce
 * still accepted, and nothing forgotten before it expires.
 */

function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

it("catches every replay and accepts every fresh nonce, with keys of its own making", async () => {
  const svc = new NonceService({ ledger: new MemoryNonceLedger() });
  const nonces = Array.from({ length: 2000 }, () => svc.issue());
  for (const n of nonces) await expect(svc.consume(n)).resolves.toBeUndefined();
  for (const n of nonces) await expect(svc.consume(n)).rejects.toMatchObject({ code: "ERR_BAD_NONCE" });
});

it("remembers a nonce until its expiry, rounded up to the second, and then forgets it", async () => {
  const c = clock();
  const ledger = new MemoryNonceLedger(c.now);
  const svc = new NonceService({ ledger, now: c.now, ttlMs: 1500 });
  const first = svc.issue();
  await svc.consume(first);
  expect(ledger.size).toBe(1);
  // The first expires 1.5 s after issue; it is kept to the next whole second after that.
  c.advance(1499);
  await expect(svc.consume(first)).rejects.toMatchObject({
    message: expect.stringContaining("already been used"),
  });
  await svc.consume(svc.issue());
  expect(ledger.size).toBe(2);
  c.advance(1000);
  await svc.consume(svc.issue());
  expect(ledger.size).toBeLessThanOrEqual(2);
  c.advance(2000);
  await svc.consume(svc.issue());
  expect(ledger.size).toBe(1);
});

it("keeps what is not one of its nonces as it is", async () => {
  const ledger = new MemoryNonceLedger();
  await expect(ledger.markUsed("short", Date.now() + 60_000)).resolves.toBe(true);
  await expect(ledger.markUsed("short", Date.now() + 60_000)).resolves.toBe(false);
  await expect(ledger.markUsed("other", Date.now() + 60_000)).resolves.toBe(true);
});
