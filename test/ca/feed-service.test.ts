import { FeedService, type FeedStore } from "../../ca/feed";
import { createLogger } from "../../common/logger";
import type { IssuerSet } from "../../formats/feed";

/**
 * Issue 13: a revocation published at once must not be lost to a build that
 * was already under way and read the store before the revocation committed.
 * The store here is in memory so that a build can be held mid-read; the
 * end-to-end path (admin API → /feed/events → verifier) is
 * test/e2e/feed-push.test.ts.
 */

function memoryStore() {
  const revoked: number[] = [];
  const meta = new Map<string, string>();
  let hold: Promise<void> | null = null;
  const store: FeedStore = {
    revokedCount: async () => revoked.length,
    revocationWindows: async (): Promise<IssuerSet[]> => {
      const seen = [...revoked];
      if (hold) await hold;
      return [{ issuerId: "0011223344556677", lo: 0, hi: 100, revoked: seen }];
    },
    getMeta: async (k) => meta.get(k) ?? null,
    setMeta: async (k, v) => {
      meta.set(k, v);
    },
  };
  return {
    store,
    revoked,
    /** Holds the next reads of revocationWindows (after their snapshot of the set) until the returned function runs. */
    holdReads: () => {
      let release!: () => void;
      hold = new Promise((r) => {
        release = r;
      });
      return () => {
        hold = null;
        release();
      };
    },
  };
}

function service(store: FeedStore): FeedService {
  return new FeedService({
    trustDomain: "example.org",
    store,
    signer: { signFeed: (body) => body, allIssuers: () => [] },
    log: createLogger({ component: "test", stream: { write: () => undefined } }),
    validityMs: 3_600_000,
    pollMs: 3_600_000,
  });
}

it("publishes a revocation that commits while another build is reading the store", async () => {
  const m = memoryStore();
  const feed = service(m.store);
  await feed.start();
  try {
    const sequences: number[] = [];
    feed.subscribe({ publish: (p) => sequences.push(p.sequence), close: () => undefined });
    const release = m.holdReads();
    const running = feed.rebuild("refresh"); // reads the set before the revocation below
    await new Promise((r) => setImmediate(r));
    m.revoked.push(7);
    const published = feed.revoked();
    release();
    await Promise.all([running, published]);
    expect(feed.current().snapshot.issuers[0]?.revoked).toEqual([7]);
    expect(sequences).toHaveLength(2);
  } finally {
    feed.stop();
  }
});

it("coalesces the revocations that arrive during one build into a single build after it", async () => {
  const m = memoryStore();
  const feed = service(m.store);
  await feed.start();
  try {
    const release = m.holdReads();
    const running = feed.rebuild("refresh");
    await new Promise((r) => setImmediate(r));
    m.revoked.push(1, 2);
    const waits = [feed.revoked(), feed.revoked(), feed.revoked()];
    release();
    await Promise.all([running, ...waits]);
    expect(feed.current().sequence).toBe(3); // start, the held build, one more
    expect(feed.current().snapshot.issuers[0]?.revoked).toEqual([1, 2]);
  } finally {
    feed.stop();
  }
});
