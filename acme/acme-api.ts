import type { ServerResponse } from "node:http";
import { keyChange, listAccountOrders, newAccount, updateAccount } from "./accounts";
import { getAuthorization, respondChallenge } from "./authz";
import { renewalInfo, renewCert, revokeCert } from "./certificates";
import { AcmeContext, type AcmeDeps } from "./context";
import { downloadCertificate, finalize, getOrder, newOrder } from "./orders";
import type { Handler, Router } from "./router";
import { PATHS, Urls } from "./wire";

/**
 * The ACME API under /acme/ (RFC 8555, RFC 9773 and Stint's extensions in
 * docs/acme.md), as a route set for the CA's HTTPS server. It holds no CA
 * key: issuance and revocation go through the authority in ca/.
 */
export function mountAcme(deps: AcmeDeps): (router: Router, origin: string) => void {
  return (router, origin) => {
    const ctx = new AcmeContext(deps, new Urls(origin));
    // Every route pays the per-address limit first, before the body is read.
    const limited =
      (handler: Handler): Handler =>
      (req, res, url, params) => {
        try {
          ctx.limits.addresses.take(req.socket.remoteAddress ?? "unknown");
        } catch (err) {
          req.resume();
          ctx.fail(res, err);
          return;
        }
        return handler(req, res, url, params);
      };
    const directory = ctx.urls.directory({});
    const routes: [string, string, Handler][] = [
      ["GET", PATHS.directory, (_req, res) => ctx.reply(res, 200, directory)],
      ["HEAD", PATHS.newNonce, (_req, res) => nonce(ctx, res, 200)],
      ["GET", PATHS.newNonce, (_req, res) => nonce(ctx, res, 204)],
      ["POST", PATHS.newAccount, newAccount(ctx)],
      ["POST", PATHS.account, updateAccount(ctx)],
      ["POST", PATHS.accountOrders, listAccountOrders(ctx)],
      ["POST", PATHS.keyChange, keyChange(ctx)],
      ["POST", PATHS.newOrder, newOrder(ctx)],
      ["POST", PATHS.order, getOrder(ctx)],
      ["POST", PATHS.finalize, finalize(ctx)],
      ["POST", PATHS.authorization, getAuthorization(ctx)],
      ["POST", PATHS.challenge, respondChallenge(ctx)],
      ["POST", PATHS.certificate, downloadCertificate(ctx)],
      ["POST", PATHS.revokeCert, revokeCert(ctx)],
      ["POST", PATHS.renewCert, renewCert(ctx)],
      ["GET", PATHS.renewalInfoItem, renewalInfo(ctx)],
    ];
    for (const [method, path, handler] of routes) router.on(method, path, limited(handler));
  };
}

/** newNonce (RFC 8555 7.2): HEAD answers 200, GET 204; the nonce is in Replay-Nonce, as on every response. */
function nonce(ctx: AcmeContext, res: ServerResponse, status: number): void {
  ctx.acmeHeaders(res);
  res.writeHead(status, { "content-length": 0 });
  res.end();
}
