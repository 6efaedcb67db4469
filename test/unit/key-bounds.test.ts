import { createPrivateKey, generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type JwsVerifierDeps, verifyJwsRequest } from "../../acme/jws";
import { MemoryNonceLedger, NonceService } from "../../acme/nonce";
import { problemFor } from "../../acme/problem";
import { parseCsr } from "../../ca/csr";
import { keyAlgorithmOf } from "../../ca/keys";
import { inspectSpki } from "../../ca/spki";
import * as der from "../../formats/der";
import { b64u, exportJwk, importJwk, type Jwk, jwkShapeProblem, signJws } from "../../formats/jose";
import { bitLength, describeRsaKey } from "../../formats/key-bounds";
import { openssl, opensslCsr, tempDir } from "../helpers/openssl";

/**
 * Bounded cost before trust: a key is refused by its shape, read from its
 * encoding, before anything is verified with it. Each refusal below is also
 * shown to reach neither createPublicKey nor a signature verification, by
 * counting the node:crypto calls the code under test makes.
 */

const URL_ = "https://ca.test/acme/new-account";
const ACCEPTED = "use P-256, P-384, Ed25519 or RSA of 2048 to 4096 bits with public exponent 65537";

/** An RSA modulus of exactly `bits` bits (top bit set, odd): only its size matters to the shape check. */
function modulus(bits: number): Buffer {
  const n = randomBytes(Math.ceil(bits / 8));
  n[0] = (n[0] & (0xff >> (n.length * 8 - bits))) | (0x80 >> (n.length * 8 - bits));
  n[n.length - 1] |= 1;
  return n;
}

/** An odd exponent of exactly `bits` bits. */
const exponent = (bits: number): Buffer => modulus(bits);
const F4 = Buffer.from([1, 0, 1]);
const rsaJwk = (n: Buffer, e: Buffer): Jwk => ({ kty: "RSA", n: b64u(n), e: b64u(e) });

/**
 * The node:crypto module object itself, which the code under test calls
 * through; `import * as` would hand the test a copy, and spying on it would
 * count nothing (the harness test below proves the count is live).
 */
const nodeCrypto: typeof import("node:crypto") = jest.requireActual("node:crypto");

/** Counts the costly node:crypto calls made while `fn` runs. */
async function counting<T>(
  fn: () => Promise<T> | T,
): Promise<{ verify: number; load: number; result: unknown }> {
  const verify = jest.spyOn(nodeCrypto, "verify");
  const load = jest.spyOn(nodeCrypto, "createPublicKey");
  try {
    let result: unknown;
    try {
      result = await fn();
    } catch (err) {
      result = err;
    }
    return { verify: verify.mock.calls.length, load: load.mock.calls.length, result };
  } finally {
    verify.mockRestore();
    load.mockRestore();
  }
}

describe("the counting harness", () => {
  it("sees the verifications a good request makes, so a zero below means none happened", async () => {
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const nonces = new NonceService({ ledger: new MemoryNonceLedger() });
    const header = b64u(
      JSON.stringify({ alg: "ES256", jwk: exportJwk(key.publicKey), nonce: nonces.issue(), url: URL_ }),
    );
    const payload = b64u("{}");
    const body = {
      protected: header,
      payload,
      signature: signJws("ES256", key.privateKey, `${header}.${payload}`),
    };
    const counted = await counting(() => newAccount(body, nonces));
    expect(counted.result).not.toBeInstanceOf(Error);
    expect(counted.verify).toBe(1);
    expect(counted.load).toBeGreaterThanOrEqual(1);
  });
});

function newAccount(jws: unknown, nonces = new NonceService({ ledger: new MemoryNonceLedger() })) {
  const deps: JwsVerifierDeps = { nonces, lookupAccount: async () => null, maxBodyBytes: 64 * 1024 };
  const body = Buffer.from(JSON.stringify(jws));
  return verifyJwsRequest({ contentType: "application/jose+json", body, url: URL_ }, deps, {
    allow: ["jwk"],
  });
}

/** A newAccount JWS claiming `jwk`; the signature is junk of a plausible length, since it must never be checked. */
function forged(jwk: Jwk, alg = "RS256"): object {
  const header = b64u(JSON.stringify({ alg, jwk, nonce: "AAAAAAAAAAAAAAAAAAAAAA", url: URL_ }));
  return { protected: header, payload: b64u("{}"), signature: b64u(randomBytes(256)) };
}

