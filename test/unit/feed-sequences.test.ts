import { rmSync } from "node:fs";
import { join } from "node:path";
import { SequenceAllocator } from "../../ca/sequence";
import { SqliteStore } from "../../ca/store/sqlite";
import { tempDir } from "../helpers/openssl";
import { event, issuer } from "../store/fixtures";

/**
 * Sequence blocks widen the feed's windows by every number reserved and
 * never used (docs/feed.md, "Size"): the allocator starts small and doubles,
 * so a short-lived process leaves no gap. On a real SQLite store.
 */

const dir = tempDir("stint-sequences-");
let store: SqliteStore;
let sizes: number[];
const ISSUER = "00112233445566ff";

beforeAll(async () => {
  store = await SqliteStore.open(join(dir, "stint.db"), { create: true });
  await store.putIssuer(issuer(ISSUER), event("issuer.create", ISSUER));
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  sizes = [];
  const reserve = store.reserveSequences.bind(store);
  jest.spyOn(store, "reserveSequences").mockImplementation((id, count) => {
    sizes.push(count);
    return reserve(id, count);
  });
});
afterEach(() => jest.restoreAllMocks());

const takeN = async (a: SequenceAllocator, n: number) => {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await a.take());
  return out;
};

describe("SequenceAllocator", () => {
  it("reserves one number for a process that issues one certificate, so processes leave no gaps", async () => {
    const first = await new SequenceAllocator(store, ISSUER, 1000).take();
    const second = await new SequenceAllocator(store, ISSUER, 1000).take();
    expect(second).toBe(first + 1);
    expect(sizes).toEqual([1, 1]);
  });

  it("doubles its blocks up to the block size, handing out consecutive numbers", async () => {
    const a = new SequenceAllocator(store, ISSUER, 8);
    const got = await takeN(a, 40);
    expect(sizes).toEqual([1, 2, 4, 8, 8, 8, 8, 8]);
    expect(got).toEqual(got.map((_, i) => got[0] + i));
  });

  it("never leaves more numbers unused than it handed out", async () => {
    for (const n of [1, 2, 3, 5, 17, 100, 1500]) {
      const start = await new SequenceAllocator(store, ISSUER, 1000).take();
      await takeN(new SequenceAllocator(store, ISSUER, 1000), n);
      const next = await new SequenceAllocator(store, ISSUER, 1000).take();
      const unused = next - start - 1 - n;
      expect(unused).toBeLessThan(n);
    }
  });

  it("shares one reservation among concurrent callers", async () => {
    const a = new SequenceAllocator(store, ISSUER, 1000);
    const got = await Promise.all(Array.from({ length: 50 }, () => a.take()));
    expect(new Set(got).size).toBe(50);
    expect(sizes).toEqual([1, 2, 4, 8, 16, 32]);
  });
});
