import { join } from "node:path";
import { OrderRecovery, recoverOrders } from "../../acme/order-recovery";
import { entryHash } from "../../ca/entries";
import { SqliteStore } from "../../ca/store/sqlite";
import { createLogger } from "../../common/logger";
import {
  account,
  attestation,
  authorization,
  certificate,
  entry,
  event,
  issuer,
  later,
  order,
  tempDir,
} from "./fixtures";

/**
 * The recovery sweep on a real SQLite store: which orders left processing it
 * completes, which it reopens, and that its timer leaves an order alone until
 * it has been processing for a whole interval (a finalize may be under way).
 */

const SPIFFE = "spiffe://example.org/web";
const { dir, cleanup } = tempDir();
afterAll(cleanup);
let store: SqliteStore;
let n = 0;

beforeEach(async () => {
  store = await SqliteStore.open(join(dir, `store-${n++}.db`), { create: true });
  const a = account("acct1");
  await store.createAccount(a, event("account.create", a.id));
});
afterEach(async () => {
  await store.close();
});

/** An order moved to processing, as finalize leaves it; for SPIFFE, attested, and with `issued` recorded under it. */
async function processingOrder(id: string, kind: "spiffe" | "dns", issued?: number): Promise<void> {
  const az =
    kind === "spiffe"
      ? authorization(`az-${id}`, "acct1")
      : authorization(`az-${id}`, "acct1", { identifier: { type: "dns", value: `${id}.example.org` } });
  await store.createOrder(order(id, "acct1", [az]), [az]);
  if (kind === "spiffe") {
    const e = entry(`e-${id}`, SPIFFE, later(1));
    await store.createEntry(e, event("entry.create", e.id));
    const att = attestation(`att-${id}`, az, e);
    await store.recordAttestation(att, "pending", az.challenges, event("attest.ok", SPIFFE));
    if (issued !== undefined) {
      const c = certificate("aa00", issued);
      await store.insertCertificate(c, event("cert.issue", c.serial), {
        entryId: e.id,
        entryHash: entryHash(e),
        attestationId: att.id,
        renews: null,
        requestedBy: null,
      });
    }
  } else {
    await store.updateAuthorization(az.id, "pending", { status: "valid" });
  }
  await store.updateOrder(id, "pending", { status: "ready" });
  await store.updateOrder(id, "ready", { status: "processing" });
}

it("completes an order whose certificate was recorded and reopens the others", async () => {
  await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
  await processingOrder("issued", "spiffe", 1);
  await processingOrder("not-issued", "spiffe");
  await processingOrder("dns-only", "dns");

  const outcome = await recoverOrders(store);
  expect({ completed: outcome.completed, reopened: outcome.reopened }).toEqual({ completed: 1, reopened: 2 });
  expect(await store.getOrder("issued")).toMatchObject({
    status: "valid",
    certificateSerial: certificate("aa00", 1).serial,
  });
  expect(await store.getOrder("not-issued")).toMatchObject({ status: "ready", certificateSerial: null });
  expect(await store.getOrder("dns-only")).toMatchObject({ status: "ready" });
  expect(await store.listProcessingOrders(10)).toEqual([]);
  // Nothing left: a second sweep changes nothing.
  expect(await recoverOrders(store)).toMatchObject({ completed: 0, reopened: 0 });
});

it("on its timer, recovers only orders already processing at the previous sweep", async () => {
  const lines: string[] = [];
  const log = createLogger({
    level: "info",
    component: "ca",
    stream: { write: (l: string) => lines.push(l) },
  });
  // The interval never fires here: the test steps the sweeps itself.
  const recovery = new OrderRecovery({ store, log, intervalMs: 3_600_000 });
  await recovery.start();
  await processingOrder("late", "dns");
  // Seen by one sweep, it may be a finalize under way; still there at the next, it is stranded.
  await recovery.tick();
  expect(await store.getOrder("late")).toMatchObject({ status: "processing" });
  await recovery.tick();
  expect(await store.getOrder("late")).toMatchObject({ status: "ready" });
  await recovery.stop();
  expect(lines.filter((l) => l.includes("recovered orders left processing"))).toHaveLength(1);
});

it("with a shared store, leaves an order processing at start to the timer's rule (another replica may be finalizing it)", async () => {
  const log = createLogger({ level: "error", component: "ca", stream: { write: () => true } });
  await processingOrder("replica", "dns");
  const recovery = new OrderRecovery({ store, log, intervalMs: 3_600_000, sharedStore: true });
  await recovery.start();
  expect(await store.getOrder("replica")).toMatchObject({ status: "processing" });
  await recovery.tick();
  expect(await store.getOrder("replica")).toMatchObject({ status: "ready" });
  await recovery.stop();
});
