import { malformed } from "./feed-bytes";

/**
 * Golomb coding of a sorted set of integers inside a window [lo, hi), the set
 * coder of the revocation feed (docs/feed.md). Each member is coded as its gap
 * from the previous one (the first from lo) with Golomb parameter m: the
 * quotient in unary (q one-bits, then a zero-bit), the remainder in truncated
 * binary. Bits are packed most significant first; the last byte is padded
 * with zero-bits. For a uniformly random subset with the optimal m this lands
 * within about half a percent of log2 C(U, R), the information-theoretic
 * minimum, and a reader needs only a bit reader and two integer formulas.
 *
 * Numbers are JavaScript doubles used as integers up to 2^53 − 1, so nothing
 * here uses 32-bit bitwise operators on values that can be wider.
 */

/**
 * The Golomb parameter the encoder uses for r members in a window of u
 * (Gallager and Van Voorhis 1975: optimal for a geometric gap distribution
 * with p = r/u): ceil(log(2 − p) / −log(1 − p)), at least 1 and at most u.
 * The reader does not recompute it: m is stored, so floating-point
 * differences between languages cannot change how a feed decodes.
 */
export function golombParameter(u: number, r: number): number {
  if (r <= 0 || u <= 0) return 1;
  const p = Math.min(1, r / u);
  if (p >= 1) return 1;
  const m = Math.ceil(Math.log(2 - p) / -Math.log1p(-p));
  return Math.max(1, Math.min(u, m));
}

/** b = ceil(log2 m) and the truncated-binary threshold t = 2^b − m: remainders below t take b − 1 bits. */
function remainderShape(m: number): { b: number; t: number } {
  let b = 0;
  let pow = 1;
  while (pow < m) {
    pow *= 2;
    b++;
  }
  return { b, t: pow - m };
}

/** Bits that coding `values` (sorted, unique, each ≥ lo) with parameter m takes, without writing them. */
export function golombBits(values: readonly number[], lo: number, m: number): number {
  const { b, t } = remainderShape(m);
  let bits = 0;
  let next = lo;
  for (const v of values) {
    const gap = v - next;
    const q = Math.floor(gap / m);
    const r = gap - q * m;
    bits += q + 1 + (b === 0 ? 0 : r < t ? b - 1 : b);
    next = v + 1;
  }
  return bits;
}

class BitWriter {
  readonly buf: Buffer;
  private byte = 0;
  private acc = 0;
  private filled = 0;

  constructor(bits: number) {
    this.buf = Buffer.alloc(Math.ceil(bits / 8));
  }

  bit(v: number): void {
    this.acc = (this.acc << 1) | v;
    if (++this.filled === 8) {
      this.buf[this.byte++] = this.acc;
      this.acc = 0;
      this.filled = 0;
    }
  }

  ones(n: number): void {
    for (let i = 0; i < n; i++) this.bit(1);
  }

  /** `n` bits of `v`, most significant first; v < 2^n ≤ 2^53. */
  bits(v: number, n: number): void {
    if (n <= 30) for (let i = n - 1; i >= 0; i--) this.bit((v >>> i) & 1);
    else for (let i = n - 1; i >= 0; i--) this.bit(Math.floor(v / 2 ** i) % 2);
  }

  done(): Buffer {
    if (this.filled > 0) this.buf[this.byte++] = this.acc << (8 - this.filled);
    if (this.byte !== this.buf.length)
      throw new Error(`BitWriter: wrote ${this.byte} of ${this.buf.length} bytes`);
    return this.buf;
  }
}

/** The Golomb stream of `values` (sorted, unique, each ≥ lo): exactly ceil(golombBits / 8) bytes. */
export function golombEncode(values: readonly number[], lo: number, m: number): Buffer {
  const { b, t } = remainderShape(m);
  const w = new BitWriter(golombBits(values, lo, m));
  let next = lo;
  for (const v of values) {
    const gap = v - next;
    const q = Math.floor(gap / m);
    const r = gap - q * m;
    w.ones(q);
    w.bit(0);
    if (b > 0) {
      if (r < t) w.bits(r, b - 1);
      else w.bits(r + t, b);
    }
    next = v + 1;
  }
  return w.done();
}

/**
 * Decodes `n` members of [lo, hi) from `stream` with parameter m. Strict: every
 * member must fall inside the window, the stream must end in its last byte,
 * and the padding bits must be zero. Work is bounded by the stream's length:
 * each unary bit and each remainder bit consumes input, and n is checked
 * against the bit count before the output is allocated.
 */
export function golombDecode(stream: Uint8Array, n: number, lo: number, hi: number, m: number): number[] {
  const totalBits = stream.length * 8;
  if (n > totalBits) throw malformed(`${n} indices cannot fit in ${stream.length} bytes`);
  if (!(m >= 1 && m <= hi - lo)) throw malformed(`Golomb parameter ${m} is outside [1, ${hi - lo}]`);
  const { b, t } = remainderShape(m);
  const out = new Array<number>(n);
  let pos = 0;
  const bit = (): number => {
    if (pos >= totalBits) throw malformed("set stream ends early");
    const v = (stream[pos >> 3] >> (7 - (pos & 7))) & 1;
    pos++;
    return v;
  };
  let next = lo;
  for (let i = 0; i < n; i++) {
    if (next >= hi) throw malformed("index beyond the window");
    // The largest quotient that still leaves the member inside the window.
    const maxQ = Math.floor((hi - 1 - next) / m);
    let q = 0;
    while (bit() === 1) {
      if (++q > maxQ) throw malformed("index beyond the window");
    }
    let r = 0;
    if (b > 0) {
      for (let k = 0; k < b - 1; k++) r = r * 2 + bit();
      if (r >= t) r = r * 2 + bit() - t;
    }
    const v = next + q * m + r;
    if (v >= hi) throw malformed("index beyond the window");
    out[i] = v;
    next = v + 1;
  }
  if (Math.ceil(pos / 8) !== stream.length) throw malformed("set stream has trailing bytes");
  for (; pos < totalBits; pos++) {
    if ((stream[pos >> 3] >> (7 - (pos & 7))) & 1) throw malformed("set stream padding is not zero");
  }
  return out;
}

/** log2 of the binomial coefficient C(u, r): the fewest bits any code can use for an r-subset of u. */
export function log2Binomial(u: number, r: number): number {
  if (r < 0 || r > u) return Number.NaN;
  const k = Math.min(r, u - r);
  // Sum of log2((u − k + i) / i): exact enough for reporting (error ≪ 1 bit at u = 10^6).
  let sum = 0;
  for (let i = 1; i <= k; i++) sum += Math.log2((u - k + i) / i);
  return sum;
}
