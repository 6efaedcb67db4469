import { createHash, randomBytes } from "node:crypto";
import { StintError } from "../common/errors";
import { parseSpiffeId } from "../formats/spiffe";

/**
 * Join tokens: one-time secrets an administrator hands to a workload, bound
 * to one SPIFFE ID. Only the hash is stored; the secret is shown once. A
 * plain SHA-256 suffices (no slow KDF) because the secret is 256 random bits,
 * so the hash cannot be reversed by guessing.
 */

export const JOIN_TOKEN_DEFAULT_TTL_MS = 10 * 60_000;
/** Join tokens are meant to be used within minutes; a day is the most a token may live. */
export const JOIN_TOKEN_MAX_TTL_MS = 24 * 3_600_000;

/**
 * A token as newJoinToken makes it: the SPIFFE ID it is for in base64url, a
 * dot, and 32 random bytes in base64url (43 characters); or, made before the
 * ID was carried, the 43 characters alone. The whole string is hashed, so an
 * edited ID makes a token the CA does not know.
 */
const TOKEN = /^(?:([A-Za-z0-9_-]{12,2800})\.)?[A-Za-z0-9_-]{43}$/;

export interface NewJoinToken {
  /** Public handle (16 hex digits): in selectors `join_token:<id>`, listings and audit records. */
  id: string;
  /** Shown once to the administrator; never stored, logged or echoed. */
  secret: string;
  /** Lowercase hex SHA-256 of the secret, the only form stored. */
  hash: string;
  /** Canonical SPIFFE ID the token may be used for, and no other. */
  spiffeId: string;
  expiresAt: Date;
}

export interface NewJoinTokenOptions {
  spiffeId: string;
  ttlMs?: number;
  now: Date;
  /** Injected for tests; defaults to the CSPRNG. */
  random?: (n: number) => Buffer;
}

export function newJoinToken(opts: NewJoinTokenOptions): NewJoinToken {
  const ttlMs = opts.ttlMs ?? JOIN_TOKEN_DEFAULT_TTL_MS;
  if (!Number.isInteger(ttlMs) || ttlMs <= 0 || ttlMs > JOIN_TOKEN_MAX_TTL_MS) {
    throw new StintError(
      "ERR_POLICY_TTL",
      `join token lifetime must be between 1 ms and ${JOIN_TOKEN_MAX_TTL_MS / 3_600_000} h; got ${String(ttlMs)} ms`,
    );
  }
  const random = opts.random ?? randomBytes;
  const spiffeId = parseSpiffeId(opts.spiffeId).uri;
  // The agent reads its SPIFFE ID from the token, so it needs no --spiffe-id. The token starts with
  // base64url("spiffe://…") = "c3BpZmZlOi8v…", never with "-", which parsers would take for an option.
  const secret = `${Buffer.from(spiffeId, "utf8").toString("base64url")}.${random(32).toString("base64url")}`;
  return {
    id: random(8).toString("hex"),
    secret,
    hash: hashJoinToken(secret),
    spiffeId,
    expiresAt: new Date(opts.now.getTime() + ttlMs),
  };
}

/**
 * The SPIFFE ID a token names (not checked: only the CA, which knows the
 * token's hash, can tell whether it is genuine), or null for a token made
 * before tokens carried it, or text that is not a token.
 */
export function joinTokenSpiffeId(token: string): string | null {
  const prefix = TOKEN.exec(token)?.[1];
  if (prefix === undefined) return null;
  try {
    return parseSpiffeId(Buffer.from(prefix, "base64url").toString("utf8")).uri;
  } catch {
    return null;
  }
}

export function hashJoinToken(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/** Whether `text` has the shape of a join token secret (not whether it is a valid one). */
export function looksLikeJoinTokenSecret(text: unknown): text is string {
  return typeof text === "string" && TOKEN.test(text);
}
