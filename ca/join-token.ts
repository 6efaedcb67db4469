import { createHash, randomBytes } from "node:crypto";
import { formatDuration } from "../common/duration";
import { StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import { parseSpiffeId } from "../formats/spiffe";
import { newEntryId } from "./entries";
import type { AuditEvent } from "./store";
import type { AcmeStateStore, EntryRecord } from "./store-acme";

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

/** The store writes storeJoinToken needs. */
type JoinTokenWrites = Pick<AcmeStateStore, "createEntry" | "createJoinToken" | "deleteEntry">;

/**
 * Stores a new join token with its entry, the one whose only selector is
 * `join_token:<id>` (SPIRE's model: the entry outlives the token and governs
 * renewals). The entry goes first: without its token it can never match,
 * while a token without an entry would be a dud. If the token cannot be
 * stored the entry is deleted again, audited, so a failure leaves nothing
 * usable behind. `audit` makes each audit record; the admin API and the
 * console both create tokens through here.
 */
export async function storeJoinToken(
  store: JoinTokenWrites,
  token: NewJoinToken,
  entryFields: { dnsNames: string[]; ttlMs: number | null; now: Date },
  audit: (action: string, subject: string, details: Record<string, unknown>) => AuditEvent,
  log?: Logger,
): Promise<EntryRecord> {
  const { spiffeId } = token;
  const entry: EntryRecord = {
    id: newEntryId(),
    spiffeId,
    selectors: [`join_token:${token.id}`],
    dnsNames: entryFields.dnsNames,
    ttlMs: entryFields.ttlMs,
    createdAt: entryFields.now,
  };
  await store.createEntry(
    entry,
    audit("entry.create", entry.id, {
      spiffeId,
      selectors: entry.selectors,
      dnsNames: entry.dnsNames,
      ttl: entry.ttlMs === null ? null : formatDuration(entry.ttlMs),
      tokenId: token.id,
    }),
  );
  try {
    // Only the hash is stored; the secret goes back to the caller and nowhere else.
    await store.createJoinToken(
      {
        id: token.id,
        hash: token.hash,
        spiffeId,
        expiresAt: token.expiresAt,
        usedAt: null,
        createdAt: entryFields.now,
      },
      audit("join_token.create", token.id, {
        spiffeId,
        expiresAt: token.expiresAt.toISOString(),
        entryId: entry.id,
      }),
    );
  } catch (err) {
    // The token's own error is the one to report; a failed cleanup is logged.
    await store
      .deleteEntry(entry.id, audit("entry.delete", entry.id, { spiffeId, reason: "join token not stored" }))
      .catch((cleanup) =>
        log?.error("could not remove the entry of a failed join token", {
          entryId: entry.id,
          error: cleanup,
        }),
      );
    throw err;
  }
  return entry;
}
