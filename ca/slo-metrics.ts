import type { Logger } from "../common/logger";
import type { Registry } from "../common/metrics";
import { type Repetition, repeatEvery } from "../common/repeat";
import type { FeedService } from "./feed";
import type { Store } from "./store";

/**
 * Facts the alerts in deploy/prometheus/stint-rules.yml need and no request
 * path counts: the revocation feed's age against its validity, and the
 * workloads whose newest certificate expired with nothing after it (the page
 * "a certificate expired without renewal", docs/slo.md).
 *
 * The expiry scan reads the store, so it runs on its own timer and the
 * scrape only reads its last result: a scrape every few seconds, from
 * several Prometheus servers, costs nothing.
 */

/** How far back the scan looks: a workload that stopped renewing an hour ago has been paged for an hour. */
export const EXPIRED_LOOKBACK_MS = 3_600_000;
/** Rows read per scan; the count gauge stops here (docs/slo.md). */
export const EXPIRED_SCAN_LIMIT = 1000;
/** SPIFFE IDs given their own series, newest expiry first: enough to name them on the dashboard, bounded for Prometheus. */
export const EXPIRED_LABELLED = 50;

export interface SloMetricsOptions {
  store: Store;
  feed: FeedService;
  metrics: Registry;
  log: Logger;
  feedValidityMs: number;
  /** How often the expiry scan runs (metrics.expiredScanInterval). */
  scanMs: number;
}

/** The scan reads at most this much of the past per query, yielding between queries, so it never holds the event loop long. */
const SLICE_MS = 60_000;

export class SloMetrics {
  /** SPIFFE ID -> notAfter (ms) of its newest certificate, expired with no later one. */
  private expired = new Map<string, number>();
  /** Expiries up to here have been scanned; later scans read only what expired since. */
  private scannedTo = 0;
  private scannedAt = 0;
  private watch: Repetition | null = null;

  constructor(private readonly opts: SloMetricsOptions) {
    const m = opts.metrics;
    m.callback(
      "stint_feed_age_seconds",
      "Seconds since the revocation feed snapshot served was signed (its thisUpdate).",
      "gauge",
      () => (Date.now() - opts.feed.current().snapshot.thisUpdate.getTime()) / 1000,
    );
    m.callback(
      "stint_feed_validity_seconds",
      "How long each feed snapshot is valid (feed.validity): verifiers refuse every certificate past it.",
      "gauge",
      () => opts.feedValidityMs / 1000,
    );
    m.callback(
      "stint_feed_sequence",
      "Sequence number of the revocation feed snapshot served.",
      "gauge",
      () => opts.feed.current().sequence,
    );
    m.callback(
      "stint_certificates_expired_unrenewed",
      `SPIFFE IDs whose newest certificate expired in the last hour, unrevoked, with no later one (at most ${EXPIRED_SCAN_LIMIT}).`,
      "gauge",
      () => this.expired.size,
    );
    m.gauge(
      "stint_certificate_expired_unrenewed_timestamp_seconds",
      `notAfter of each such SPIFFE ID's last certificate (the ${EXPIRED_LABELLED} most recent).`,
      ["spiffe_id"],
      (g) => {
        const newest = [...this.expired].sort((a, b) => b[1] - a[1]).slice(0, EXPIRED_LABELLED);
        for (const [spiffeId, notAfter] of newest) g.set(notAfter / 1000, { spiffe_id: spiffeId });
      },
    );
    m.callback(
      "stint_expired_scan_timestamp_seconds",
      "Unix time of the last completed expiry scan; 0 before the first.",
      "gauge",
      () => this.scannedAt / 1000,
    );
  }

  async start(): Promise<void> {
    await this.scan();
    this.watch = repeatEvery(
      this.opts.scanMs,
      () => this.scan(),
      (err) => this.opts.log.error("expired-certificate scan failed", { error: err }),
    );
  }

  stop(): void {
    this.watch?.stop();
    this.watch = null;
  }

  /**
   * Incremental, because the full hour is costly: at 100,000 SPIFFE IDs
   * renewing hourly, one query over the last hour took 3.4 s of blocking
   * SQLite time. Each scan reads only the expiries since the last one, in
   * slices, then re-checks the IDs it holds (a renewal or a revocation since
   * takes them out; an hour past expiry ages them out).
   */
  private async scan(): Promise<void> {
    const now = Date.now();
    let from = Math.max(this.scannedTo, now - EXPIRED_LOOKBACK_MS);
    while (from < now) {
      const to = Math.min(from + SLICE_MS, now);
      for (const c of await this.opts.store.expiredUnrenewed(
        new Date(from),
        new Date(to),
        EXPIRED_SCAN_LIMIT,
      )) {
        if (c.spiffeId !== null && this.expired.size < EXPIRED_SCAN_LIMIT)
          this.expired.set(c.spiffeId, c.notAfter.getTime());
      }
      from = to;
      await new Promise((r) => setImmediate(r));
    }
    this.scannedTo = now;
    for (const [spiffeId, notAfter] of this.expired) {
      if (notAfter <= now - EXPIRED_LOOKBACK_MS) {
        this.expired.delete(spiffeId);
        continue;
      }
      // Only the certificates expiring in that one millisecond: an index range of a few rows.
      const still = await this.opts.store.expiredUnrenewed(
        new Date(notAfter - 1),
        new Date(notAfter),
        EXPIRED_SCAN_LIMIT,
      );
      if (!still.some((c) => c.spiffeId === spiffeId)) this.expired.delete(spiffeId);
    }
    this.scannedAt = now;
  }
}
