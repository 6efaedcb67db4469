import { createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { rmSync } from "node:fs";
import { Lru } from "../../common/lru";
import { importSpki } from "../../formats/jose";
import { readCertificate, readCertificateKey } from "../../formats/x509";
import { bootstrapPki, pemFileDer, tempDir } from "../helpers/openssl";

/**
 * The cheaper routes the issuance path takes must give what the slower ones
 * gave: the same key from SPKI DER, the same serial and key from a
 * certificate, and a key cache that stays within its bound.
 */

const spki = (k: KeyObject) => k.export({ type: "spki", format: "der" });

describe("importSpki", () => {
  const keys: [string, KeyObject][] = [
    ["P-256", generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey],
    ["P-384", generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey],
    ["Ed25519", generateKeyPairSync("ed25519").publicKey],
    ["RSA-2048", generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey],
    ["P-521", generateKeyPairSync("ec", { namedCurve: "P-521" }).publicKey],
  ];
  it.each(keys)("loads a %s key equal to the one createPublicKey loads from the DER", (_name, key) => {
    const loaded = importSpki(spki(key));
    expect(loaded.equals(createPublicKey({ key: spki(key), format: "der", type: "spki" }))).toBe(true);
    expect(spki(loaded).equals(spki(key))).toBe(true);
  });

  it("refuses a P-256 point that is not on the curve, as the DER route does", () => {
    const bad = Buffer.from(spki(keys[0][1]));
    bad[bad.length - 1] ^= 1;
    expect(() => createPublicKey({ key: bad, format: "der", type: "spki" })).toThrow();
    expect(() => importSpki(bad)).toThrow();
  });

  it("loads a compressed P-256 point through the DER route", () => {
    const full = spki(keys[0][1]);
    const point = full.subarray(full.length - 65);
    const compressed = Buffer.concat([
      Buffer.from("3039301306072a8648ce3d020106082a8648ce3d030107032200", "hex"),
      Buffer.from([0x02 | (point[64] & 1)]),
      point.subarray(1, 33),
    ]);
    expect(importSpki(compressed).equals(keys[0][1])).toBe(true);
  });
});

describe("readCertificateKey", () => {
  const dir = tempDir("stint-fast-paths-");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  // OpenSSL's random serials often have the top bit set, so DER gives them a leading zero octet.
  const pki = bootstrapPki(dir, "fast", "leaf");
  const ders = () => [pki.caPath, pki.leafPath].map(pemFileDer);

  it("reads the serial and key readCertificate reads", () => {
    for (const der of ders()) {
      const full = readCertificate(der);
      const light = readCertificateKey(der);
      expect(light.serial.equals(full.serial)).toBe(true);
      expect(light.spki.equals(full.spki)).toBe(true);
    }
  });

  it("refuses what is not a certificate", () => {
    const [der] = ders();
    expect(() => readCertificateKey(Buffer.concat([der, Buffer.from([0])]))).toThrow(/trailing bytes/);
    expect(() => readCertificateKey(der.subarray(0, 40))).toThrow(/DER/);
    expect(() => readCertificateKey(Buffer.from("3003020101", "hex"))).toThrow(/DER/);
  });
});

describe("Lru", () => {
  const key = generateKeyPairSync("ed25519").publicKey;
  it("keeps at most its limit, dropping the least recently used first", () => {
    const cache = new Lru<typeof key>(2);
    cache.set("a", key);
    cache.set("b", key);
    expect(cache.get("a")).toBe(key); // a is now the most recent
    cache.set("c", key);
    expect(cache.size).toBe(2);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")).toBe(key);
    expect(cache.get("c")).toBe(key);
  });
});
