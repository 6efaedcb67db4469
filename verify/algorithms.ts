import type { KeyObject } from "node:crypto";
import * as der from "../formats/der";

/**
 * Names for what a certificate is signed with and what key it carries, read
 * exactly: an AlgorithmIdentifier is named only when its parameters are the
 * ones its RFC prescribes (RFC 5758 ECDSA: absent; RFC 8410 EdDSA: absent;
 * RFC 4055 PKCS #1 v1.5: NULL or absent; RSASSA-PSS: one hash throughout and
 * a salt as long as the hash). Everything else, SHA-1 and MD5 included, has
 * no name, so no policy can allow it.
 */

export const SIGNATURE_ALGORITHMS = [
  "ecdsa-sha256",
  "ecdsa-sha384",
  "ecdsa-sha512",
  "ed25519",
  "ed448",
  "rsa-pkcs1-sha256",
  "rsa-pkcs1-sha384",
  "rsa-pkcs1-sha512",
  "rsa-pss-sha256",
  "rsa-pss-sha384",
  "rsa-pss-sha512",
] as const;
export type SignatureAlgorithm = (typeof SIGNATURE_ALGORITHMS)[number];

/** The CA's key names (ca/spki.ts), plus P-521 and Ed448; RSA by exact modulus size. */
export const KEY_TYPES = [
  "ec-p256",
  "ec-p384",
  "ec-p521",
  "ed25519",
  "ed448",
  "rsa-2048",
  "rsa-3072",
  "rsa-4096",
] as const;
export type KeyType = (typeof KEY_TYPES)[number];

const WITHOUT_PARAMS: Record<string, SignatureAlgorithm> = {
  "1.2.840.10045.4.3.2": "ecdsa-sha256",
  "1.2.840.10045.4.3.3": "ecdsa-sha384",
  "1.2.840.10045.4.3.4": "ecdsa-sha512",
  "1.3.101.112": "ed25519",
  "1.3.101.113": "ed448",
};

const PKCS1: Record<string, SignatureAlgorithm> = {
  "1.2.840.113549.1.1.11": "rsa-pkcs1-sha256",
  "1.2.840.113549.1.1.12": "rsa-pkcs1-sha384",
  "1.2.840.113549.1.1.13": "rsa-pkcs1-sha512",
};

const RSASSA_PSS = "1.2.840.113549.1.1.10";
const MGF1 = "1.2.840.113549.1.1.8";

/** Hash OID → [PSS algorithm name, hash length in octets]. */
const PSS_HASHES: Record<string, [SignatureAlgorithm, number]> = {
  "2.16.840.1.101.3.4.2.1": ["rsa-pss-sha256", 32],
  "2.16.840.1.101.3.4.2.2": ["rsa-pss-sha384", 48],
  "2.16.840.1.101.3.4.2.3": ["rsa-pss-sha512", 64],
};

/** Names for refused algorithms, so a reason says what it saw. */
const REFUSED_NAMES: Record<string, string> = {
  "1.2.840.113549.1.1.2": "md2WithRSAEncryption",
  "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
  "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
  "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
  "1.2.840.10045.4.1": "ecdsa-with-SHA1",
  "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
  "1.2.840.10040.4.3": "dsa-with-sha1",
  "2.16.840.1.101.3.4.3.2": "dsa-with-sha256",
  [RSASSA_PSS]: "RSASSA-PSS",
};

const NULL_DER = Buffer.from([der.Tag.NULL, 0]);

/** The algorithm's name, or null when its OID or parameters are not one this verifier accepts at all. */
export function signatureAlgorithmName(oid: string, params: Buffer | null): SignatureAlgorithm | null {
  if (WITHOUT_PARAMS[oid]) return params === null ? WITHOUT_PARAMS[oid] : null;
  if (PKCS1[oid]) return params === null || params.equals(NULL_DER) ? PKCS1[oid] : null;
  if (oid === RSASSA_PSS && params) return pssName(params);
  return null;
}

