import type { AcmeStateStore, OrderRecord } from "../ca/store-acme";
import { isStintError } from "../common/errors";
import type { Logger } from "../common/logger";

/**
 * Finishes what a crash in the middle of finalize left half-done. finalize
 * moves an order ready → processing, then records the certificate and the
 * order's valid status in one commit; a CA killed in between left the order
 * processing for ever, and the client's retry refused ("order is processing,
 * not ready"). Each such order either gets the certificate already recorded
 * for it (bound to its SPIFFE authorization's attestation and held by no
 * order: what the two-commit finalize before issue 13 could leave) or goes
 * back to ready, so the client's finalize succeeds.
 */

export type RecoveryStore = Pick<
  AcmeStateStore,
  "listProcessingOrders" | "unclaimedCertificate" | "getAuthorization" | "updateOrder"
>;

export interface RecoveryOutcome {
  /** Orders that got the certificate already issued for them. */
  completed: number;
  /** Orders put back to ready for the client to finalize again. */
  reopened: number;
}

const PAGE = 500;
/** How often `ca serve` sweeps: a finalize takes milliseconds, so a minute in processing means stranded. */
export const ORDER_RECOVERY_INTERVAL_MS = 60_000;

/** One order's recovery, compare-and-set from processing: a finalize that finishes meanwhile wins. */
async function recoverOrder(store: RecoveryStore, order: OrderRecord): Promise<keyof RecoveryOutcome | null> {
  const serial = await recordedCertificate(store, order);
  try {
    if (serial !== null) {
      await store.updateOrder(order.id, "processing", { status: "valid", certificateSerial: serial });
      return "completed";
    }
    await store.updateOrder(order.id, "processing", { status: "ready" });
    return "reopened";
  } catch (err) {
    // Moved on by a finalize still under way, or the certificate claimed meanwhile: nothing to recover.
    if (isStintError(err, "ERR_STORE_CONFLICT")) return null;
    throw err;
  }
}

/**
 * Only SPIFFE orders can be matched to their certificate (through the
 * attestation binding); a dns-only order's certificate, if it was issued,
 * stays unused and the order is finalized again.
 */
async function recordedCertificate(store: RecoveryStore, order: OrderRecord): Promise<string | null> {
  for (const id of order.authorizationIds) {
    const authz = await store.getAuthorization(id);
    if (authz?.identifier.type === "spiffe" && authz.attestationId !== null) {
      return store.unclaimedCertificate(authz.attestationId);
    }
  }
  return null;
}

/**
 * Recovers the orders `stuck` selects among those processing, page by page.
 * At start every processing order is stuck (no finalize of this process is
 * under way); on the timer, only those already processing at the previous
 * sweep, so a finalize in flight, here or on another replica, is left alone.
 */
export async function recoverOrders(
  store: RecoveryStore,
  stuck: (order: OrderRecord) => boolean = () => true,
): Promise<RecoveryOutcome & { seen: Set<string> }> {
  const outcome: RecoveryOutcome = { completed: 0, reopened: 0 };
  const seen = new Set<string>();
  // Each recovered order leaves the processing set, so the next page starts over; skipped ones are remembered.
  for (;;) {
    const page = (await store.listProcessingOrders(PAGE + seen.size)).filter((o) => !seen.has(o.id));
    if (page.length === 0) break;
    for (const order of page) {
      seen.add(order.id);
      if (!stuck(order)) continue;
      const done = await recoverOrder(store, order);
      if (done !== null) outcome[done]++;
    }
  }
  return { ...outcome, seen };
}

export interface OrderRecoveryOptions {
  store: RecoveryStore;
  log: Logger;
  /** How often the timer sweeps; an order is recovered after processing for one to two of these. */
  intervalMs: number;
  /**
   * Other processes share the store (PostgreSQL replicas): a finalize may be
   * under way on one of them when this one starts, so the start sweep only
   * notes the processing orders and the timer's rule decides, as for the rest.
   */
  sharedStore?: boolean;
}

/** The sweep at start and on a timer; `ca serve` runs it. */
export class OrderRecovery {
  private timer: NodeJS.Timeout | null = null;
  private previous = new Set<string>();
  private running: Promise<void> | null = null;

  constructor(private readonly opts: OrderRecoveryOptions) {}

  /** Recovers every processing order before the listener opens (alone on its store), then sweeps on the timer. */
  async start(): Promise<void> {
    await this.sweep(() => this.opts.sharedStore !== true);
    this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** One timer sweep (public so tests step it): orders processing since the previous one are recovered. */
  tick(): Promise<void> {
    this.running ??= this.sweep((o) => this.previous.has(o.id))
      .catch((err) =>
        this.opts.log.error("order recovery failed; retrying at the next sweep", { error: err }),
      )
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  private async sweep(stuck: (order: OrderRecord) => boolean): Promise<void> {
    const { completed, reopened, seen } = await recoverOrders(this.opts.store, stuck);
    this.previous = seen;
    if (completed + reopened > 0) {
      this.opts.log.warn("recovered orders left processing by an interrupted finalize", {
        completed,
        reopened,
      });
    }
  }
}
