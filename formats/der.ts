import { StintError } from "../common/errors";

/**
 * A minimal DER (X.690) writer and reader: just what certificates, CSRs, CRLs
 * and the feed need. Hand-rolled because the issuance hot path builds a
 * certificate in microseconds, where a general ASN.1 object model costs about
 * a millisecond.
 */

export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Context-specific tag number n: constructed (explicit wrappers, [0] attributes) or primitive (implicit strings). */
export const contextTag = (n: number, constructed: boolean): number => (constructed ? 0xa0 : 0x80) | n;

// ---------- writing ----------

function lengthBytes(len: number): Buffer {
  if (len < 0x80) return Buffer.from([len]);
  if (len < 0x100) return Buffer.from([0x81, len]);
  if (len < 0x10000) return Buffer.from([0x82, len >> 8, len & 0xff]);
  if (len < 0x1000000) return Buffer.from([0x83, len >> 16, (len >> 8) & 0xff, len & 0xff]);
  throw new StintError("ERR_DER", `DER value of ${len} bytes is too long`);
}

/** Header (tag + length) for a value of `len` content bytes. */
export function header(tag: number, len: number): Buffer {
  const l = lengthBytes(len);
  const out = Buffer.allocUnsafe(1 + l.length);
  out[0] = tag;
  l.copy(out, 1);
  return out;
}

/** Bytes taken by the tag and length of a value of `len` content bytes. */
export function headerSize(len: number): number {
  return len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : 5;
}

/**
 * Writes into one preallocated buffer, for hot paths that know every length
 * up front: one allocation per structure instead of one per TLV.
 */
export class DerWriter {
  readonly buf: Buffer;
  private pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  header(tag: number, len: number): this {
    const b = this.buf;
    b[this.pos++] = tag;
    if (len < 0x80) b[this.pos++] = len;
    else if (len < 0x100) {
      b[this.pos++] = 0x81;
      b[this.pos++] = len;
    } else if (len < 0x10000) {
      b[this.pos++] = 0x82;
      b[this.pos++] = len >> 8;
      b[this.pos++] = len & 0xff;
    } else {
      b[this.pos++] = 0x83;
      b[this.pos++] = len >> 16;
      b[this.pos++] = (len >> 8) & 0xff;
      b[this.pos++] = len & 0xff;
    }
    return this;
  }

  bytes(data: Uint8Array): this {
    this.buf.set(data, this.pos);
    this.pos += data.length;
    return this;
  }

  byte(value: number): this {
    this.buf[this.pos++] = value;
    return this;
  }

  /** The written buffer; throws if the precomputed size was wrong, which would be a bug in the caller. */
  done(): Buffer {
    if (this.pos !== this.buf.length)
      throw new Error(`DerWriter: wrote ${this.pos} of ${this.buf.length} bytes`);
    return this.buf;
  }
}

export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  const len = content.reduce((n, c) => n + c.length, 0);
  return Buffer.concat([header(tag, len), ...content], len + lengthBytes(len).length + 1);
}

export const sequence = (...items: Uint8Array[]): Buffer => tlv(Tag.SEQUENCE, ...items);
export const set = (...items: Uint8Array[]): Buffer => tlv(Tag.SET, ...items);
export const octetString = (b: Uint8Array): Buffer => tlv(Tag.OCTET_STRING, b);
export const bitString = (b: Uint8Array): Buffer => tlv(Tag.BIT_STRING, Buffer.from([0]), b);
export const utf8String = (s: string): Buffer => tlv(Tag.UTF8_STRING, Buffer.from(s, "utf8"));
export const ia5String = (s: string): Buffer => tlv(Tag.IA5_STRING, Buffer.from(s, "ascii"));
export const booleanTrue = (): Buffer => Buffer.from([Tag.BOOLEAN, 1, 0xff]);
export const nullValue = (): Buffer => Buffer.from([Tag.NULL, 0]);
export const explicit = (n: number, inner: Uint8Array): Buffer => tlv(contextTag(n, true), inner);

/** INTEGER from unsigned big-endian bytes, with the sign pad DER needs. */
export function unsignedInteger(bytes: Uint8Array): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const trimmed = bytes.subarray(i);
  return trimmed[0] & 0x80 ? tlv(Tag.INTEGER, Buffer.from([0]), trimmed) : tlv(Tag.INTEGER, trimmed);
}

export function smallInteger(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new StintError("ERR_DER", `bad INTEGER ${n}`);
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return unsignedInteger(b);
}

export function oid(dotted: string): Buffer {
  const parts = dotted.split(".").map(Number);
  const bytes: number[] = [];
  // The first two arcs share one base-128 subidentifier (X.690 8.19.4).
  for (const p of [parts[0] * 40 + parts[1], ...parts.slice(2)]) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(Tag.OID, Buffer.from(bytes));
}

const pad2 = (n: number): string => (n < 10 ? "0" : "") + n;

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Zulu. */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const rest =
    pad2(d.getUTCMonth() + 1) +
    pad2(d.getUTCDate()) +
    pad2(d.getUTCHours()) +
    pad2(d.getUTCMinutes()) +
    pad2(d.getUTCSeconds()) +
    "Z";
  if (y >= 1950 && y < 2050) return tlv(Tag.UTC_TIME, Buffer.from(pad2(y % 100) + rest, "ascii"));
  return tlv(Tag.GENERALIZED_TIME, Buffer.from(String(y).padStart(4, "0") + rest, "ascii"));
}

