import { verifyAuditChain } from "../../ca/audit";
import { entryHash } from "../../ca/entries";
import type { CertificateBinding } from "../../ca/store";
import type { CaStore } from "../../ca/store/open";
import type { AuthorizationRecord, ChallengeRecord } from "../../ca/store-acme";
import {
  account,
  attestation,
  authorization,
  certificate,
  entry,
  event,
  issuer,
  joinToken,
  later,
  MINUTE,
  order,
} from "./fixtures";

/**
 * Attestations and certificate bindings (schema 4), which every backend must
 * keep alike: what certificates point to for "who attested what", and the
 * entry check made in the transaction that records a certificate.
 */
export interface BindingContractBackend {
  /** Opens the store `openFresh` made last again, without `create`, as a restarted process would. */
  reopen(): Promise<CaStore>;
  /** Runs one statement on that store's database behind its back, as someone with database access could. */
  sql(statement: string): Promise<void>;
  /** Statements that take a closed store back to schema 3, as a store written by the previous release. */
  toSchema3: string[];
}

const SPIFFE = "spiffe://example.org/web";

/** `name` is the backend's id, as `store.backend` reports it. */
export function bindingStoreContract(
  name: string,
  openFresh: () => Promise<CaStore>,
  backend: BindingContractBackend,
): void {
  let store: CaStore;

  async function reopen(): Promise<void> {
    await store.close();
    store = await backend.reopen();
  }

  const validated = (authz: AuthorizationRecord): ChallengeRecord[] => [
    { ...authz.challenges[0], status: "valid", validated: later(3 * MINUTE) },
  ];

  /** An account, an entry, and a pending SPIFFE authorization in an order. */
  async function enrollment() {
    const a = account("acct1");
    await store.createAccount(a, event("account.create", a.id));
    const e = entry("e1", SPIFFE, later(1), { dnsNames: ["web.example.org"], ttlMs: 600_000 });
    await store.createEntry(e, event("entry.create", e.id));
    const az = authorization("az1", a.id);
    await store.createOrder(order("ord1", a.id, [az]), [az]);
    return { a, e, az };
  }

  describe(`attestations and certificate bindings: ${name}`, () => {
    beforeEach(async () => {
      store = await openFresh();
    });
    afterEach(async () => {
      await store.close();
    });

    it("records an attestation with its authorization and audit record, all or nothing", async () => {
      const { a, e, az } = await enrollment();
      const att = attestation("att1", az, e);
      const valid = await store.recordAttestation(
        att,
        "pending",
        validated(az),
        event("attest.ok", SPIFFE, { attestationId: att.id }),
      );
      const expected = {
        ...az,
        status: "valid",
        challenges: validated(az),
        entryId: e.id,
        selectors: att.selectors,
        attestationId: att.id,
      };
      expect(valid).toEqual(expected);

      // A second validation racing the first loses, and leaves no attestation and no record behind.
      await expect(
        store.recordAttestation(
          attestation("att2", az, e),
          "pending",
          validated(az),
          event("attest.ok", SPIFFE),
        ),
      ).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: "authorization az1 is valid, not pending",
      });
      await expect(
        store.recordAttestation(
          attestation("att3", { ...az, id: "nope" }, e),
          "pending",
          validated(az),
          event("attest.ok", SPIFFE),
        ),
      ).rejects.toMatchObject({ code: "ERR_NOT_FOUND", message: "authorization nope does not exist" });
      const az2 = authorization("az2", a.id);
      await store.createOrder(order("ord2", a.id, [az2]), [az2]);
      await expect(
        store.recordAttestation(
          attestation("att1", az2, e),
          "pending",
          validated(az2),
          event("attest.ok", SPIFFE),
        ),
      ).rejects.toMatchObject({ code: "ERR_STORE_CONFLICT", message: "attestation att1 already exists" });
      expect(await store.getAuthorization(az2.id)).toEqual(az2);
      await reopen();

      expect(await store.getAuthorization(az.id)).toEqual(expected);
      const got = await store.getAttestation(att.id);
      expect(got).toEqual(att);
      expect(got?.at).toBeInstanceOf(Date);
      for (const id of ["att2", "att3", "nope"]) expect(await store.getAttestation(id)).toBeNull();
      const records = await store.listAudit(0, 100);
      verifyAuditChain(records);
      expect(records.map((r) => r.action)).toEqual(["account.create", "entry.create", "attest.ok"]);
    });

    it("binds a certificate to its entry, re-checking the entry in the transaction that records it", async () => {
      const { e, az } = await enrollment();
      const att = attestation("att1", az, e);
      await store.recordAttestation(att, "pending", validated(az), event("attest.ok", SPIFFE));
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const first: CertificateBinding = {
        entryId: e.id,
        entryHash: entryHash(e),
        attestationId: att.id,
        renews: null,
        requestedBy: null,
      };
      const [c1, c2, c3, plain] = [1, 2, 3, 4].map((n) => certificate("aa00", n));
      await store.insertCertificate(c1, event("cert.issue", c1.serial), first);
      await store.insertCertificate(c2, event("cert.renew", c2.serial), { ...first, renews: c1.serial });
      await store.insertCertificate(plain, event("cert.issue", plain.serial));
      await reopen();

      expect(await store.getCertificateBinding(c1.serial)).toEqual(first);
      expect(await store.getCertificateBinding(c2.serial)).toEqual({ ...first, renews: c1.serial });
      expect(await store.getCertificateBinding(plain.serial)).toBeNull();
      expect(await store.getCertificateBinding("7f00")).toBeNull();
      const bound = await store.listCertificates({ entryId: e.id });
      expect(bound.map((c) => c.serial)).toEqual([c1.serial, c2.serial]);
      expect(await store.listCertificates({ entryId: e.id, unexpiredAt: later(90_000) })).toEqual([bound[1]]);
      expect(await store.listCertificates({ entryId: "other" })).toEqual([]);

      // The entry as the issuer read it is not the entry now: nothing is written.
      const before = (await store.listAudit(0, 100)).length;
      await expect(
        store.insertCertificate(c3, event("cert.issue", c3.serial), {
          ...first,
          entryHash: entryHash({ ...e, dnsNames: ["web.example.org", "extra.example.org"] }),
        }),
      ).rejects.toMatchObject({
        code: "ERR_UNAUTHORIZED",
        message: "registration entry e1 changed while the certificate was being issued",
      });
      await expect(
        store.insertCertificate(c3, event("cert.issue", c3.serial), { ...first, attestationId: "nope" }),
      ).rejects.toMatchObject({ code: "ERR_NOT_FOUND", message: "attestation nope does not exist" });

      // Deleted, with other writes in the same batch: only the bound one is refused.
      await store.deleteEntry(e.id, event("entry.delete", e.id));
      const [c5, c6] = [5, 6].map((n) => certificate("aa00", n));
      const results = await Promise.allSettled([
        store.insertCertificate(c3, event("cert.renew", c3.serial), { ...first, renews: c2.serial }),
        store.insertCertificate(c5, event("cert.issue", c5.serial)),
        store.insertCertificate(c6, event("cert.issue", c6.serial)),
      ]);
      expect(results.map((r) => r.status)).toEqual(["rejected", "fulfilled", "fulfilled"]);
      expect((results[0] as PromiseRejectedResult).reason).toMatchObject({
        code: "ERR_UNAUTHORIZED",
        message: "registration entry e1 was deleted while the certificate was being issued",
      });
      expect(await store.getCertificate(c3.serial)).toBeNull();
      const records = await store.listAudit(0, 100);
      verifyAuditChain(records);
      expect(records.slice(before).map((r) => [r.action, r.subject])).toEqual([
        ["entry.delete", e.id],
        ["cert.issue", c5.serial],
        ["cert.issue", c6.serial],
      ]);
      // The bindings outlive the entry: they say what the certificates were issued under.
      expect(await store.getCertificateBinding(c1.serial)).toEqual(first);
    });

    it("binds a certificate a node agent obtained to its entry and that agent, with the same entry check", async () => {
      const agent = "spiffe://example.org/node/n1";
      const e = entry("e1", SPIFFE, later(1), { parent: agent });
      await store.createEntry(e, event("entry.create", e.id));
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const byAgent: CertificateBinding = {
        entryId: e.id,
        entryHash: entryHash(e),
        attestationId: null,
        renews: null,
        requestedBy: agent,
      };
      const [c1, c2, c3] = [1, 2, 3].map((n) => certificate("aa00", n));
      await store.insertCertificate(c1, event("cert.issue", c1.serial), byAgent);
      await reopen();
      expect(await store.getCertificateBinding(c1.serial)).toEqual(byAgent);
      // What `stint entry delete --revoke` revokes.
      expect((await store.listCertificates({ entryId: e.id })).map((c) => c.serial)).toEqual([c1.serial]);

      // Moved to another agent after this one read it: refused, nothing written.
      await store.deleteEntry(e.id, event("entry.delete", e.id));
      await store.createEntry({ ...e, parent: "spiffe://example.org/node/n2" }, event("entry.create", e.id));
      await expect(
        store.insertCertificate(c2, event("cert.issue", c2.serial), byAgent),
      ).rejects.toMatchObject({
        code: "ERR_UNAUTHORIZED",
        message: "registration entry e1 changed while the certificate was being issued",
      });
      expect(await store.getCertificate(c2.serial)).toBeNull();

      // A binding names where its grant came from: an attestation or an agent, never both, never neither.
      await store.insertCertificate(c3, event("cert.issue", c3.serial));
      for (const source of [
        { attestationId: null, requestedBy: null },
        { attestationId: "att1", requestedBy: agent },
      ]) {
        await expect(
          backend.sql(
            `INSERT INTO certificate_bindings (serial, entry_id, entry_hash, attestation_id, renews, requested_by)
             VALUES ('${c3.serial}', 'e1', '', ${source.attestationId ? `'${source.attestationId}'` : "NULL"}, NULL,
                     ${source.requestedBy ? `'${source.requestedBy}'` : "NULL"})`,
          ),
        ).rejects.toThrow(/CHECK constraint failed|violates check constraint "certificate_bindings_source"/);
      }
      expect(await store.getCertificateBinding(c3.serial)).toBeNull();
    });

    it("never hands order recovery a certificate a node agent asked for under the same entry", async () => {
      const { e, az } = await enrollment();
      const att = attestation("att1", az, e);
      await store.recordAttestation(att, "pending", validated(az), event("attest.ok", SPIFFE));
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const [byAgent, attested] = [1, 2].map((n) => certificate("aa00", n));
      const under = { entryId: e.id, entryHash: entryHash(e), renews: null };
      await store.insertCertificate(byAgent, event("cert.issue", byAgent.serial), {
        ...under,
        attestationId: null,
        requestedBy: "spiffe://example.org/node/n1",
      });
      expect(await store.unclaimedCertificate(att.id)).toBeNull();
      await store.insertCertificate(attested, event("cert.issue", attested.serial), {
        ...under,
        attestationId: att.id,
        requestedBy: null,
      });
      expect(await store.unclaimedCertificate(att.id)).toBe(attested.serial);
    });

    it("finds orders left processing, and the first issuance under their attestation that no order holds", async () => {
      const { a, e, az } = await enrollment();
      const att = attestation("att1", az, e);
      await store.recordAttestation(att, "pending", validated(az), event("attest.ok", SPIFFE));
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const first: CertificateBinding = {
        entryId: e.id,
        entryHash: entryHash(e),
        attestationId: att.id,
        renews: null,
        requestedBy: null,
      };
      const [c1, renewal] = [1, 2].map((n) => certificate("aa00", n));
      expect(await store.unclaimedCertificate(att.id)).toBeNull();
      await store.insertCertificate(renewal, event("cert.renew", renewal.serial), { ...first, renews: "77" });
      expect(await store.unclaimedCertificate(att.id)).toBeNull();
      await store.insertCertificate(c1, event("cert.issue", c1.serial), first);
      expect(await store.listProcessingOrders(10)).toEqual([]);
      await store.updateOrder("ord1", "pending", { status: "ready" });
      const processing = await store.updateOrder("ord1", "ready", { status: "processing" });
      const az2 = authorization("az2", a.id);
      await store.createOrder(order("ord2", a.id, [az2]), [az2]);
      await reopen();

      expect(await store.listProcessingOrders(10)).toEqual([processing]);
      expect(await store.listProcessingOrders(0)).toEqual([]);
      expect(await store.unclaimedCertificate(att.id)).toBe(c1.serial);
      expect(await store.unclaimedCertificate("nope")).toBeNull();
      await store.updateOrder("ord1", "processing", { status: "valid", certificateSerial: c1.serial });
      expect(await store.unclaimedCertificate(att.id)).toBeNull();
      expect(await store.listProcessingOrders(10)).toEqual([]);
    });

    it("spends a join token only in the transaction that makes its authorization valid", async () => {
      const { a, e, az } = await enrollment();
      const spend = (t: { id: string; spiffeId: string }) =>
        event("token.spend", t.id, { spiffeId: t.spiffeId });
      const [t1, t2, t3] = ["00000000000000a1", "00000000000000a2", "00000000000000a3"].map((id) =>
        joinToken(id),
      );
      for (const t of [t1, t2, t3]) await store.createJoinToken(t, event("join_token.create", t.id));
      const using = (t: typeof t1) => ({ hash: t.hash, now: later(MINUTE), spend });
      const usable = (t: typeof t1) => ({ outcome: "usable", id: t.id, spiffeId: t.spiffeId });
      expect(await store.findJoinToken(t1.hash, later(MINUTE))).toEqual(usable(t1));
      expect(await store.findJoinToken(t1.hash, later(60 * MINUTE))).toMatchObject({ outcome: "expired" });
      expect(await store.findJoinToken("00".repeat(32), later(MINUTE))).toBeNull();

      const att = attestation("att1", az, e);
      await store.recordAttestation(att, "pending", validated(az), event("attest.ok", SPIFFE), using(t1));
      expect(await store.findJoinToken(t1.hash, later(MINUTE))).toMatchObject({ outcome: "used" });
      const before = (await store.listAudit(0, 100)).length;

      // Spent already: the second authorization stays pending, with no attestation and no record.
      const az2 = authorization("az2", a.id);
      await store.createOrder(order("ord2", a.id, [az2]), [az2]);
      await expect(
        store.recordAttestation(
          attestation("att2", az2, e),
          "pending",
          validated(az2),
          event("attest.ok", SPIFFE),
          using(t1),
        ),
      ).rejects.toMatchObject({
        code: "ERR_ATTESTATION",
        message: "join token 00000000000000a1 has already been used; join tokens work only once",
      });
      // The authorization moved on meanwhile: the token stays unspent.
      await expect(
        store.recordAttestation(
          attestation("att3", az, e),
          "pending",
          validated(az),
          event("attest.ok", SPIFFE),
          using(t2),
        ),
      ).rejects.toMatchObject({ code: "ERR_STORE_CONFLICT" });
      await reopen();
      expect(await store.getAuthorization(az2.id)).toEqual(az2);
      for (const id of ["att2", "att3"]) expect(await store.getAttestation(id)).toBeNull();
      expect(await store.findJoinToken(t2.hash, later(MINUTE))).toEqual(usable(t2));
      expect((await store.listAudit(0, 100)).length).toBe(before);

      // Of ten authorizations racing for one token, exactly one becomes valid and spends it.
      const racers = Array.from({ length: 10 }, (_, i) => authorization(`race${i}`, a.id));
      await store.createOrder(order("ord3", a.id, racers), racers);
      const results = await Promise.allSettled(
        racers.map((r, i) =>
          store.recordAttestation(
            attestation(`attr${i}`, r, e),
            "pending",
            validated(r),
            event("attest.ok", SPIFFE),
            using(t3),
          ),
        ),
      );
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      const records = await store.listAudit(0, 100);
      verifyAuditChain(records);
      expect(records.slice(before).map((r) => [r.action, r.subject])).toEqual([
        ["token.spend", t3.id],
        ["attest.ok", SPIFFE],
      ]);
      expect(records.filter((r) => r.action === "token.spend").map((r) => r.subject)).toEqual([t1.id, t3.id]);
    });

    it("keeps attestations and bindings append-only", async () => {
      const { e, az } = await enrollment();
      await store.recordAttestation(
        attestation("att1", az, e),
        "pending",
        validated(az),
        event("attest.ok", SPIFFE),
      );
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const c = certificate("aa00", 1);
      await store.insertCertificate(c, event("cert.issue", c.serial), {
        entryId: e.id,
        entryHash: entryHash(e),
        attestationId: "att1",
        renews: null,
        requestedBy: null,
      });
      await expect(backend.sql("UPDATE attestations SET method = 'x509pop'")).rejects.toThrow(
        "attestations is append-only",
      );
      await expect(backend.sql("DELETE FROM attestations")).rejects.toThrow("attestations is append-only");
      await expect(backend.sql("UPDATE certificate_bindings SET entry_id = 'e2'")).rejects.toThrow(
        "certificate_bindings is append-only",
      );
      await expect(backend.sql("DELETE FROM certificate_bindings")).rejects.toThrow(
        "certificate_bindings is append-only",
      );
      expect(await store.getAttestation("att1")).toMatchObject({ method: "k8s_sat" });
    });

    it("recovers the entry of certificates issued before schema 4, and of their renewals", async () => {
      const { a, e, az } = await enrollment();
      // What the previous release wrote: the authorization kept the entry and selectors; no attestation.
      await store.updateAuthorization(az.id, "pending", {
        status: "valid",
        challenges: validated(az),
        entryId: e.id,
        selectors: ["k8s:ns:prod", "k8s:sa:e1", "k8s:pod:web-0"],
      });
      const dns = authorization("az2", a.id, { identifier: { type: "dns", value: "web.example.org" } });
      await store.createOrder(order("ord2", a.id, [dns]), [dns]);
      await store.updateAuthorization(dns.id, "pending", { status: "valid" });
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const [c1, c2, c3, cli, other] = [1, 2, 3, 4, 5].map((n) => certificate("aa00", n));
      const acct = "https://ca.example/acme/acct/acct1";
      await store.insertCertificate(c1, { ...event("cert.issue", c1.serial), actor: acct });
      await store.updateOrder("ord1", "pending", { status: "valid", certificateSerial: c1.serial });
      await store.insertCertificate(c2, { ...event("cert.issue", c2.serial), actor: `renew:${c1.serial}` });
      await store.insertCertificate(c3, { ...event("cert.issue", c3.serial), actor: `renew:${c2.serial}` });
      await store.insertCertificate(cli, { ...event("cert.issue", cli.serial), actor: "cli" });
      await store.insertCertificate(other, { ...event("cert.issue", other.serial), actor: acct });
      await store.updateOrder("ord2", "pending", { status: "valid", certificateSerial: other.serial });
      await store.close();
      for (const statement of backend.toSchema3) await backend.sql(statement);
      store = await backend.reopen();

      const recovered = {
        id: "pre4-az1",
        at: later(3 * MINUTE),
        accountId: a.id,
        authorizationId: az.id,
        method: "unknown",
        spiffeId: SPIFFE,
        selectors: ["k8s:ns:prod", "k8s:sa:e1", "k8s:pod:web-0"],
        evidence: "recorded before store schema 4",
        entryId: e.id,
        entrySelectors: e.selectors,
        entryHash: "",
      };
      expect(await store.getAttestation("pre4-az1")).toEqual(recovered);
      expect(await store.getAuthorization(az.id)).toMatchObject({ attestationId: "pre4-az1" });
      expect(await store.getAuthorization(dns.id)).toMatchObject({ attestationId: null });
      const bound = { entryId: e.id, entryHash: "", attestationId: "pre4-az1", requestedBy: null };
      expect(await store.getCertificateBinding(c1.serial)).toEqual({ ...bound, renews: null });
      expect(await store.getCertificateBinding(c2.serial)).toEqual({ ...bound, renews: c1.serial });
      expect(await store.getCertificateBinding(c3.serial)).toEqual({ ...bound, renews: c2.serial });
      expect(await store.getCertificateBinding(cli.serial)).toBeNull();
      expect(await store.getCertificateBinding(other.serial)).toBeNull();
    });
  });
}
