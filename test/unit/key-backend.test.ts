import "reflect-metadata";
import { generateKeyPairSync, type KeyObject, sign, verify, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { CrlSigner } from "../../ca/crl";
import { LeafEngine } from "../../ca/engine";
import { type CaKey, fileKey } from "../../ca/key-backend";
import { CaKeyStore } from "../../ca/key-store";
import { generateKeyPair, type KeyAlgorithm } from "../../ca/keys";
import {
  createCaCertificateRequest,
  createCrossCertificate,
  createIntermediateCertificate,
  createRootCertificate,
  randomSerial,
} from "../../ca/x509";
import { StintError } from "../../common/errors";
import { crlSignedBy, readCrl } from "../../formats/crl";
import { ecdsaDerToP1363, ecdsaP1363ToDer } from "../../formats/ecdsa-signature";
import { encodeFeed, parseSignedFeed, signFeed, verifyFeedSignature } from "../../formats/feed";

/**
 * Every CA signature goes through a CaKey. A key that answers with a promise
 * and holds no private KeyObject is what a PKCS#11 token looks like to the
 * signing code; here node:crypto stands behind it, so these tests check the
 * asynchronous path (and the DER/r||s conversions) without a token. The real
 * token runs the same code in the pkcs11 matrix (npm run test:pkcs11).
 */

const NOW = new Date(Math.floor(Date.now() / 1000) * 1000);
const DAY = 86_400_000;

/** A CaKey like a token's: asynchronous, no private half to hand out. */
function remoteKey(privateKey: KeyObject, fail = false): CaKey {
  const inner = fileKey(privateKey);
  return {
    backend: "pkcs11",
    ref: "pkcs11:token=test;object=remote;id=%01",
    algorithm: inner.algorithm,
    publicKey: inner.publicKey,
    privateKey: null,
    sign: async (hash, data) => {
      if (fail) throw new StintError("ERR_KEY_UNAVAILABLE", "the token is gone");
      return inner.sign(hash, data);
    },
  };
}

const ALGORITHMS: KeyAlgorithm[] = ["ec-p256", "ec-p384", "ed25519", "rsa-2048"];

describe.each(ALGORITHMS)("a %s CA key that signs asynchronously", (alg) => {
  let key: CaKey;
  let rootDer: Buffer;

  beforeAll(async () => {
    key = remoteKey((await generateKeyPair(alg)).privateKey);
    rootDer = await createRootCertificate({
      keys: key,
      commonName: "Remote root",
      trustDomain: "example.org",
      notBefore: NOW,
      notAfter: new Date(NOW.getTime() + 30 * DAY),
      serial: randomSerial(),
    });
  });

  it("makes a root, an intermediate, a cross-certificate and a CSR that verify", async () => {
    const root = new X509Certificate(rootDer);
    expect(root.verify(key.publicKey)).toBe(true);
    const sub = await generateKeyPair(alg);
    const intDer = await createIntermediateCertificate({
      issuer: { certDer: rootDer, privateKey: key },
      subjectPublicKey: sub.publicKey,
      commonName: "Remote intermediate",
      trustDomain: "example.org",
      notBefore: NOW,
      notAfter: new Date(NOW.getTime() + DAY),
      serial: randomSerial(),
      pathLength: 0,
    });
    expect(new X509Certificate(intDer).verify(key.publicKey)).toBe(true);
    const otherRoot = await createRootCertificate({
      keys: sub,
      commonName: "Other root",
      trustDomain: "example.org",
      notBefore: NOW,
      notAfter: new Date(NOW.getTime() + 10 * DAY),
      serial: randomSerial(),
    });
    const crossDer = await createCrossCertificate({
      issuer: { certDer: rootDer, privateKey: key },
      subjectCertDer: otherRoot,
      serial: randomSerial(),
    });
    expect(new X509Certificate(crossDer).verify(key.publicKey)).toBe(true);
    const csr = new x509.Pkcs10CertificateRequest(
      await createCaCertificateRequest({
        keys: key,
        commonName: "Remote request",
        trustDomain: "example.org",
      }),
    );
    expect(await csr.verify()).toBe(true);
  });

  it("issues leaves through a promise, and CRLs and feeds that verify", async () => {
    const engine = new LeafEngine({ certDer: rootDer, privateKey: key, organization: "example.org" });
    const leafKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey;
    const spki = leafKey.export({ type: "spki", format: "der" });
    const issued = engine.issue({
      spki,
      keyAlgorithm: "ec-p256",
      spiffeId: "spiffe://example.org/w",
      dnsNames: [],
      ipAddresses: [],
      notBefore: NOW,
      notAfter: new Date(NOW.getTime() + 3_600_000),
      sequence: 7,
    });
    expect(issued).toBeInstanceOf(Promise);
    expect(new X509Certificate((await issued).der).verify(key.publicKey)).toBe(true);

    const crl = new CrlSigner({ certDer: rootDer, privateKey: key }).sign({
      number: 3,
      thisUpdate: NOW,
      nextUpdate: new Date(NOW.getTime() + 3_600_000),
      revoked: [{ serial: "0a0b", revokedAt: NOW, reason: 1 }],
    });
    expect(crl).toBeInstanceOf(Promise);
    expect(crlSignedBy(readCrl(await crl), key.publicKey)).toBe(true);

    const body = encodeFeed({
      kind: "snapshot",
      trustDomain: "example.org",
      sequence: 1,
      thisUpdate: NOW,
      nextUpdate: new Date(NOW.getTime() + 600_000),
      maxClockSkew: 300_000,
      issuers: [],
      revokedIssuers: [],
      retiredIssuers: [],
    });
    const envelope = await signFeed(body, key, [rootDer]);
    expect(verifyFeedSignature(parseSignedFeed(envelope))).toBe(true);
  });

  it("fails the signature with the key's own error, not a partial certificate", async () => {
    const failing = remoteKey((await generateKeyPair(alg)).privateKey, true);
    const engine = new LeafEngine({ certDer: rootDer, privateKey: failing, organization: "example.org" });
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      type: "spki",
      format: "der",
    });
    const leaf = engine.issue({
      spki,
      keyAlgorithm: "ec-p256",
      spiffeId: "spiffe://example.org/w",
      dnsNames: [],
      ipAddresses: [],
      notBefore: NOW,
      notAfter: new Date(NOW.getTime() + 3_600_000),
      sequence: 8,
    });
    await expect(leaf).rejects.toMatchObject({ code: "ERR_KEY_UNAVAILABLE" });
  });
});

