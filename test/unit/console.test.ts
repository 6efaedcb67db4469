import { createHash } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";
import { html } from "../../acme/console/html";
import { ConsoleSessions, LOGIN_CODE_TTL_MS, SESSION_TTL_MS } from "../../acme/console/sessions";
import { joinTokenTable } from "../../acme/console/views-audit";
import { renewalTrouble } from "../../acme/console/views-fleet";
import { SqliteStore } from "../../ca/store/sqlite";
import { certificate, event, issuer, later, MINUTE, T0, tempDir } from "../store/fixtures";

/** The console's template escaping and its one-time login codes and sessions, without a server. */

describe("console html", () => {
  it("escapes every interpolated value, nested templates and arrays included", () => {
    const hostile = `spiffe://x/"><script>alert(1)</script>'\``;
    const out = html`<a href="/console/fleet?id=${hostile}">${hostile}</a>${[hostile, html`<b>${hostile}</b>`]}`;
    expect(out.text).not.toMatch(/<script>|"><|'|`/);
    expect(out.text).toContain("&lt;script&gt;");
    expect(out.text).toContain("<b>spiffe://x/&quot;&gt;");
  });

  it("renders null, undefined and false as nothing, and numbers as text", () => {
    expect(html`${null}${undefined}${false}${0}${12}`.text).toBe("012");
  });
});

describe("console sessions", () => {
  const t0 = new Date("2030-01-01T00:00:00Z");
  const at = (ms: number) => new Date(t0.getTime() + ms);
  let dir: string;
  let cleanup: () => void;
  let stores: SqliteStore[];
  beforeEach(() => {
    ({ dir, cleanup } = tempDir());
    stores = [];
  });
  afterEach(async () => {
    for (const s of stores) await s.close();
    cleanup();
  });
  /** A server's sessions on the store at `dir`: each call is another replica of one CA. */
  async function replica(): Promise<ConsoleSessions> {
    const store = await SqliteStore.open(join(dir, "stint.db"), { create: true });
    stores.push(store);
    return new ConsoleSessions(store);
  }

  it("redeems a login code once, for a session that ends after its TTL, on any replica", async () => {
    const [a, b] = [await replica(), await replica()];
    const { code } = await a.issueCode("alice", t0);
    const first = await b.redeem(code, at(1000));
    expect(first?.session.user).toBe("alice");
    expect(await a.redeem(code, at(2000))).toBeNull();
    expect(await b.redeem(code, at(2000))).toBeNull();
    const found = await a.find(first!.token, at(SESSION_TTL_MS));
    expect(found).toMatchObject({ user: "alice", csrf: first!.session.csrf });
    expect(await b.find(first!.token, at(1000 + SESSION_TTL_MS))).toBeNull();
    expect(await a.find("not-a-token", at(1000))).toBeNull();
  });

  it("refuses an expired code, and forgets a session at logout on every replica", async () => {
    const [a, b] = [await replica(), await replica()];
    expect(await a.redeem((await a.issueCode("bob", t0)).code, at(LOGIN_CODE_TTL_MS))).toBeNull();
    const s = (await a.redeem((await a.issueCode("bob", t0)).code, t0))!;
    expect(s.session.csrf).not.toBe(s.token);
    await b.end(s.token);
    expect(await a.find(s.token, t0)).toBeNull();
  });

  it("keeps only hashes in the store, and derives CSRF tokens every replica agrees on", async () => {
    const [a, b] = [await replica(), await replica()];
    const { code } = await a.issueCode("carol", t0);
    const s = (await b.redeem((await a.issueCode("carol", t0)).code, t0))!;
    const raw = new Database(join(dir, "stint.db"), { readonly: true });
    try {
      const dump = JSON.stringify(raw.prepare("SELECT * FROM console_grants").all());
      for (const secret of [code, s.token, s.session.csrf]) expect(dump).not.toContain(secret);
    } finally {
      raw.close();
    }
    expect(await a.csrf("certificate", "ab12")).toBe(await b.csrf("certificate", "ab12"));
    expect(await a.csrf("certificate", "ab12")).not.toBe(await a.csrf("session", "ab12"));
    // A restarted server (a new ConsoleSessions) keeps the sessions and the key.
    const restarted = await replica();
    expect(await restarted.find(s.token, t0)).toMatchObject({ user: "carol", csrf: s.session.csrf });
  });
});

describe("console join tokens", () => {
  it("shows tokens from a real store by id, SPIFFE ID and state, never their secrets or hashes", async () => {
    const { dir, cleanup } = tempDir();
    const store = await SqliteStore.open(join(dir, "stint.db"), { create: true });
    try {
      const t0 = new Date("2030-01-01T00:00:00Z");
      const now = new Date(t0.getTime() + 120_000);
      const secrets = ["s3cret-outstanding", "s3cret-used", "s3cret-expired"];
      const hashes = secrets.map((s) => createHash("sha256").update(s).digest("hex"));
      const ids = ["00000000000000aa", "00000000000000bb", "00000000000000cc"];
      const expiry = [3_600_000, 3_600_000, 60_000];
      for (const [i, id] of ids.entries()) {
        await store.createJoinToken(
          {
            id,
            hash: hashes[i]!,
            spiffeId: `spiffe://example.org/node/${i}`,
            expiresAt: new Date(t0.getTime() + expiry[i]!),
            usedAt: null,
            createdAt: t0,
          },
          { at: t0, actor: "test", action: "join_token.create", subject: id, details: {} },
        );
      }
      await store.consumeJoinToken(hashes[1]!, new Date(t0.getTime() + 1000), (t) => ({
        at: t0,
        actor: "test",
        action: "join_token.spend",
        subject: t.id,
        details: {},
      }));
      const out = joinTokenTable(await store.listJoinTokens(now, 10), now).text;
      const row = (id: string) => out.slice(out.indexOf(`id="token-${id}"`)).split("</tr>")[0]!;
      expect(row(ids[0]!)).toContain(">outstanding<");
      expect(row(ids[0]!)).toContain("spiffe://example.org/node/0");
      expect(row(ids[1]!)).toContain(">used ");
      expect(row(ids[2]!)).toContain(">expired<");
      expect(out.indexOf(ids[0]!)).toBeLessThan(out.indexOf(ids[1]!));
      for (const text of [...secrets, ...hashes]) expect(out).not.toContain(text);
    } finally {
      await store.close();
      cleanup();
    }
  });
});

describe("console late and failed renewals", () => {
  it("shows late renewals from a real store and refusals from its audit log, and says where other failures are", async () => {
    const { dir, cleanup } = tempDir();
    const store = await SqliteStore.open(join(dir, "stint.db"), { create: true });
    try {
      await store.putIssuer(issuer("aa"), event("issuer.create", "aa"));
      const late = "spiffe://example.org/late";
      const onTime = "spiffe://example.org/on-time";
      const certs = [
        certificate("aa", 1, { spiffeId: late, notBefore: T0, notAfter: later(40 * MINUTE) }),
        certificate("aa", 2, { spiffeId: late, notBefore: later(35 * MINUTE), notAfter: later(75 * MINUTE) }),
        certificate("aa", 3, { spiffeId: onTime, notBefore: T0, notAfter: later(40 * MINUTE) }),
        certificate("aa", 4, {
          spiffeId: onTime,
          notBefore: later(20 * MINUTE),
          notAfter: later(60 * MINUTE),
        }),
      ];
      for (const c of certs) await store.insertCertificate(c, event("cert.issue", c.serial));
      await store.appendAudit({
        at: later(30 * MINUTE),
        actor: "acct",
        action: "attest.refused",
        subject: onTime,
        details: { reason: "no registration entry matches" },
      });
      const now = later(60 * MINUTE);
      const out = renewalTrouble(
        await store.lateRenewals(T0, now, 75, 10),
        await store.searchAudit({ action: "attest.refused", from: T0, limit: 10 }),
        0.75,
        now,
      ).text;
      const lateSection = out.slice(0, out.indexOf('id="failed-renewals"'));
      expect(lateSection).toContain(late);
      expect(lateSection).toContain(certs[1]!.serial);
      expect(lateSection).not.toContain(onTime);
      const failed = out.slice(out.indexOf('id="failed-renewals"'));
      expect(failed).toContain(onTime);
      expect(failed).toContain("no registration entry matches");
      expect(failed).toContain("stint_agent_renewals_total");
    } finally {
      await store.close();
      cleanup();
    }
  });
});
