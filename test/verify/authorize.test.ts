import { type AllowRule, compileAllow } from "../../verify/authorize";
import { stintError } from "../attest/helpers";

const allowed = (rules: AllowRule | AllowRule[], id: string) => compileAllow(rules).check(id).ok;

describe("allow rules", () => {
  it("match exact SPIFFE IDs only exactly", () => {
    const a = compileAllow(["spiffe://example.org/ns/prod/sa/web", { spiffeId: "spiffe://example.org/db" }]);
    expect(a.check("spiffe://example.org/ns/prod/sa/web")).toEqual({
      ok: true,
      rule: "spiffe://example.org/ns/prod/sa/web",
    });
    expect(a.check("spiffe://example.org/db").ok).toBe(true);
    expect(a.check("spiffe://example.org/ns/prod/sa/web/x").ok).toBe(false);
    expect(a.check("spiffe://example.org/ns/prod/sa")).toEqual({
      ok: false,
      reason: "SPIFFE ID spiffe://example.org/ns/prod/sa is not authorized here: no allow rule matches it",
    });
  });

  it("match a whole trust domain", () => {
    expect(allowed({ trustDomain: "example.org" }, "spiffe://example.org/anything/at/all")).toBe(true);
    expect(allowed({ trustDomain: "example.org" }, "spiffe://other.org/x")).toBe(false);
    expect(allowed({ trustDomain: "example.org" }, "spiffe://sub.example.org/x")).toBe(false);
  });

  it("match * as exactly one segment", () => {
    const p = "spiffe://example.org/ns/*/sa/web";
    expect(allowed(p, "spiffe://example.org/ns/prod/sa/web")).toBe(true);
    expect(allowed(p, "spiffe://example.org/ns/dev/sa/web")).toBe(true);
    expect(allowed(p, "spiffe://example.org/ns/sa/web")).toBe(false);
    expect(allowed(p, "spiffe://example.org/ns/a/b/sa/web")).toBe(false);
    expect(allowed(p, "spiffe://example.org/ns/prod/sa/db")).toBe(false);
    expect(allowed(p, "spiffe://example.org/ns/prod/sa/web/extra")).toBe(false);
    expect(allowed(p, "spiffe://other.org/ns/prod/sa/web")).toBe(false);
  });

  it("match ** as one or more trailing segments, not the parent itself", () => {
    const p = { pattern: "spiffe://example.org/ns/prod/**" };
    expect(allowed(p, "spiffe://example.org/ns/prod/sa/web")).toBe(true);
    expect(allowed(p, "spiffe://example.org/ns/prod/x")).toBe(true);
    expect(allowed(p, "spiffe://example.org/ns/prod")).toBe(false);
    expect(allowed(p, "spiffe://example.org/ns/production/x")).toBe(false);
    expect(allowed("spiffe://example.org/ns/*/sa/**", "spiffe://example.org/ns/dev/sa/a/b/c")).toBe(true);
  });

  it("deny everything when there are no rules", () => {
    expect(allowed([], "spiffe://example.org/x")).toBe(false);
  });

  it.each([
    [
      "spiffe://*.example.org/x",
      'allow rule 1: pattern "spiffe://*.example.org/x" has a wildcard in the trust domain; name the trust domain exactly',
    ],
    [
      "spiffe://example.org/**/web",
      'allow rule 1: pattern "spiffe://example.org/**/web" may use "**" only as its last segment',
    ],
    [
      "spiffe://example.org/web-*",
      'allow rule 1: pattern "spiffe://example.org/web-*" segment "web-*" mixes "*" with other characters; wildcards stand for whole segments',
    ],
    ["https://example.org/*", 'allow rule 1: pattern "https://example.org/*" must start with "spiffe://"'],
    [
      "spiffe://example.org/a//*",
      'allow rule 1: pattern "spiffe://example.org/a//*" segment "" cannot appear in a SPIFFE ID',
    ],
    ["spiffe://example.org/x/", /^allow rule 1: "spiffe:\/\/example.org\/x\/" is not a SPIFFE ID: /],
  ])("refuse the bad rule %s", (rule, message) => {
    expect(() => compileAllow([rule])).toThrow(stintError("ERR_CONFIG", message));
  });

  it("refuse a bad trust domain and an unknown rule shape", () => {
    expect(() => compileAllow({ trustDomain: "Example.org" })).toThrow(
      stintError("ERR_CONFIG", /^allow rule 1: trust domain "Example.org" may contain only/),
    );
    expect(() => compileAllow([{ name: "x" } as unknown as AllowRule])).toThrow(
      stintError(
        "ERR_CONFIG",
        "allow rule 1: expected a SPIFFE ID or pattern string, {spiffeId}, {trustDomain} or {pattern}",
      ),
    );
  });
});
