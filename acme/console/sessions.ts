import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Store } from "../../ca/store";

/**
 * Console sessions, kept in the store so that every replica knows them.
 * `stint console login` asks the admin API (with the admin certificate) for a
 * one-time login code; the browser trades it at /console/login for a session
 * cookie. Only SHA-256 hashes of codes and session tokens are stored, so the
 * database alone replays nothing, and a code is spent by one DELETE … RETURNING,
 * so two replicas never both redeem it. Forms carry a CSRF token derived with
 * HMAC from the session token (or the admin certificate's fingerprint) under a
 * key kept in store metadata: a page one replica rendered posts to any other.
 */

export const LOGIN_CODE_TTL_MS = 2 * 60_000;
export const SESSION_TTL_MS = 15 * 60_000;
/** Store metadata holding the CSRF key (random, made by the first server that needs it). */
export const CSRF_KEY_META = "console_csrf_key";

export interface ConsoleSession {
  /** Who logged in, as `stint console login` named them; the audit actor names it. */
  user: string;
  /** The per-session token every form carries (CSRF). */
  csrf: string;
  expiresAt: Date;
}

export type SessionStore = Pick<
  Store,
  "initMeta" | "putConsoleGrant" | "takeConsoleCode" | "findConsoleSession" | "deleteConsoleSession"
>;

const digest = (secret: string) => createHash("sha256").update(secret).digest("hex");
const secret = () => randomBytes(32).toString("base64url");

export class ConsoleSessions {
  private csrfKey: Promise<Buffer> | null = null;

  constructor(private readonly store: SessionStore) {}

  /** A one-time code for `user`, redeemable once within LOGIN_CODE_TTL_MS, on any replica. */
  async issueCode(user: string, now: Date): Promise<{ code: string; expiresAt: Date }> {
    const code = secret();
    const expiresAt = new Date(now.getTime() + LOGIN_CODE_TTL_MS);
    await this.store.putConsoleGrant({ hash: digest(code), kind: "code", user, expiresAt }, now);
    return { code, expiresAt };
  }

  /** Spends a code: a session and its cookie value, or null for an unknown, used or expired code. */
  async redeem(code: string, now: Date): Promise<{ token: string; session: ConsoleSession } | null> {
    const grant = await this.store.takeConsoleCode(digest(code), now);
    if (!grant) return null;
    const token = secret();
    const expiresAt = new Date(now.getTime() + SESSION_TTL_MS);
    await this.store.putConsoleGrant(
      { hash: digest(token), kind: "session", user: grant.user, expiresAt },
      now,
    );
    return { token, session: { user: grant.user, csrf: await this.csrf("session", token), expiresAt } };
  }

  async find(token: string, now: Date): Promise<ConsoleSession | null> {
    const grant = await this.store.findConsoleSession(digest(token), now);
    if (!grant) return null;
    return { user: grant.user, csrf: await this.csrf("session", token), expiresAt: grant.expiresAt };
  }

  async end(token: string): Promise<void> {
    await this.store.deleteConsoleSession(digest(token));
  }

  /** The CSRF token of a session (by its token) or of an admin certificate (by its fingerprint). */
  async csrf(kind: "session" | "certificate", subject: string): Promise<string> {
    return createHmac("sha256", await this.key())
      .update(`${kind}\0${subject}`)
      .digest("base64url");
  }

  private key(): Promise<Buffer> {
    if (!this.csrfKey) {
      this.csrfKey = this.store
        .initMeta(CSRF_KEY_META, randomBytes(32).toString("base64url"))
        .then((value) => Buffer.from(value, "base64url"));
      // A failed read is not kept: the next request asks the store again.
      this.csrfKey.catch(() => {
        this.csrfKey = null;
      });
    }
    return this.csrfKey;
  }
}

/** Compares two tokens without leaking where they differ. */
export function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