describe("file keys", () => {
  it("sign at once: the leaf engine's hot path keeps no promise turn", async () => {
    const { privateKey } = await generateKeyPair("ec-p256");
    const certDer = await createRootCertificate({
      keys: fileKey(privateKey),
      commonName: "File root",
      trustDomain: "example.org",
      notBefore: NOW,
      notAfter: new Date(NOW.getTime() + DAY),
      serial: randomSerial(),
    });
    const engine = new LeafEngine({ certDer, privateKey: fileKey(privateKey), organization: "example.org" });
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      type: "spki",
      format: "der",
    });
    const leaf = engine.issue({
      spki,
      keyAlgorithm: "ec-p256",
      spiffeId: null,
      dnsNames: ["a.example.org"],
      ipAddresses: [],
      notBefore: NOW,
      notAfter: new Date(NOW.getTime() + 3_600_000),
      sequence: 1,
    });
    expect(leaf).not.toBeInstanceOf(Promise);
  });

  it("are written 0600 and encrypted by CaKeyStore, and open again by their reference", async () => {
    const dir = mkdtempSync(join(tmpdir(), "stint-keystore-"));
    try {
      const store = CaKeyStore.files(dir, "correct horse");
      const key = await store.generate("ec-p384", "ignored for files");
      const saved = await store.save(key, "k.pem");
      expect(saved).toEqual({ ref: "k.pem", written: join(dir, "k.pem") });
      expect(statSync(join(dir, "k.pem")).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(dir, "k.pem"), "utf8")).toContain("ENCRYPTED PRIVATE KEY");
      expect(await store.has("k.pem")).toBe(true);
      expect(await store.has("missing.pem")).toBe(false);
      expect(await store.has("pkcs11:token=t;object=o")).toBe(false);
      const opened = await store.open("k.pem");
      expect(opened.encrypted).toBe(true);
      expect(opened.key.publicKey.export({ format: "jwk" })).toEqual(key.publicKey.export({ format: "jwk" }));
      await expect(store.open("pkcs11:token=t;object=o")).rejects.toMatchObject({
        code: "ERR_KEY_UNAVAILABLE",
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("ECDSA signature spellings", () => {
  it.each([
    ["P-256", 32],
    ["P-384", 48],
  ] as const)("DER and r||s convert both ways for %s", (curve, half) => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
    const data = Buffer.from("message");
    for (let i = 0; i < 20; i++) {
      const derSig = sign("sha256", data, privateKey);
      const raw = ecdsaDerToP1363(derSig, half);
      expect(raw.length).toBe(2 * half);
      expect(verify("sha256", data, { key: publicKey, dsaEncoding: "ieee-p1363" }, raw)).toBe(true);
      expect(ecdsaP1363ToDer(raw).equals(derSig)).toBe(true);
    }
  });

  it("refuses what is not an Ecdsa-Sig-Value", () => {
    expect(() => ecdsaDerToP1363(Buffer.from("3003020101", "hex"), 32)).toThrow(/SEQUENCE \{ r, s \}/);
    expect(() => ecdsaDerToP1363(Buffer.from(`3026022100${"ff".repeat(33)}020101`, "hex"), 32)).toThrow();
  });
});
