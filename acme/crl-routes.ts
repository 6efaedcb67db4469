import type { ServerResponse } from "node:http";
import type { Authority } from "../ca/authority";
import type { CurrentCrl } from "../ca/crl";
import type { Logger } from "../common/logger";
import { toPem } from "../formats/pem";
import { notFound } from "./problem";
import type { Router } from "./router";

/**
 * Each issuer's CRL over the CA's HTTPS server, at the URL leaves name as
 * their CRL distribution point (ca/crl.ts crlUrl):
 *   GET /crl/<issuerId>.crl   DER, application/pkix-crl (RFC 5280 4.2.1.13, RFC 2585)
 *   GET /crl/<issuerId>.pem   the same CRL as PEM "X509 CRL", for tools that want text
 * Caches may keep a response until the CRL's nextUpdate, and an hour at
 * most: a root's CRL is valid as long as the root but is re-signed when an
 * intermediate is revoked. The plain-HTTP listener (acme/crl-http.ts) serves
 * the same files through crlFile.
 */

const FILE = /^([0-9a-f]{1,64})\.(crl|pem)$/;
const MAX_CACHE_MS = 3_600_000;

/** A response body that caches may keep until `until` (and MAX_CACHE_MS at most). */
export interface CacheableFile {
  body: string | Buffer;
  type: string;
  until: Date;
}

/** The file named by the last segment of /crl/<file>, or null when there is no such CRL. */
export function crlFile(
  crls: { crl(issuerId: string): CurrentCrl | null },
  file: string,
): CacheableFile | null {
  const m = FILE.exec(file);
  const crl = m ? crls.crl(m[1]) : null;
  if (!m || !crl) return null;
  return m[2] === "crl"
    ? { body: crl.der, type: "application/pkix-crl", until: crl.nextUpdate }
    : { body: toPem("X509 CRL", crl.der), type: "application/x-pem-file", until: crl.nextUpdate };
}

export function sendCacheable(res: ServerResponse, file: CacheableFile, now: Date): void {
  const until = Math.min(file.until.getTime(), now.getTime() + MAX_CACHE_MS);
  const maxAge = Math.max(0, Math.floor((until - now.getTime()) / 1000));
  res.writeHead(200, {
    "content-type": file.type,
    "content-length": Buffer.byteLength(file.body),
    "cache-control": `public, max-age=${maxAge}`,
    expires: new Date(until).toUTCString(),
  });
  res.end(file.body);
}

/**
 * Starts the authority's CRLs (the first one is signed before the server
 * answers, then refreshed by an unref'd timer) and returns the mount for
 * startCaServer's `mounts`.
 */
export async function mountCrl(authority: Authority, log?: Logger): Promise<(router: Router) => void> {
  await authority.startCrls(log);
  return (router) => {
    router.on("GET", "/crl/:file", (_req, res, url, params) => {
      const file = crlFile(authority, params.file ?? "");
      if (!file) throw notFound(url.pathname);
      sendCacheable(res, file, new Date());
    });
  };
}
