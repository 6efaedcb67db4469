import { rmSync } from "node:fs";
import {
  createVerifier,
  type RevocationSource,
  type RevocationView,
  type VerifierOptions,
} from "../../verify/verifier";
import { stintError } from "../attest/helpers";
import { tempDir } from "../helpers/openssl";
import { Pki, skiPrefix } from "./pki";

const dir = tempDir("stint-verifier-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const pki = new Pki(dir);
const root = pki.root("root", "/CN=Test Root/O=example.org");
const inter = pki.inter("inter", root);
const web = pki.leaf("web", inter, { san: "URI:spiffe://example.org/ns/prod/sa/web" });
const db = pki.leaf("db", inter, { san: "URI:spiffe://example.org/ns/prod/sa/db" });
const dev = pki.leaf("dev", inter, { san: "URI:spiffe://example.org/ns/dev/sa/web" });
const otherRoot = pki.root("other-root");

const NOW = new Date(Date.now() + 3_600_000);
const WEB = "spiffe://example.org/ns/prod/sa/web";
const chainOf = (leaf: { der: Buffer }) => [leaf.der, inter.der];
const base = (o: Partial<VerifierOptions> = {}) =>
  createVerifier({ bundle: root.pem, usage: "client", allow: ["spiffe://example.org/ns/prod/sa/*"], ...o });

describe("verify", () => {
  it("accepts an allowed ID and says which rule admitted it", () => {
    expect(base().verify(chainOf(web), NOW)).toEqual({
      ok: true,
      code: "ok",
      spiffeId: WEB,
      reason: "allowed by rule spiffe://example.org/ns/prod/sa/*",
      issuerId: skiPrefix(inter),
      sequence: web.sequence,
      notAfter: new Date(web.cert.validTo),
    });
  });

  it("takes PEM text, leaf first", () => {
    expect(base().verify(web.pem + inter.pem, NOW)).toMatchObject({ ok: true, spiffeId: WEB });
    expect(base().verify("", NOW)).toEqual({
      ok: false,
      code: "no-certificate",
      spiffeId: null,
      reason: "no certificate was presented",
    });
  });

  it("refuses an ID no rule allows, naming it", () => {
    expect(base().verify(chainOf(dev), NOW)).toEqual({
      ok: false,
      code: "unauthorized",
      spiffeId: "spiffe://example.org/ns/dev/sa/web",
      reason: "SPIFFE ID spiffe://example.org/ns/dev/sa/web is not authorized here: no allow rule matches it",
    });
  });

  it("passes path validation refusals through with a null ID", () => {
    expect(base({ bundle: otherRoot.pem }).verify(chainOf(web), NOW)).toMatchObject({
      ok: false,
      code: "untrusted",
      spiffeId: null,
    });
    expect(
      base({ usage: "server" }).verify(chainOf(pki.leaf("client-only", inter, { eku: "clientAuth" })), NOW),
    ).toMatchObject({
      ok: false,
      code: "usage",
    });
  });

  it("refuses bad options", () => {
    expect(() => createVerifier({ bundle: root.pem, usage: "client" } as VerifierOptions)).toThrow(
      stintError("ERR_CONFIG", "verifier allow rules are required (deny by default)"),
    );
    expect(() => base({ revocation: { view: () => null }, maxFeedAge: -1 })).toThrow(
      stintError("ERR_CONFIG", "verifier maxFeedAge must be a positive number of milliseconds"),
    );
    expect(() => base({ bundle: web.pem })).toThrow(stintError("ERR_CONFIG", /is not a CA certificate/));
  });
});

describe("revocation", () => {
  const MAX_AGE = 60_000;
  class FakeFeed implements RevocationSource {
    current: RevocationView | null = null;
    revoked = new Set<string>();
    revokedIssuers = new Set<string>();
    /** Sequences above this are newer than the feed. */
    coveredUpTo = Number.MAX_SAFE_INTEGER;
    /** A feed the CA signed at `thisUpdate`, valid for `validityMs`, fetched just now. */
    load(thisUpdate: Date, validityMs = 30_000, maxClockSkew = 300_000): void {
      this.current = {
        sequence: 42,
        fetchedAt: NOW,
        thisUpdate,
        nextUpdate: new Date(thisUpdate.getTime() + validityMs),
        maxClockSkew,
        status: (issuerId, sequence) =>
          sequence > this.coveredUpTo
            ? "not-covered"
            : this.revoked.has(`${issuerId}:${sequence}`)
              ? "revoked"
              : "good",
        issuerRevoked: (issuerId) => this.revokedIssuers.has(issuerId),
      };
    }
    view() {
      return this.current;
    }
  }
  let feed: FakeFeed;
  const verifier = () => base({ revocation: feed, maxFeedAge: MAX_AGE });
  beforeEach(() => {
    feed = new FakeFeed();
    feed.load(new Date(NOW.getTime() - 10_000));
  });

  it("accepts a good certificate with no note", () => {
    const r = verifier().verify(chainOf(web), NOW);
    expect(r.ok).toBe(true);
    expect(r).not.toHaveProperty("note");
  });

  it("refuses a revoked certificate, by issuer id and sequence", () => {
    feed.revoked.add(`${skiPrefix(inter)}:${web.sequence}`);
    const v = verifier();
    expect(v.verify(chainOf(web), NOW)).toEqual({
      ok: false,
      code: "revoked",
      spiffeId: WEB,
      reason: `the certificate of ${WEB} (issuer ${skiPrefix(inter)}, sequence ${web.sequence}) is revoked (feed version 42)`,
    });
    expect(v.verify(chainOf(db), NOW).ok).toBe(true);
  });

  it("refuses every certificate of a revoked issuer, and of a revoked CA above it", () => {
    feed.revokedIssuers.add(skiPrefix(inter));
    expect(verifier().verify(chainOf(db), NOW)).toMatchObject({
      ok: false,
      code: "revoked",
      reason: `the issuing CA (key id ${skiPrefix(inter)}) of spiffe://example.org/ns/prod/sa/db is revoked (feed version 42)`,
    });
    feed.revokedIssuers = new Set([skiPrefix(root)]);
    expect(verifier().verify(chainOf(db), NOW)).toMatchObject({
      ok: false,
      code: "revoked",
      reason: `a CA on the path (key id ${skiPrefix(root)}) of spiffe://example.org/ns/prod/sa/db is revoked (feed version 42)`,
    });
  });

  it("accepts a certificate newer than the feed while the feed is fresh, with a note", () => {
    feed.coveredUpTo = web.sequence - 1;
    expect(verifier().verify(chainOf(web), NOW)).toMatchObject({
      ok: true,
      spiffeId: WEB,
      note: `not yet covered by the feed (version 42; certificate sequence ${web.sequence} of issuer ${skiPrefix(inter)}); accepted while the feed is fresh`,
    });
  });

  it("refuses a certificate newer than a stale feed", () => {
    feed.coveredUpTo = web.sequence - 1;
    feed.load(new Date(NOW.getTime() - MAX_AGE - 1_000));
    expect(verifier().verify(chainOf(web), NOW)).toMatchObject({ ok: false, code: "revocation-unavailable" });
  });

  it("fails closed without a view, and with a stale one", () => {
    feed.current = null;
    expect(verifier().verify(chainOf(web), NOW)).toEqual({
      ok: false,
      code: "revocation-unavailable",
      spiffeId: WEB,
      reason: `no verified revocation feed has been loaded yet; refusing ${WEB} (fail closed)`,
    });
    const signedAt = new Date(NOW.getTime() - 61_000);
    feed.load(signedAt);
    expect(verifier().verify(chainOf(web), NOW)).toEqual({
      ok: false,
      code: "revocation-unavailable",
      spiffeId: WEB,
      reason: `the revocation feed (version 42) expired at its nextUpdate, ${new Date(signedAt.getTime() + 30_000).toISOString()}, and no newer one has been verified; refusing ${WEB} (fail closed)`,
    });
    feed.load(signedAt, 3_600_000);
    expect(verifier().verify(chainOf(web), NOW)).toEqual({
      ok: false,
      code: "revocation-unavailable",
      spiffeId: WEB,
      reason: `the revocation feed (version 42) was signed 61 s ago (${signedAt.toISOString()}), beyond the 60 s limit; refusing ${WEB} (fail closed)`,
    });
    expect(base({ revocation: feed }).verify(chainOf(web), NOW).ok).toBe(true);
  });

  it("uses a feed until its nextUpdate plus the clock skew, however recently it was fetched", () => {
    feed.load(new Date(NOW.getTime() - 600_000), 600_000 - 30_000); // nextUpdate 30 s ago; fetchedAt is NOW
    const v = base({ revocation: feed, clockSkew: 30_000 });
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
    expect(v.verify(chainOf(web), new Date(NOW.getTime() + 1))).toMatchObject({
      ok: false,
      code: "revocation-unavailable",
      reason: expect.stringMatching(/expired at its nextUpdate/),
    });
  });

  describe("past the certificate's notAfter, within the clock skew", () => {
    const notAfter = Date.parse(web.cert.validTo);
    const late = new Date(notAfter + 20_000);
    const lateVerifier = (clockSkew = 30_000) => base({ revocation: feed, clockSkew });
    beforeEach(() => feed.load(new Date(notAfter - 60_000), 600_000));

    it("accepts a certificate the feed still covers as good, and refuses it once revoked", () => {
      expect(lateVerifier().verify(chainOf(web), late)).toMatchObject({ ok: true });
      feed.revoked.add(`${skiPrefix(inter)}:${web.sequence}`);
      expect(lateVerifier().verify(chainOf(web), late)).toMatchObject({ ok: false, code: "revoked" });
    });

    it("refuses a certificate the feed no longer covers instead of calling it 'not yet covered'", () => {
      feed.coveredUpTo = web.sequence - 1;
      expect(lateVerifier().verify(chainOf(web), late)).toEqual({
        ok: false,
        code: "expired",
        spiffeId: WEB,
        reason: `the certificate of ${WEB} expired at ${new Date(notAfter).toISOString()} and the revocation feed (version 42) no longer covers it (issuer ${skiPrefix(inter)}, sequence ${web.sequence}), so it may have been revoked`,
      });
      expect(lateVerifier().verify(chainOf(web), new Date(notAfter - 1_000))).toMatchObject({
        ok: true,
        note: expect.stringMatching(/^not yet covered/),
      });
    });

    it("refuses past notAfter + the feed's maxClockSkew, whatever skew the verifier allows", () => {
      feed.load(new Date(notAfter - 60_000), 600_000, 10_000);
      expect(lateVerifier(60_000).verify(chainOf(web), late)).toMatchObject({
        ok: false,
        code: "expired",
        reason: expect.stringMatching(/keeps revoked certificates only 10 s past expiry/),
      });
      expect(lateVerifier(60_000).verify(chainOf(web), new Date(notAfter + 9_000)).ok).toBe(true);
    });
  });

  it("fails closed for a serial the feed cannot cover, and when the source throws", () => {
    const plain = pki.make("plain-serial", {
      issuer: inter,
      subject: "/O=example.org",
      ext: [
        "keyUsage = critical,digitalSignature",
        "extendedKeyUsage = clientAuth",
        "authorityKeyIdentifier = keyid",
        "subjectAltName = URI:spiffe://example.org/ns/prod/sa/plain",
      ],
      serial: "4660",
    });
    expect(verifier().verify(chainOf(plain), NOW)).toEqual({
      ok: false,
      code: "revocation-unavailable",
      spiffeId: "spiffe://example.org/ns/prod/sa/plain",
      reason:
        "the certificate's serial is not in Stint's layout, so the revocation feed cannot cover it; refusing spiffe://example.org/ns/prod/sa/plain (fail closed)",
    });
    expect(base().verify(chainOf(plain), NOW)).toMatchObject({ ok: true, sequence: null });
    const throwing: RevocationSource = {
      view: () => {
        throw new Error("boom");
      },
    };
    expect(base({ revocation: throwing, maxFeedAge: MAX_AGE }).verify(chainOf(web), NOW)).toMatchObject({
      ok: false,
      code: "revocation-unavailable",
      reason: `the revocation source failed; refusing ${WEB} (fail closed)`,
    });
  });

  it("applies a revocation at once, even to a chain whose validation is cached", () => {
    const v = verifier();
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
    const checks = v.stats().signatureChecks;
    feed.revoked.add(`${skiPrefix(inter)}:${web.sequence}`);
    expect(v.verify(chainOf(web), NOW)).toMatchObject({ ok: false, code: "revoked" });
    expect(v.stats()).toMatchObject({ hits: 1, misses: 1, signatureChecks: checks });
  });
});

describe("the path validation cache", () => {
  afterEach(() => jest.restoreAllMocks());

  it("does no signature work on the second verification of a chain", () => {
    const v = base();
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
    expect(v.stats().signatureChecks).toBe(2);
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
    expect(v.verify(web.pem + inter.pem, NOW).ok).toBe(true);
    expect(v.stats()).toEqual({ cached: 1, hits: 2, misses: 1, signatureChecks: 2 });
  });

  it("checks only the new leaf's signature under an intermediate it has verified before", () => {
    const v = base();
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
    expect(v.verify(chainOf(db), NOW).ok).toBe(true);
    expect(v.stats()).toMatchObject({ misses: 2, signatureChecks: 3 });
    // A leaf whose signature is broken is still refused: only CA links are remembered.
    const flipped = Buffer.from(dev.der);
    flipped[flipped.length - 1] ^= 1;
    expect(v.verify([flipped, inter.der], NOW).code).toBe("bad-signature");
    // A new bundle forgets what the old one vouched for.
    v.updateBundle(otherRoot.pem);
    expect(v.verify(chainOf(web), NOW).code).toBe("untrusted");
  });

  it("caches refusals that do not depend on the time, but not expiry", () => {
    const v = base({ bundle: otherRoot.pem + root.pem });
    const flipped = Buffer.from(web.der);
    flipped[flipped.length - 1] ^= 1;
    expect(v.verify([flipped, inter.der], NOW).code).toBe("bad-signature");
    expect(v.verify([flipped, inter.der], NOW).code).toBe("bad-signature");
    expect(v.stats()).toMatchObject({ hits: 1, misses: 1 });
    const late = new Date(Date.parse(web.cert.validTo) + 60_000);
    expect(v.verify(chainOf(db), late).code).toBe("expired");
    expect(v.verify(chainOf(db), late).code).toBe("expired");
    expect(v.stats()).toMatchObject({ hits: 1, misses: 3 });
  });

  it("holds an outcome only while the path is valid", () => {
    const v = base();
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
    const afterLeaf = new Date(Date.parse(web.cert.validTo) + 31_000);
    expect(v.verify(chainOf(web), afterLeaf)).toMatchObject({ ok: false, code: "expired" });
    expect(v.stats()).toMatchObject({ hits: 0, misses: 2 });
  });

  it("is bounded, evicting the least recently used chain", () => {
    const v = base({ cacheSize: 2 });
    v.verify(chainOf(web), NOW);
    v.verify(chainOf(db), NOW);
    v.verify(chainOf(web), NOW); // web is now the most recent
    v.verify(chainOf(dev), NOW); // evicts db
    expect(v.stats()).toMatchObject({ cached: 2, hits: 1, misses: 3 });
    v.verify(chainOf(web), NOW);
    expect(v.stats()).toMatchObject({ hits: 2, misses: 3 });
    v.verify(chainOf(db), NOW);
    expect(v.stats()).toMatchObject({ hits: 2, misses: 4 });
  });

  it("answers for a leaf alone once a path for it is cached, still checking revocation and authorization", () => {
    let view: RevocationView | null = null;
    const v = base({ revocation: { view: () => view }, maxFeedAge: 60_000 });
    expect(v.verifyKnownLeaf(web.der, NOW)).toBeNull();
    view = {
      sequence: 1,
      fetchedAt: NOW,
      thisUpdate: NOW,
      nextUpdate: NOW,
      maxClockSkew: 300_000,
      status: () => "good",
      issuerRevoked: () => false,
    };
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
    const checks = v.stats().signatureChecks;
    expect(v.verifyKnownLeaf(web.der, NOW)).toMatchObject({ ok: true, spiffeId: WEB });
    view = { ...view, status: () => "revoked" };
    expect(v.verifyKnownLeaf(web.der, NOW)).toMatchObject({ ok: false, code: "revoked" });
    expect(v.stats().signatureChecks).toBe(checks);
    // Only validated paths are indexed by leaf.
    expect(v.verify([dev.der], NOW).code).toBe("untrusted");
    expect(v.verifyKnownLeaf(dev.der, NOW)).toBeNull();
    expect(v.verifyKnownLeaf(Buffer.from(web.der).fill(0, 100, 101), NOW)).toBeNull();
    expect(v.verifyKnownLeaf(web.der, new Date(Date.parse(web.cert.validTo) + 60_000))).toBeNull();
    v.updateBundle(root.pem);
    expect(v.verifyKnownLeaf(web.der, NOW)).toBeNull();
  });

  it("is emptied by a new bundle, whose roots then decide", () => {
    const v = base();
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
    v.updateBundle(otherRoot.pem);
    expect(v.stats().cached).toBe(0);
    expect(v.verify(chainOf(web), NOW)).toMatchObject({ ok: false, code: "untrusted" });
    expect(() => v.updateBundle("nothing")).toThrow(
      stintError("ERR_CONFIG", "trust bundle: it holds no certificate"),
    );
    v.updateBundle([root.der]);
    expect(v.verify(chainOf(web), NOW).ok).toBe(true);
  });
});
