import { StintError } from "../common/errors";

/**
 * Byte-level pieces of the feed and its envelope (docs/feed.md): unsigned
 * LEB128 varints and a bounds-checked reader whose every failure is a
 * StintError ERR_MALFORMED naming what was being read.
 */

export const malformed = (why: string): StintError => new StintError("ERR_MALFORMED", `feed: ${why}`);

/** Bytes of the unsigned LEB128 encoding of v (0 ≤ v ≤ 2^53 − 1). */
export function uvarintSize(v: number): number {
  let n = 1;
  for (let x = v; x >= 0x80; x = Math.floor(x / 0x80)) n++;
  return n;
}

export function uvarint(v: number): Buffer {
  const out: number[] = [];
  let x = v;
  while (x >= 0x80) {
    out.push((x % 0x80) | 0x80);
    x = Math.floor(x / 0x80);
  }
  out.push(x);
  return Buffer.from(out);
}

/** Reads a byte string front to back; never reads past `end`. */
export class ByteReader {
  private pos: number;

  constructor(
    private readonly buf: Uint8Array,
    start = 0,
    private readonly end = buf.length,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  get offset(): number {
    return this.pos;
  }

  byte(what: string): number {
    if (this.pos >= this.end) throw malformed(`truncated: ${what} missing at byte ${this.pos}`);
    return this.buf[this.pos++];
  }

  bytes(n: number, what: string): Buffer {
    if (n > this.remaining) {
      throw malformed(`truncated: ${what} needs ${n} bytes at byte ${this.pos}, ${this.remaining} left`);
    }
    const out = Buffer.from(this.buf.buffer, this.buf.byteOffset + this.pos, n);
    this.pos += n;
    return out;
  }

  /** Unsigned LEB128, minimally encoded, at most 8 bytes, at most 2^53 − 1. */
  uvarint(what: string): number {
    const at = this.pos;
    let v = 0;
    let scale = 1;
    for (let i = 0; ; i++) {
      if (i === 8) throw malformed(`${what} at byte ${at} is a varint longer than 8 bytes`);
      const b = this.byte(what);
      v += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) throw malformed(`${what} at byte ${at} is not minimally encoded`);
        break;
      }
      scale *= 0x80;
    }
    if (v > Number.MAX_SAFE_INTEGER) throw malformed(`${what} at byte ${at} exceeds 2^53 - 1`);
    return v;
  }

  /** A count of items each taking at least `minItemBytes`: refused before anything is allocated for them. */
  count(what: string, minItemBytes: number): number {
    const at = this.pos;
    const n = this.uvarint(what);
    if (n * minItemBytes > this.remaining) {
      throw malformed(`${what} ${n} at byte ${at} cannot fit in the ${this.remaining} bytes left`);
    }
    return n;
  }

  expectEnd(what: string): void {
    if (this.pos !== this.end) throw malformed(`${this.end - this.pos} trailing bytes after the ${what}`);
  }
}
