import { verifyAuditChain } from "../../ca/audit";
import type { Store } from "../../ca/store";
import { certificate, event, issuer, later, MINUTE, T0 } from "./fixtures";

/**
 * The behaviour every Store backend must share, run against each of them
 * (test/store/sqlite.test.ts, test/store/postgres.test.ts), so the interface
 * in ca/store.ts stays backend-neutral.
 */
export interface ContractBackend {
  /** Opens the store `openFresh` made last again, without `create`, as a restarted process would. */
  reopen(): Promise<Store>;
  /** Runs one statement on that store's database behind its back, as someone with database access could. */
  sql(statement: string): Promise<void>;
  /** The statement that removes the trigger refusing UPDATE on audit_log. */
  dropUpdateTrigger: string;
}

/** `name` is the backend's id, as `store.backend` reports it. */
export function storeContract(name: string, openFresh: () => Promise<Store>, backend: ContractBackend): void {
  let store: Store;

  async function reopen(): Promise<void> {
    await store.close();
    store = await backend.reopen();
  }

  describe(`Store contract: ${name}`, () => {
    beforeEach(async () => {
      store = await openFresh();
    });
    afterEach(async () => {
      await store.close();
    });

    it("marks itself as a Stint store and keeps metadata", async () => {
      expect(store.backend).toBe(name);
      expect(await store.getMeta("store_format")).toBe("stint");
      expect(await store.getMeta("trust_domain")).toBeNull();
      await store.setMeta("trust_domain", "example.org");
      await store.setMeta("trust_domain", "example.com");
      await reopen();
      expect(await store.getMeta("trust_domain")).toBe("example.com");
      await expect(store.setMeta("store_format", "x")).rejects.toThrow("meta key store_format is reserved");
      expect(await store.getMeta("store_format")).toBe("stint");
    });

    it("round-trips issuers and changes their state", async () => {
      const root = issuer("aa00", { kind: "root", keyPath: null, createdAt: new Date(T0.getTime() - 1) });
      const inter = issuer("bb11", { parentId: "aa00", state: "prepared" });
      await store.putIssuer(root, event("issuer.create", "aa00"));
      await store.putIssuer(inter, event("issuer.create", "bb11"));
      await store.setIssuerState("bb11", "active", event("issuer.activate", "bb11"));
      await reopen();

      expect(await store.getIssuer("aa00")).toEqual(root);
      expect(await store.getIssuer("bb11")).toEqual({ ...inter, state: "active" });
      expect(Buffer.isBuffer((await store.getIssuer("aa00"))?.certDer)).toBe(true);
      expect(await store.getIssuer("cc22")).toBeNull();
      expect((await store.listIssuers()).map((i) => i.id)).toEqual(["aa00", "bb11"]);

      await expect(store.putIssuer(root, event("issuer.create", "aa00"))).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: expect.stringContaining("issuer aa00 already exists"),
      });
      await expect(
        store.putIssuer(issuer("dd33", { parentId: "nope" }), event("x", "dd33")),
      ).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: expect.stringContaining("parent issuer nope does not exist"),
      });
      await expect(store.setIssuerState("nope", "retired", event("x", "nope"))).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: expect.stringContaining("issuer nope does not exist"),
      });
      // Failed writes leave no audit record behind.
      expect((await store.listAudit(0, 100)).map((r) => r.action)).toEqual([
        "issuer.create",
        "issuer.create",
        "issuer.activate",
      ]);
    });

    it("round-trips certificates with dates, buffers and name lists", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const cert = certificate("aa00", 2);
      const bare = certificate("aa00", 3, { spiffeId: null, dnsNames: [], ipAddresses: [] });
      await store.insertCertificate(cert, event("cert.issue", cert.serial));
      await store.insertCertificate(bare, event("cert.issue", bare.serial));
      await reopen();

      const got = await store.getCertificate(cert.serial);
      expect(got).toEqual(cert);
      expect(got?.notAfter).toBeInstanceOf(Date);
      expect(Buffer.isBuffer(got?.der)).toBe(true);
      expect(await store.getCertificate(bare.serial)).toEqual(bare);
      expect(await store.getCertificate("00")).toBeNull();
    });

    it("rejects certificates for unknown issuers and reused sequences", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      await store.insertCertificate(certificate("aa00", 1), event("cert.issue", "1"));
      await expect(
        store.insertCertificate(certificate("zz99", 1), event("cert.issue", "x")),
      ).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: expect.stringContaining("issuer zz99 does not exist"),
      });
      const reused = certificate("aa00", 1, { serial: "0123" });
      await expect(store.insertCertificate(reused, event("cert.issue", "0123"))).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: expect.stringContaining("issuer aa00 sequence 1 is already used"),
      });
      expect(await store.counts(T0)).toMatchObject({ issued: 1 });
      expect(await store.listAudit(0, 10)).toHaveLength(2);
    });

    it("filters and pages certificate listings", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      await store.putIssuer(issuer("bb11"), event("issuer.create", "bb11"));
      const all = [];
      for (let seq = 1; seq <= 30; seq++) all.push(certificate(seq % 2 === 0 ? "aa00" : "bb11", seq));
      await Promise.all(all.map((c) => store.insertCertificate(c, event("cert.issue", c.serial))));
      const serials = (list: { serial: string }[]) => list.map((c) => c.serial);
      const sorted = serials(all).sort();

      expect(serials(await store.listCertificates({}))).toEqual(sorted);
      expect(serials(await store.listCertificates({ issuerId: "aa00" }))).toEqual(
        serials(all.filter((c) => c.issuerId === "aa00")).sort(),
      );
      const spiffeId = "spiffe://example.org/workload/1";
      expect(serials(await store.listCertificates({ spiffeId }))).toEqual(
        serials(all.filter((c) => c.spiffeId === spiffeId)).sort(),
      );
      const at = new Date(T0.getTime() + 20 * 60_000);
      expect(serials(await store.listCertificates({ unexpiredAt: at, issuerId: "bb11" }))).toEqual(
        serials(all.filter((c) => c.notAfter > at && c.issuerId === "bb11")).sort(),
      );

      const pages: string[][] = [];
      let afterSerial: string | undefined;
      for (;;) {
        const page = serials(await store.listCertificates({ afterSerial, limit: 7 }));
        if (page.length === 0) break;
        pages.push(page);
        afterSerial = page[page.length - 1];
      }
      expect(pages.map((p) => p.length)).toEqual([7, 7, 7, 7, 2]);
      expect(pages.flat()).toEqual(sorted);
      await expect(store.listCertificates({ limit: 0 })).rejects.toThrow("invalid certificate list limit 0");
    });

    it("caps listings at 1000 and defaults to 100", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      await Promise.all(
        Array.from({ length: 1005 }, (_, i) => certificate("aa00", i + 1)).map((c) =>
          store.insertCertificate(c, event("cert.issue", c.serial)),
        ),
      );
      expect(await store.listCertificates({})).toHaveLength(100);
      expect(await store.listCertificates({ limit: 5000 })).toHaveLength(1000);
    });

    it("revokes once, with an audit record", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const cert = certificate("aa00", 1);
      await store.insertCertificate(cert, event("cert.issue", cert.serial));
      const at = new Date(T0.getTime() + 5000);
      await store.revokeCertificate(cert.serial, 1, at, event("cert.revoke", cert.serial, { reason: 1 }));
      await reopen();
      expect(await store.getCertificate(cert.serial)).toEqual({
        ...cert,
        revokedAt: at,
        revocationReason: 1,
      });

      await expect(
        store.revokeCertificate(cert.serial, 4, at, event("cert.revoke", "again")),
      ).rejects.toMatchObject({
        code: "ERR_STORE_CONFLICT",
        message: expect.stringContaining(`certificate serial ${cert.serial} is already revoked`),
      });
      await expect(
        store.revokeCertificate("abcd", 1, at, event("cert.revoke", "abcd")),
      ).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: expect.stringContaining("certificate serial abcd is unknown"),
      });
      expect((await store.listAudit(0, 10)).map((r) => r.action)).toEqual([
        "issuer.create",
        "cert.issue",
        "cert.revoke",
      ]);
    });

    it("revokes a certificate inserted in the same batch", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const cert = certificate("aa00", 1);
      await Promise.all([
        store.insertCertificate(cert, event("cert.issue", cert.serial)),
        store.revokeCertificate(cert.serial, 4, T0, event("cert.revoke", cert.serial)),
      ]);
      expect(await store.getCertificate(cert.serial)).toMatchObject({ revokedAt: T0, revocationReason: 4 });
    });

    it("lists an issuer's unexpired revoked certificates, by revocation time", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      await store.putIssuer(issuer("bb11"), event("issuer.create", "bb11"));
      const certs = Array.from({ length: 6 }, (_, i) => certificate("aa00", i + 1));
      const other = certificate("bb11", 9);
      await Promise.all(
        [...certs, other].map((c) => store.insertCertificate(c, event("cert.issue", c.serial))),
      );
      expect(await store.listRevoked("aa00", T0)).toEqual([]);
      // Revoked out of serial order; certificate(…, n) expires n minutes after T0.
      await store.revokeCertificate(certs[4].serial, 1, later(2000), event("cert.revoke", "5"));
      await store.revokeCertificate(certs[1].serial, 4, later(1000), event("cert.revoke", "2"));
      await store.revokeCertificate(certs[5].serial, 0, later(1000), event("cert.revoke", "6"));
      await store.revokeCertificate(other.serial, 1, later(1000), event("cert.revoke", "other"));
      await reopen();
      expect(await store.listRevoked("aa00", T0)).toEqual([
        { serial: certs[1].serial, revokedAt: later(1000), reason: 4 },
        { serial: certs[5].serial, revokedAt: later(1000), reason: 0 },
        { serial: certs[4].serial, revokedAt: later(2000), reason: 1 },
      ]);
      // At T0+2min certificate 2 has expired (notAfter is not after the instant): it drops off.
      expect((await store.listRevoked("aa00", later(2 * MINUTE))).map((r) => r.serial)).toEqual([
        certs[5].serial,
        certs[4].serial,
      ]);
      expect(await store.listRevoked("aa00", later(6 * MINUTE))).toEqual([]);
      expect(await store.listRevoked("cc22", T0)).toEqual([]);
    });

    it("reports how far certificates have moved off an issuer", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      await store.putIssuer(issuer("bb11"), event("issuer.create", "bb11"));
      expect(await store.issuerProgress("aa00", T0)).toEqual({ live: 0, unreplaced: 0, lastNotAfter: null });
      // Six certificates of aa00 for workloads 1, 2, 0, 1, 2, 0 (sequence % 3), expiring 1…6 minutes after T0.
      const old = Array.from({ length: 6 }, (_, i) => certificate("aa00", i + 1));
      const bare = certificate("aa00", 7, { spiffeId: null });
      // Workload 1 renewed on bb11 a second after T0; workload 2 renewed on aa00 itself, which does not count.
      const moved = certificate("bb11", 1, { notBefore: later(1000) });
      const sameIssuer = certificate("aa00", 8, {
        spiffeId: "spiffe://example.org/workload/2",
        notBefore: later(1000),
      });
      await Promise.all(
        [...old, bare, moved, sameIssuer].map((c) =>
          store.insertCertificate(c, event("cert.issue", c.serial)),
        ),
      );
      await store.revokeCertificate(old[5].serial, 1, T0, event("cert.revoke", old[5].serial));
      // Live: 1…5, 7 and 8 (6 is revoked). Replaced: 1 and 4 (workload 1). Not: 2, 3, 5, 7 (no SPIFFE ID), 8.
      expect(await store.issuerProgress("aa00", T0)).toEqual({
        live: 7,
        unreplaced: 5,
        lastNotAfter: later(8 * MINUTE),
      });
      // At T0+3min only 4, 5, 7 and 8 are live; 4 is replaced.
      expect(await store.issuerProgress("aa00", later(3 * MINUTE))).toMatchObject({ live: 4, unreplaced: 3 });
      expect(await store.issuerProgress("bb11", T0)).toMatchObject({ live: 1, unreplaced: 1 });
    });

    it("increments metadata counters durably, never handing out a number twice", async () => {
      expect(await store.incrementMeta("crl_number:aa00")).toBe(1);
      expect(await store.incrementMeta("crl_number:aa00")).toBe(2);
      await reopen();
      const concurrent = await Promise.all(
        Array.from({ length: 20 }, () => store.incrementMeta("crl_number:aa00")),
      );
      expect([...concurrent].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 3));
      expect(await store.getMeta("crl_number:aa00")).toBe("22");
      expect(await store.incrementMeta("crl_number:bb11")).toBe(1);

      await store.setMeta("crl_number:bad", "twelve");
      await expect(store.incrementMeta("crl_number:bad")).rejects.toMatchObject({
        code: "ERR_STORE_CORRUPT",
        message: expect.stringContaining('meta crl_number:bad holds "twelve", not a counter'),
      });
      expect(await store.getMeta("crl_number:bad")).toBe("twelve");
      await expect(store.incrementMeta("store_format")).rejects.toThrow("meta key store_format is reserved");
    });

    it("counts issued, unexpired and revoked certificates", async () => {
      expect(await store.counts(T0)).toEqual({ issued: 0, unexpired: 0, revoked: 0 });
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const certs = Array.from({ length: 10 }, (_, i) => certificate("aa00", i + 1));
      await Promise.all(certs.map((c) => store.insertCertificate(c, event("cert.issue", c.serial))));
      await store.revokeCertificate(certs[0].serial, 1, T0, event("cert.revoke", certs[0].serial));
      await store.revokeCertificate(certs[9].serial, 1, T0, event("cert.revoke", certs[9].serial));
      // certificate(…, n) expires n minutes after T0, so at T0+4min certificates 5…10 are unexpired.
      const at = new Date(T0.getTime() + 4 * 60_000);
      expect(await store.counts(at)).toEqual({ issued: 10, unexpired: 6, revoked: 2 });
    });

    it("reserves sequences durably and never hands one out twice", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      await store.putIssuer(issuer("bb11"), event("issuer.create", "bb11"));
      expect(await store.reserveSequences("aa00", 10)).toBe(1);
      expect(await store.reserveSequences("aa00", 5)).toBe(11);
      expect(await store.reserveSequences("bb11", 1)).toBe(1);
      await reopen();
      const after = await store.reserveSequences("aa00", 1);
      expect(after).toBe(16);

      const concurrent = await Promise.all(
        Array.from({ length: 50 }, () => store.reserveSequences("aa00", 3)),
      );
      const taken = concurrent.flatMap((first) => [first, first + 1, first + 2]);
      expect(new Set(taken).size).toBe(150);
      expect(Math.min(...taken)).toBeGreaterThan(after);

      await expect(store.reserveSequences("zz99", 1)).rejects.toMatchObject({
        code: "ERR_NOT_FOUND",
        message: expect.stringContaining("issuer zz99 does not exist"),
      });
      await expect(store.reserveSequences("aa00", 0)).rejects.toThrow("cannot reserve 0");
    });

    it("group-commits 2,000 concurrent inserts and rejects only the duplicates", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const certs = Array.from({ length: 2000 }, (_, i) => certificate("aa00", i + 1));
      // Both backends commit at most 1,000 writes to a transaction. One duplicate repeats a serial
      // committed in an earlier batch, the other a sequence from its own batch; both sit among writes
      // that must still land.
      const earlier = { ...certs[123], sequence: 99_999 };
      const sameBatch = { ...certs[1700], serial: "0abc" };
      const writes = certs.map((c) => ({
        cert: c,
        audit: event("cert.issue", c.serial, { sequence: c.sequence }),
      }));
      writes.splice(1500, 0, { cert: earlier, audit: event("cert.issue", "dup1") });
      writes.splice(1900, 0, { cert: sameBatch, audit: event("cert.issue", "dup2") });
      const results = await Promise.allSettled(writes.map((w) => store.insertCertificate(w.cert, w.audit)));

      const rejected = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
      expect(rejected).toEqual([
        expect.objectContaining({
          code: "ERR_STORE_CONFLICT",
          message: expect.stringContaining(`certificate serial ${earlier.serial} is already recorded`),
        }),
        expect.objectContaining({
          code: "ERR_STORE_CONFLICT",
          message: expect.stringContaining("issuer aa00 sequence 1701 is already used"),
        }),
      ]);

      await reopen();
      let count = 0;
      let afterSerial: string | undefined;
      for (;;) {
        const page = await store.listCertificates({ afterSerial, limit: 1000 });
        if (page.length === 0) break;
        count += page.length;
        afterSerial = page[page.length - 1].serial;
      }
      expect(count).toBe(2000);
      const audit = await store.listAudit(0, 5000);
      expect(audit).toHaveLength(2001);
      expect(() => verifyAuditChain(audit)).not.toThrow();
    });

    it("keeps the audit chain intact across writes, batches and reopen", async () => {
      const first = await store.appendAudit(
        event("ca.init", "example.org", { nested: { b: 2, a: [1, "x"] } }),
      );
      expect(first).toMatchObject({ seq: 1, prevHash: "" });
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      await Promise.all([
        store.appendAudit(event("admin.note", "one")),
        store.setIssuerState("nope", "retired", event("issuer.retire", "nope")).catch(() => undefined),
        store.appendAudit(event("admin.note", "two", { when: new Date(T0.getTime() + 1) })),
      ]);
      await reopen();
      const records = await store.listAudit(0, 100);
      expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
      expect(records[0]).toEqual({ ...first, details: { nested: { a: [1, "x"], b: 2 } } });
      expect(() => verifyAuditChain(records)).not.toThrow();
      // A later run verifies from the hash of the record before it.
      const tail = await store.listAudit(2, 100);
      expect(tail.map((r) => r.seq)).toEqual([3, 4]);
      expect(() => verifyAuditChain(tail, records[1].hash)).not.toThrow();
    });

    it("refuses SQL edits of the audit log, and detects them when forced", async () => {
      await store.appendAudit(event("ca.init", "example.org", { who: "alice" }));
      await store.appendAudit(event("admin.note", "x"));

      await expect(backend.sql("UPDATE audit_log SET details = '{}' WHERE seq = 1")).rejects.toThrow(
        "audit_log is append-only",
      );
      await expect(backend.sql("DELETE FROM audit_log WHERE seq = 2")).rejects.toThrow(
        "audit_log is append-only",
      );
      await backend.sql(backend.dropUpdateTrigger);
      await backend.sql(`UPDATE audit_log SET details = '{"who":"mallory"}' WHERE seq = 1`);

      await reopen();
      const records = await store.listAudit(0, 100);
      expect(records[0].details).toEqual({ who: "mallory" });
      expect(() => verifyAuditChain(records)).toThrow(
        expect.objectContaining({
          code: "ERR_AUDIT_CHAIN",
          message: expect.stringContaining("record 1 was altered after it was written"),
        }),
      );
    });

    it("commits queued writes on close and refuses later ones", async () => {
      await store.putIssuer(issuer("aa00"), event("issuer.create", "aa00"));
      const pending = store.insertCertificate(certificate("aa00", 1), event("cert.issue", "1"));
      await store.close();
      await expect(pending).resolves.toBeUndefined();
      await expect(store.appendAudit(event("late", "x"))).rejects.toThrow("is closed");
      await expect(store.getMeta("x")).rejects.toThrow("is closed");
      await expect(store.reserveSequences("aa00", 1)).rejects.toThrow("is closed");
      store = await backend.reopen();
      expect(await store.getCertificate(certificate("aa00", 1).serial)).not.toBeNull();
    });
  });
}
