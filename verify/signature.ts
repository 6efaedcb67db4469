import { constants, type KeyObject, verify } from "node:crypto";
import { Lru } from "../common/lru";
import * as der from "../formats/der";
import { importSpki } from "../formats/jose";
import type { CertificateFacts } from "../formats/x509";
import { type KeyType, type SignatureAlgorithm, signatureAlgorithmName } from "./algorithms";

/**
 * A certificate's signature checked over its own TBS bytes with
 * `crypto.verify`, and the keys that check it. Node's X509Certificate
 * costs more to build than the signature check itself (125–186 µs against
 * ~70 µs for P-256), and the strict reader (formats/x509.ts) has already
 * read everything the validator looks at, so the path validator never builds
 * one on its way to a verdict.
 */

/** How crypto.verify checks each algorithm, and which key types may sign with it. */
const SCHEMES: Record<SignatureAlgorithm, { hash: string | null; keys: readonly string[]; pss?: number }> = {
  "ecdsa-sha256": { hash: "sha256", keys: ["ec"] },
  "ecdsa-sha384": { hash: "sha384", keys: ["ec"] },
  "ecdsa-sha512": { hash: "sha512", keys: ["ec"] },
  ed25519: { hash: null, keys: ["ed25519"] },
  ed448: { hash: null, keys: ["ed448"] },
  "rsa-pkcs1-sha256": { hash: "sha256", keys: ["rsa"] },
  "rsa-pkcs1-sha384": { hash: "sha384", keys: ["rsa"] },
  "rsa-pkcs1-sha512": { hash: "sha512", keys: ["rsa"] },
  // The salt is as long as the hash: algorithms.ts names no other PSS parameters.
  "rsa-pss-sha256": { hash: "sha256", keys: ["rsa", "rsa-pss"], pss: 32 },
  "rsa-pss-sha384": { hash: "sha384", keys: ["rsa", "rsa-pss"], pss: 48 },
  "rsa-pss-sha512": { hash: "sha512", keys: ["rsa", "rsa-pss"], pss: 64 },
};

/**
 * Whether `child` carries a valid signature by `issuerKey` under the
 * algorithm it names. False for an algorithm without a name, a key of the
 * wrong type for it (crypto.verify would otherwise let an RSA key check a
 * signature labelled ECDSA), or a signature BIT STRING with unused bits.
 */
export function signatureVerifies(child: CertificateFacts, issuerKey: KeyObject): boolean {
  const name = signatureAlgorithmName(child.signatureAlgorithm, child.signatureParams);
  if (name === null) return false;
  const scheme = SCHEMES[name];
  if (!scheme.keys.includes(issuerKey.asymmetricKeyType ?? "")) return false;
  const raw = child.der;
  const [tbs, , bits] = der.children(raw, der.readTlv(raw, 0));
  const bitString = der.contents(raw, bits);
  if (bitString.length < 1 || bitString[0] !== 0) return false;
  const signature = bitString.subarray(1);
  const data = der.whole(raw, tbs);
  if (scheme.pss !== undefined) {
    return verify(
      scheme.hash,
      data,
      { key: issuerKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: scheme.pss },
      signature,
    );
  }
  if (scheme.keys[0] === "rsa")
    return verify(scheme.hash, data, { key: issuerKey, padding: constants.RSA_PKCS1_PADDING }, signature);
  return verify(scheme.hash, data, issuerKey, signature);
}

/**
 * Imported issuer keys by SPKI DER. A CA signs every leaf a service sees, so
 * its key is imported once, not once per new peer; the SPKI bytes name one
 * key exactly, so a hit can never be a different key.
 */
const KEYS = new Lru<KeyObject>(1024);

/** The KeyObject of an SPKI (throws what createPublicKey throws), imported at most once while cached. */
export function publicKeyOf(spki: Buffer): KeyObject {
  const id = spki.toString("latin1");
  let key = KEYS.get(id);
  if (!key) {
    key = importSpki(spki);
    KEYS.set(id, key);
  }
  return key;
}

/** SPKIs of one fixed DER shape each: the key type follows from the bytes, with no key to build. */
const FIXED_SHAPES: ReadonlyArray<{ prefix: Buffer; length: number; type: KeyType }> = [
  { prefix: hex("3059301306072a8648ce3d020106082a8648ce3d03010703420004"), length: 91, type: "ec-p256" },
  { prefix: hex("3076301006072a8648ce3d020106052b8104002203620004"), length: 120, type: "ec-p384" },
  { prefix: hex("30819b301006072a8648ce3d020106052b810400230381860004"), length: 158, type: "ec-p521" },
  { prefix: hex("302a300506032b6570032100"), length: 44, type: "ed25519" },
  { prefix: hex("3043300506032b6571033a00"), length: 69, type: "ed448" },
];

/**
 * The key type of an SPKI in one of the fixed shapes above, or null (RSA,
 * compressed points, anything odd: the caller imports the key to learn more).
 * The point itself is not checked here; a key that signs is imported, which
 * checks it is on its curve.
 */
export function fixedShapeKeyType(spki: Buffer): KeyType | null {
  for (const s of FIXED_SHAPES) {
    if (spki.length === s.length && spki.compare(s.prefix, 0, s.prefix.length, 0, s.prefix.length) === 0)
      return s.type;
  }
  return null;
}

function hex(text: string): Buffer {
  return Buffer.from(text, "hex");
}
