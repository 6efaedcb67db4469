import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { StintError } from "../../common/errors";
import { type AdminAuthDeps, adminAuthenticator } from "../admin-auth";
import type { ConsoleSessions } from "./sessions";

/**
 * Who is using the console: a session from `stint console login` (cookie), or
 * the admin client certificate itself, checked exactly as the admin API
 * checks it. Anything else is refused before a page reads the store.
 */

/** __Host-: the browser keeps it only if Secure, for this host alone, on path /. */
export const SESSION_COOKIE = "__Host-stint-console";

export interface ConsoleUser {
  /** The audit actor of the user's actions. */
  actor: string;
  /** How the page header names them. */
  label: string;
  /** The token every form must carry back. */
  csrf: string;
}

export function consoleAuthenticator(
  deps: AdminAuthDeps & { sessions: ConsoleSessions },
): (req: IncomingMessage, now: Date) => Promise<ConsoleUser> {
  const admin = adminAuthenticator(deps);
  return async (req, now) => {
    const token = cookie(req, SESSION_COOKIE);
    const session = token === undefined ? null : await deps.sessions.find(token, now);
    if (session) return { actor: `console:${session.user}`, label: session.user, csrf: session.csrf };
    const peer = (req.socket as TLSSocket).getPeerX509Certificate?.();
    if (!peer) {
      throw new StintError(
        "ERR_UNAUTHORIZED",
        token === undefined
          ? "log in first: run `stint console login` on the CA host and open the URL it prints"
          : "the console session has expired; run `stint console login` again",
        { check: "client_certificate" },
      );
    }
    await admin(req, now);
    const fingerprint = createHash("sha256").update(peer.raw).digest("hex");
    return {
      actor: `console:admin-certificate sha256:${fingerprint.slice(0, 16)}`,
      label: `admin certificate ${fingerprint.slice(0, 16)}…`,
      // Certificate users have no session to hold a CSRF token: one is derived from their certificate.
      csrf: await deps.sessions.csrf("certificate", fingerprint),
    };
  };
}

/** One cookie's value from the Cookie header; undefined when absent. */
export function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of String(req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
