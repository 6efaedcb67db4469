import { hash } from "node:crypto";
import { StintError } from "../common/errors";
import { children, contents, decodeOid, expectTlv, readTlv, Tag, unsignedIntegerValue } from "../formats/der";
import { bitLength, describeRsaKey, rsaKeyInBounds } from "../formats/key-bounds";

/**
 * Facts about a SubjectPublicKeyInfo read straight from its DER, so the
 * issuance path need not build a KeyObject just to learn the key type.
 */

export type KeyAlgorithm = "ec-p256" | "ec-p384" | "ed25519" | "rsa-2048" | "rsa-3072" | "rsa-4096";
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ec-p256",
  "ec-p384",
  "ed25519",
  "rsa-2048",
  "rsa-3072",
  "rsa-4096",
];

const EC_PUBLIC_KEY = "1.2.840.10045.2.1";
const CURVES: Record<string, KeyAlgorithm> = { "1.2.840.10045.3.1.7": "ec-p256", "1.3.132.0.34": "ec-p384" };
/** OpenSSL's names for curves people try, so a refusal names the curve as their tools do. */
const CURVE_NAMES: Record<string, string> = {
  "1.2.840.10045.3.1.7": "prime256v1",
  "1.3.132.0.34": "secp384r1",
  "1.3.132.0.35": "secp521r1",
  "1.3.132.0.10": "secp256k1",
};
const ED25519 = "1.3.101.112";
const RSA = "1.2.840.113549.1.1.1";
const RSA_SIZES: Record<number, KeyAlgorithm> = { 2048: "rsa-2048", 3072: "rsa-3072", 4096: "rsa-4096" };

export interface SpkiFacts {
  /** Null for every key Stint does not issue for, RSA keys outside formats/key-bounds.ts included. */
  algorithm: KeyAlgorithm | null;
  /** Human description for errors when the algorithm is not one we issue for. */
  description: string;
  /** Contents of the subjectPublicKey BIT STRING, without the unused-bits octet. */
  publicKeyBits: Buffer;
}

const malformed = (why: string) => new StintError("ERR_DER", `SubjectPublicKeyInfo ${why}`);

/**
 * What key an SPKI holds, read from the DER alone: cheap and bounded, so it
 * runs before the key is loaded or any signature is checked with it. Total:
 * any structural problem is ERR_DER.
 */
export function inspectSpki(spki: Uint8Array): SpkiFacts {
  const outer = expectTlv(spki, 0, Tag.SEQUENCE, "SubjectPublicKeyInfo");
  if (outer.end !== spki.length) throw malformed("has trailing bytes");
  const parts = children(spki, outer);
  const [algId, bits] = parts;
  if (parts.length !== 2 || algId.tag !== Tag.SEQUENCE || bits.tag !== Tag.BIT_STRING)
    throw malformed("is not an algorithm and a BIT STRING");
  const algParts = children(spki, algId);
  if (algParts.length < 1 || algParts.length > 2 || algParts[0].tag !== Tag.OID)
    throw malformed("algorithm identifier is not an OID with optional parameters");
  const algOid = decodeOid(contents(spki, algParts[0]));
  const bitContents = contents(spki, bits);
  if (bitContents.length < 2 || bitContents[0] !== 0) throw malformed("has no public key bits");
  const publicKeyBits = bitContents.subarray(1);
  if (algOid === EC_PUBLIC_KEY) {
    const curve = algParts[1]?.tag === Tag.OID ? decodeOid(contents(spki, algParts[1])) : "none";
    const description = `EC key on curve ${CURVE_NAMES[curve] ?? curve}`;
    return { algorithm: CURVES[curve] ?? null, description, publicKeyBits };
  }
  if (algOid === ED25519) return { algorithm: "ed25519", description: "Ed25519 key", publicKeyBits };
  if (algOid === RSA) {
    const rsaKey = expectTlv(publicKeyBits, 0, Tag.SEQUENCE, "RSAPublicKey");
    const numbers = children(publicKeyBits, rsaKey);
    if (rsaKey.end !== publicKeyBits.length || numbers.length !== 2)
      throw malformed("RSA key is not exactly a modulus and an exponent");
    const modulus = unsignedIntegerValue(publicKeyBits, numbers[0], "RSA modulus");
    const exponent = unsignedIntegerValue(publicKeyBits, numbers[1], "RSA public exponent");
    const algorithm = rsaKeyInBounds(modulus, exponent) ? (RSA_SIZES[bitLength(modulus)] ?? null) : null;
    return { algorithm, description: describeRsaKey(modulus, exponent), publicKeyBits };
  }
  return { algorithm: null, description: `key of algorithm ${algOid}`, publicKeyBits };
}

/** The subjectPublicKey bits, read with as few steps as possible: the issuance path calls this per certificate. */
export function subjectPublicKeyBits(spki: Uint8Array): Buffer {
  const outer = expectTlv(spki, 0, Tag.SEQUENCE, "SubjectPublicKeyInfo");
  const algorithm = readTlv(spki, outer.valueStart, outer.end);
  const bits = expectTlv(spki, algorithm.end, Tag.BIT_STRING, "subjectPublicKey", outer.end);
  return Buffer.from(spki.buffer, spki.byteOffset + bits.valueStart + 1, bits.end - bits.valueStart - 1);
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Uint8Array): Buffer {
  return hash("sha1", subjectPublicKeyBits(spki), "buffer");
}
