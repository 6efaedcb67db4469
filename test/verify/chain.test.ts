import { rmSync } from "node:fs";
import { type ChainOptions, TrustBundle, validateChain } from "../../verify/chain";
import { stintError } from "../attest/helpers";
import { tempDir } from "../helpers/openssl";
import { leafExt, Pki, skiPrefix } from "./pki";

const leafExtDefault = leafExt();

const dir = tempDir("stint-verify-chain-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const pki = new Pki(dir);

const root = pki.root("root", "/CN=Test Root/O=example.org");
const inter = pki.inter("inter", root);
const leaf = pki.leaf("leaf", inter);
const otherRoot = pki.root("other-root", "/CN=Other Root");
const otherInter = pki.inter("other-inter", otherRoot);
const bundle = TrustBundle.from(root.pem);

const NOW = new Date(Date.now() + 3_600_000);
const opts = (o: Partial<ChainOptions> = {}): ChainOptions => ({
  usage: "client",
  now: NOW,
  clockSkew: 30_000,
  ...o,
});
const check = (chain: Buffer[], o: Partial<ChainOptions> = {}, b = bundle) =>
  validateChain(chain, b, opts(o));
const refused = (code: string, reason: string | RegExp) =>
  expect.objectContaining({
    ok: false,
    code,
    reason: typeof reason === "string" ? reason : expect.stringMatching(reason),
  });

const LEAF = "leaf certificate (spiffe://example.org/ns/prod/sa/web)";

describe("a good chain", () => {
  it("validates leaf → intermediate → root and reports ID, issuer id, sequence and expiry", () => {
    const result = check([leaf.der, inter.der]);
    expect(result).toEqual({
      ok: true,
      spiffeId: "spiffe://example.org/ns/prod/sa/web",
      leaf: expect.anything(),
      issuerId: skiPrefix(inter),
      sequence: leaf.sequence,
      notAfter: new Date(leaf.cert.validTo),
      caIds: [skiPrefix(inter), skiPrefix(root)],
      validFrom: new Date(Date.parse(leaf.cert.validFrom) - 30_000),
      validUntil: new Date(Date.parse(leaf.cert.validTo) + 30_000),
    });
    if (result.ok) expect(result.leaf.raw.equals(leaf.der)).toBe(true);
  });

  it("accepts the root at the end of the chain, and serverAuth for a server verifier", () => {
    expect(check([leaf.der, inter.der, root.der]).ok).toBe(true);
    expect(check([leaf.der, inter.der], { usage: "server" }).ok).toBe(true);
  });

  it("accepts a leaf issued by the root itself, and a bundle of several roots", () => {
    const direct = pki.leaf("direct", root, { san: "URI:spiffe://example.org/direct" });
    expect(check([direct.der])).toMatchObject({
      ok: true,
      issuerId: skiPrefix(root),
      caIds: [skiPrefix(root)],
    });
    const both = TrustBundle.from(otherRoot.pem + root.pem);
    expect(check([leaf.der, inter.der], {}, both).ok).toBe(true);
    expect(TrustBundle.from([otherRoot.der, root.der]).anchors).toHaveLength(2);
  });

  it("honours URI, DNS and IP name constraints that permit the leaf's names", () => {
    const ca = pki.inter("inter-dns", root, [
      "nameConstraints = critical,permitted;URI:example.org,permitted;DNS:svc.local,permitted;IP:10.0.0.0/255.0.0.0",
    ]);
    const ok = pki.leaf("dns-ok", ca, {
      san: "URI:spiffe://example.org/web,DNS:web.svc.local,DNS:svc.local,IP:10.1.2.3",
    });
    expect(check([ok.der, ca.der]).ok).toBe(true);
  });
});

describe("trust", () => {
  it("refuses a chain under another root", () => {
    const foreign = pki.leaf("foreign", otherInter);
    expect(check([foreign.der, otherInter.der])).toEqual(
      refused(
        "untrusted",
        "intermediate 1 certificate (CN=other-inter, O=example.org) is not issued by a trusted root (its issuer is CN=Other Root); the chain ends without reaching the trust bundle",
      ),
    );
    expect(check([leaf.der, inter.der], {}, TrustBundle.from(otherRoot.pem)).ok).toBe(false);
  });

  it("refuses a leaf presented without its intermediate, and links that do not connect", () => {
    expect(check([leaf.der])).toEqual(
      refused(
        "untrusted",
        `${LEAF} is not issued by a trusted root (its issuer is CN=inter, O=example.org); the chain ends without reaching the trust bundle`,
      ),
    );
    expect(check([leaf.der, otherInter.der])).toEqual(
      refused(
        "untrusted",
        `the chain is broken: intermediate 1 certificate (CN=other-inter, O=example.org) is not the issuer of ${LEAF} (whose issuer is CN=inter, O=example.org)`,
      ),
    );
  });

  it("refuses a broken signature on the leaf and on the intermediate", () => {
    const flip = (der: Buffer) => {
      const b = Buffer.from(der);
      b[b.length - 1] ^= 0x01;
      return b;
    };
    expect(check([flip(leaf.der), inter.der])).toEqual(
      refused(
        "bad-signature",
        `the signature on ${LEAF} does not verify with the key of intermediate 1 certificate (CN=inter, O=example.org)`,
      ),
    );
    expect(check([leaf.der, flip(inter.der)])).toEqual(
      refused(
        "bad-signature",
        "the signature on intermediate 1 certificate (CN=inter, O=example.org) does not verify with the key of root 1 certificate (CN=Test Root, O=example.org)",
      ),
    );
  });

  it("refuses an impostor intermediate with the real one's name but another key", () => {
    const impostor = pki.make("impostor", {
      subject: "/CN=inter/O=example.org",
      issuer: root,
      ext: ["basicConstraints = critical,CA:TRUE", "keyUsage = critical,keyCertSign"],
      days: 30,
    });
    // Its leaf has no AKI, so only the signature can tell.
    const fake = pki.make("fake", {
      issuer: impostor,
      subject: "/O=example.org",
      ext: [
        "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,digitalSignature",
        "extendedKeyUsage = clientAuth",
        "subjectAltName = URI:spiffe://example.org/ns/prod/sa/web",
        "authorityKeyIdentifier = none",
      ],
    });
    expect(check([fake.der, inter.der])).toEqual(
      refused(
        "bad-signature",
        /^the signature on leaf certificate .* does not verify with the key of intermediate 1/,
      ),
    );
  });

  it("refuses SHA-1 signatures before checking them", () => {
    const old = pki.make("sha1", {
      issuer: inter,
      subject: "/O=example.org",
      ext: [
        "keyUsage = critical,digitalSignature",
        "extendedKeyUsage = clientAuth",
        "subjectAltName = URI:spiffe://example.org/old",
      ],
      digest: "sha1",
    });
    const counters = { signatures: 0 };
    expect(check([old.der, inter.der], { counters })).toEqual(
      refused(
        "bad-algorithm",
        "leaf certificate (spiffe://example.org/old) is signed with ecdsa-with-SHA1 (1.2.840.10045.4.1), which is not accepted (SHA-1, MD5 and unusual parameters are refused)",
      ),
    );
    expect(counters.signatures).toBe(0);
  });

  it("refuses malformed input without throwing", () => {
    expect(check([])).toEqual(refused("malformed", "no certificate was presented"));
    expect(check([Buffer.from("not a certificate")])).toEqual(
      refused("malformed", /^the leaf certificate cannot be read: /),
    );
    expect(check(Array(9).fill(leaf.der))).toEqual(
      refused("malformed", "the chain has 9 certificates; at most 8 are accepted"),
    );
    const trailing = Buffer.concat([leaf.der, Buffer.from([0])]);
    expect(check([trailing, inter.der]).ok).toBe(false);
  });

  it("names a certificate with an empty subject in a refusal instead of throwing", () => {
    const anonymous = pki.make("anonymous", {
      issuer: inter,
      subject: "/",
      ext: leafExt({ san: "critical,URI:spiffe://example.org/a,URI:spiffe://example.org/b" }),
    });
    expect(check([anonymous.der, inter.der])).toEqual(
      refused(
        "spiffe",
        "leaf certificate (empty subject) has 2 URI SANs (spiffe://example.org/a, spiffe://example.org/b); an X509-SVID has exactly one",
      ),
    );
  });

  it("refuses a bundle it cannot use", () => {
    expect(() => TrustBundle.from(leaf.pem)).toThrow(
      stintError(
        "ERR_CONFIG",
        `trust bundle: root 1 certificate (${"O=example.org"}) is not a CA certificate (basicConstraints cA is not set)`,
      ),
    );
    expect(() => TrustBundle.from("no PEM here")).toThrow(
      stintError("ERR_CONFIG", "trust bundle: it holds no certificate"),
    );
  });
});

describe("validity, with clock skew", () => {
  const notAfter = new Date(leaf.cert.validTo).getTime();
  const notBefore = new Date(leaf.cert.validFrom).getTime();

  it("accepts within the skew and refuses beyond it", () => {
    expect(check([leaf.der, inter.der], { now: new Date(notAfter + 29_000) }).ok).toBe(true);
    expect(check([leaf.der, inter.der], { now: new Date(notAfter + 31_000) })).toEqual(
      refused(
        "expired",
        `${LEAF} expired at ${new Date(notAfter).toISOString()}; it is now ${new Date(notAfter + 31_000).toISOString()} (clock skew allowance 30 s)`,
      ),
    );
    expect(check([leaf.der, inter.der], { now: new Date(notBefore - 29_000) }).ok).toBe(true);
    expect(check([leaf.der, inter.der], { now: new Date(notBefore - 31_000) })).toEqual(
      refused(
        "not-yet-valid",
        `${LEAF} is not valid before ${new Date(notBefore).toISOString()}; it is now ${new Date(notBefore - 31_000).toISOString()} (clock skew allowance 30 s)`,
      ),
    );
    expect(check([leaf.der, inter.der], { now: new Date(notBefore - 31_000), clockSkew: 60_000 }).ok).toBe(
      true,
    );
  });

  it("checks the intermediate's validity too", () => {
    const outliving = pki.make("outliving", {
      issuer: inter,
      subject: "/O=example.org",
      ext: leafExtDefault,
      days: 60,
    });
    const late = new Date(Date.parse(inter.cert.validTo) + 60_000);
    expect(check([outliving.der, inter.der], { now: late })).toEqual(
      refused("expired", /^intermediate 1 certificate \(CN=inter, O=example.org\) expired at /),
    );
  });
});

describe("CA rules", () => {
  it("refuses a leaf that is a CA", () => {
    const caLeaf = pki.leaf("ca-leaf", inter, {
      basicConstraints: "critical,CA:TRUE",
      keyUsage: "critical,digitalSignature,keyCertSign",
    });
    expect(check([caLeaf.der, inter.der])).toEqual(
      refused(
        "spiffe",
        `${LEAF} is a CA certificate (basicConstraints cA=TRUE); an X509-SVID leaf must not be`,
      ),
    );
  });

  it("honours path length constraints", () => {
    const capped = pki.inter("capped", root, []);
    const below = pki.make("below", {
      issuer: capped,
      ext: [
        "basicConstraints = critical,CA:TRUE",
        "keyUsage = critical,keyCertSign",
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid",
      ],
      days: 10,
    });
    const under = pki.leaf("under", below);
    expect(check([under.der, below.der, capped.der])).toEqual(
      refused(
        "constraints",
        "intermediate 2 certificate (CN=capped, O=example.org) has path length constraint 0, but 1 intermediate CA certificate(s) follow it",
      ),
    );
  });

  it("refuses an issuer that is not a CA, or lacks keyCertSign", () => {
    const notCa = pki.make("not-ca", {
      issuer: root,
      ext: [
        "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,digitalSignature",
        "subjectKeyIdentifier = hash",
      ],
      days: 10,
    });
    const l1 = pki.leaf("under-not-ca", notCa);
    expect(check([l1.der, notCa.der])).toEqual(
      refused(
        "constraints",
        "intermediate 1 certificate (CN=not-ca, O=example.org) issued a certificate but is not a CA certificate (basicConstraints cA is not set)",
      ),
    );
    const noSign = pki.make("no-sign", {
      issuer: root,
      ext: [
        "basicConstraints = critical,CA:TRUE",
        "keyUsage = critical,digitalSignature",
        "subjectKeyIdentifier = hash",
      ],
      days: 10,
    });
    const l2 = pki.leaf("under-no-sign", noSign);
    expect(check([l2.der, noSign.der])).toEqual(
      refused(
        "usage",
        "intermediate 1 certificate (CN=no-sign, O=example.org) key usage does not include keyCertSign, so it may not issue certificates",
      ),
    );
  });

  it("refuses an intermediate whose EKU excludes the usage asked for", () => {
    const serverOnly = pki.inter("server-only-ca", root, ["extendedKeyUsage = serverAuth"]);
    const l = pki.leaf("under-server-only", serverOnly);
    expect(check([l.der, serverOnly.der], { usage: "server" }).ok).toBe(true);
    expect(check([l.der, serverOnly.der])).toEqual(
      refused(
        "usage",
        "intermediate 1 certificate (CN=server-only-ca, O=example.org) restricts extended key usage to 1.3.6.1.5.5.7.3.1, which excludes clientAuth",
      ),
    );
  });
});

describe("leaf usage", () => {
  it("refuses a leaf without keyUsage, or without digitalSignature", () => {
    const noKu = pki.leaf("no-ku", inter, { keyUsage: null });
    expect(check([noKu.der, inter.der])).toEqual(
      refused("usage", `${LEAF} has no keyUsage extension; an X509-SVID leaf needs digitalSignature`),
    );
    const ke = pki.leaf("ke", inter, { keyUsage: "critical,keyEncipherment" });
    expect(check([ke.der, inter.der])).toEqual(
      refused("usage", `${LEAF} key usage does not include digitalSignature`),
    );
  });

  it("matches the extended key usage to the verifier's usage, and refuses a leaf without one", () => {
    const serverLeaf = pki.leaf("server-leaf", inter, { eku: "serverAuth" });
    expect(check([serverLeaf.der, inter.der], { usage: "server" }).ok).toBe(true);
    expect(check([serverLeaf.der, inter.der], { usage: "client" })).toEqual(
      refused(
        "usage",
        `${LEAF} extended key usage does not include clientAuth, so it is not a client certificate`,
      ),
    );
    const clientLeaf = pki.leaf("client-leaf", inter, { eku: "clientAuth" });
    expect(check([clientLeaf.der, inter.der], { usage: "server" })).toEqual(
      refused(
        "usage",
        `${LEAF} extended key usage does not include serverAuth, so it is not a server certificate`,
      ),
    );
    const noEku = pki.leaf("no-eku", inter, { eku: null });
    expect(check([noEku.der, inter.der])).toEqual(
      refused(
        "usage",
        `${LEAF} has no extended key usage; it must name clientAuth to be accepted as a client certificate`,
      ),
    );
  });

  it("refuses an unknown critical extension", () => {
    const odd = pki.leaf("odd", inter, { extra: ["1.2.3.4 = critical,ASN1:NULL"] });
    expect(check([odd.der, inter.der])).toEqual(
      refused("constraints", `${LEAF} has critical extension(s) this verifier does not process: 1.2.3.4`),
    );
    const policies = pki.inter("policy-ca", root, ["certificatePolicies = critical,1.2.3.5"]);
    const l = pki.leaf("under-policy", policies);
    expect(check([l.der, policies.der])).toEqual(
      refused(
        "constraints",
        "intermediate 1 certificate (CN=policy-ca, O=example.org) has critical extension(s) this verifier does not process: certificatePolicies (2.5.29.32)",
      ),
    );
  });
});

describe("SPIFFE rules", () => {
  it("refuses two URI SANs, a non-spiffe URI, no URI, and a trust-domain-only ID", () => {
    const two = pki.leaf("two-uris", inter, { san: "URI:spiffe://example.org/a,URI:spiffe://example.org/b" });
    expect(check([two.der, inter.der])).toEqual(
      refused(
        "spiffe",
        "leaf certificate (O=example.org) has 2 URI SANs (spiffe://example.org/a, spiffe://example.org/b); an X509-SVID has exactly one",
      ),
    );
    const https = pki.leaf("https-uri", inter, { san: "URI:https://example.org/web" });
    expect(check([https.der, inter.der])).toEqual(
      refused(
        "spiffe",
        `the leaf's URI SAN "https://example.org/web" is not a SPIFFE ID: it must start with "spiffe://"`,
      ),
    );
    const none = pki.leaf("no-uri", inter, { san: "DNS:web.example.org" });
    expect(check([none.der, inter.der])).toEqual(
      refused("spiffe", "leaf certificate (O=example.org) has no URI SAN, so it carries no SPIFFE ID"),
    );
    const td = pki.leaf("td-only", inter, { san: "URI:spiffe://example.org" });
    expect(check([td.der, inter.der])).toEqual(
      refused(
        "spiffe",
        "the leaf's SPIFFE ID spiffe://example.org names a trust domain, not a workload; an X509-SVID needs a path",
      ),
    );
    const upper = pki.leaf("upper", inter, { san: "URI:spiffe://Example.org/x" });
    expect(check([upper.der, inter.der])).toEqual(
      refused("spiffe", /^the leaf's URI SAN "spiffe:\/\/Example\.org\/x" is not a SPIFFE ID: trust domain/),
    );
  });

  it("refuses an ID outside the intermediate's URI name constraint", () => {
    const b = pki.leaf("other-td", inter, { san: "URI:spiffe://other.org/x" });
    expect(check([b.der, inter.der])).toEqual(
      refused(
        "constraints",
        "intermediate 1 certificate (CN=inter, O=example.org) name constraints refuse leaf certificate (spiffe://other.org/x): URI spiffe://other.org/x is outside the permitted URI subtrees (example.org)",
      ),
    );
    // A subdomain is another trust domain: a host base matches that host only.
    const sub = pki.leaf("sub-td", inter, { san: "URI:spiffe://a.example.org/x" });
    expect(check([sub.der, inter.der]).ok).toBe(false);
  });

  it("refuses names in excluded subtrees, DNS names outside permitted ones, and name types it cannot check", () => {
    const excl = pki.inter("excl", root, ["nameConstraints = critical,excluded;URI:.blocked.org"]);
    const l1 = pki.leaf("blocked", excl, { san: "URI:spiffe://prod.blocked.org/x" });
    expect(check([l1.der, excl.der])).toEqual(
      refused(
        "constraints",
        "intermediate 1 certificate (CN=excl, O=example.org) name constraints refuse leaf certificate (spiffe://prod.blocked.org/x): URI spiffe://prod.blocked.org/x is inside the excluded URI subtree .blocked.org",
      ),
    );
    expect(
      check([pki.leaf("not-blocked", excl, { san: "URI:spiffe://blocked.org/x" }).der, excl.der]).ok,
    ).toBe(true);

    const dns = pki.inter("dns-ca", root, [
      "nameConstraints = critical,permitted;URI:example.org,permitted;DNS:svc.local",
    ]);
    const l2 = pki.leaf("dns-bad", dns, { san: "URI:spiffe://example.org/web,DNS:web.evil.com" });
    expect(check([l2.der, dns.der])).toEqual(
      refused("constraints", /DNS name web\.evil\.com is outside the permitted DNS subtrees \(svc\.local\)$/),
    );

    const email = pki.inter("email-ca", root, ["nameConstraints = critical,permitted;email:example.org"]);
    const l3 = pki.leaf("under-email", email);
    expect(check([l3.der, email.der])).toEqual(
      refused(
        "constraints",
        "intermediate 1 certificate (CN=email-ca, O=example.org) has name constraints on email names, which this verifier does not process",
      ),
    );
  });
});
