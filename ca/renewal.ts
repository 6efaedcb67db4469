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

/** The longest an agent waits between renewalInfo polls. */
export const MAX_RETRY_AFTER_SECONDS = 5 * 60;

/** How long a pulled-forward window stays open: long enough for a fleet's jittered polls, short enough to act on. */
const URGENT_WINDOW_MS = 5 * 60_000;

export function renewalWindow(facts: RenewalFacts, now: Date): RenewalWindow {
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
  // Normally the last third of the lifetime.
  return { start: new Date(nb + Math.floor((life * 2) / 3)), end: new Date(na), retryAfterSeconds };
}
