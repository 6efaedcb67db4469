import { StintError } from "../common/errors";

/**
 * When the agent renews, and how long it waits after a failure. Pure: the
 * caller passes the time and, for tests, the random source.
 */

export interface RenewalTimeOptions {
  notBefore: Date;
  notAfter: Date;
  now: Date;
  /** The server's ARI suggested window (RFC 9773); when valid, it wins over fraction and jitter. */
  ari?: { start: Date; end: Date } | null;
  /** Where in the lifetime to renew; default 0.6. */
  fraction?: number;
  /** Spread around the fraction point, as a fraction of the lifetime: fraction ± jitter; default 0.1. */
  jitter?: number;
  /** Time a few failed attempts take (retryRoundsMs); the margin before notAfter is never shorter. */
  retryMarginMs?: number;
  /** Uniform in [0, 1); Math.random by default. */
  random?: () => number;
}

export const DEFAULT_FRACTION = 0.6;
export const DEFAULT_JITTER = 0.1;
const MIN_MARGIN_MS = 1000;
/** A tenth of the lifetime is left at least: time to ride out a CA restart or a short outage. */
export const MARGIN_FRACTION = 0.1;
/** "A few retry rounds": the margin also covers this many backoff ceilings in a row. */
const RETRY_ROUNDS = 4;

/** How long RETRY_ROUNDS failed attempts may take at most: the sum of their backoff ceilings. */
export function retryRoundsMs(backoff: { baseMs: number; capMs: number }): number {
  let total = 0;
  for (let i = 0; i < RETRY_ROUNDS; i++) total += Math.min(backoff.capMs, backoff.baseMs * 2 ** i);
  return total;
}

/**
 * The instant to start renewing. With a valid ARI window, a uniformly random
 * instant in [start, end] (RFC 9773 4.2), or now when the window has passed;
 * otherwise notBefore + (fraction ± jitter) × lifetime (50–70% by default).
 * Always at least a margin before notAfter, the longest of 1 s, 10% of the
 * lifetime and `retryMarginMs`, and never before now.
 */
export function renewalTime(opts: RenewalTimeOptions): Date {
  const fraction = opts.fraction ?? DEFAULT_FRACTION;
  const jitter = opts.jitter ?? DEFAULT_JITTER;
  if (!(fraction > 0 && fraction < 1))
    throw new StintError(
      "ERR_CONFIG",
      `renewal fraction must be between 0 and 1 (exclusive), got ${fraction}`,
    );
  if (!(jitter >= 0 && jitter < 1))
    throw new StintError("ERR_CONFIG", `renewal jitter must be at least 0 and below 1, got ${jitter}`);
  const random = opts.random ?? Math.random;
  const nb = opts.notBefore.getTime();
  const na = opts.notAfter.getTime();
  const now = opts.now.getTime();
  const life = Math.max(0, na - nb);
  // Leave time for a few retries; never before notBefore, even for a lifetime shorter than the margin.
  const margin = Math.max(MIN_MARGIN_MS, life * MARGIN_FRACTION, opts.retryMarginMs ?? 0);
  const latest = Math.max(nb, na - margin);

  let at: number;
  const ari = validWindow(opts.ari);
  if (ari) {
    at = ari.end <= now ? now : ari.start + random() * (ari.end - ari.start);
  } else {
    // Clamped below by notBefore here and above by `latest` below: always inside the lifetime.
    at = Math.max(nb, nb + (fraction + (2 * random() - 1) * jitter) * life);
  }
  return new Date(Math.floor(Math.max(now, Math.min(latest, at))));
}

/** RFC 9773 4.2: a window whose end is not after its start is invalid, and the client falls back to its own schedule. */
function validWindow(w: RenewalTimeOptions["ari"]): { start: number; end: number } | null {
  if (!w) return null;
  const start = w.start.getTime();
  const end = w.end.getTime();
  return Number.isFinite(start) && Number.isFinite(end) && end > start ? { start, end } : null;
}

export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
  /** Uniform in [0, 1); Math.random by default. */
  random?: () => number;
}

/**
 * Exponential backoff with full jitter (AWS, "Exponential Backoff And
 * Jitter"): the nth wait is uniform in [0, min(cap, base × 2^n)), so a fleet
 * that failed together does not retry together.
 */
export class Backoff {
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly random: () => number;
  private attempt = 0;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? 1000;
    this.capMs = opts.capMs ?? 5 * 60_000;
    this.random = opts.random ?? Math.random;
    // A cap below the base is allowed: every wait is then drawn from [0, cap).
    if (!(this.baseMs > 0 && this.capMs > 0 && Number.isFinite(this.baseMs) && Number.isFinite(this.capMs)))
      throw new StintError(
        "ERR_CONFIG",
        `backoff base and cap must be positive, got base ${this.baseMs} ms and cap ${this.capMs} ms`,
      );
  }

  get attempts(): number {
    return this.attempt;
  }

  /**
   * Milliseconds to wait before the next try: at most half the time left before
   * `deadline` (the certificate's expiry, say), so retries grow denser as it nears
   * and the last one never lands on the deadline itself, when it is already too late.
   */
  next(now: Date, deadline?: Date | null): number {
    // 2^attempt overflows to Infinity after ~1000 failures; min() still yields the cap.
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    this.attempt++;
    let wait = this.random() * ceiling;
    if (deadline) wait = Math.min(wait, Math.max(0, deadline.getTime() - now.getTime()) / 2);
    return Math.floor(wait);
  }

  reset(): void {
    this.attempt = 0;
  }
}

export interface CrlRefreshOptions {
  now: Date;
  /** The held CRL's nextUpdate; null when none is held. */
  nextUpdate: Date | null;
  /** The longest wait, whatever the CRL's validity. */
  maxMs: number;
  /** True after a fetch that failed or was refused: try again sooner. */
  failed?: boolean;
  /** Uniform in [0, 1); Math.random by default. */
  random?: () => number;
}

const CRL_MIN_WAIT_MS = 1000;
const CRL_RETRY_MS = 30_000;

/**
 * When to fetch a CRL again. After a good fetch: at 40–60% of its remaining
 * validity, so a server reloaded with it never holds one past nextUpdate and
 * a fleet does not fetch in step (the CA re-signs at half of the validity, so a
 * fetch that finds the same CRL comes again at a quarter, and so on). After a
 * failure: within 30 s (±20%), and sooner while the held CRL has little time
 * left. Always between 1 s and `maxMs` from now.
 */
export function crlRefreshTime(opts: CrlRefreshOptions): Date {
  const random = opts.random ?? Math.random;
  const now = opts.now.getTime();
  const remaining = opts.nextUpdate === null ? null : opts.nextUpdate.getTime() - now;
  let wait: number;
  if (opts.failed || remaining === null || remaining <= 0) {
    wait = CRL_RETRY_MS * (0.8 + 0.4 * random());
    if (remaining !== null && remaining > 0) wait = Math.min(wait, remaining * (0.2 + 0.1 * random()));
  } else {
    wait = remaining * (0.4 + 0.2 * random());
  }
  return new Date(now + Math.floor(Math.max(CRL_MIN_WAIT_MS, Math.min(opts.maxMs, wait))));
}
