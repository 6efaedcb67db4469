import { type KeyObject, sign } from "node:crypto";
import { StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import { ecdsaDerToP1363 } from "../formats/ecdsa-signature";
import {
  ensureJwtKeys,
  expiredRetired,
  type JwtBundleKey,
  type JwtKeyContext,
  type JwtKeyRecord,
  jwtBundleKeys,
  openActiveJwtKey,
  pruneJwtKeys,
} from "./jwt-keys";
import type { CaKey } from "./key-backend";

/**
 * Signs JWT-SVIDs (SPIFFE JWT-SVID standard): ES256 over
 * base64url(header).base64url(claims), header {alg, kid, typ}, claims
 * {sub: SPIFFE ID, aud, exp, iat}. The key is the ring's active one
 * (ca/jwt-keys.ts): a key file signs at once, a token key (keys.backend
 * pkcs11) through C_Sign, answering later. verify/jwt-svid.ts checks what
 * this makes.
 */

export const DEFAULT_JWT_MAX_TTL_MS = 5 * 60 * 1000;
/** Audiences per token and their length: enough for any real relying party, bounded for the log and the token. */
const MAX_AUDIENCES = 16;
const MAX_AUDIENCE_LENGTH = 512;

export interface JwtSvidRequest {
  spiffeId: string;
  audience: readonly string[];
  /** Wanted lifetime; at most (and by default) maxTtl. */
  ttlMs?: number;
  now: Date;
}

export interface SignedJwtSvid {
  token: string;
  kid: string;
  expiresAt: Date;
}

/** The audience list of a request: 1..16 non-empty strings without control characters. */
export function parseAudience(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_AUDIENCES) {
    throw new StintError(
      "ERR_MALFORMED",
      `audience must be a list of 1 to ${MAX_AUDIENCES} strings: a JWT-SVID without an audience is refused`,
    );
  }
  for (const a of value) {
    if (
      typeof a !== "string" ||
      a.length === 0 ||
      a.length > MAX_AUDIENCE_LENGTH ||
      /[\u0000-\u001f]/.test(a)
    ) {
      throw new StintError(
        "ERR_MALFORMED",
        `each audience must be a non-empty string of at most ${MAX_AUDIENCE_LENGTH} printable characters`,
      );
    }
  }
  return [...new Set(value as string[])];
}

const b64u = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

/** What ES256 signs for one token (header.claims), and when the token expires. */
function signingInput(
  kid: string,
  maxTtlMs: number,
  req: JwtSvidRequest,
): { input: string; expiresAt: Date } {
  const ttl = Math.min(req.ttlMs ?? maxTtlMs, maxTtlMs);
  const iat = Math.floor(req.now.getTime() / 1000);
  const exp = Math.floor((req.now.getTime() + ttl) / 1000);
  const input = `${b64u({ alg: "ES256", kid, typ: "JWT" })}.${b64u({ sub: req.spiffeId, aud: req.audience, exp, iat })}`;
  return { input, expiresAt: new Date(exp * 1000) };
}

/** Signs one token with `key`; pure apart from the signature's randomness. */
export function signJwtSvid(
  key: KeyObject,
  kid: string,
  maxTtlMs: number,
  req: JwtSvidRequest,
): SignedJwtSvid {
  const { input, expiresAt } = signingInput(kid, maxTtlMs, req);
  const signature = sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  return { token: `${input}.${signature.toString("base64url")}`, kid, expiresAt };
}

/** P-256 r||s halves: a JWS carries r||s (RFC 7518 §3.4), a token's C_Sign answers DER through its CaKey. */
const ES256_HALF = 32;

/** Signs one token with a key that never leaves its token: a CaKey answers a DER signature, later. */
export async function signJwtSvidWith(
  key: CaKey,
  kid: string,
  maxTtlMs: number,
  req: JwtSvidRequest,
): Promise<SignedJwtSvid> {
  const { input, expiresAt } = signingInput(kid, maxTtlMs, req);
  const der = await key.sign("sha256", Buffer.from(input));
  const signature = ecdsaDerToP1363(der, ES256_HALF);
  return { token: `${input}.${signature.toString("base64url")}`, kid, expiresAt };
}

export interface JwtSvidServiceOptions extends Omit<JwtKeyContext, "now"> {
  maxTtlMs: number;
  log: Logger;
}

/**
 * What the server holds: the ring as last read and the active key, re-read
 * by refresh() when a rotation step changed the issuers (Authority.onIssuersChanged).
 */
export class JwtSvidService {
  private ring: JwtKeyRecord[] = [];
  private active: { kid: string; key: CaKey } | null = null;

  private constructor(private readonly opts: JwtSvidServiceOptions) {}

  /** Reads the ring (ensureJwtKeys must have made it) and loads its active key. */
  static async open(opts: JwtSvidServiceOptions): Promise<JwtSvidService> {
    const service = new JwtSvidService(opts);
    await service.refresh(new Date());
    return service;
  }

  get maxTtlMs(): number {
    return this.opts.maxTtlMs;
  }

  private context(now: Date): JwtKeyContext {
    const { store, dataDir, passphrase, keys } = this.opts;
    return { store, dataDir, passphrase, now, keys };
  }

  /** Re-reads the ring, drops retired keys past their last token, and loads a newly active key. */
  async refresh(now: Date): Promise<void> {
    const ring = await pruneJwtKeys(this.context(now), this.opts.maxTtlMs);
    const activeKid = ring.find((k) => k.state === "active")?.kid;
    if (activeKid !== this.active?.kid) {
      this.active = await openActiveJwtKey(ring, this.opts);
      this.opts.log.info("JWT-SVID signing key in use", { kid: this.active.kid });
    }
    this.ring = ring;
  }

  /** The keys /bundle.json publishes now; a retired key past its last token is dropped first (bumping the sequence). */
  async bundleKeys(now: Date): Promise<JwtBundleKey[]> {
    if (this.ring.some((k) => expiredRetired(k, now, this.opts.maxTtlMs))) {
      this.ring = await pruneJwtKeys(this.context(now), this.opts.maxTtlMs);
    }
    return jwtBundleKeys(this.ring, now, this.opts.maxTtlMs);
  }

  /** Synchronous with a key file (as before key backends); a token key answers a promise. */
  sign(req: JwtSvidRequest): SignedJwtSvid | Promise<SignedJwtSvid> {
    if (!this.active) throw new StintError("ERR_NO_ACTIVE_ISSUER", "no active JWT-SVID signing key");
    const { key, kid } = this.active;
    if (key.privateKey) return signJwtSvid(key.privateKey, kid, this.opts.maxTtlMs, req);
    return signJwtSvidWith(key, kid, this.opts.maxTtlMs, req);
  }
}

/** At server start: makes the key ring if this CA has none yet, then opens the service on it. */
export async function startJwtSvids(opts: JwtSvidServiceOptions): Promise<JwtSvidService> {
  const { store, dataDir, passphrase, keys } = opts;
  await ensureJwtKeys({ store, dataDir, passphrase, now: new Date(), keys });
  return JwtSvidService.open(opts);
}
