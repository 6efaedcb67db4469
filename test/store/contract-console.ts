import { type ConsoleGrant, MAX_CONSOLE_GRANTS } from "../../ca/store";
import type { CaStore } from "../../ca/store/open";
import { certificate, event, issuer, joinToken, later, MINUTE, T0 } from "./fixtures";

/**
 * The security console's queries (acme/console/), which both backends must
 * answer alike: the ID-prefix filter, the expiry timeline, expired
 * certificates nobody renewed, join tokens without their hashes, and the
 * audit search.
 */
export function consoleStoreContract(
  name: string,
  openFresh: () => Promise<CaStore>,
  /** Another handle on the store `openFresh` made last, as a second replica (or process) holds one. */
  replica: () => Promise<CaStore>,
): void {
  let store: CaStore;

  describe(`console queries: ${name}`, () => {
    beforeEach(async () => {
      store = await openFresh();
      await store.putIssuer(issuer("aa"), event("issuer.create", "aa"));
    });
    afterEach(async () => {
      await store.close();
    });

    it("filters certificates by SPIFFE ID prefix, with LIKE's wildcards taken literally", async () => {
      const ids = [
        "spiffe://example.org/web/a",
        "spiffe://example.org/web/b",
        "spiffe://example.org/webx",
        "spiffe://example.org/db",
      ];
      for (const [i, spiffeId] of ids.entries()) {
        await store.insertCertificate(certificate("aa", i + 1, { spiffeId }), event("cert.issue", String(i)));
      }
      const found = await store.listCertificates({ spiffeIdPrefix: "spiffe://example.org/web/" });
      expect(found.map((c) => c.spiffeId)).toEqual(ids.slice(0, 2));
      expect(await store.listCertificates({ spiffeIdPrefix: "spiffe://example.org/%" })).toEqual([]);
      const page = await store.listCertificates({ spiffeIdPrefix: "spiffe://example.org/web", limit: 2 });
      const next = await store.listCertificates({
        spiffeIdPrefix: "spiffe://example.org/web",
        afterSerial: page[1]!.serial,
      });
      expect([...page, ...next].map((c) => c.spiffeId)).toEqual(ids.slice(0, 3));
    });

    it("counts live certificates per minute of expiry, leaving out revoked and expired ones", async () => {
      // Sequence n expires n minutes after T0 (fixtures); 1..5 plus a second one in minute 2.
      for (let n = 1; n <= 5; n++)
        await store.insertCertificate(certificate("aa", n), event("cert.issue", String(n)));
      await store.insertCertificate(
        certificate("aa", 6, { notAfter: later(2 * MINUTE - 1) }),
        event("cert.issue", "6"),
      );
      const revoked = certificate("aa", 3).serial;
      await store.revokeCertificate(revoked, 1, T0, event("cert.revoke", revoked));
      const timeline = await store.expiryTimeline(later(MINUTE), later(5 * MINUTE), MINUTE);
      // (T0+1m, T0+5m] in minutes counted from T0+1m: 1m itself is out, 3m revoked.
      expect(timeline.map((b) => [b.start.getTime() - T0.getTime(), b.count])).toEqual([
        [MINUTE, 1],
        [2 * MINUTE, 1],
        [4 * MINUTE, 1],
        [5 * MINUTE, 1],
      ]);
    });

    it("lists certificates that expired with no later one for their SPIFFE ID", async () => {
      const renewed = certificate("aa", 1, {
        spiffeId: "spiffe://example.org/renewed",
        notAfter: later(MINUTE),
      });
      const renewal = certificate("aa", 2, {
        spiffeId: "spiffe://example.org/renewed",
        notAfter: later(10 * MINUTE),
      });
      const dropped = certificate("aa", 3, {
        spiffeId: "spiffe://example.org/dropped",
        notAfter: later(2 * MINUTE),
      });
      const revoked = certificate("aa", 4, {
        spiffeId: "spiffe://example.org/revoked",
        notAfter: later(2 * MINUTE),
      });
      for (const c of [renewed, renewal, dropped, revoked])
        await store.insertCertificate(c, event("cert.issue", c.serial));
      await store.revokeCertificate(revoked.serial, 1, T0, event("cert.revoke", revoked.serial));
      const found = await store.expiredUnrenewed(T0, later(5 * MINUTE), 10);
      expect(found.map((c) => c.spiffeId)).toEqual(["spiffe://example.org/dropped"]);
      expect(await store.expiredUnrenewed(later(2 * MINUTE), later(5 * MINUTE), 10)).toEqual([]);
    });

    it("finds renewals issued after their predecessor's renewal window closed, per SPIFFE ID", async () => {
      const id = (name: string) => `spiffe://example.org/${name}`;
      const m = (n: number) => later(n * MINUTE);
      // [SPIFFE ID, notBefore, notAfter] in minutes from T0; 75 % windows close 30 min into 40-min lifetimes.
      const certs: [string, number, number][] = [
        ["slow", 0, 40],
        ["slow", 35, 75], // late: window closed at 30
        ["slow", 50, 90], // on time: window of the one before closed at 65
        ["slow", 85, 125], // late: closed at 80
        ["prompt", 0, 40],
        ["prompt", 20, 60], // on time
        ["lapsed", 0, 10],
        ["lapsed", 15, 55], // after the predecessor expired
      ];
      for (const [i, [name, nb, na]] of certs.entries()) {
        const c = certificate("aa", i + 1, { spiffeId: id(name), notBefore: m(nb), notAfter: m(na) });
        await store.insertCertificate(c, event("cert.issue", c.serial));
      }
      const serial = (i: number) => certificate("aa", i + 1).serial;
      const late = await store.lateRenewals(T0, m(100), 75, 10);
      expect(late).toEqual([
        {
          spiffeId: id("slow"),
          count: 2,
          latest: {
            predecessor: serial(2),
            successor: serial(3),
            renewedAt: m(85),
            windowEnd: m(80),
            predecessorNotAfter: m(90),
          },
        },
        {
          spiffeId: id("lapsed"),
          count: 1,
          latest: {
            predecessor: serial(6),
            successor: serial(7),
            renewedAt: m(15),
            windowEnd: later(7.5 * MINUTE),
            predecessorNotAfter: m(10),
          },
        },
      ]);
      // Only renewals issued in (since, now] count; the limit bounds the IDs.
      expect((await store.lateRenewals(m(40), m(100), 75, 10)).map((l) => [l.spiffeId, l.count])).toEqual([
        [id("slow"), 1],
      ]);
      expect((await store.lateRenewals(T0, m(100), 75, 1)).map((l) => l.spiffeId)).toEqual([id("slow")]);
      // Windows closing at 90 % (36 and 86 min) make both of slow's renewals on time; lapsed stays late.
      expect((await store.lateRenewals(T0, m(100), 90, 10)).map((l) => [l.spiffeId, l.count])).toEqual([
        [id("lapsed"), 1],
      ]);
    });

    it("lists join tokens outstanding first, then used and expired ones, never with their hashes", async () => {
      const tokens = [
        joinToken("0000000000000001", { expiresAt: later(MINUTE) }), // expired at +2m
        joinToken("0000000000000002", { expiresAt: later(30 * MINUTE), createdAt: later(MINUTE) }),
        joinToken("0000000000000003", { expiresAt: later(20 * MINUTE) }),
        joinToken("0000000000000004", { expiresAt: later(40 * MINUTE), createdAt: later(MINUTE / 2) }),
      ];
      for (const t of tokens) await store.createJoinToken(t, event("join_token.create", t.id));
      const taken = await store.consumeJoinToken(tokens[3]!.hash, later(MINUTE), (t) =>
        event("join_token.spend", t.id),
      );
      expect(taken).toMatchObject({ outcome: "taken" });
      const now = later(2 * MINUTE);
      const listed = await store.listJoinTokens(now, 10);
      // Outstanding by expiry (3, 2), then the rest newest first (4 created at +30s, 1 at T0).
      expect(listed.map((t) => t.id)).toEqual([
        "0000000000000003",
        "0000000000000002",
        "0000000000000004",
        "0000000000000001",
      ]);
      expect(listed[0]).toEqual({
        id: "0000000000000003",
        spiffeId: "spiffe://example.org/node/1",
        createdAt: T0,
        expiresAt: later(20 * MINUTE),
        usedAt: null,
      });
      expect(listed[2]!.usedAt).toEqual(later(MINUTE));
      const text = JSON.stringify(listed);
      for (const t of tokens) expect(text).not.toContain(t.hash);
      expect((await store.listJoinTokens(now, 1)).map((t) => t.id)).toEqual(["0000000000000003"]);
    });

    it("searches the audit log by actor, action, text and time, newest first, in pages", async () => {
      const at = (m: number) => later(m * MINUTE);
      await store.appendAudit({
        at: at(1),
        actor: "alice",
        action: "cert.revoke",
        subject: "0a0b",
        details: {},
      });
      await store.appendAudit({
        at: at(2),
        actor: "bob",
        action: "entry.create",
        subject: "e1",
        details: { spiffeId: "spiffe://example.org/web_1" },
      });
      await store.appendAudit({
        at: at(3),
        actor: "alice",
        action: "entry.create",
        subject: "e2",
        details: {},
      });
      const seqs = async (q: Parameters<CaStore["searchAudit"]>[0]) =>
        (await store.searchAudit(q)).map((r) => r.subject);
      expect(await seqs({ actor: "alice", limit: 10 })).toEqual(["e2", "0a0b"]);
      expect(await seqs({ action: "entry.create", limit: 10 })).toEqual(["e2", "e1"]);
      expect(await seqs({ text: "spiffe://example.org/web_1", limit: 10 })).toEqual(["e1"]);
      // "_" is a LIKE wildcard; a search for it must not match web11.
      expect(await seqs({ text: "web_", limit: 10 })).toEqual(["e1"]);
      expect(await seqs({ text: "eb?1", limit: 10 })).toEqual([]);
      expect(await seqs({ text: "0a0b", limit: 10 })).toEqual(["0a0b"]);
      expect(await seqs({ from: at(2), to: at(3), limit: 10 })).toEqual(["e1"]);
      const first = await store.searchAudit({ limit: 2 });
      expect(await seqs({ beforeSeq: first[1]!.seq, limit: 2 })).toEqual(["0a0b", "aa"]);
    });
  });

  describe(`console codes and sessions: ${name}`, () => {
    let other: CaStore;
    beforeEach(async () => {
      store = await openFresh();
      other = await replica();
    });
    afterEach(async () => {
      await other.close();
      await store.close();
    });
    const grant = (hash: string, kind: "code" | "session", expiresAt: Date): ConsoleGrant => ({
      hash,
      kind,
      user: `user-${hash}`,
      expiresAt,
    });

    it("spends a code once, on whichever replica redeems it first, and never after it expires", async () => {
      await store.putConsoleGrant(grant("c1", "code", later(2 * MINUTE)), T0);
      await store.putConsoleGrant(grant("c2", "code", later(MINUTE)), T0);
      const [a, b] = await Promise.all([other.takeConsoleCode("c1", T0), store.takeConsoleCode("c1", T0)]);
      expect([a, b].filter((g) => g !== null)).toEqual([grant("c1", "code", later(2 * MINUTE))]);
      expect(await store.takeConsoleCode("c1", T0)).toBeNull();
      expect(await other.takeConsoleCode("c2", later(MINUTE))).toBeNull();
      expect(await store.takeConsoleCode("c2", T0)).toBeNull(); // the expired try spent it too
      // A session's hash is no code.
      await store.putConsoleGrant(grant("s1", "session", later(MINUTE)), T0);
      expect(await other.takeConsoleCode("s1", T0)).toBeNull();
      expect(await other.findConsoleSession("s1", T0)).toEqual(grant("s1", "session", later(MINUTE)));
    });

    it("finds a session on every replica until it expires or one of them ends it", async () => {
      await store.putConsoleGrant(grant("s1", "session", later(MINUTE)), T0);
      await store.putConsoleGrant(grant("s2", "session", later(MINUTE)), T0);
      expect(await other.findConsoleSession("s1", T0)).toMatchObject({ user: "user-s1" });
      expect(await other.findConsoleSession("s1", later(MINUTE))).toBeNull();
      await other.deleteConsoleSession("s2");
      expect(await store.findConsoleSession("s2", T0)).toBeNull();
      expect(await store.findConsoleSession("nope", T0)).toBeNull();
      await store.deleteConsoleSession("nope");
    });

    it("keeps at most MAX_CONSOLE_GRANTS of each kind, dropping expired ones first, then the soonest to expire", async () => {
      const at = later(2 * MINUTE);
      await store.putConsoleGrant(grant("old", "session", later(MINUTE)), T0);
      // One at a time: concurrent puts may each find room before the other's insert.
      for (let i = 0; i < MAX_CONSOLE_GRANTS - 1; i++)
        await other.putConsoleGrant(
          grant(`g${String(i).padStart(4, "0")}`, "session", later(10 * MINUTE + i)),
          T0,
        );
      expect(await store.findConsoleSession("old", T0)).not.toBeNull();
      // Full: the expired one makes room.
      await store.putConsoleGrant(grant("new", "session", later(20 * MINUTE)), at);
      expect(await store.findConsoleSession("g0000", at)).not.toBeNull();
      expect(await store.findConsoleSession("new", at)).not.toBeNull();
      // Full of live ones: the soonest to expire makes room.
      await other.putConsoleGrant(grant("newer", "session", later(20 * MINUTE)), at);
      expect(await store.findConsoleSession("g0000", at)).toBeNull();
      expect(await store.findConsoleSession("g0001", at)).not.toBeNull();
      expect(await store.findConsoleSession("newer", at)).not.toBeNull();
      // Codes are counted apart: a code made now drops no session.
      await store.putConsoleGrant(grant("code1", "code", later(21 * MINUTE)), at);
      expect(await store.findConsoleSession("g0001", at)).not.toBeNull();
    });

    it("keeps the first value initMeta wrote, whichever replica wrote it", async () => {
      const [a, b] = await Promise.all([store.initMeta("k", "one"), other.initMeta("k", "two")]);
      expect(a).toBe(b);
      expect(await other.initMeta("k", "three")).toBe(a);
      expect(await store.getMeta("k")).toBe(a);
    });
  });
}
