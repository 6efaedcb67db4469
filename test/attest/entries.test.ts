import { attestorRegistry, evidenceMembers } from "../../acme/attest/attestor";
import {
  entryHash,
  entryMatches,
  findAuthorizingEntry,
  parseEntryParent,
  parseSelector,
  parseSelectors,
  type RegistrationEntry,
} from "../../ca/entries";
import { literal, stintError } from "./helpers";

const ID = "spiffe://example.org/web";
const entry = (
  id: string,
  selectors: string[],
  over: Partial<RegistrationEntry> = {},
): RegistrationEntry => ({
  id,
  spiffeId: ID,
  selectors,
  dnsNames: [],
  ttlMs: null,
  createdAt: new Date("2030-01-01T00:00:00Z"),
  ...over,
});

describe("entryMatches (the SPIRE rule)", () => {
  it("needs every selector of the entry among the produced ones; extra produced selectors are fine", () => {
    const e = entry("a", ["k8s:ns:prod", "k8s:sa:web"]);
    expect(entryMatches(e, ["k8s:ns:prod", "k8s:sa:web"])).toBe(true);
    expect(entryMatches(e, ["k8s:sa:web", "k8s:pod:web-1", "k8s:ns:prod"])).toBe(true);
    expect(entryMatches(e, ["k8s:ns:prod"])).toBe(false);
    expect(entryMatches(e, ["k8s:ns:prod", "k8s:sa:web2"])).toBe(false);
    expect(entryMatches(e, [])).toBe(false);
  });

  it("never matches with an empty selector list, whatever was produced", () => {
    expect(entryMatches(entry("a", []), [])).toBe(false);
    expect(entryMatches(entry("a", []), ["k8s:ns:prod"])).toBe(false);
  });

  it("compares exactly: no prefix, case or whitespace folding", () => {
    const e = entry("a", ["k8s:ns:prod"]);
    expect(entryMatches(e, ["k8s:ns:prod-2"])).toBe(false);
    expect(entryMatches(e, ["k8s:ns:Prod"])).toBe(false);
    expect(entryMatches(e, ["k8s:ns:prod "])).toBe(false);
    expect(entryMatches(e, ["k8s:ns:pro"])).toBe(false);
  });
});

describe("findAuthorizingEntry", () => {
  const produced = ["k8s:ns:prod", "k8s:sa:web", "k8s:pod:web-1"];

  it("never matches an entry for another SPIFFE ID, even with matching selectors", () => {
    const other = entry("o", ["k8s:ns:prod"], { spiffeId: "spiffe://example.org/db" });
    expect(findAuthorizingEntry([other], ID, produced)).toBeNull();
    expect(findAuthorizingEntry([other], "spiffe://example.org/db", produced)).toBe(other);
  });

  it("returns null when no entry's selectors are all present", () => {
    expect(findAuthorizingEntry([entry("a", ["k8s:ns:dev"]), entry("b", [])], ID, produced)).toBeNull();
  });

  it("prefers the most specific entry, then the oldest, then the lowest id", () => {
    const broad = entry("a", ["k8s:ns:prod"]);
    const narrow = entry("z", ["k8s:ns:prod", "k8s:sa:web"]);
    expect(findAuthorizingEntry([broad, narrow], ID, produced)).toBe(narrow);
    expect(findAuthorizingEntry([narrow, broad], ID, produced)).toBe(narrow);
    const older = entry("y", ["k8s:ns:prod"], { createdAt: new Date("2029-01-01T00:00:00Z") });
    expect(findAuthorizingEntry([broad, older], ID, ["k8s:ns:prod"])).toBe(older);
    const twin = entry("b", ["k8s:ns:prod"]);
    expect(findAuthorizingEntry([twin, broad], ID, ["k8s:ns:prod"])).toBe(broad);
  });
});

