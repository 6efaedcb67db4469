/**
 * The bounds a client's public key must meet before Stint spends anything on
 * it. Checking a signature costs time set by the key's own numbers (an RSA
 * verification is one exponentiation by the public exponent modulo the
 * modulus), and the client chooses both; so keys are refused by their shape,
 * read from the encoding, before any signature is checked. JWS keys
 * (formats/jose.ts) and certificate and CSR keys (ca/spki.ts) share these.
 */

export const RSA_MIN_BITS = 2048;
export const RSA_MAX_BITS = 4096;
/** F4, the exponent every common key generator uses; any other is refused rather than priced. */
export const RSA_PUBLIC_EXPONENT = 65537n;
const RSA_EXPONENT = Buffer.from([0x01, 0x00, 0x01]);

/** What a refusal tells the client to use instead. */
export const ACCEPTED_KEYS = `P-256, P-384, Ed25519 or RSA of ${RSA_MIN_BITS} to ${RSA_MAX_BITS} bits with public exponent 65537`;

/** Bits in an unsigned big-endian integer given without leading zero octets (0 for the empty one). */
export function bitLength(value: Uint8Array): number {
  if (value.length === 0) return 0;
  return (value.length - 1) * 8 + (32 - Math.clz32(value[0]));
}

/** Modulus and exponent as minimal unsigned big-endian bytes (no leading zero octet). */
export function rsaKeyInBounds(modulus: Uint8Array, exponent: Uint8Array): boolean {
  const bits = bitLength(modulus);
  return bits >= RSA_MIN_BITS && bits <= RSA_MAX_BITS && RSA_EXPONENT.equals(exponent);
}

/** "RSA-2048 key", naming the exponent when it is not 65537; short whatever the numbers' size. */
export function describeRsaKey(modulus: Uint8Array, exponent: Uint8Array): string {
  const key = `RSA-${bitLength(modulus)} key`;
  if (RSA_EXPONENT.equals(exponent)) return key;
  if (exponent.length > 6) return `${key} with a ${bitLength(exponent)}-bit public exponent`;
  const value = exponent.length === 0 ? 0 : Buffer.from(exponent).readUIntBE(0, exponent.length);
  return `${key} with public exponent ${value}`;
}
