import { rmSync } from "node:fs";
import { type ChainOptions, compilePolicy, TrustBundle, validateChain } from "../../verify/chain";
import { createVerifier } from "../../verify/verifier";
import { tempDir } from "../helpers/openssl";
import { interExt, type Made, Pki, ROOT_EXT, skiPrefix } from "./pki";

/**
 * Path building: TLS peers send intermediates in any order, with extras, and
 * across a root rotation with a cross-certificate; the verifier finds the
 * path that validates, within a depth limit and a bounded search.
 */

const dir = tempDir("stint-verify-path-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const pki = new Pki(dir);

const root = pki.root("root", "/CN=Test Root/O=example.org");
const bundle = TrustBundle.from(root.pem);
/** root → upper (pathlen 1) → lower (pathlen 0) → leaf. */
const upper = pki.make("upper", {
  issuer: root,
  ext: interExt(["nameConstraints = critical,permitted;URI:example.org"]).map((l) =>
    l.startsWith("basicConstraints") ? "basicConstraints = critical,CA:TRUE,pathlen:1" : l,
  ),
  days: 30,
});
const lower = pki.inter("lower", upper);
const leaf = pki.leaf("leaf", lower);
const other = pki.inter("other", pki.root("other-root", "/CN=Other Root/O=example.org"));

const NOW = new Date(Date.now() + 3_600_000);
const opts = (o: Partial<ChainOptions> = {}): ChainOptions => ({
  usage: "client",
  now: NOW,
  clockSkew: 30_000,
  ...o,
});
const check = (chain: Made[], o: Partial<ChainOptions> = {}, b = bundle) =>
  validateChain(
    chain.map((m) => m.der),
    b,
    opts(o),
  );

describe("intermediates in any order", () => {
  it("builds the path whatever order the intermediates come in, with or without the root", () => {
    const path = { ok: true, caIds: [skiPrefix(lower), skiPrefix(upper), skiPrefix(root)] };
    expect(check([leaf, lower, upper])).toMatchObject(path);
    expect(check([leaf, upper, lower])).toMatchObject(path);
    expect(check([leaf, root, upper, lower])).toMatchObject(path);
    expect(pki.opensslVerify([root], [leaf, upper, lower])).toBe("OK");
  });

  it("ignores certificates that are not on the path", () => {
    expect(check([leaf, other, upper, lower]).ok).toBe(true);
  });

  it("picks the intermediate that validates among two with one name and key", () => {
    // Same subject and key as `lower`, so it is as much the leaf's issuer by name, key id and signature.
    const serverOnly = pki.make("lower-server-only", {
      issuer: upper,
      subject: "/CN=lower/O=example.org",
      key: lower,
      ext: interExt([
        "nameConstraints = critical,permitted;URI:example.org",
        "extendedKeyUsage = serverAuth",
      ]),
      days: 30,
    });
    expect(check([leaf, serverOnly, upper])).toEqual({
      ok: false,
      code: "usage",
      reason:
        "intermediate 1 certificate (CN=lower, O=example.org) restricts extended key usage to 1.3.6.1.5.5.7.3.1, which excludes clientAuth",
    });
    expect(check([leaf, serverOnly, upper, lower])).toMatchObject({ ok: true });
    expect(check([leaf, serverOnly, upper], { usage: "server" })).toMatchObject({ ok: true });
  });

  it("follows a cross-certificate from a new root to the old one (root rotation)", () => {
    const newRoot = pki.root("new-root", "/CN=New Root/O=example.org");
    const cross = pki.make("cross", {
      issuer: root,
      subject: "/CN=New Root/O=example.org",
      key: newRoot,
      ext: [...ROOT_EXT, "authorityKeyIdentifier = keyid"],
      days: 30,
    });
    const newInter = pki.inter("new-inter", newRoot);
    const newLeaf = pki.leaf("new-leaf", newInter);
    expect(check([newLeaf, cross, newInter])).toMatchObject({
      ok: true,
      caIds: [skiPrefix(newInter), skiPrefix(newRoot), skiPrefix(root)],
    });
    // A verifier that already trusts the new root stops there and does not need the cross-certificate.
    expect(check([newLeaf, cross, newInter], {}, TrustBundle.from(newRoot.pem + root.pem))).toMatchObject({
      ok: true,
      caIds: [skiPrefix(newInter), skiPrefix(newRoot)],
    });
  });
});

describe("depth limit", () => {
  it("refuses a path with more intermediates than maxDepth allows, and accepts it when allowed", () => {
    expect(check([leaf, lower, upper], { policy: compilePolicy({ maxDepth: 1 }) })).toEqual({
      ok: false,
      code: "constraints",
      reason:
        "the path to intermediate 1 certificate (CN=lower, O=example.org)'s issuer would need more than 1 intermediate certificate(s), the most this verifier accepts",
    });
    expect(check([leaf, lower, upper], { policy: compilePolicy({ maxDepth: 2 }) }).ok).toBe(true);
  });

  it("takes maxDepth from the verifier's options", () => {
    const allow = { trustDomain: "example.org" };
    const chain = [leaf, lower, upper].map((m) => m.der);
    const strict = createVerifier({ bundle: root.pem, usage: "client", allow, policy: { maxDepth: 1 } });
    expect(strict.verify(chain, NOW)).toMatchObject({ ok: false, code: "constraints" });
    expect(createVerifier({ bundle: root.pem, usage: "client", allow }).verify(chain, NOW).ok).toBe(true);
  });
});

describe("bounded search", () => {
  it("gives up on look-alike self-issued CAs that all sign each other, after a bounded number of signature checks", () => {
    // Seven self-signed CAs with one name and one key: each verifies as the issuer of every other.
    const first = pki.make("loop-1", { subject: "/CN=loop/O=example.org", ext: ROOT_EXT, days: 30 });
    const loops = [first];
    for (let i = 2; i <= 7; i++) {
      loops.push(
        pki.make(`loop-${i}`, { subject: "/CN=loop/O=example.org", key: first, ext: ROOT_EXT, days: 30 }),
      );
    }
    const trapped = pki.leaf("trapped", first);
    const counters = { signatures: 0 };
    const result = check([trapped, ...loops], { counters });
    expect(result).toMatchObject({ ok: false, code: expect.stringMatching(/^(untrusted|constraints)$/) });
    expect(counters.signatures).toBeLessThanOrEqual(16);
  });

  it("checks each link's signature once in an ordinary chain", () => {
    const counters = { signatures: 0 };
    expect(check([leaf, upper, lower], { counters }).ok).toBe(true);
    expect(counters.signatures).toBe(3);
  });
});
