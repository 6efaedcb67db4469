import type { IssuerProgress, Store } from "../../ca/store";
import type { Logger } from "../../common/logger";

/**
 * Rotation progress over time: samples of Store.issuerProgress for issuers a
 * fleet is moving off (retired or tainted, with certificates not yet
 * replaced), kept in this server's memory. A restart starts a new series; the
 * current numbers are always read from the store.
 */

export interface ProgressSample extends IssuerProgress {
  at: Date;
}

const MAX_SAMPLES = 240;
const MIN_GAP_MS = 5_000;

export class ProgressHistory {
  private readonly series = new Map<string, ProgressSample[]>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: Pick<Store, "listIssuers" | "issuerProgress">,
    private readonly log: Logger,
  ) {}

  /** Adds a sample unless one was taken moments ago with the same numbers. */
  record(issuerId: string, at: Date, p: IssuerProgress): void {
    const list = this.series.get(issuerId) ?? [];
    const last = list[list.length - 1];
    if (
      last &&
      at.getTime() - last.at.getTime() < MIN_GAP_MS &&
      last.unreplaced === p.unreplaced &&
      last.live === p.live
    )
      return;
    list.push({ at, ...p });
    if (list.length > MAX_SAMPLES) list.splice(0, list.length - MAX_SAMPLES);
    this.series.set(issuerId, list);
  }

  samples(issuerId: string): readonly ProgressSample[] {
    return this.series.get(issuerId) ?? [];
  }

  /** Samples every issuer being moved off, every `intervalMs`, whether or not anyone is looking. */
  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      this.sampleAll(new Date()).catch((err: unknown) =>
        this.log.warn("console: could not sample rotation progress", { error: err }),
      );
    }, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async sampleAll(now: Date): Promise<void> {
    for (const issuer of await this.store.listIssuers()) {
      if (issuer.kind !== "intermediate" || (issuer.state !== "retired" && issuer.state !== "tainted"))
        continue;
      const p = await this.store.issuerProgress(issuer.id, now);
      if (p.live > 0 || this.series.has(issuer.id)) this.record(issuer.id, now, p);
    }
  }
}