// ---------- reading ----------

export interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the first content byte. */
  valueStart: number;
  /** Offset just past the content. */
  end: number;
}

/** Reads one TLV at `offset`, strictly: definite lengths only, minimal length encoding, within `limit`. */
export function readTlv(buf: Uint8Array, offset: number, limit = buf.length): Tlv {
  if (offset + 2 > limit) throw new StintError("ERR_DER", "DER: truncated value");
  const tag = buf[offset];
  if ((tag & 0x1f) === 0x1f) throw new StintError("ERR_DER", "DER: multi-byte tags are not supported");
  let len = buf[offset + 1];
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3) throw new StintError("ERR_DER", "DER: unsupported length encoding");
    if (p + n > limit) throw new StintError("ERR_DER", "DER: truncated length");
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | buf[p + i];
    if (len < 0x80 || (n > 1 && len < 1 << (8 * (n - 1)))) {
      throw new StintError("ERR_DER", "DER: length is not minimally encoded");
    }
    p += n;
  }
  if (p + len > limit) throw new StintError("ERR_DER", "DER: value runs past its container");
  return { tag, start: offset, valueStart: p, end: p + len };
}

/** Reads a TLV and insists on its tag. */
export function expectTlv(
  buf: Uint8Array,
  offset: number,
  tag: number,
  what: string,
  limit = buf.length,
): Tlv {
  const t = readTlv(buf, offset, limit);
  if (t.tag !== tag) {
    throw new StintError(
      "ERR_DER",
      `DER: ${what}: expected tag 0x${tag.toString(16)}, found 0x${t.tag.toString(16)}`,
    );
  }
  return t;
}

/** The direct children of a constructed value. */
export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let p = parent.valueStart; p < parent.end; ) {
    const t = readTlv(buf, p, parent.end);
    out.push(t);
    p = t.end;
  }
  return out;
}

export const contents = (buf: Uint8Array, t: Tlv): Buffer =>
  Buffer.from(buf.buffer, buf.byteOffset + t.valueStart, t.end - t.valueStart);
export const whole = (buf: Uint8Array, t: Tlv): Buffer =>
  Buffer.from(buf.buffer, buf.byteOffset + t.start, t.end - t.start);

/**
 * The value of a non-negative INTEGER as minimal unsigned big-endian bytes
 * (the DER sign octet removed; zero is empty). ERR_DER for a negative or
 * non-minimal encoding, so two spellings of one number cannot both pass.
 */
export function unsignedIntegerValue(buf: Uint8Array, t: Tlv, what: string): Buffer {
  if (t.tag !== Tag.INTEGER) throw new StintError("ERR_DER", `DER: ${what} is not an INTEGER`);
  const c = contents(buf, t);
  if (c.length === 0) throw new StintError("ERR_DER", `DER: ${what} is an empty INTEGER`);
  if (c[0] & 0x80) throw new StintError("ERR_DER", `DER: ${what} is negative`);
  if (c.length > 1 && c[0] === 0 && !(c[1] & 0x80))
    throw new StintError("ERR_DER", `DER: ${what} is not minimally encoded`);
  return c[0] === 0 ? c.subarray(1) : c;
}

export function decodeOid(bytes: Uint8Array): string {
  if (bytes.length === 0 || bytes[bytes.length - 1] & 0x80)
    throw new StintError("ERR_DER", "DER: malformed OID");
  const subids: number[] = [];
  let v = 0;
  for (const b of bytes) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      subids.push(v);
      v = 0;
    }
  }
  const first = subids[0];
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...subids.slice(1)].join(".");
}

export function decodeTime(buf: Uint8Array, t: Tlv): Date {
  const s = Buffer.from(contents(buf, t)).toString("ascii");
  const m =
    t.tag === Tag.UTC_TIME
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
      : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m || (t.tag !== Tag.UTC_TIME && t.tag !== Tag.GENERALIZED_TIME)) {
    throw new StintError("ERR_DER", `DER: bad time "${s}"`);
  }
  let year = Number(m[1]);
  if (t.tag === Tag.UTC_TIME) year += year < 50 ? 2000 : 1900;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

/**
 * The three parts of an X.509 SIGNED{} structure (a certificate, a CRL):
 * to-be-signed, signatureAlgorithm, signatureValue, filling the whole input.
 * `fail` throws in the calling reader's own words.
 */
export function signedParts(
  raw: Buffer,
  names: { outer: string; noun: string; shape: string },
  fail: (message: string) => never,
): [Tlv, Tlv, Tlv] {
  const whole = expectTlv(raw, 0, Tag.SEQUENCE, names.outer);
  if (whole.end !== raw.length) fail(`trailing bytes after ${names.noun}`);
  const [tbs, alg, bits, ...rest] = children(raw, whole);
  if (
    rest.length > 0 ||
    tbs?.tag !== Tag.SEQUENCE ||
    alg?.tag !== Tag.SEQUENCE ||
    bits?.tag !== Tag.BIT_STRING
  ) {
    fail(names.shape);
  }
  return [tbs, alg, bits];
}
