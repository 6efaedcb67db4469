import { StintError } from "../common/errors";

/**
 * Serial number layout (docs/serial-numbers.md), shared by the CA that writes
 * serials and the verifiers and feed that read them:
 *
 *   byte 0       0x01   layout version; also keeps the INTEGER positive with no pad byte
 *   bytes 1..8   64 bits of CSPRNG output (unpredictable serials, CA/B BR 7.1)
 *   bytes 9..16  the issuer's sequence index, unsigned big-endian
 *
 * 17 content octets, within RFC 5280's 20-octet limit. The index is dense per
 * issuer, so an issuer's revoked set is a subset of an integer window.
 */

export const SERIAL_LAYOUT_V1 = 0x01;
export const SERIAL_LENGTH = 17;
/** Sequences are JavaScript numbers; 2^53 issuances per issuer is beyond any lifetime. */
export const MAX_SEQUENCE = Number.MAX_SAFE_INTEGER;

export function encodeSerial(
  random8: Uint8Array,
  sequence: number,
  out = Buffer.allocUnsafe(SERIAL_LENGTH),
): Buffer {
  if (random8.length !== 8) throw new StintError("ERR_DER", "serial: need exactly 8 random bytes");
  if (!Number.isSafeInteger(sequence) || sequence < 0) {
    throw new StintError("ERR_DER", `serial: sequence ${sequence} out of range`);
  }
  out[0] = SERIAL_LAYOUT_V1;
  out.set(random8, 1);
  out.writeUInt32BE(Math.floor(sequence / 0x100000000), 9);
  out.writeUInt32BE(sequence >>> 0, 13);
  return out;
}

export interface DecodedSerial {
  random: Buffer;
  sequence: number;
}

/** Decodes a serial's content octets; null when it is not in a layout this code knows. */
export function decodeSerial(serial: Uint8Array): DecodedSerial | null {
  if (serial.length !== SERIAL_LENGTH || serial[0] !== SERIAL_LAYOUT_V1) return null;
  const b = Buffer.from(serial.buffer, serial.byteOffset, serial.length);
  const hi = b.readUInt32BE(9);
  if (hi > 0x1fffff) return null;
  return { random: Buffer.from(b.subarray(1, 9)), sequence: hi * 0x100000000 + b.readUInt32BE(13) };
}

export const serialHex = (serial: Uint8Array): string => Buffer.from(serial).toString("hex");

export function sequenceOfSerialHex(hex: string): number | null {
  if (!/^[0-9a-f]+$/i.test(hex) || hex.length % 2 !== 0) return null;
  return decodeSerial(Buffer.from(hex, "hex"))?.sequence ?? null;
}
