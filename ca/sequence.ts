import type { Store } from "./store";

/**
 * Hands out an issuer's sequence numbers from blocks reserved durably in the
 * store, so issuance pays a store round trip once per block rather than per
 * certificate. A crash loses the rest of a block (a gap in the window), never
 * reuses a number.
 *
 * Blocks start at one number and double on each refill up to `blockSize`:
 * every number reserved and never used widens the feed's windows (and its
 * size, docs/feed.md "Size"), and a short-lived process — `stint ca issue`, a
 * server restarted often — uses few. A busy server reaches full blocks after
 * log2(blockSize) refills, and never leaves more unused than it has issued.
 */
export class SequenceAllocator {
  private next = 0;
  private end = 0;
  private nextBlock = 1;
  private refill: Promise<void> | null = null;

  constructor(
    private readonly store: Store,
    private readonly issuerId: string,
    private readonly blockSize: number,
  ) {}

  async take(): Promise<number> {
    while (this.next >= this.end) {
      // Concurrent callers share one reservation instead of each reserving a block.
      this.refill ??= this.reserve().finally(() => {
        this.refill = null;
      });
      await this.refill;
    }
    return this.next++;
  }

  private async reserve(): Promise<void> {
    const size = Math.min(this.nextBlock, this.blockSize);
    const first = await this.store.reserveSequences(this.issuerId, size);
    this.next = first;
    this.end = first + size;
    this.nextBlock = size * 2;
  }
}
