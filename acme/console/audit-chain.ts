import { verifyAuditChain } from "../../ca/audit";
import type { Store } from "../../ca/store";
import { isStintError } from "../../common/errors";

/**
 * The audit chain's integrity, checked incrementally: each check verifies the
 * records appended since the last one, at most MAX_PER_CHECK of them, so a
 * page never pays for the whole log. The first checks of a long log take
 * several page views (or the background interval) to reach the end.
 */

const BATCH = 5_000;
const MAX_PER_CHECK = 20_000;

export interface ChainStatus {
  /** Records verified, 1..verifiedSeq, linked and unaltered. */
  verifiedSeq: number;
  /** The first fault found; once broken, it stays broken. */
  broken: string | null;
  /** More records follow that were not checked yet. */
  behind: boolean;
}

export class AuditChainCheck {
  private seq = 0;
  private hash = "";
  private broken: string | null = null;
  private running: Promise<ChainStatus> | null = null;

  constructor(private readonly store: Pick<Store, "listAudit">) {}

  check(): Promise<ChainStatus> {
    this.running ??= this.advance().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async advance(): Promise<ChainStatus> {
    let checked = 0;
    while (this.broken === null && checked < MAX_PER_CHECK) {
      const records = await this.store.listAudit(this.seq, BATCH);
      if (records.length === 0) return this.status(false);
      try {
        verifyAuditChain(records, this.hash);
        if (this.seq > 0 && records[0]!.seq !== this.seq + 1)
          throw new Error(`record ${this.seq + 1} is missing`);
      } catch (err) {
        this.broken = isStintError(err) || err instanceof Error ? err.message : String(err);
        break;
      }
      const last = records[records.length - 1]!;
      this.seq = last.seq;
      this.hash = last.hash;
      checked += records.length;
      if (records.length < BATCH) return this.status(false);
    }
    return this.status(this.broken === null);
  }

  private status(behind: boolean): ChainStatus {
    return { verifiedSeq: this.seq, broken: this.broken, behind };
  }
}
