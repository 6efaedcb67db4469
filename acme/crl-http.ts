import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { bundlePem } from "../ca/bundle";
import type { CurrentCrl } from "../ca/crl";
import type { IssuerRecord } from "../ca/store";
import { StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import type { Registry } from "../common/metrics";
import { type CacheableFile, crlFile, sendCacheable } from "./crl-routes";
import {
  applyListenerLimits,
  closeListener,
  type ListenerLimits,
  limitedServerOptions,
  listenOn,
} from "./listener-limits";
import { notFound, sendJson, sendProblem } from "./problem";

/**
 * The optional plain-HTTP listener (crl.httpListen) for CRL fetchers that
 * refuse HTTPS (OpenSSL's -crl_download, most CRL fetchers; RFC 5280 4.2.1.13
 * expects http). CRLs and certificates are signed, so plain HTTP loses nothing;
 * it serves nothing else, and takes no request body:
 *   GET /crl/<issuerId>.crl|.pem   the same CRLs as the HTTPS /crl/ routes
 *   GET /ca/<issuerId>.cer         a CA certificate, DER (application/pkix-cert), which
 *                                  intermediates name as caIssuers (RFC 5280 4.2.2.1)
 *   GET /bundle.pem                the trusted roots, for tools that complete chains; trust
 *                                  itself is still bootstrapped by fingerprint, never from here
 * HEAD is answered like GET; other methods get 405, other paths 404.
 */

/** What the listener reads from the authority, declared here (its consumer). */
export interface PublishedFiles {
  crl(issuerId: string): CurrentCrl | null;
  allIssuers(): readonly IssuerRecord[];
  trustedRoots(): IssuerRecord[];
}

export interface CrlHttpOptions {
  files: PublishedFiles;
  log: Logger;
  metrics: Registry;
  host: string;
  port: number;
  /** The same timeouts and per-address cap as the HTTPS listener (the http.* settings). */
  limits: ListenerLimits;
}

export interface CrlHttpServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

const CA_FILE = /^\/ca\/([0-9a-f]{1,64})\.cer$/;

/** The file a path names, or null. */
function lookup(files: PublishedFiles, path: string, now: Date): CacheableFile | null {
  if (path.startsWith("/crl/")) return crlFile(files, path.slice("/crl/".length));
  const ca = CA_FILE.exec(path);
  if (ca) {
    const issuer = files.allIssuers().find((i) => i.id === ca[1]);
    return issuer
      ? {
          body: issuer.certDer,
          type: "application/pkix-cert",
          until: issuer.notAfter,
        }
      : null;
  }
  if (path === "/bundle.pem") {
    return { body: bundlePem(files.trustedRoots()), type: "application/x-pem-file", until: now };
  }
  return null;
}

/** Bounded label values for the request counter. */
function routeLabel(path: string): string {
  if (path === "/bundle.pem") return path;
  const m = /^\/(crl|ca)\//.exec(path);
  return m ? `/${m[1]}` : "other";
}

const malformed = (why: string) => new StintError("ERR_MALFORMED", why);

function handle(opts: CrlHttpOptions, req: IncomingMessage, res: ServerResponse): string {
  const target = req.url ?? "";
  // Origin-form only ("/crl/…"): absolute-form, authority-form and "*" name nothing served here.
  if (!target.startsWith("/")) {
    sendProblem(res, malformed("the request target must be a path such as /crl/<issuer>.crl"), opts.log);
    return "other";
  }
  const path = target.split("?", 1)[0]!;
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    const detail = `${String(req.method).slice(0, 20)} is not allowed here; this listener serves GET only`;
    sendJson(
      res,
      405,
      { type: "urn:ietf:params:acme:error:malformed", detail, status: 405 },
      "application/problem+json",
    );
    return routeLabel(path);
  }
  const length = req.headers["content-length"];
  if (req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0")) {
    // The body is never read: close rather than let Node drain it for keep-alive.
    res.setHeader("connection", "close");
    sendProblem(res, malformed("requests to this listener carry no body"), opts.log);
    return routeLabel(path);
  }
  const now = new Date();
  const file = lookup(opts.files, path, now);
  if (!file) sendProblem(res, notFound(path), opts.log);
  else sendCacheable(res, file, now);
  return routeLabel(path);
}

/** Starts the listener; resolves once it is bound. */
export async function startCrlHttpServer(opts: CrlHttpOptions): Promise<CrlHttpServer> {
  const requests = opts.metrics.counter(
    "stint_crl_http_requests_total",
    "Requests to the plain-HTTP CRL listener (crl.httpListen) by route and status.",
    ["route", "code"],
  );
  const server = createServer(limitedServerOptions(opts.limits), (req, res) => {
    let route = "other";
    res.on("finish", () => requests.inc({ route, code: String(res.statusCode) }));
    try {
      route = handle(opts, req, res);
    } catch (err) {
      // Nothing here should throw; if it does, this request fails and the listener keeps serving.
      if (res.headersSent) res.destroy();
      else sendProblem(res, err, opts.log, { listener: "crl-http", method: req.method });
    }
  });
  applyListenerLimits(server, opts.limits, { log: opts.log, metrics: opts.metrics, listener: "crl-http" });

  const authority = await listenOn(server, opts.host, opts.port);
  return {
    url: `http://${authority}`,
    server,
    close: () => closeListener(server, opts.limits),
  };
}
