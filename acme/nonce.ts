import { createHmac, randomBytes, randomFillSync, timingSafeEqual } from "node:crypto";
import { StintError } from "../common/errors";
import { fromB64u } from "../formats/jose";

/**
 * Anti-replay nonces (RFC 8555 6.5). Issuing is stateless: a nonce is
 * `issuedAt (6 bytes, ms) || 16 random bytes || HMAC-SHA256 (first 16 bytes)`
 * in base64url, so the Replay-Nonce header on every response costs no store
 * write. Only consuming one records it, in a `NonceLedger` (the one seam a
 * replicated deployment swaps, together with a shared key). A restart with a
 * fresh random key invalidates every earlier nonce; clients retry on badNonce.
 */

/** Remembers consumed nonces until they expire. */
export interface NonceLedger {
  /**
   * Records `nonce` as used; false if it was already used, or if it has
   * already expired (the ledger forgets expired nonces, so it cannot vouch for them).
   */
  markUsed(nonce: string, expiresAtMs: number): Promise<boolean>;
}

/**
 * Exact for one process. The Map keeps insertion order, and every entry
 * expires at most one TTL after it was inserted (a nonce is consumed after it
 * was issued), so sweeping expired entries from the front bounds memory by
 * the consume rate × TTL, at O(1) amortized per call.
 */
export class MemoryNonceLedger implements NonceLedger {
  /** Compact key → expiry in whole seconds (a small integer, so no heap number per entry). */
  private readonly used = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Entries currently remembered (for tests and metrics). */
  get size(): number {
    return this.used.size;
  }

  async markUsed(nonce: string, expiresAtMs: number): Promise<boolean> {
    const now = this.now();
    this.sweep(now);
    const key = ledgerKey(nonce);
    if (expiresAtMs <= now || this.used.has(key)) return false;
    // Rounded up: remembered up to a second longer than needed, never shorter.
    this.used.set(key, Math.ceil(expiresAtMs / 1000));
    return true;
  }

  private sweep(now: number): void {
    // Stops at the first live entry; entries behind it go once it does (within one TTL).
    for (const [key, expiresAtSeconds] of this.used) {
      if (expiresAtSeconds * 1000 > now) break;
      this.used.delete(key);
    }
  }
}

/**
 * A nonce this service issues, remembered by its 16 MAC bytes as a one-byte
 * string: about 80 bytes an entry against 137 for the text, which matters at
 * a thousand requests a second times a five-minute lifetime. The MAC is
 * unique per nonce (it covers the time and random parts) and the text is
 * canonical base64url, so this is one key per nonce. Anything else is kept as is.
 */
function ledgerKey(nonce: string): string {
  if (nonce.length !== NONCE_LENGTH) return nonce;
  return Buffer.from(nonce, "base64url").toString("latin1", SIGNED_BYTES);
}

export interface NonceServiceOptions {
  ledger: NonceLedger;
  /** How long a nonce stays valid; default 5 minutes. */
  ttlMs?: number;
  /** HMAC key (≥ 32 bytes); random per process when absent. Replicas share one. */
  key?: Buffer;
  now?: () => number;
  /** Uniform in [0, 1); only drives the hostile rejection toggle, so it need not be a CSPRNG. */
  random?: () => number;
  /** Hostile test toggle: the share of VALID nonces refused with badNonce, as pebble does. 0 in production. */
  rejectShare?: number;
}

export const DEFAULT_NONCE_TTL_MS = 5 * 60_000;

const TIME_BYTES = 6;
const RANDOM_BYTES = 16;
const MAC_BYTES = 16;
const SIGNED_BYTES = TIME_BYTES + RANDOM_BYTES;
const NONCE_BYTES = SIGNED_BYTES + MAC_BYTES;
/** base64url length of NONCE_BYTES without padding. */
export const NONCE_LENGTH = Math.ceil((NONCE_BYTES * 4) / 3);
/** Random bytes drawn per refill: one CSPRNG call serves 256 nonces. */
const POOL_BYTES = RANDOM_BYTES * 256;

