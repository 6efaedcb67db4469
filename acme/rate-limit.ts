import { StintError } from "../common/errors";

/**
 * Token buckets keyed by client address or account: each key may make
 * `burst` requests at once and then `perSecond` a second. Kept in memory per
 * CA process: a limit protects this process's CPU and the store behind it,
 * and replicas behind a balancer each enforce their share.
 */

export interface RateLimit {
  /** Sustained rate; 0 disables the limit. */
  perSecond: number;
  /** Requests allowed at once after a quiet period. */
  burst: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Buckets idle long enough to be full again are dropped when the map grows past this. */
const SWEEP_AT = 50_000;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: RateLimit,
    /** What is limited, for the problem detail: "requests from this address". */
    private readonly what: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one token for `key`, or throws ERR_RATE_LIMITED with the seconds until one is free. */
  take(key: string): void {
    const { perSecond, burst } = this.limit;
    if (perSecond <= 0) return;
    const now = this.now();
    const bucket = this.buckets.get(key) ?? { tokens: burst, at: now };
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
    bucket.at = now;
    if (bucket.tokens < 1) {
      this.buckets.set(key, bucket);
      const retryAfterSeconds = Math.max(1, Math.ceil((1 - bucket.tokens) / perSecond));
      throw new StintError(
        "ERR_RATE_LIMITED",
        `too many ${this.what}: the limit is ${perSecond}/s with bursts of ${burst}; retry after ${retryAfterSeconds} s`,
        { retryAfterSeconds },
      );
    }
    bucket.tokens -= 1;
    this.buckets.set(key, bucket);
    if (this.buckets.size > SWEEP_AT) this.sweep(now);
  }

  private sweep(now: number): void {
    const refillMs = (this.limit.burst / this.limit.perSecond) * 1000;
    for (const [key, b] of this.buckets) if (now - b.at >= refillMs) this.buckets.delete(key);
  }
}
