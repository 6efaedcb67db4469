import type { Store } from "./store";

/**
 * Hands out an issuer's sequence numbers from blocks reserved durably in the
 * store, so issuance pays a store round trip once per block rather than per
 * certificate. A crash loses the rest of a block (a gap in the window), never
 * reuses a number.
 */
export class SequenceAllocator {
  private next = 0;
  private end = 0;
  private refill: Promise<void> | null = null;

  constructor(
    private readonly store: Store,
    private readonly issuerId: string,
    private readonly blockSize: number,
  ) {}

  async take(): Promise<number> {
    while (this.next >= this.end) {
      // Concurrent callers share one reservation instead of each reserving a block.
      this.refill ??= this.store
        .reserveSequences(this.issuerId, this.blockSize)
        .then((first) => {
          this.next = first;
          this.end = first + this.blockSize;
        })
        .finally(() => {
          this.refill = null;
        });
      await this.refill;
    }
    return this.next++;
  }
}
