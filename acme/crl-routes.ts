import type { ServerResponse } from "node:http";
import type { Authority } from "../ca/authority";
import type { Logger } from "../common/logger";
import { toPem } from "../formats/pem";
import { notFound } from "./problem";
import type { Router } from "./router";

/**
 * Each issuer's CRL over the CA's HTTPS server, at the URL leaves name as
 * their CRL distribution point (ca/crl.ts crlUrl):
 *   GET /crl/<issuerId>.crl   DER, application/pkix-crl (RFC 5280 4.2.1.13, RFC 2585)
 *   GET /crl/<issuerId>.pem   the same CRL as PEM "X509 CRL", for tools that want text
 * Caches may keep a response until the CRL's nextUpdate, no longer.
 */

const FILE = /^([0-9a-f]{1,64})\.(crl|pem)$/;

function send(res: ServerResponse, body: string | Buffer, type: string, nextUpdate: Date, now: Date): void {
  const maxAge = Math.max(0, Math.floor((nextUpdate.getTime() - now.getTime()) / 1000));
  res.writeHead(200, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": `public, max-age=${maxAge}`,
    expires: nextUpdate.toUTCString(),
  });
  res.end(body);
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
      const m = FILE.exec(params.file ?? "");
      const crl = m ? authority.crl(m[1]) : null;
      if (!m || !crl) throw notFound(url.pathname);
      if (m[2] === "crl") send(res, crl.der, "application/pkix-crl", crl.nextUpdate, new Date());
      else send(res, toPem("X509 CRL", crl.der), "application/x-pem-file", crl.nextUpdate, new Date());
    });
  };
}
