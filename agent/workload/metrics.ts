import type { Registry } from "../../common/metrics";
import type { SvidCache } from "./svids";

/** Per-workload metrics, labelled by SPIFFE ID (bounded by the entries parented to this agent). */
export const WORKLOAD_METRICS = {
  held: {
    name: "stint_agent_workload_svids",
    help: "Valid X.509-SVIDs the node agent holds for a workload entry (0 or 1).",
  },
  renewals: {
    name: "stint_agent_workload_renewals_total",
    help: "X.509-SVIDs issued to the node agent for a workload entry.",
  },
  failures: {
    name: "stint_agent_workload_failures_total",
    help: "Failed attempts to get an X.509-SVID for a workload entry.",
  },
  expiry: {
    name: "stint_agent_workload_svid_expiry_seconds",
    help: "Seconds until a workload's X.509-SVID expires; 0 when none is held.",
  },
} as const;

/** A workload SVID within this fraction of its lifetime from expiry makes /health fail. */
export const NEAR_EXPIRY_FRACTION = 0.1;

export function workloadMetrics(
  registry: Registry,
  cache: SvidCache,
  now: () => Date = () => new Date(),
): void {
  const m = WORKLOAD_METRICS;
  // Read from the cache at each scrape, so there is one source of the counts.
  registry.gauge(m.held.name, m.held.help, ["spiffe_id"], (g) => {
    const t = now().getTime();
    for (const s of cache.stats.values()) {
      const h = cache.held.get(s.entryId);
      g.set(h && h.notAfter.getTime() > t ? 1 : 0, { spiffe_id: s.spiffeId });
    }
    for (const s of cache.stats.values()) {
      catchUp(renewals, s.spiffeId, s.renewals);
      catchUp(failures, s.spiffeId, s.failures);
    }
  });
  const renewals = registry.counter(m.renewals.name, m.renewals.help, ["spiffe_id"]);
  const failures = registry.counter(m.failures.name, m.failures.help, ["spiffe_id"]);
  const catchUp = (c: typeof renewals, spiffeId: string, value: number) => {
    const by = value - c.get({ spiffe_id: spiffeId });
    if (by > 0) c.inc({ spiffe_id: spiffeId }, by);
  };
  registry.gauge(m.expiry.name, m.expiry.help, ["spiffe_id"], (g) => {
    const t = now().getTime();
    for (const s of cache.stats.values()) {
      const h = cache.held.get(s.entryId);
      g.set(h ? (h.notAfter.getTime() - t) / 1000 : 0, { spiffe_id: s.spiffeId });
    }
  });
}

/**
 * For /health: unhealthy when any workload SVID held is within 10 % of its
 * lifetime from expiry (renewal has been failing for a while) or past it.
 * Entries not issued yet are listed but do not fail it: the CA may refuse one
 * entry for good, which must not make every other workload look down.
 */
export function workloadHealth(
  cache: SvidCache,
  now: Date = new Date(),
): { healthy: boolean; body: Record<string, unknown> } {
  const t = now.getTime();
  const nearExpiry: string[] = [];
  const missing: string[] = [];
  let held = 0;
  for (const e of cache.entries.values()) {
    const h = cache.held.get(e.id);
    if (!h) {
      missing.push(e.spiffeId);
      continue;
    }
    const margin = (h.notAfter.getTime() - h.notBefore.getTime()) * NEAR_EXPIRY_FRACTION;
    if (h.notAfter.getTime() - t > margin) held++;
    else nearExpiry.push(e.spiffeId);
  }
  return {
    healthy: nearExpiry.length === 0,
    body: {
      entries: cache.entries.size,
      svidsHeld: held,
      nearExpiry: nearExpiry.slice(0, 20),
      notIssued: missing.slice(0, 20),
    },
  };
}