describe("parseSelector", () => {
  it.each([
    "join_token:0123456789abcdef",
    "k8s:ns:prod",
    "k8s:sa:web.backend",
    "k8s:pod:web-7d9f-abcde",
    "x509pop:subject:cn:Web Server 1",
    "x509pop:san:dns:web.example.org",
    "x509pop:san:dns:*.example.org",
    "x509pop:san:uri:spiffe://example.org/bootstrap",
    `x509pop:ca:fingerprint:${"ab".repeat(32)}`,
    "unix:uid:0",
    "unix:uid:1001",
    "unix:gid:4294967294",
    "unix:user:www-data",
    "unix:group:_postgres",
    "unix:user:machine$",
    "unix:path:/usr/bin/python3.11",
    `unix:sha256:${"0f".repeat(32)}`,
  ])("accepts %s unchanged", (s) => {
    expect(parseSelector(s)).toBe(s);
  });

  it.each([
    ["k8s_sat:ns:prod", 'selector "k8s_sat:ns:prod" is not of a known type'],
    [
      "prod",
      'selector "prod" is not of a known type; selectors are "<type>:<value>", one of: join_token:<…>',
    ],
    ["k8s:ns:", 'selector "k8s:ns:": after "k8s:ns:" comes a Kubernetes namespace name'],
    ["k8s:ns:Prod", 'after "k8s:ns:" comes a Kubernetes namespace name'],
    ["k8s:ns:a:b", 'after "k8s:ns:" comes a Kubernetes namespace name'],
    ["join_token:XYZ", 'after "join_token:" comes the token id, 16 lowercase hex digits'],
    ["x509pop:san:dns:Web.example.org", 'after "x509pop:san:dns:" comes a lowercase DNS name'],
    ["x509pop:san:uri:a b", "comes a URI without spaces"],
    ["x509pop:subject:cn:a\nb", "comes a subject common name"],
    [`x509pop:ca:fingerprint:${"AB".repeat(32)}`, "64 lowercase hex digits"],
    ["unix:uid:01", 'after "unix:uid:" comes a numeric user id'],
    ["unix:uid:-1", 'after "unix:uid:" comes a numeric user id'],
    ["unix:gid:root", 'after "unix:gid:" comes a numeric group id'],
    ["unix:user:a b", 'after "unix:user:" comes a user name'],
    ["unix:group:x/y", 'after "unix:group:" comes a group name'],
    ["unix:path:bin/sh", 'after "unix:path:" comes an absolute path to the executable'],
    ["unix:path:/bin/a\nb", "an absolute path"],
    [`unix:sha256:${"AB".repeat(32)}`, "the SHA-256 of the executable, 64 lowercase hex digits"],
  ])("refuses %j with ERR_MALFORMED naming the problem", (s, message) => {
    expect(() => parseSelector(s)).toThrow(stintError("ERR_MALFORMED", new RegExp(literal(message))));
  });

  it("uses ERR_CONFIG when asked (selectors read from files) and refuses non-strings", () => {
    expect(() => parseSelector("nope", "ERR_CONFIG")).toThrow(
      stintError("ERR_CONFIG", /^selector "nope" is not of a known type/),
    );
    expect(() => parseSelector(42)).toThrow(stintError("ERR_MALFORMED", "a selector must be a string"));
  });

  it("parseSelectors sorts, de-duplicates and refuses an empty list", () => {
    expect(parseSelectors(["k8s:sa:web", "k8s:ns:prod", "k8s:sa:web"])).toEqual([
      "k8s:ns:prod",
      "k8s:sa:web",
    ]);
    expect(() => parseSelectors([])).toThrow(
      stintError(
        "ERR_MALFORMED",
        "an entry needs at least one selector; an entry with none never authorizes",
      ),
    );
    expect(() => parseSelectors("k8s:ns:prod")).toThrow(
      stintError("ERR_MALFORMED", "selectors must be a list of strings"),
    );
  });
});

describe("attestorRegistry and evidence shape", () => {
  const fake = (name: string) => ({
    name,
    attest: async () => ({ selectors: [], reusable: false, evidence: `${name}:fake` }),
  });

  it("finds configured attestors and names them when asked for another", () => {
    const lookup = attestorRegistry([fake("join_token"), fake("k8s_sat")]);
    expect(lookup("k8s_sat").name).toBe("k8s_sat");
    expect(() => lookup("x509pop")).toThrow(
      stintError(
        "ERR_MALFORMED",
        'attestor "x509pop" is not configured on this CA; configured attestors: join_token, k8s_sat',
      ),
    );
    expect(() => lookup(7)).toThrow(stintError("ERR_MALFORMED", /^attestor number is not configured/));
    expect(() => attestorRegistry([])("join_token")).toThrow(
      stintError("ERR_MALFORMED", /configured attestors: none$/),
    );
  });

  it("refuses two attestors with one name", () => {
    expect(() => attestorRegistry([fake("a"), fake("a")])).toThrow(
      stintError("ERR_CONFIG", 'attestor "a" is configured twice'),
    );
  });

  it("insists on exactly the evidence members", () => {
    expect(evidenceMembers({ token: "t" }, "join_token", ["token"])).toEqual({ token: "t" });
    for (const bad of [null, "t", ["t"], 1]) {
      expect(() => evidenceMembers(bad, "join_token", ["token"])).toThrow(
        stintError("ERR_MALFORMED", 'join_token evidence must be a JSON object {"token": …}'),
      );
    }
    expect(() => evidenceMembers({ tokn: "t" }, "join_token", ["token"])).toThrow(
      stintError(
        "ERR_MALFORMED",
        'join_token evidence must have exactly the members {"token": …}; missing: token; unexpected: "tokn"',
      ),
    );
  });
});

describe("entries with a parent (node agents)", () => {
  it("are never chosen by ACME attestation, even when every selector was proven", () => {
    const parented = entry("p", ["k8s:ns:prod"], { parent: "spiffe://example.org/node/a" });
    expect(findAuthorizingEntry([parented], ID, ["k8s:ns:prod"])).toBeNull();
    const plain = entry("q", ["k8s:ns:prod"]);
    expect(findAuthorizingEntry([parented, plain], ID, ["k8s:ns:prod"])).toBe(plain);
  });

  it("hash their parent, while an entry without one keeps the hash it had before schema 6", () => {
    const plain = entry("q", ["k8s:ns:prod"]);
    expect(entryHash(plain)).toBe(entryHash({ ...plain, parent: null }));
    expect(entryHash(plain)).not.toBe(entryHash({ ...plain, parent: "spiffe://example.org/node/a" }));
  });

  it("need a parent in the trust domain for unix selectors", () => {
    expect(parseEntryParent(undefined, "example.org", ["k8s:ns:prod"])).toBeNull();
    expect(parseEntryParent("spiffe://example.org/node/a", "example.org", ["unix:uid:1"])).toBe(
      "spiffe://example.org/node/a",
    );
    expect(() => parseEntryParent(null, "example.org", ["unix:uid:1"])).toThrow(
      stintError("ERR_MALFORMED", /unix:\* selectors are proven by a node agent/),
    );
    expect(() => parseEntryParent("spiffe://other.org/node/a", "example.org", ["unix:uid:1"])).toThrow(
      /other\.org/,
    );
    expect(() => parseEntryParent(7, "example.org", [])).toThrow(
      stintError("ERR_MALFORMED", /parent must be a string/),
    );
  });
});
