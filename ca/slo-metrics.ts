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

interface Expired {
  spiffeId: string;
  notAfterSeconds: number;
}

export class SloMetrics {
  private expired: Expired[] = [];
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
      () => this.expired.length,
    );
    m.gauge(
      "stint_certificate_expired_unrenewed_timestamp_seconds",
      `notAfter of each such SPIFFE ID's last certificate (the ${EXPIRED_LABELLED} most recent).`,
      ["spiffe_id"],
      (g) => {
        for (const e of this.expired.slice(0, EXPIRED_LABELLED))
          g.set(e.notAfterSeconds, { spiffe_id: e.spiffeId });
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

  private async scan(): Promise<void> {
    const now = new Date();
    const rows = await this.opts.store.expiredUnrenewed(
      new Date(now.getTime() - EXPIRED_LOOKBACK_MS),
      now,
      EXPIRED_SCAN_LIMIT,
    );
    this.expired = rows.map((r) => ({
      spiffeId: r.spiffeId ?? "",
      notAfterSeconds: r.notAfter.getTime() / 1000,
    }));
    this.scannedAt = now.getTime();
  }
}
