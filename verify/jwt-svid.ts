import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { isStintError, StintError } from "../common/errors";
import { parseSpiffeId } from "../formats/spiffe";

/**
 * Verifies a JWT-SVID (SPIFFE JWT-SVID standard) against the `jwt-svid` keys
 * of a SPIFFE bundle (/bundle.json). Only ES256 and ES384 are accepted, so
 * `alg: none` and HMAC-with-the-public-key confusions never get near a key.
 * Each refusal is a StintError with code ERR_JOSE and a `check` naming what
 * failed: malformed, algorithm, kid, signature, expired, not_yet_valid,
 * audience, subject, trust_domain.
 */

export type JwtSvidCheck =
  | "malformed"
  | "algorithm"
  | "kid"
  | "signature"
  | "expired"
  | "not_yet_valid"
  | "audience"
  | "subject"
  | "trust_domain";

/** The bundle's JWT keys by kid. */
export interface JwtBundle {
  keys: ReadonlyMap<string, KeyObject>;
}

export interface VerifyJwtSvidOptions {
  /** The audience this relying party is: the token's aud must contain it. */
  audience: string;
  /** The trust bundle: parsed, or the text of /bundle.json. */
  bundle: JwtBundle | string;
  /** When given, the token's SPIFFE ID must be in this trust domain. */
  trustDomain?: string;
  now?: Date;
  /** Clock skew tolerated for exp and nbf, in seconds (default 0: SPIFFE tokens live minutes). */
  leewaySeconds?: number;
}

export interface VerifiedJwtSvid {
  spiffeId: string;
  claims: Record<string, unknown>;
}

const ALGORITHMS: Record<string, { hash: string; crv: string }> = {
  ES256: { hash: "sha256", crv: "P-256" },
  ES384: { hash: "sha384", crv: "P-384" },
};
const MAX_TOKEN_LENGTH = 16 * 1024;

const refuse = (check: JwtSvidCheck, message: string) => new StintError("ERR_JOSE", message, { check });

/** The jwt-svid keys of a SPIFFE bundle document (JSON text or parsed); other keys are skipped. */
export function jwtBundleFrom(doc: string | { keys?: unknown }): JwtBundle {
  let parsed: { keys?: unknown };
  try {
    parsed = typeof doc === "string" ? (JSON.parse(doc) as { keys?: unknown }) : doc;
  } catch {
    throw new StintError("ERR_JOSE", "the trust bundle is not JSON", { check: "bundle" });
  }
  if (!parsed || !Array.isArray(parsed.keys))
    throw new StintError("ERR_JOSE", "the trust bundle has no keys list", { check: "bundle" });
  const keys = new Map<string, KeyObject>();
  for (const k of parsed.keys as Record<string, unknown>[]) {
    if (k?.use !== "jwt-svid" || typeof k.kid !== "string" || k.kty !== "EC") continue;
    try {
      const jwk = { kty: "EC", crv: String(k.crv), x: String(k.x), y: String(k.y) };
      keys.set(k.kid, createPublicKey({ key: jwk, format: "jwk" }));
    } catch {
      throw new StintError(
        "ERR_JOSE",
        `the trust bundle's JWT key ${k.kid.slice(0, 64)} is not a valid EC key`,
        {
          check: "bundle",
        },
      );
    }
  }
  return { keys };
}

function part(text: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(text, "base64url").toString("utf8"));
  } catch {
    throw refuse("malformed", `the JWT-SVID's ${what} is not base64url JSON`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw refuse("malformed", `the JWT-SVID's ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

/**
 * Checks in a fixed order: shape, algorithm, kid, signature, then the claims
 * (exp, nbf, aud, sub and its trust domain), so a forged token never gets its
 * claims read as if they meant something.
 */
export function verifyJwtSvid(token: string, opts: VerifyJwtSvidOptions): VerifiedJwtSvid {
  if (typeof token !== "string" || token.length > MAX_TOKEN_LENGTH)
    throw refuse("malformed", `a JWT-SVID is a string of at most ${MAX_TOKEN_LENGTH} characters`);
  const parts = token.split(".");
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p)) || parts[2] === "")
    throw refuse("malformed", "a JWT-SVID is three base64url parts separated by dots (a signed JWS)");
  const header = part(parts[0], "header");
  const alg = header.alg;
  if (typeof alg !== "string" || !(alg in ALGORITHMS)) {
    throw refuse(
      "algorithm",
      `JWT-SVID algorithm ${JSON.stringify(alg)?.slice(0, 20)} is not accepted; only ES256 and ES384 are`,
    );
  }
  if (header.typ !== undefined && header.typ !== "JWT" && header.typ !== "JOSE")
    throw refuse("malformed", `JWT-SVID typ must be JWT or JOSE when present`);
  const bundle = typeof opts.bundle === "string" ? jwtBundleFrom(opts.bundle) : opts.bundle;
  const kid = header.kid;
  const key = typeof kid === "string" ? bundle.keys.get(kid) : undefined;
  if (!key) {
    throw refuse(
      "kid",
      typeof kid === "string"
        ? `JWT-SVID key ${JSON.stringify(kid.slice(0, 64))} is not in the trust bundle`
        : "the JWT-SVID header names no key (kid)",
    );
  }
  const spec = ALGORITHMS[alg]!;
  const signature = Buffer.from(parts[2], "base64url");
  let valid = false;
  try {
    valid =
      key.asymmetricKeyDetails?.namedCurve === (spec.crv === "P-256" ? "prime256v1" : "secp384r1") &&
      verify(
        spec.hash,
        Buffer.from(`${parts[0]}.${parts[1]}`),
        { key, dsaEncoding: "ieee-p1363" },
        signature,
      );
  } catch {
    valid = false;
  }
  if (!valid) throw refuse("signature", `JWT-SVID signature does not verify with key ${kid}`);

  const claims = part(parts[1], "claims");
  const now = Math.floor((opts.now ?? new Date()).getTime() / 1000);
  const leeway = opts.leewaySeconds ?? 0;
  if (typeof claims.exp !== "number") throw refuse("malformed", "the JWT-SVID has no exp claim");
  if (claims.exp + leeway <= now)
    throw refuse("expired", `JWT-SVID expired at ${new Date(claims.exp * 1000).toISOString()}`);
  if (claims.nbf !== undefined && (typeof claims.nbf !== "number" || claims.nbf - leeway > now))
    throw refuse("not_yet_valid", "JWT-SVID is not valid yet (nbf)");
  const aud = typeof claims.aud === "string" ? [claims.aud] : claims.aud;
  if (!Array.isArray(aud) || aud.length === 0) throw refuse("malformed", "the JWT-SVID has no aud claim");
  if (!aud.includes(opts.audience))
    throw refuse("audience", `JWT-SVID is not for audience ${JSON.stringify(opts.audience.slice(0, 200))}`);
  if (typeof claims.sub !== "string") throw refuse("subject", "the JWT-SVID has no sub claim");
  let spiffeId: string;
  let trustDomain: string;
  try {
    const id = parseSpiffeId(claims.sub);
    spiffeId = id.uri;
    trustDomain = id.trustDomain;
  } catch (err) {
    throw refuse("subject", `JWT-SVID sub is not a SPIFFE ID${isStintError(err) ? `: ${err.message}` : ""}`);
  }
  if (opts.trustDomain !== undefined && trustDomain !== opts.trustDomain)
    throw refuse("trust_domain", `JWT-SVID ${spiffeId} is not in trust domain ${opts.trustDomain}`);
  return { spiffeId, claims };
}
