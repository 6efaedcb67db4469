import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Console sessions, held in this server's memory. `stint console login` asks
 * the admin API (with the admin certificate) for a one-time login code; the
 * browser trades it at /console/login for a session cookie. Only SHA-256
 * hashes of codes and session tokens are kept, so a heap dump replays nothing.
 *
 * Memory, not the store: a session lives minutes, and a restart ending it only
 * asks for another login. With several replicas behind one name (PostgreSQL),
 * a code is redeemable, and its session valid, only on the replica that made
 * it: point `stint console login --server` at one replica's own address.
 */

export const LOGIN_CODE_TTL_MS = 2 * 60_000;
export const SESSION_TTL_MS = 15 * 60_000;
/** Bounds memory against a runaway script with the admin credential. */
const MAX_ENTRIES = 1000;

export interface ConsoleSession {
  /** Who logged in, as `stint console login` named them; the audit actor names it. */
  user: string;
  /** The per-session token every form carries (CSRF). */
  csrf: string;
  expiresAt: Date;
}

interface PendingCode {
  user: string;
  expiresAt: Date;
}

const digest = (secret: string) => createHash("sha256").update(secret).digest("hex");
const secret = () => randomBytes(32).toString("base64url");

export class ConsoleSessions {
  private readonly codes = new Map<string, PendingCode>();
  private readonly sessions = new Map<string, ConsoleSession>();

  /** A one-time code for `user`, redeemable once within LOGIN_CODE_TTL_MS. */
  issueCode(user: string, now: Date): { code: string; expiresAt: Date } {
    prune(this.codes, now);
    const code = secret();
    const expiresAt = new Date(now.getTime() + LOGIN_CODE_TTL_MS);
    this.codes.set(digest(code), { user, expiresAt });
    return { code, expiresAt };
  }

  /** Spends a code: a session and its cookie value, or null for an unknown, used or expired code. */
  redeem(code: string, now: Date): { token: string; session: ConsoleSession } | null {
    const key = digest(code);
    const pending = this.codes.get(key);
    this.codes.delete(key);
    if (!pending || pending.expiresAt <= now) return null;
    prune(this.sessions, now);
    const token = secret();
    const session = {
      user: pending.user,
      csrf: secret(),
      expiresAt: new Date(now.getTime() + SESSION_TTL_MS),
    };
    this.sessions.set(digest(token), session);
    return { token, session };
  }

  find(token: string, now: Date): ConsoleSession | null {
    const session = this.sessions.get(digest(token));
    if (!session || session.expiresAt <= now) return null;
    return session;
  }

  end(token: string): void {
    this.sessions.delete(digest(token));
  }
}

/** Drops expired entries, then the oldest ones beyond the cap (Maps iterate in insertion order). */
function prune<T extends { expiresAt: Date }>(map: Map<string, T>, now: Date): void {
  for (const [k, v] of map) if (v.expiresAt <= now) map.delete(k);
  for (const k of map.keys()) {
    if (map.size < MAX_ENTRIES) break;
    map.delete(k);
  }
}

/** Compares two tokens without leaking where they differ. */
export function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