describe("JWS keys are refused by shape before any signature check", () => {
  const rsa1024 = exportJwk(generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey);
  const cases: [string, Jwk, string][] = [
    ["a real RSA-1024 key", rsa1024, "jwk is an RSA-1024 key"],
    ["an RSA-8192 key", rsaJwk(modulus(8192), F4), "jwk is an RSA-8192 key"],
    ["an RSA-4097 key", rsaJwk(modulus(4097), F4), "jwk is an RSA-4097 key"],
    ["an RSA-2047 key", rsaJwk(modulus(2047), F4), "jwk is an RSA-2047 key"],
    [
      "public exponent 3",
      rsaJwk(modulus(2048), Buffer.from([3])),
      "jwk is an RSA-2048 key with public exponent 3",
    ],
    [
      "a 4096-bit public exponent",
      rsaJwk(modulus(4096), exponent(4096)),
      "jwk is an RSA-4096 key with a 4096-bit public exponent",
    ],
    [
      "a 2040-bit public exponent on a 2048-bit modulus",
      rsaJwk(modulus(2048), exponent(2040)),
      "jwk is an RSA-2048 key with a 2040-bit public exponent",
    ],
    ["an EC P-521 key", { kty: "EC", crv: "P-521", x: "AA", y: "AA" }, "jwk is an EC P-521 key"],
    ["an X25519 key", { kty: "OKP", crv: "X25519", x: b64u(randomBytes(32)) }, "jwk is an OKP X25519 key"],
    [
      "a curve name too long to echo",
      { kty: "EC", crv: "x".repeat(500), x: "AA", y: "AA" },
      "jwk is an EC unnamed key",
    ],
  ];

  it.each(cases)("%s: badPublicKey, never loaded or verified", async (_name, jwk, message) => {
    const { verify, load, result } = await counting(() => newAccount(forged(jwk)));
    expect(result).toMatchObject({
      code: "ERR_BAD_PUBLIC_KEY",
      check: "key",
      message: `${message}, which is not accepted; ${ACCEPTED}`,
    });
    expect(problemFor(result).problem).toMatchObject({
      status: 400,
      type: "urn:ietf:params:acme:error:badPublicKey",
    });
    expect({ verify, load }).toEqual({ verify: 0, load: 0 });
  });

  it.each([
    ["a modulus with a leading zero octet", rsaJwk(Buffer.concat([Buffer.from([0]), modulus(2048)]), F4)],
    ["an exponent with a leading zero octet", rsaJwk(modulus(2048), Buffer.from([0, 1, 0, 1]))],
    ["an empty modulus", rsaJwk(Buffer.alloc(0), F4)],
    ["a modulus that is not base64url", { kty: "RSA", n: "a+b/", e: "AQAB" }],
  ])("%s: badPublicKey, never loaded", async (_name, jwk) => {
    const { verify, load, result } = await counting(() => newAccount(forged(jwk)));
    expect(result).toMatchObject({ code: "ERR_BAD_PUBLIC_KEY", check: "key" });
    expect({ verify, load }).toEqual({ verify: 0, load: 0 });
  });

  it("accepts every key type it always did, and RSA up to 4096 bits", () => {
    const keys = [
      generateKeyPairSync("ec", { namedCurve: "P-256" }),
      generateKeyPairSync("ec", { namedCurve: "P-384" }),
      generateKeyPairSync("ed25519"),
      generateKeyPairSync("rsa", { modulusLength: 2048 }),
      generateKeyPairSync("rsa", { modulusLength: 4096 }),
    ];
    for (const { publicKey } of keys) {
      const jwk = exportJwk(publicKey);
      expect(jwkShapeProblem(jwk)).toBeNull();
      expect(importJwk(jwk).equals(publicKey)).toBe(true);
    }
  });

  it("keeps messages short whatever the key's size", () => {
    const message = describeRsaKey(modulus(60_000), exponent(60_000));
    expect(message).toBe("RSA-60000 key with a 60000-bit public exponent");
    expect(bitLength(Buffer.from([0x01, 0x00]))).toBe(9);
    expect(bitLength(Buffer.alloc(0))).toBe(0);
  });
});

// ---------- certificates and CSRs: the same bounds, read from the DER ----------

/** SubjectPublicKeyInfo DER for any RSA numbers, valid or not. */
function rsaSpki(n: Buffer, e: Buffer): Buffer {
  const algorithm = der.sequence(der.oid("1.2.840.113549.1.1.1"), der.nullValue());
  return der.sequence(algorithm, der.bitString(der.sequence(der.unsignedInteger(n), der.unsignedInteger(e))));
}

/** A PKCS#10 request around any SPKI, with a junk signature: a key refused by shape never gets it checked. */
function csrWith(spki: Buffer): Buffer {
  const info = der.sequence(der.smallInteger(0), der.sequence(), spki, der.explicit(0, Buffer.alloc(0)));
  const sha256Rsa = der.sequence(der.oid("1.2.840.113549.1.1.11"), der.nullValue());
  return der.sequence(info, sha256Rsa, der.bitString(randomBytes(256)));
}

