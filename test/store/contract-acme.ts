import { verifyAuditChain } from "../../ca/audit";
import type { CaStore } from "../../ca/store/open";
import type { EntryRecord } from "../../ca/store-acme";
import {
  account,
  authorization,
  certificate,
  entry,
  event,
  issuer,
  joinToken,
  later,
  MINUTE,
  order,
  T0,
} from "./fixtures";

/** The audit record of a spend, as the join_token attestor makes it. */
const spend = (token: { id: string; spiffeId: string }) =>
  event("token.spend", token.id, { spiffeId: token.spiffeId, outcome: "accepted" });

/**
 * The ACME state (ca/store-acme.ts) every backend must keep alike, run
 * against each of them like storeContract.
 */
export interface AcmeContractBackend {
  /** Opens the store `openFresh` made last again, without `create`, as a restarted process would. */
  reopen(): Promise<CaStore>;
}

/** `name` is the backend's id, as `store.backend` reports it. */
export function acmeStoreContract(
  name: string,
  openFresh: () => Promise<CaStore>,
  backend: AcmeContractBackend,
): void {
  let store: CaStore;

  async function reopen(): Promise<void> {
    await store.close();
    store = await backend.reopen();
  }

  /** The audit actions so far, after checking the chain is whole. */
  async function auditActions(): Promise<string[]> {
    const records = await store.listAudit(0, 1000);
    verifyAuditChain(records);
    return records.map((r) => r.action);
  }

  describe(`AcmeStateStore contract: ${name}`, () => {
    beforeEach(async () => {
      store = await openFresh();
    });
    afterEach(async () => {
      await store.close();
    });

    it("creates an account once per key and round-trips it", async () => {
      const a = account("acct1");
      expect(await store.createAccount(a, event("account.create", a.id))).toEqual({
        account: a,
        created: true,
      });
      // newAccount again with the same key: the existing account, no new audit record.
      const again = account("acct2", { thumbprint: a.thumbprint, contact: [] });
      expect(await store.createAccount(again, event("account.create", again.id))).toEqual({
        account: a,
        created: false,
      });
      await expect(
        store.createAccount(account("acct1", { thumbprint: "other" }), event("account.create", "acct1")),
      ).rejects.toMatchObject({ code: "ERR_STORE_CONFLICT", message: "account acct1 already exists" });
      await reopen();

      const got = await store.getAccount(a.id);
      expect(got).toEqual(a);
      expect(got?.createdAt).toBeInstanceOf(Date);
      expect(await store.getAccountByThumbprint(a.thumbprint)).toEqual(a);
      expect(await store.getAccount("acct2")).toBeNull();
      expect(await store.getAccountByThumbprint("thumb-nope")).toBeNull();

      // A deactivated account is still the one its key has.
      await store.updateAccount(a.id, { status: "deactivated" }, event("account.deactivate", a.id));
      expect(await store.createAccount(again, event("account.create", again.id))).toEqual({
        account: { ...a, status: "deactivated" },
        created: false,
      });
      expect(await auditActions()).toEqual(["account.create", "account.deactivate"]);
    });

    it("updates an account's status and contacts", async () => {
      const a = account("acct1", { contact: ["mailto:a@example.org", "mailto:b@example.org"] });
      await store.createAccount(a, event("account.create", a.id));
      const cleared = await store.updateAccount(a.id, { contact: [] }, event("account.update", a.id));
      expect(cleared).toEqual({ ...a, contact: [] });
      const both = await store.updateAccount(
        a.id,
        { status: "revoked", contact: ["mailto:c@example.org"] },
        event("account.update", a.id),
      );
      expect(both).toEqual({ ...a, status: "revoked", contact: ["mailto:c@example.org"] });
      await expect(
        store.updateAccount("nope", { status: "deactivated" }, event("account.update", "nope")),
      ).rejects.toMatchObject({ code: "ERR_NOT_FOUND", message: "account nope does not exist" });
      await reopen();
      expect(await store.getAccount(a.id)).toEqual(both);
      expect(await auditActions()).toEqual(["account.create", "account.update", "account.update"]);
    });

    it("changes an account's key, refusing a key in use and a stale old key", async () => {
      const a = account("acct1");
      const b = account("acct2");
      await store.createAccount(a, event("account.create", a.id));
      await store.createAccount(b, event("account.create", b.id));
      const jwk = { kty: "OKP", crv: "Ed25519", x: "new-key" };
      const changed = await store.changeAccountKey(
        a.id,
        a.thumbprint,
        jwk,
        "thumb-new",
        event("account.key", a.id),
      );
      expect(changed).toEqual({ ...a, jwk, thumbprint: "thumb-new" });
      expect(await store.getAccountByThumbprint(a.thumbprint)).toBeNull();

      await expect(
        store.changeAccountKey(a.id, "thumb-new", jwk, b.thumbprint, event("account.key", a.id)),
      ).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "the new key already belongs to an account",
      });
      await expect(
        store.changeAccountKey(a.id, a.thumbprint, jwk, "thumb-newer", event("account.key", a.id)),
      ).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "the key of account acct1 was changed meanwhile",
      });
      await expect(
        store.changeAccountKey("nope", "thumb-nope", jwk, "thumb-other", event("account.key", "nope")),
      ).rejects.toMatchObject({ code: "ERR_NOT_FOUND", message: "account nope does not exist" });

      // Two key changes racing from the same old key: one wins.
      const raced = await Promise.allSettled(
        ["thumb-x", "thumb-y"].map((t) =>
          store.changeAccountKey(b.id, b.thumbprint, { kty: "OKP", x: t }, t, event("account.key", b.id)),
        ),
      );
      expect(raced.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
      await reopen();
      expect(await store.getAccountByThumbprint("thumb-new")).toEqual(changed);
      const winner = (await store.getAccount(b.id))!;
      expect(["thumb-x", "thumb-y"]).toContain(winner.thumbprint);
      expect(winner.jwk).toEqual({ kty: "OKP", x: winner.thumbprint });
      expect(await auditActions()).toEqual([
        "account.create",
        "account.create",
        "account.key",
        "account.key",
      ]);
    });

    it("stores an order with its authorizations in one transaction", async () => {
      const a = account("acct1");
      await store.createAccount(a, event("account.create", a.id));
      const spiffe = authorization("az1", a.id);
      const dns = authorization("az2", a.id, {
        identifier: { type: "dns", value: "web.example.org" },
        status: "valid",
        challenges: [
          {
            id: "az2-c1",
            type: "http-01",
            token: "t1",
            status: "valid",
            validated: later(MINUTE),
            error: null,
          },
          {
            id: "az2-c2",
            type: "http-01",
            token: "t2",
            status: "invalid",
            validated: null,
            error: { type: "urn:ietf:params:acme:error:connection", detail: "refused", status: 400 },
          },
        ],
        entryId: "entry1",
        selectors: ["k8s:ns:prod", "k8s:sa:web"],
      });
      const o = order("ord1", a.id, [spiffe, dns], { replaces: "7faa00" });
      await store.createOrder(o, [spiffe, dns]);
      await reopen();

      const got = await store.getOrder(o.id);
      expect(got).toEqual(o);
      expect(got?.expires).toBeInstanceOf(Date);
      expect(await store.getAuthorization(spiffe.id)).toEqual(spiffe);
      const gotDns = await store.getAuthorization(dns.id);
      expect(gotDns).toEqual(dns);
      expect(gotDns?.challenges[0].validated).toBeInstanceOf(Date);
      expect(await store.getOrder("nope")).toBeNull();
      expect(await store.getAuthorization("nope")).toBeNull();

      // Nothing of a refused order is kept: neither the order nor its new authorizations.
      const orphan = authorization("az9", "nope");
      await expect(store.createOrder(order("ord9", "nope", [orphan]), [orphan])).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: "account nope does not exist",
      });
      const fresh = authorization("az3", a.id);
      await expect(
        store.createOrder(order("ord3", a.id, [fresh, spiffe]), [fresh, spiffe]),
      ).rejects.toMatchObject({ code: "ERR_STORE_CONFLICT", message: "authorization az1 already exists" });
      await expect(store.createOrder(order("ord1", a.id, [fresh]), [fresh])).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "order ord1 already exists",
      });
      for (const id of ["ord9", "ord3"]) expect(await store.getOrder(id)).toBeNull();
      for (const id of ["az9", "az3"]) expect(await store.getAuthorization(id)).toBeNull();
      // An order may reuse authorizations stored before.
      await store.createOrder(order("ord4", a.id, [spiffe]), []);
      expect(await store.getOrder("ord4")).toMatchObject({ authorizationIds: ["az1"] });
      expect(await auditActions()).toEqual(["account.create"]);
    });

    it("records a certificate and makes its order valid in one write, or neither (finalize, issue 13)", async () => {
      await store.putIssuer(issuer("aa"), event("issuer.create", "aa"));
      const a = account("acct1");
      await store.createAccount(a, event("account.create", a.id));
      const az = authorization("az1", a.id);
      const o = order("ord1", a.id, [az]);
      await store.createOrder(o, [az]);
      const cert = certificate("aa", 1);
      const completes = { orderId: o.id };
      // Not processing (order recovery reopened it, or no finalize moved it): nothing is recorded.
      await expect(
        store.insertCertificate(cert, event("cert.issue", cert.serial), undefined, completes),
      ).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "order ord1 is pending, not processing",
      });
      expect(await store.getCertificate(cert.serial)).toBeNull();
      expect(await store.getOrder(o.id)).toEqual(o);

      await store.updateOrder(o.id, "pending", { status: "processing" });
      await store.insertCertificate(cert, event("cert.issue", cert.serial), undefined, completes);
      const valid = { ...o, status: "valid", certificateSerial: cert.serial };
      expect(await store.getOrder(o.id)).toEqual(valid);
      expect(await store.getCertificate(cert.serial)).toMatchObject({ serial: cert.serial });
      expect(await auditActions()).toEqual(["issuer.create", "account.create", "cert.issue"]);
      await reopen();
      expect(await store.getOrder(o.id)).toEqual(valid);
    });

    it("compare-and-sets an order's status and finds the account of its certificate", async () => {
      const a = account("acct1");
      await store.createAccount(a, event("account.create", a.id));
      const az = authorization("az1", a.id);
      const o = order("ord1", a.id, [az]);
      await store.createOrder(o, [az]);

      expect(await store.updateOrder(o.id, "pending", { status: "ready" })).toEqual({
        ...o,
        status: "ready",
      });
      await expect(store.updateOrder(o.id, "pending", { status: "invalid" })).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "order ord1 is ready, not pending",
      });
      await expect(store.updateOrder("nope", "pending", { status: "ready" })).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: "order nope does not exist",
      });
      // Finalize sent five times at once: one request moves the order on.
      const finalizes = await Promise.allSettled(
        Array.from({ length: 5 }, () => store.updateOrder(o.id, "ready", { status: "processing" })),
      );
      expect(finalizes.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expect(finalizes.filter((r) => r.status === "rejected").map((r) => r.reason)).toEqual(
        Array(4).fill(
          expect.objectContaining({
            code: "ERR_STORE_CONFLICT",
            message: "order ord1 is processing, not ready",
          }),
        ),
      );
      const valid = await store.updateOrder(o.id, "processing", {
        status: "valid",
        certificateSerial: "7f01",
      });
      expect(valid).toEqual({ ...o, status: "valid", certificateSerial: "7f01" });
      // An empty patch only checks the status.
      expect(await store.updateOrder(o.id, "valid", {})).toEqual(valid);

      const o2 = order("ord2", a.id, [az]);
      await store.createOrder(o2, []);
      const problem = {
        type: "urn:ietf:params:acme:error:badCSR",
        detail: "no",
        subproblems: [{ detail: "x" }],
      };
      expect(await store.updateOrder(o2.id, "pending", { status: "invalid", error: problem })).toEqual({
        ...o2,
        status: "invalid",
        error: problem,
      });
      const o3 = order("ord3", a.id, [az]);
      await store.createOrder(o3, []);
      await expect(
        store.updateOrder(o3.id, "pending", { status: "valid", certificateSerial: "7f01" }),
      ).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "certificate 7f01 already belongs to another order",
      });
      await reopen();

      expect(await store.getOrder(o.id)).toEqual(valid);
      expect(await store.getOrder(o2.id)).toMatchObject({ status: "invalid", error: problem });
      expect(await store.getOrder(o3.id)).toEqual(o3);
      expect(await store.accountOfCertificate("7f01")).toBe(a.id);
      expect(await store.accountOfCertificate("7f02")).toBeNull();
      expect(await store.updateOrder(o2.id, "invalid", { error: null })).toMatchObject({ error: null });
      expect(await auditActions()).toEqual(["account.create"]);
    });

    it("lists an account's orders oldest first in pages, leaving out invalid ones and other accounts'", async () => {
      const [a, b] = [account("acct-list-a"), account("acct-list-b")];
      await store.createAccount(a, event("account.create", a.id));
      await store.createAccount(b, event("account.create", b.id));
      // Two orders share a creation time: the id breaks the tie, the same way on both backends.
      const mine = ["o-c", "o-a", "o-b", "o-d"].map((id, i) =>
        order(id, a.id, [], { createdAt: later([2, 1, 1, 3][i] * MINUTE) }),
      );
      for (const o of mine) await store.createOrder(o, []);
      await store.createOrder(order("o-other", b.id, [], { createdAt: later(MINUTE) }), []);
      await store.updateOrder("o-d", "pending", { status: "invalid" });

      const ids = (os: { id: string }[]) => os.map((o) => o.id);
      expect(ids(await store.listAccountOrders(a.id, { limit: 10 }))).toEqual(["o-a", "o-b", "o-c"]);
      const first = await store.listAccountOrders(a.id, { limit: 2 });
      expect(ids(first)).toEqual(["o-a", "o-b"]);
      expect(ids(await store.listAccountOrders(a.id, { after: "o-b", limit: 2 }))).toEqual(["o-c"]);
      expect(await store.listAccountOrders(a.id, { after: "o-c", limit: 2 })).toEqual([]);
      expect(first[0]).toEqual(mine[1]);
      expect(ids(await store.listAccountOrders(b.id, { limit: 10 }))).toEqual(["o-other"]);
      expect(await store.listAccountOrders("nobody", { limit: 10 })).toEqual([]);
    });

    it("compare-and-sets an authorization, replacing its challenges, entry and selectors", async () => {
      const a = account("acct1");
      await store.createAccount(a, event("account.create", a.id));
      const az = authorization("az1", a.id);
      await store.createOrder(order("ord1", a.id, [az]), [az]);

      const challenges = [{ ...az.challenges[0], status: "valid" as const, validated: later(2 * MINUTE) }];
      const patch = { status: "valid" as const, challenges, entryId: "entry1", selectors: ["k8s:ns:prod"] };
      const updated = await store.updateAuthorization(az.id, "pending", patch);
      expect(updated).toEqual({ ...az, ...patch });
      await expect(store.updateAuthorization(az.id, "pending", { status: "invalid" })).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "authorization az1 is valid, not pending",
      });
      await expect(store.updateAuthorization("nope", "pending", { status: "valid" })).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: "authorization nope does not exist",
      });
      await reopen();
      const got = await store.getAuthorization(az.id);
      expect(got).toEqual(updated);
      expect(got?.challenges[0].validated).toEqual(later(2 * MINUTE));

      // Only what the patch names changes.
      const revoked = await store.updateAuthorization(az.id, "valid", { status: "revoked", entryId: null });
      expect(revoked).toEqual({ ...updated, status: "revoked", entryId: null });

      const az2 = authorization("az2", a.id);
      await store.createOrder(order("ord2", a.id, [az2]), [az2]);
      const raced = await Promise.allSettled([
        store.updateAuthorization(az2.id, "pending", { status: "valid" }),
        store.updateAuthorization(az2.id, "pending", { status: "expired" }),
      ]);
      expect(raced.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expect(["valid", "expired"]).toContain((await store.getAuthorization(az2.id))?.status);
    });

    it("lists registration entries in (SPIFFE ID, creation, id) order and deletes them", async () => {
      const entries = [
        entry("e4", "spiffe://example.org/web", later(3)),
        entry("e2", "spiffe://example.org/api", later(1), {
          dnsNames: ["api.example.org"],
          ttlMs: 3_600_000,
        }),
        entry("e1", "spiffe://example.org/api", later(1)),
        entry("e0", "spiffe://example.org/api", later(5)),
        // Upper case sorts before lower case, bytewise, whatever the database's locale.
        entry("e9", "spiffe://example.org/Zeta", later(9)),
      ];
      for (const e of entries)
        await store.createEntry(e, event("entry.create", e.id, { spiffeId: e.spiffeId }));
      await expect(store.createEntry(entries[2], event("entry.create", "e1"))).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "entry e1 already exists",
      });
      await reopen();

      const ids = (list: EntryRecord[]) => list.map((e) => e.id);
      expect(ids(await store.listEntries({}))).toEqual(["e9", "e1", "e2", "e0", "e4"]);
      expect(ids(await store.listEntries({ spiffeId: "spiffe://example.org/api" }))).toEqual([
        "e1",
        "e2",
        "e0",
      ]);
      expect(await store.listEntries({ spiffeId: "spiffe://example.org/none" })).toEqual([]);
      const e2 = await store.getEntry("e2");
      expect(e2).toEqual(entries[1]);
      expect(e2?.createdAt).toBeInstanceOf(Date);
      expect(await store.getEntry("e4")).toEqual(entries[0]);
      expect(await store.getEntry("nope")).toBeNull();

      await store.deleteEntry("e1", event("entry.delete", "e1"));
      expect(await store.getEntry("e1")).toBeNull();
      expect(ids(await store.listEntries({ spiffeId: "spiffe://example.org/api" }))).toEqual(["e2", "e0"]);
      await expect(store.deleteEntry("e1", event("entry.delete", "e1"))).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: "entry e1 does not exist",
      });
      expect(await auditActions()).toEqual([...Array(5).fill("entry.create"), "entry.delete"]);
    });

    it("keeps an entry's parent and lists one node agent's entries (schema 6)", async () => {
      const node = "spiffe://example.org/node/host1";
      const entries = [
        { ...entry("p2", "spiffe://example.org/web", later(2)), parent: node },
        { ...entry("p1", "spiffe://example.org/api", later(1)), parent: node },
        { ...entry("p3", "spiffe://example.org/db", later(3)), parent: "spiffe://example.org/node/host2" },
        entry("p4", "spiffe://example.org/web", later(4)),
      ];
      for (const e of entries) await store.createEntry(e, event("entry.create", e.id));
      await reopen();
      expect((await store.listEntries({ parent: node })).map((e) => e.id)).toEqual(["p1", "p2"]);
      expect(await store.getEntry("p1")).toEqual(entries[1]);
      expect(await store.getEntry("p4")).toEqual(entries[3]);
      expect((await store.getEntry("p4"))?.parent).toBeUndefined();
      expect(await store.listEntries({ parent: "spiffe://example.org/node/none" })).toEqual([]);
    });

    it("consumes a join token once, and tells used, expired and unknown tokens apart", async () => {
      const t = joinToken("00112233aabbccdd");
      const expiring = joinToken("ffeeddcc44332211", { expiresAt: later(5 * MINUTE) });
      for (const tok of [t, expiring]) {
        await store.createJoinToken(tok, event("join_token.create", tok.id, { spiffeId: tok.spiffeId }));
      }
      const use = (outcome: string, tok: typeof t) => ({ outcome, id: tok.id, spiffeId: tok.spiffeId });
      expect(await store.consumeJoinToken(t.hash, later(MINUTE), spend)).toEqual(use("taken", t));
      expect(await store.consumeJoinToken(t.hash, later(2 * MINUTE), spend)).toEqual(use("used", t));
      expect(await store.consumeJoinToken(expiring.hash, later(5 * MINUTE), spend)).toEqual(
        use("expired", expiring),
      );
      expect(await store.consumeJoinToken(expiring.hash, later(60 * MINUTE), spend)).toEqual(
        use("expired", expiring),
      );
      expect(await store.consumeJoinToken("00".repeat(32), later(MINUTE), spend)).toBeNull();
      await reopen();
      expect(await store.consumeJoinToken(t.hash, later(MINUTE), spend)).toEqual(use("used", t));
      // A refused attempt wrote nothing: before its expiry the token is still there to take.
      expect(await store.consumeJoinToken(expiring.hash, later(4 * MINUTE), spend)).toEqual(
        use("taken", expiring),
      );
      // Used and then expired reads as used.
      expect(await store.consumeJoinToken(expiring.hash, later(60 * MINUTE), spend)).toEqual(
        use("used", expiring),
      );
      // Each take, and only a take, recorded its spend in the same transaction.
      const records = await store.listAudit(0, 100);
      verifyAuditChain(records);
      expect(records.filter((r) => r.action === "token.spend").map((r) => r.subject)).toEqual([
        t.id,
        expiring.id,
      ]);
      expect(records.find((r) => r.action === "token.spend")?.details).toEqual({
        spiffeId: t.spiffeId,
        outcome: "accepted",
      });
    });

    it("takes no token whose spend record would carry its hash", async () => {
      const t = joinToken("00112233aabbccdd");
      await store.createJoinToken(t, event("join_token.create", t.id));
      await expect(
        store.consumeJoinToken(t.hash, later(MINUTE), (tok) =>
          event("token.spend", tok.id, { hash: t.hash }),
        ),
      ).rejects.toThrow("the audit event for spending join token 00112233aabbccdd must not carry its hash");
      expect(await store.consumeJoinToken(t.hash, later(MINUTE), spend)).toMatchObject({ outcome: "taken" });
      expect(JSON.stringify(await store.listAudit(0, 100))).not.toContain(t.hash);
    });

    it("refuses duplicate join tokens and audit records that carry the hash", async () => {
      const t = joinToken("00112233aabbccdd");
      await store.createJoinToken(t, event("join_token.create", t.id, { spiffeId: t.spiffeId }));
      await expect(
        store.createJoinToken({ ...t, hash: "ab".repeat(32) }, event("join_token.create", t.id)),
      ).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "join token 00112233aabbccdd already exists",
      });
      const sameHash = joinToken("0000000000000001", { hash: t.hash });
      const refused = await store
        .createJoinToken(sameHash, event("join_token.create", sameHash.id))
        .catch((err: unknown) => err);
      expect(refused).toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "join token 0000000000000001 repeats another token's hash",
      });
      expect(String((refused as Error).message)).not.toContain(t.hash);

      const leaky = joinToken("0000000000000002");
      await expect(
        store.createJoinToken(leaky, event("join_token.create", leaky.id, { hash: leaky.hash })),
      ).rejects.toThrow("the audit event for join token 0000000000000002 must not carry its hash");
      expect(await store.consumeJoinToken(leaky.hash, later(MINUTE), spend)).toBeNull();

      const records = await store.listAudit(0, 100);
      expect(records.map((r) => r.action)).toEqual(["join_token.create"]);
      expect(JSON.stringify(records)).not.toContain(t.hash);
    });

    it("gives a join token to exactly one of ten concurrent callers", async () => {
      const t = joinToken("00112233aabbccdd");
      await store.createJoinToken(t, event("join_token.create", t.id));
      const results = await Promise.all(
        Array.from({ length: 10 }, () => store.consumeJoinToken(t.hash, later(MINUTE), spend)),
      );
      expect(results.filter((r) => r?.outcome === "taken")).toHaveLength(1);
      expect(results.filter((r) => r?.outcome === "used")).toHaveLength(9);
      expect((await store.listAudit(0, 100)).filter((r) => r.action === "token.spend")).toHaveLength(1);
    });

    it("refuses ACME reads and writes once closed", async () => {
      await store.close();
      await expect(store.createAccount(account("a"), event("account.create", "a"))).rejects.toThrow(
        "is closed",
      );
      await expect(store.getAccount("a")).rejects.toThrow("is closed");
      await expect(store.updateOrder("o", "pending", { status: "ready" })).rejects.toThrow("is closed");
      await expect(store.listEntries({})).rejects.toThrow("is closed");
      await expect(store.consumeJoinToken("00", T0, spend)).rejects.toThrow("is closed");
      store = await backend.reopen();
    });
  });
}