const RETRY = "retry with the nonce from this response's Replay-Nonce header";

function badNonce(message: string): StintError {
  return new StintError("ERR_BAD_NONCE", message, { check: "nonce" });
}

export class NonceService {
  readonly ttlMs: number;
  private readonly ledger: NonceLedger;
  private readonly key: Buffer;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly rejectShare: number;
  private readonly pool = Buffer.alloc(POOL_BYTES);
  private poolOffset = POOL_BYTES;

  constructor(opts: NonceServiceOptions) {
    this.ttlMs = opts.ttlMs ?? DEFAULT_NONCE_TTL_MS;
    if (!Number.isSafeInteger(this.ttlMs) || this.ttlMs <= 0)
      throw new StintError("ERR_CONFIG", "nonce TTL must be a positive whole number of milliseconds");
    if (opts.key !== undefined && opts.key.length < 32)
      throw new StintError("ERR_CONFIG", "nonce HMAC key must be at least 32 bytes");
    this.rejectShare = opts.rejectShare ?? 0;
    if (!(this.rejectShare >= 0 && this.rejectShare <= 1))
      throw new StintError("ERR_CONFIG", "nonce rejection share must be between 0 and 1");
    this.ledger = opts.ledger;
    this.key = Buffer.from(opts.key ?? randomBytes(32));
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  issue(): string {
    const nonce = Buffer.allocUnsafe(NONCE_BYTES);
    nonce.writeUIntBE(this.timestamp(), 0, TIME_BYTES);
    if (this.poolOffset === POOL_BYTES) {
      randomFillSync(this.pool);
      this.poolOffset = 0;
    }
    this.pool.copy(nonce, TIME_BYTES, this.poolOffset, this.poolOffset + RANDOM_BYTES);
    this.poolOffset += RANDOM_BYTES;
    this.mac(nonce.subarray(0, SIGNED_BYTES)).copy(nonce, SIGNED_BYTES, 0, MAC_BYTES);
    return nonce.toString("base64url");
  }

  /** Accepts a nonce once; throws ERR_BAD_NONCE saying why otherwise. */
  async consume(nonce: string): Promise<void> {
    const bytes = this.decode(nonce);
    const mac = this.mac(bytes.subarray(0, SIGNED_BYTES)).subarray(0, MAC_BYTES);
    if (!timingSafeEqual(mac, bytes.subarray(SIGNED_BYTES)))
      throw badNonce(`nonce was not issued by this CA (or the CA has restarted since); ${RETRY}`);
    const expiresAt = bytes.readUIntBE(0, TIME_BYTES) + this.ttlMs;
    const expired = () =>
      badNonce(`nonce has expired (nonces are valid for ${this.ttlMs / 1000} s); ${RETRY}`);
    if (this.timestamp() >= expiresAt) throw expired();
    // Refused before the ledger, so the hostile mode costs no store write.
    if (this.rejectShare > 0 && this.random() < this.rejectShare)
      throw badNonce(
        `nonce refused on purpose: this CA is in test mode and rejects a share of valid nonces; ${RETRY}`,
      );
    if (!(await this.ledger.markUsed(nonce, expiresAt))) {
      if (this.timestamp() >= expiresAt) throw expired();
      throw badNonce(`nonce has already been used; ${RETRY}`);
    }
  }

  private decode(nonce: unknown): Buffer {
    // Length first, so junk of any size costs nothing; fromB64u's canonical check makes the text unique per nonce.
    if (typeof nonce === "string" && nonce.length === NONCE_LENGTH) {
      try {
        return fromB64u(nonce, "nonce");
      } catch {
        // reported below
      }
    }
    throw badNonce(`nonce is malformed (not a nonce this CA issues); ${RETRY}`);
  }

  private mac(data: Buffer): Buffer {
    return createHmac("sha256", this.key).update(data).digest();
  }

  private timestamp(): number {
    return Math.floor(this.now());
  }
}
