import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { verifyAuditChain } from "../../ca/audit";
import { newJoinToken, storeJoinToken } from "../../ca/join-token";
import type { AuditEvent } from "../../ca/store";
import { type CaStore, openStore } from "../../ca/store/open";
import { tempDir } from "../helpers/openssl";

/**
 * storeJoinToken, which the admin API and the console both create join tokens
 * through, on a real SQLite store: the entry and the token together, and no
 * usable entry left behind when the token cannot be stored.
 */

const top = tempDir("stint-join-token-store-");
let store: CaStore;
const now = new Date("2026-12-04T12:00:00Z");
const SPIFFE_ID = "spiffe://tokens.example/svc/web";
const audit = (action: string, subject: string, details: Record<string, unknown>): AuditEvent => ({
  at: now,
  actor: "test",
  action,
  subject,
  details,
});

beforeAll(async () => {
  const dataDir = join(top, "ca");
  mkdirSync(dataDir, { mode: 0o700 });
  store = await openStore(dataDir, { create: true });
});

afterAll(async () => {
  await store?.close();
  rmSync(top, { recursive: true, force: true });
});

it("stores the token and the entry whose only selector is the token, both audited", async () => {
  const token = newJoinToken({ spiffeId: SPIFFE_ID, now });
  const entry = await storeJoinToken(store, token, { dnsNames: ["web.local"], ttlMs: 900_000, now }, audit);
  expect(await store.getEntry(entry.id)).toMatchObject({
    spiffeId: SPIFFE_ID,
    selectors: [`join_token:${token.id}`],
    dnsNames: ["web.local"],
    ttlMs: 900_000,
  });
  expect(await store.findJoinToken(token.hash, now)).not.toBeNull();
  const records = await store.listAudit(0, 100);
  expect(records.map((r) => [r.action, r.subject])).toEqual([
    ["entry.create", entry.id],
    ["join_token.create", token.id],
  ]);
  expect(records[1].details).toMatchObject({ entryId: entry.id, spiffeId: SPIFFE_ID });
  expect(JSON.stringify(records)).not.toContain(token.secret);
});

it("deletes the entry again when the token cannot be stored, and reports the token's error", async () => {
  const first = newJoinToken({ spiffeId: SPIFFE_ID, now });
  await storeJoinToken(store, first, { dnsNames: [], ttlMs: null, now }, audit);
  // The same token id again: the store refuses the token after the entry is in.
  const again = { ...newJoinToken({ spiffeId: SPIFFE_ID, now }), id: first.id };
  const before = (await store.listEntries({ spiffeId: SPIFFE_ID })).length;
  await expect(storeJoinToken(store, again, { dnsNames: [], ttlMs: null, now }, audit)).rejects.toThrow();
  expect((await store.listEntries({ spiffeId: SPIFFE_ID })).length).toBe(before);
  const records = await store.listAudit(0, 100);
  expect(records.at(-1)).toMatchObject({
    action: "entry.delete",
    details: { reason: "join token not stored" },
  });
  verifyAuditChain(records);
});
