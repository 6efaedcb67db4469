import { StintError } from "../common/errors";

/**
 * When a certificate should be renewed (ACME Renewal Information, RFC 9773).
 * Pure: the caller passes the time and what it knows about the certificate.
 */

export interface RenewalWindow {
  start: Date;
  end: Date;
  /** Seconds until the client should ask again. */
  retryAfterSeconds: number;
}

export interface RenewalFacts {
  notBefore: Date;
  notAfter: Date;
  /**
   * Set when the authority wants this certificate replaced early (revoked,
   * issuer rotated or tainted): the window moves to this instant.
   */
  renewFrom?: Date | null;
}

/** The normal window as fractions of the lifetime, e.g. 0.5–0.75. */
export interface WindowFractions {
  start: number;
  end: number;
}

/**
 * Half to three quarters of the lifetime: a client renewing as late as the
 * window allows still has a quarter of the lifetime to ride out a CA outage.
 */
export const DEFAULT_WINDOW: WindowFractions = { start: 0.5, end: 0.75 };

/** The latest a window may end: a tenth of the lifetime is the least runway an agent keeps (agent/schedule.ts). */
const MAX_WINDOW_END_PERCENT = 90;

/** The longest an agent waits between renewalInfo polls. */
export const MAX_RETRY_AFTER_SECONDS = 5 * 60;

/** How long a pulled-forward window stays open: long enough for a fleet's jittered polls, short enough to act on. */
const URGENT_WINDOW_MS = 5 * 60_000;

/**
 * Reads `renewal.window` as operators write it, "50%-75%": where in the
 * lifetime the normal window starts and ends. Throws ERR_CONFIG saying why not.
 */
export function parseWindow(text: string): WindowFractions {
  const m = /^\s*(\d{1,3})\s*%\s*-\s*(\d{1,3})\s*%\s*$/.exec(text);
  if (!m) {
    throw new StintError("ERR_CONFIG", `"${text}" is not a window of the lifetime like 50%-75%`);
  }
  const [start, end] = [Number(m[1]), Number(m[2])];
  if (!(start < end)) throw new StintError("ERR_CONFIG", `"${text}": the window must start before it ends`);
  if (end > MAX_WINDOW_END_PERCENT) {
    throw new StintError(
      "ERR_CONFIG",
      `"${text}" ends too late: the window must end by ${MAX_WINDOW_END_PERCENT}% so renewals keep a runway before expiry`,
    );
  }
  return { start: start / 100, end: end / 100 };
}

export function renewalWindow(
  facts: RenewalFacts,
  now: Date,
  fractions: WindowFractions = DEFAULT_WINDOW,
): RenewalWindow {
  const nb = facts.notBefore.getTime();
  const na = facts.notAfter.getTime();
  const life = Math.max(1000, na - nb);
  // Ask again a tenth of a lifetime later, within [1 s, 5 min]: a taint reaches every agent within
  // minutes however long its certificate lives (RFC 9773's default of hours is for 90-day certificates).
  const retryAfterSeconds = Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, Math.ceil(life / 10 / 1000)));
  if (facts.renewFrom) {
    const start = Math.max(nb, Math.min(facts.renewFrom.getTime(), now.getTime()));
    return {
      start: new Date(start),
      end: new Date(Math.min(na, start + URGENT_WINDOW_MS)),
      retryAfterSeconds,
    };
  }
  const span = Math.max(0, na - nb);
  return {
    start: new Date(nb + Math.floor(span * fractions.start)),
    end: new Date(nb + Math.floor(span * fractions.end)),
    retryAfterSeconds,
  };
}
