import { workloadHealth } from "../../agent/workload/metrics";
import type { SvidCache } from "../../agent/workload/svids";

/** /health of a node agent: failing once any workload SVID held is within 10 % of its lifetime from expiry. */

const T0 = Date.parse("2026-01-01T00:00:00Z");
const entry = (id: string) => ({
  id,
  spiffeId: `spiffe://td/${id}`,
  selectors: ["unix:uid:1"],
  ttlSeconds: 600,
  dnsNames: [],
});
const held = (id: string, notBeforeS: number, notAfterS: number) => ({
  entryId: id,
  notBefore: new Date(T0 + notBeforeS * 1000),
  notAfter: new Date(T0 + notAfterS * 1000),
});

function cache(entries: string[], svids: ReturnType<typeof held>[]): SvidCache {
  return {
    entries: new Map(entries.map((id) => [id, entry(id)])),
    held: new Map(svids.map((h) => [h.entryId, h])),
  } as unknown as SvidCache;
}

test("healthy while every SVID has more than a tenth of its lifetime left", () => {
  // 600 s lifetimes; at T0+539 s each has 61 s left, more than 60.
  const c = cache(["a", "b"], [held("a", 0, 600), held("b", 0, 600)]);
  expect(workloadHealth(c, new Date(T0 + 539_000))).toEqual({
    healthy: true,
    body: { entries: 2, svidsHeld: 2, nearExpiry: [], notIssued: [] },
  });
});

test("unhealthy when one SVID is within 10 % of expiry, naming it", () => {
  const c = cache(["a", "b"], [held("a", 0, 600), held("b", 100, 700)]);
  const h = workloadHealth(c, new Date(T0 + 541_000)); // a: 59 s left of 600
  expect(h.healthy).toBe(false);
  expect(h.body).toMatchObject({ svidsHeld: 1, nearExpiry: ["spiffe://td/a"] });
});

test("an expired SVID fails health; an entry not issued yet is listed but does not", () => {
  expect(workloadHealth(cache(["a"], [held("a", 0, 600)]), new Date(T0 + 700_000)).healthy).toBe(false);
  const waiting = workloadHealth(cache(["a", "new"], [held("a", 0, 600)]), new Date(T0));
  expect(waiting).toEqual({
    healthy: true,
    body: { entries: 2, svidsHeld: 1, nearExpiry: [], notIssued: ["spiffe://td/new"] },
  });
});
