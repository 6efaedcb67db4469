import { hash } from "node:crypto";
import { StintError } from "../common/errors";
import { children, contents, decodeOid, expectTlv, readTlv, Tag } from "../formats/der";

/**
 * Facts about a SubjectPublicKeyInfo read straight from its DER, so the
 * issuance path need not build a KeyObject just to learn the key type.
 */

export type KeyAlgorithm = "ec-p256" | "ec-p384" | "ed25519" | "rsa-2048" | "rsa-3072";
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ec-p256",
  "ec-p384",
  "ed25519",
  "rsa-2048",
  "rsa-3072",
];

const EC_PUBLIC_KEY = "1.2.840.10045.2.1";
const CURVES: Record<string, KeyAlgorithm> = { "1.2.840.10045.3.1.7": "ec-p256", "1.3.132.0.34": "ec-p384" };
const ED25519 = "1.3.101.112";
const RSA = "1.2.840.113549.1.1.1";

export interface SpkiFacts {
  algorithm: KeyAlgorithm | null;
  /** Human description for errors when the algorithm is not one we issue for. */
  description: string;
  /** Contents of the subjectPublicKey BIT STRING, without the unused-bits octet. */
  publicKeyBits: Buffer;
}

export function inspectSpki(spki: Uint8Array): SpkiFacts {
  const outer = expectTlv(spki, 0, Tag.SEQUENCE, "SubjectPublicKeyInfo");
  if (outer.end !== spki.length) throw new StintError("ERR_DER", "SubjectPublicKeyInfo has trailing bytes");
  const [algId, bits] = children(spki, outer);
  if (!algId || !bits || bits.tag !== Tag.BIT_STRING) {
    throw new StintError("ERR_DER", "SubjectPublicKeyInfo is malformed");
  }
  const algParts = children(spki, algId);
  const algOid = decodeOid(contents(spki, algParts[0]));
  const bitContents = contents(spki, bits);
  if (bitContents.length < 2 || bitContents[0] !== 0)
    throw new StintError("ERR_DER", "public key bits are malformed");
  const publicKeyBits = bitContents.subarray(1);
  if (algOid === EC_PUBLIC_KEY) {
    const curve = algParts[1]?.tag === Tag.OID ? decodeOid(contents(spki, algParts[1])) : "none";
    return { algorithm: CURVES[curve] ?? null, description: `EC key on curve ${curve}`, publicKeyBits };
  }
  if (algOid === ED25519) return { algorithm: "ed25519", description: "Ed25519 key", publicKeyBits };
  if (algOid === RSA) {
    const rsaKey = expectTlv(publicKeyBits, 0, Tag.SEQUENCE, "RSAPublicKey");
    const modulus = contents(publicKeyBits, children(publicKeyBits, rsaKey)[0]);
    const size = (modulus[0] === 0 ? modulus.length - 1 : modulus.length) * 8;
    const algorithm = size === 2048 ? "rsa-2048" : size === 3072 ? "rsa-3072" : null;
    return { algorithm, description: `RSA-${size} key`, publicKeyBits };
  }
  return { algorithm: null, description: `key algorithm ${algOid}`, publicKeyBits };
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
