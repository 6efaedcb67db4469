import { generateKeyPairSync } from "node:crypto";
import {
  algorithmForKey,
  b64u,
  exportJwk,
  flattenedJws,
  fromB64u,
  importJwk,
  type JwsAlgorithm,
  jwkThumbprint,
  verifyJwsSignature,
} from "../../formats/jose";
import vector from "../vectors/jwk-thumbprint.json";

const keys: Record<JwsAlgorithm, ReturnType<typeof generateKeyPairSync>> = {
  ES256: generateKeyPairSync("ec", { namedCurve: "P-256" }),
  ES384: generateKeyPairSync("ec", { namedCurve: "P-384" }),
  EdDSA: generateKeyPairSync("ed25519"),
  RS256: generateKeyPairSync("rsa", { modulusLength: 2048 }),
};

it("computes the RFC 7638 example thumbprint", () => {
  expect(jwkThumbprint(importJwk(vector.jwk))).toBe(vector.thumbprint);
});

it.each(Object.keys(keys) as JwsAlgorithm[])(
  "signs and verifies %s, and only with the matching key type",
  (alg) => {
    const { privateKey, publicKey } = keys[alg];
    expect(algorithmForKey(publicKey)).toBe(alg);
    const jws = flattenedJws(privateKey, { nonce: "n", url: "https://ca/x" }, { hello: "world" });
    const input = `${jws.protected}.${jws.payload}`;
    const sig = fromB64u(jws.signature, "signature");
    const roundTripped = importJwk(exportJwk(publicKey));
    expect(verifyJwsSignature(alg, roundTripped, input, sig)).toBe(true);
    expect(verifyJwsSignature(alg, roundTripped, input + "x", sig)).toBe(false);
    for (const other of Object.keys(keys) as JwsAlgorithm[]) {
      if (other !== alg) expect(verifyJwsSignature(other, roundTripped, input, sig)).toBe(false);
    }
    expect(JSON.parse(fromB64u(jws.protected, "protected").toString())).toEqual({
      alg,
      nonce: "n",
      url: "https://ca/x",
    });
  },
);

it("refuses weak RSA keys for RS256 and curves Stint does not accept", () => {
  const small = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey;
  expect(algorithmForKey(small)).toBeNull();
  const k256 = generateKeyPairSync("ec", { namedCurve: "secp256k1" }).publicKey;
  expect(algorithmForKey(k256)).toBeNull();
});

it("base64url is strict", () => {
  expect(fromB64u(b64u("hi?"), "x").toString()).toBe("hi?");
  for (const bad of ["aGk=", "a+b/", "aGk ", "a", "aR"]) {
    expect(() => fromB64u(bad, "payload")).toThrow(
      expect.objectContaining({
        code: "ERR_JOSE",
        message: expect.stringMatching(/^payload is not (canonical )?base64url$/),
      }),
    );
  }
  expect(() => fromB64u(42, "payload")).toThrow("payload is not base64url");
});

it("importJwk refuses private keys, secrets and junk", () => {
  const priv = keys.ES256.privateKey.export({ format: "jwk" });
  expect(() => importJwk(priv)).toThrow("jwk must be a public key (it carries private or secret parts)");
  expect(() => importJwk({ kty: "oct", k: "AAAA" })).toThrow(/private or secret/);
  expect(() => importJwk({ kty: "EC", crv: "P-256", x: "AA", y: "AA" })).toThrow(
    "jwk is not a valid public key",
  );
  expect(() => importJwk("nope")).toThrow("jwk is not an object");
  expect(() => importJwk({ kty: "XYZ" })).toThrow("jwk key type XYZ is not supported");
});
