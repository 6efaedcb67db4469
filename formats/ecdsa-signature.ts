import { StintError } from "../common/errors";
import * as der from "./der";

/**
 * ECDSA signatures in their two spellings: X.509, CRLs and PKCS#11-to-DER
 * wrappers carry a DER Ecdsa-Sig-Value (SEQUENCE { r INTEGER, s INTEGER }),
 * JWS, WebCrypto and PKCS#11's C_Sign give r||s with each half the curve's
 * size (IEEE P1363). A CA key that answers in one spelling signs for the
 * other through these.
 */

/** r||s, each `size` bytes (32 for P-256, 48 for P-384), from a DER Ecdsa-Sig-Value. */
export function ecdsaDerToP1363(sig: Uint8Array, size: number): Buffer {
  const seq = der.expectTlv(sig, 0, der.Tag.SEQUENCE, "Ecdsa-Sig-Value");
  const parts = der.children(sig, seq);
  if (seq.end !== sig.length || parts.length !== 2) {
    throw new StintError("ERR_DER", "DER: an ECDSA signature is SEQUENCE { r, s }");
  }
  const out = Buffer.alloc(2 * size);
  parts.forEach((t, i) => {
    const value = der.unsignedIntegerValue(sig, t, i === 0 ? "r" : "s");
    if (value.length > size) throw new StintError("ERR_DER", "DER: an ECDSA signature half is too long");
    value.copy(out, (i + 1) * size - value.length);
  });
  return out;
}

/** The DER Ecdsa-Sig-Value of r||s (two equal halves). */
export function ecdsaP1363ToDer(sig: Uint8Array): Buffer {
  if (sig.length === 0 || sig.length % 2 !== 0) {
    throw new StintError("ERR_DER", "an r||s ECDSA signature has two equal halves");
  }
  const half = sig.length / 2;
  return der.sequence(der.unsignedInteger(sig.subarray(0, half)), der.unsignedInteger(sig.subarray(half)));
}