/** How a reason shows an algorithm: "sha1WithRSAEncryption (1.2.840.113549.1.1.5)". */
export function algorithmText(oid: string, params: Buffer | null): string {
  const named = REFUSED_NAMES[oid] ?? WITHOUT_PARAMS[oid] ?? PKCS1[oid];
  const shown = named ? `${named} (${oid})` : oid;
  const oddParams = named && named !== "RSASSA-PSS" && !REFUSED_NAMES[oid] && params !== null;
  if (oid === RSASSA_PSS)
    return `${shown} with parameters other than SHA-256/384/512 with matching MGF1 and salt`;
  return oddParams ? `${shown} with parameters it must not have` : shown;
}

/**
 * RSASSA-PSS-params (RFC 4055 3.1) as webpki and Go accept them: SHA-256,
 * -384 or -512 as the hash and as MGF1's hash, salt length = hash length,
 * trailerField omitted. Defaults (SHA-1) and mixed hashes get no name.
 */
function pssName(params: Buffer): SignatureAlgorithm | null {
  try {
    const seq = der.expectTlv(params, 0, der.Tag.SEQUENCE, "RSASSA-PSS-params");
    if (seq.end !== params.length) return null;
    const [hashField, mgfField, saltField, ...rest] = der.children(params, seq);
    if (
      rest.length > 0 ||
      hashField?.tag !== der.contextTag(0, true) ||
      mgfField?.tag !== der.contextTag(1, true) ||
      saltField?.tag !== der.contextTag(2, true)
    ) {
      return null;
    }
    const hash = hashOid(params, der.expectTlv(params, hashField.valueStart, der.Tag.SEQUENCE, "hash"));
    const mgf = der.expectTlv(params, mgfField.valueStart, der.Tag.SEQUENCE, "maskGenAlgorithm");
    const [mgfOid, mgfHash, ...mgfRest] = der.children(params, mgf);
    if (mgfRest.length > 0 || mgfOid?.tag !== der.Tag.OID || mgfHash?.tag !== der.Tag.SEQUENCE) return null;
    if (der.decodeOid(der.contents(params, mgfOid)) !== MGF1) return null;
    const known = hash === null ? undefined : PSS_HASHES[hash];
    if (!known || hashOid(params, mgfHash) !== hash) return null;
    const salt = der.expectTlv(params, saltField.valueStart, der.Tag.INTEGER, "saltLength");
    const saltBytes = der.contents(params, salt);
    return saltBytes.length === 1 && saltBytes[0] === known[1] ? known[0] : null;
  } catch {
    return null;
  }
}

/** A hash AlgorithmIdentifier's OID when its parameters are NULL or absent; null otherwise. */
function hashOid(buf: Buffer, alg: der.Tlv): string | null {
  const [id, params, ...rest] = der.children(buf, alg);
  if (!id || id.tag !== der.Tag.OID || rest.length > 0) return null;
  if (params && !der.whole(buf, params).equals(NULL_DER)) return null;
  return der.decodeOid(der.contents(buf, id));
}

const CURVES: Record<string, KeyType> = {
  prime256v1: "ec-p256",
  secp384r1: "ec-p384",
  secp521r1: "ec-p521",
};

/**
 * The key's type in KEY_TYPES' vocabulary when it is one, or a description
 * of what it is ("dsa-2048", "ec-prime192v1", "rsa-1024") for a reason.
 */
export function keyTypeOf(key: KeyObject): { type: KeyType | null; text: string } {
  const kind = key.asymmetricKeyType ?? "unknown";
  const details = key.asymmetricKeyDetails ?? {};
  let text: string;
  if (kind === "ec")
    text = details.namedCurve
      ? (CURVES[details.namedCurve] ?? `ec-${details.namedCurve}`)
      : "ec with explicit curve parameters";
  else if (kind === "rsa") {
    text = `rsa-${details.modulusLength ?? 0}`;
    // An even or tiny public exponent is not an RSA key anyone can rely on.
    const e = details.publicExponent ?? 0n;
    if (e < 3n || e % 2n === 0n) return { type: null, text: `${text} with public exponent ${e}` };
  } else if (kind === "rsa-pss" || kind === "dsa") text = `${kind}-${details.modulusLength ?? 0}`;
  else text = kind;
  const type = (KEY_TYPES as readonly string[]).includes(text) ? (text as KeyType) : null;
  return { type, text };
}
