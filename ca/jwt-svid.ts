import { type KeyObject, sign } from "node:crypto";
import { StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import {
  ensureJwtKeys,
  expiredRetired,
  type JwtBundleKey,
  type JwtKeyContext,
  type JwtKeyRecord,
  jwtBundleKeys,
  loadActiveJwtKey,
  pruneJwtKeys,
} from "./jwt-keys";

/**
 * Signs JWT-SVIDs (SPIFFE JWT-SVID standard): ES256 over
 * base64url(header).base64url(claims), header {alg, kid, typ}, claims
 * {sub: SPIFFE ID, aud, exp, iat}. The key is the ring's active one
 * (ca/jwt-keys.ts); verify/jwt-svid.ts checks what this makes.
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

/** Signs one token with `key`; pure apart from the signature's randomness. */
export function signJwtSvid(
  key: KeyObject,
  kid: string,
  maxTtlMs: number,
  req: JwtSvidRequest,
): SignedJwtSvid {
  const ttl = Math.min(req.ttlMs ?? maxTtlMs, maxTtlMs);
  const iat = Math.floor(req.now.getTime() / 1000);
  const exp = Math.floor((req.now.getTime() + ttl) / 1000);
  const input = `${b64u({ alg: "ES256", kid, typ: "JWT" })}.${b64u({ sub: req.spiffeId, aud: req.audience, exp, iat })}`;
  const signature = sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  return { token: `${input}.${signature.toString("base64url")}`, kid, expiresAt: new Date(exp * 1000) };
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
  private active: { kid: string; key: KeyObject } | null = null;

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
    const { store, dataDir, passphrase } = this.opts;
    return { store, dataDir, passphrase, now };
  }

  /** Re-reads the ring, drops retired keys past their last token, and loads a newly active key. */
  async refresh(now: Date): Promise<void> {
    const ring = await pruneJwtKeys(this.context(now), this.opts.maxTtlMs);
    const activeKid = ring.find((k) => k.state === "active")?.kid;
    if (activeKid !== this.active?.kid) {
      this.active = await loadActiveJwtKey(ring, this.opts.dataDir, this.opts.passphrase);
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

  sign(req: JwtSvidRequest): SignedJwtSvid {
    if (!this.active) throw new StintError("ERR_NO_ACTIVE_ISSUER", "no active JWT-SVID signing key");
    return signJwtSvid(this.active.key, this.active.kid, this.opts.maxTtlMs, req);
  }
}

/** At server start: makes the key ring if this CA has none yet, then opens the service on it. */
export async function startJwtSvids(opts: JwtSvidServiceOptions): Promise<JwtSvidService> {
  const { store, dataDir, passphrase } = opts;
  await ensureJwtKeys({ store, dataDir, passphrase, now: new Date() });
  return JwtSvidService.open(opts);
}
