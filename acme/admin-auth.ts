import { createHash, type X509Certificate } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import type { Authority } from "../ca/authority";
import { RESERVED_PATH } from "../ca/entries";
import type { Store } from "../ca/store";
import { StintError } from "../common/errors";
import type { Logger } from "../common/logger";

/**
 * Who may use the admin API: the one admin certificate this CA issued last
 * (`stint ca init`, `stint ca admin-cert`), named in the store by its SHA-256,
 * valid now, not revoked, and from the active intermediate. A chain to our
 * roots proves little: whoever holds an intermediate's key can mint a
 * certificate naming the admin ID with any serial. Everything is checked on
 * every request, read from the store (so a renewal or rotation applies at once
 * on every replica), because a resumed TLS session is not verified again.
 */

/** Store metadata: the admin certificate the API accepts, as {serial, sha256} JSON. */
export const ADMIN_CERTIFICATE_META = "admin_certificate";

export function adminSpiffeId(trustDomain: string): string {
  return `spiffe://${trustDomain}${RESERVED_PATH}/admin`;
}

interface RecordedAdminCertificate {
  serial: string;
  /** Lowercase hex SHA-256 of the certificate's DER. */
  sha256: string;
}

const sha256 = (der: Buffer) => createHash("sha256").update(der).digest("hex");

/**
 * Makes `cert` the only admin certificate the API accepts, replacing the one
 * before: the CLI only ever presents the files of the latest issuance, so an
 * older certificate still accepted would only serve someone who copied it.
 */
export async function recordAdminCertificate(
  store: Pick<Store, "setMeta">,
  cert: { serial: string; der: Buffer },
): Promise<string> {
  const fingerprint = sha256(cert.der);
  const recorded: RecordedAdminCertificate = { serial: cert.serial, sha256: fingerprint };
  await store.setMeta(ADMIN_CERTIFICATE_META, JSON.stringify(recorded));
  return fingerprint;
}

async function recordedAdminCertificate(
  store: Pick<Store, "getMeta">,
): Promise<RecordedAdminCertificate | null> {
  const text = await store.getMeta(ADMIN_CERTIFICATE_META);
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as Partial<RecordedAdminCertificate>;
    if (typeof v.serial === "string" && typeof v.sha256 === "string")
      return { serial: v.serial, sha256: v.sha256 };
  } catch {
    // Unreadable counts as absent: the fix is the same, a new `stint ca admin-cert`.
  }
  return null;
}

/** What the admin check reads from storage. */
export type AdminAuthStore = Pick<Store, "getMeta" | "getCertificate" | "getIssuer">;

export interface AdminAuthDeps {
  authority: Authority;
  store: AdminAuthStore;
  log: Logger;
}

const RENEW = "run `stint ca admin-cert`";

/** The check every admin route starts with; resolves with the audit actor (the admin SPIFFE ID). */
export function adminAuthenticator(
  deps: AdminAuthDeps,
): (req: IncomingMessage, now: Date) => Promise<string> {
  const { authority, store, log } = deps;
  const adminId = adminSpiffeId(authority.trustDomain);
  // The check label picks 401 (no usable certificate) or 403 (a certificate, but not the admin's).
  const denied = (detail: string, check: "client_certificate" | "admin_identity") =>
    new StintError("ERR_UNAUTHORIZED", detail, { check });

  /** A chain-valid certificate for the admin ID that this CA never issued: someone holds an issuer key. */
  const reportForgery = async (
    peer: X509Certificate,
    serial: string,
    fingerprint: string,
    req: IncomingMessage,
  ) => {
    const ours = await store.getCertificate(serial);
    if (ours && sha256(ours.der) === fingerprint) return; // an older admin certificate of ours: superseded
    log.warn(
      "a client certificate for the admin identity chains to this CA's roots but was not issued by this CA; an issuer key may be compromised",
      {
        serial,
        sha256: fingerprint,
        issuerSubject: peer.issuer.replace(/\n/g, ", "),
        remoteAddress: req.socket.remoteAddress,
      },
    );
  };

  return async (req, now) => {
    const socket = req.socket as TLSSocket;
    const peer = socket.getPeerX509Certificate?.();
    if (!peer) {
      throw denied(
        "the admin API needs the admin client certificate; use the stint CLI on the CA host (it presents <dataDir>/admin/cert.pem)",
        "client_certificate",
      );
    }
    if (!socket.authorized) {
      const why = String(socket.authorizationError ?? "not verified");
      throw denied(
        why === "CERT_HAS_EXPIRED"
          ? `admin certificate expired; ${RENEW}`
          : `client certificate not accepted (${why}): it does not chain to this CA's roots; use the admin credential from \`stint ca admin-cert\``,
        "client_certificate",
      );
    }
    const uris = (peer.subjectAltName ?? "")
      .split(", ")
      .filter((n) => n.startsWith("URI:"))
      .map((n) => n.slice(4));
    if (uris.length !== 1 || uris[0] !== adminId) {
      const who = uris.length === 0 ? "without a SPIFFE ID" : `for ${uris.join(", ")}`;
      throw denied(
        `client certificate ${who} may not use the admin API; only ${adminId} may (its credential is in <dataDir>/admin)`,
        "admin_identity",
      );
    }
    // The handshake checked validity once; a resumed session, or a long keep-alive, never again.
    const notBefore = Date.parse(peer.validFrom);
    const notAfter = Date.parse(peer.validTo);
    if (!(now.getTime() < notAfter))
      throw denied(`admin certificate expired; ${RENEW}`, "client_certificate");
    if (!(notBefore <= now.getTime())) {
      throw denied(
        `admin certificate is not valid before ${new Date(notBefore).toISOString()}; check this host's clock`,
        "client_certificate",
      );
    }

    const serial = evenHex(peer.serialNumber);
    const fingerprint = sha256(peer.raw);
    const recorded = await recordedAdminCertificate(store);
    if (recorded === null) {
      throw denied(`no admin certificate is recorded in this CA's store; ${RENEW}`, "admin_identity");
    }
    if (fingerprint !== recorded.sha256) {
      await reportForgery(peer, serial, fingerprint, req);
      throw denied(
        `admin certificate ${serial} is not the admin certificate this CA issued last; ${RENEW} (its files are in <dataDir>/admin)`,
        "admin_identity",
      );
    }
    const record = await store.getCertificate(recorded.serial);
    if (!record || record.revokedAt) {
      throw denied(
        `admin certificate ${serial} ${record ? "is revoked" : "is not recorded by this CA"}; ${RENEW}`,
        "admin_identity",
      );
    }
    // States from the store, which rotation commands write first; revocation as this server last loaded it.
    const issuer = await store.getIssuer(record.issuerId);
    const standing = authority.revokedIssuers().includes(record.issuerId)
      ? "revoked"
      : (issuer?.state ?? "unknown");
    if (standing !== "active") {
      throw denied(
        `admin certificate ${serial} comes from intermediate ${record.issuerId}, which is ${standing}; ${RENEW} for one from the active intermediate`,
        "admin_identity",
      );
    }
    return adminId;
  };
}

const evenHex = (hex: string) => {
  const lower = hex.toLowerCase();
  return lower.length % 2 === 0 ? lower : `0${lower}`;
};
