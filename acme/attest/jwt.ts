import type { KeyObject } from "node:crypto";
import { StintError } from "../../common/errors";
import {
  fromB64u,
  isJwsAlgorithm,
  JWS_ALGORITHMS,
  type JwsAlgorithm,
  keyFitsAlgorithm,
  verifyJwsSignature,
} from "../../formats/jose";

/**
 * Strict compact JWT (RFC 7519) verification for attestors, on formats/jose.
 * Keys come only from configuration: header members that carry or point to
 * keys (jwk, jku, x5c, x5u) are never used. Shape problems are ERR_MALFORMED;
 * every refusal of a well-formed token is ERR_ATTESTATION naming the claim.
 * `what` names the token in messages ("service account token").
 */

/** Service account tokens are about 1 KiB; anything far larger is not one. */
export const JWT_MAX_LENGTH = 16 * 1024;

export interface JwtHeader {
  alg: JwsAlgorithm;
  kid?: string;
  [member: string]: unknown;
}

export interface CompactJwt {
  header: JwtHeader;
  claims: Record<string, unknown>;
  signingInput: string;
  signature: Buffer;
}

/** A configured verification key; `kid` and `alg` come from a JWKS when there is one. */
export interface JwtKey {
  key: KeyObject;
  kid?: string;
  alg?: JwsAlgorithm;
}

export interface JwtClaimChecks {
  issuer: string;
  audiences: readonly string[];
  clockSkewMs: number;
  now: Date;
}

const malformed = (msg: string) => new StintError("ERR_MALFORMED", msg);
const refused = (msg: string) => new StintError("ERR_ATTESTATION", msg);

/** Untrusted text for a message: bounded, quoted, control characters escaped by JSON. */
export const shown = (value: unknown): string => JSON.stringify(String(value).slice(0, 100));

const utf8 = new TextDecoder("utf-8", { fatal: true });

function jsonObject(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(fromB64u(part, what)));
  } catch (err) {
    if (err instanceof StintError) throw malformed(err.message);
    throw malformed(`${what} is not UTF-8 JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw malformed(`${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

export function parseCompactJwt(token: unknown, what: string): CompactJwt {
  if (typeof token !== "string") throw malformed(`${what} must be a string`);
  if (token.length > JWT_MAX_LENGTH) throw malformed(`${what} is longer than ${JWT_MAX_LENGTH} characters`);
  const parts = token.split(".");
  if (parts.length === 5) throw malformed(`${what} is an encrypted JWT (JWE); only signed JWTs are accepted`);
  if (parts.length !== 3) {
    throw malformed(
      `${what} is not a compact JWT: expected 3 base64url parts separated by ".", found ${parts.length}`,
    );
  }
  const header = jsonObject(parts[0], `${what} header`);
  if (!isJwsAlgorithm(header.alg)) {
    throw refused(`${what} alg ${shown(header.alg)} is not accepted; accepted: ${JWS_ALGORITHMS.join(", ")}`);
  }
  if ("crit" in header) throw refused(`${what} header has "crit" extensions, which Stint does not process`);
  if (header.typ !== undefined && (typeof header.typ !== "string" || header.typ.toUpperCase() !== "JWT")) {
    throw refused(`${what} typ ${shown(header.typ)} is not "JWT"`);
  }
  if (header.kid !== undefined && typeof header.kid !== "string") {
    throw malformed(`${what} kid is not a string`);
  }
  const claims = jsonObject(parts[1], `${what} payload`);
  if (parts[2] === "") throw malformed(`${what} has no signature`);
  const signature = fromB64uMalformed(parts[2], `${what} signature`);
  return { header: header as JwtHeader, claims, signingInput: `${parts[0]}.${parts[1]}`, signature };
}

function fromB64uMalformed(text: string, what: string): Buffer {
  try {
    return fromB64u(text, what);
  } catch (err) {
    throw err instanceof StintError ? malformed(err.message) : err;
  }
}

/** Verifies with the key `kid` selects, or with each configured key when the token or the keys carry no kid. */
export function verifyJwtSignature(jwt: CompactJwt, keys: readonly JwtKey[], what: string): void {
  const { alg, kid } = jwt.header;
  const candidates = keys.filter((k) => kid === undefined || k.kid === undefined || k.kid === kid);
  if (candidates.length === 0) throw refused(`${what} key id ${shown(kid)} is not among the configured keys`);
  const verifies = candidates.some(
    (k) =>
      (k.alg === undefined || k.alg === alg) &&
      keyFitsAlgorithm(k.key, alg) &&
      verifyJwsSignature(alg, k.key, jwt.signingInput, jwt.signature),
  );
  if (!verifies) throw refused(`${what} signature does not verify with any configured key`);
}

// RFC 7519 NumericDate, bounded so that it always converts to a Date (year 9999 at most).
const MAX_NUMERIC_DATE = 253_402_300_799;

function numericDate(claims: Record<string, unknown>, name: string, what: string): Date | undefined {
  const v = claims[name];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > MAX_NUMERIC_DATE) {
    throw refused(`${what} claim ${name} is not a NumericDate (seconds since 1970)`);
  }
  return new Date(v * 1000);
}

/** iss exact, aud intersecting, exp required and in the future, nbf and iat not in the future (all with skew). */
export function checkJwtClaims(claims: Record<string, unknown>, c: JwtClaimChecks, what: string): void {
  const expected = `expected one of [${c.audiences.join(", ")}]`;
  if (claims.iss === undefined) throw refused(`${what} has no iss claim; expected "${c.issuer}"`);
  if (claims.iss !== c.issuer) {
    throw refused(`${what} issuer ${shown(claims.iss)} is not accepted; expected "${c.issuer}"`);
  }
  const aud = claims.aud;
  const auds = typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud : null;
  if (auds === null || auds.length === 0 || !auds.every((a) => typeof a === "string")) {
    throw refused(`${what} has no aud claim (a string or a list of strings); ${expected}`);
  }
  if (!auds.some((a) => c.audiences.includes(a))) {
    const theirs = auds.map((a) => shown(a).slice(1, -1)).join(", ");
    throw refused(`${what} audience [${theirs}] is not accepted; ${expected}`);
  }
  const now = c.now.getTime();
  const exp = numericDate(claims, "exp", what);
  if (exp === undefined) throw refused(`${what} has no exp claim; tokens that never expire are not accepted`);
  if (now >= exp.getTime() + c.clockSkewMs) throw refused(`${what} expired at ${exp.toISOString()}`);
  const nbf = numericDate(claims, "nbf", what);
  if (nbf && nbf.getTime() > now + c.clockSkewMs) {
    throw refused(`${what} is not valid before ${nbf.toISOString()} (nbf)`);
  }
  const iat = numericDate(claims, "iat", what);
  if (iat && iat.getTime() > now + c.clockSkewMs) {
    throw refused(`${what} was issued in the future, at ${iat.toISOString()} (iat)`);
  }
}

/** Parse, signature, then claims; returns the verified claims. */
export function verifyJwt(
  token: unknown,
  keys: readonly JwtKey[],
  checks: JwtClaimChecks,
  what: string,
): Record<string, unknown> {
  const jwt = parseCompactJwt(token, what);
  verifyJwtSignature(jwt, keys, what);
  checkJwtClaims(jwt.claims, checks, what);
  return jwt.claims;
}
