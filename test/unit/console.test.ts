import { html } from "../../acme/console/html";
import { ConsoleSessions, LOGIN_CODE_TTL_MS, SESSION_TTL_MS } from "../../acme/console/sessions";

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

  it("redeems a login code once, for a session that ends after its TTL", () => {
    const sessions = new ConsoleSessions();
    const { code } = sessions.issueCode("alice", t0);
    const first = sessions.redeem(code, at(1000));
    expect(first?.session.user).toBe("alice");
    expect(sessions.redeem(code, at(2000))).toBeNull();
    expect(sessions.find(first!.token, at(SESSION_TTL_MS))).not.toBeNull();
    expect(sessions.find(first!.token, at(1000 + SESSION_TTL_MS))).toBeNull();
    expect(sessions.find("not-a-token", at(1000))).toBeNull();
  });

  it("refuses an expired code, and forgets a session at logout", () => {
    const sessions = new ConsoleSessions();
    expect(sessions.redeem(sessions.issueCode("bob", t0).code, at(LOGIN_CODE_TTL_MS))).toBeNull();
    const s = sessions.redeem(sessions.issueCode("bob", t0).code, t0)!;
    expect(s.session.csrf).not.toBe(s.token);
    sessions.end(s.token);
    expect(sessions.find(s.token, t0)).toBeNull();
  });
});