describe("certificate and CSR keys are refused by shape before any signature check", () => {
  it.each([
    ["RSA-2048 key with public exponent 3", modulus(2048), Buffer.from([3])],
    ["RSA-3072 key with a 3072-bit public exponent", modulus(3072), exponent(3072)],
    ["RSA-8192 key", modulus(8192), F4],
    ["RSA-1024 key", modulus(1024), F4],
    ["RSA-2560 key", modulus(2560), F4],
  ])("a CSR with an %s is badCSR, never verified", async (description, n, e) => {
    const spki = rsaSpki(n, e);
    expect(inspectSpki(spki)).toMatchObject({ algorithm: null, description });
    const { verify, load, result } = await counting(() => parseCsr(csrWith(spki)));
    expect(result).toMatchObject({
      code: "ERR_BAD_CSR",
      message: `CSR carries an unsupported key (${description}); supported: ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072, rsa-4096`,
    });
    expect(problemFor(result).problem).toMatchObject({
      status: 400,
      type: "urn:ietf:params:acme:error:badCSR",
    });
    expect({ verify, load }).toEqual({ verify: 0, load: 0 });
  });

  it("reads the three RSA sizes Stint issues for, by exact bit length", () => {
    for (const bits of [2048, 3072, 4096]) {
      expect(inspectSpki(rsaSpki(modulus(bits), F4)).algorithm).toBe(`rsa-${bits}`);
      expect(inspectSpki(rsaSpki(modulus(bits - 1), F4)).algorithm).toBeNull();
    }
  });

  it.each([
    ["no numbers", der.sequence()],
    ["one number", der.sequence(der.unsignedInteger(modulus(2048)))],
    [
      "three numbers",
      der.sequence(der.unsignedInteger(modulus(2048)), der.unsignedInteger(F4), der.unsignedInteger(F4)),
    ],
    ["a negative modulus", der.sequence(der.tlv(der.Tag.INTEGER, modulus(2048)), der.unsignedInteger(F4))],
    [
      "a modulus with a needless zero octet",
      der.sequence(der.tlv(der.Tag.INTEGER, Buffer.from([0, 0x7f]), modulus(2048)), der.unsignedInteger(F4)),
    ],
    [
      "an exponent that is not an INTEGER",
      der.sequence(der.unsignedInteger(modulus(2048)), der.octetString(F4)),
    ],
  ])("an RSA key with %s is ERR_DER, never a crash", (_name, rsaPublicKey) => {
    const spki = der.sequence(
      der.sequence(der.oid("1.2.840.113549.1.1.1"), der.nullValue()),
      der.bitString(rsaPublicKey),
    );
    expect(() => inspectSpki(spki)).toThrow(expect.objectContaining({ code: "ERR_DER" }));
    expect(() => parseCsr(csrWith(spki))).toThrow(expect.objectContaining({ code: "ERR_BAD_CSR" }));
  });

  it("refuses an x5c leaf with exponent 3 before loading its key", async () => {
    // OpenSSL makes the key and certificate: a real leaf whose key breaks only the exponent bound.
    const dir = tempDir();
    const keyPath = join(dir, "e3.key");
    openssl([
      "genpkey",
      "-algorithm",
      "RSA",
      "-pkeyopt",
      "rsa_keygen_bits:2048",
      "-pkeyopt",
      "rsa_keygen_pubexp:3",
      "-out",
      keyPath,
    ]);
    const certPath = join(dir, "e3.der");
    openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      keyPath,
      "-subj",
      "/CN=leaf",
      "-days",
      "1",
      "-outform",
      "DER",
      "-out",
      certPath,
    ]);
    const leaf = readFileSync(certPath);
    const key = createPrivateKey(readFileSync(keyPath));
    const header = b64u(
      JSON.stringify({ alg: "RS256", x5c: [leaf.toString("base64")], nonce: "AAAA", url: URL_ }),
    );
    const payload = b64u("{}");
    const body = Buffer.from(
      JSON.stringify({
        protected: header,
        payload,
        signature: signJws("RS256", key, `${header}.${payload}`),
      }),
    );
    const deps: JwsVerifierDeps = {
      nonces: new NonceService({ ledger: new MemoryNonceLedger() }),
      lookupAccount: async () => null,
      maxBodyBytes: 64 * 1024,
    };
    const { verify, load, result } = await counting(() =>
      verifyJwsRequest({ contentType: "application/jose+json", body, url: URL_ }, deps, { allow: ["x5c"] }),
    );
    expect(result).toMatchObject({
      code: "ERR_BAD_PUBLIC_KEY",
      check: "key",
      message: `the x5c leaf certificate's key (RSA-2048 key with public exponent 3) is not accepted; ${ACCEPTED}`,
    });
    expect({ verify, load }).toEqual({ verify: 0, load: 0 });
  });

  it("keyAlgorithmOf holds CA and CLI keys to the same exponent", () => {
    const e3: KeyObject = generateKeyPairSync("rsa", { modulusLength: 2048, publicExponent: 3 }).publicKey;
    expect(() => keyAlgorithmOf(e3)).toThrow(
      expect.objectContaining({
        code: "ERR_POLICY_KEY",
        message: expect.stringContaining("RSA-2048 key with public exponent 3"),
      }),
    );
    expect(keyAlgorithmOf(generateKeyPairSync("rsa", { modulusLength: 4096 }).publicKey)).toBe("rsa-4096");
  });

  it("a real OpenSSL rsa-4096 CSR parses as rsa-4096, its signature checked once", async () => {
    const { der: csr } = opensslCsr(tempDir(), { keyType: "rsa-4096", sans: ["DNS:a.example.org"] });
    const { verify, result } = await counting(() => parseCsr(csr));
    expect(result).toMatchObject({ keyAlgorithm: "rsa-4096", keyDescription: "RSA-4096 key" });
    expect(verify).toBe(1);
  });
});
