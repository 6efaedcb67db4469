import { createServer, type Server } from "node:https";
import type { Authority } from "../ca/authority";
import { bundlePem, spiffeBundle } from "../ca/bundle";
import type { JwtBundleKey } from "../ca/jwt-keys";
import type { Store } from "../ca/store";
import type { Logger } from "../common/logger";
import type { Registry } from "../common/metrics";
import {
  applyListenerLimits,
  closeListener,
  DEFAULT_LIMITS,
  type ListenerLimits,
  limitedServerOptions,
  listenOn,
} from "./listener-limits";
import { sendJson } from "./problem";
import { Router } from "./router";
import { ServerIdentity } from "./server-identity";

/**
 * The CA's HTTPS front end. It holds no CA key: it asks the authority for
 * what it serves. ACME enrollment mounts under /acme/ (see docs/acme.md).
 */

export interface CaServerOptions {
  authority: Authority;
  store: Store;
  log: Logger;
  metrics: Registry;
  host: string;
  port: number;
  /** DNS names and IPs in the server's own certificate. */
  serverNames: readonly string[];
  serverCertTtlMs: number;
  /** How often relying parties should refetch the bundle (spiffe_refresh_hint). */
  bundleRefreshHintSeconds?: number;
  /** The JWT-SVID keys /bundle.json publishes (ca/jwt-svid.ts); none when absent. */
  jwtBundleKeys?: (now: Date) => Promise<JwtBundleKey[]>;
  /**
   * Route sets mounted beside the base endpoints (ACME, admin), each given the
   * router and the server's public origin once it is listening.
   */
  mounts?: ReadonlyArray<(router: Router, origin: string) => void>;
  /** Public origin clients use (https://host:port); defaults to the listening address. */
  publicOrigin?: string;
  /** Timeouts and the per-address connection cap (acme/listener-limits.ts); the config defaults if absent. */
  limits?: ListenerLimits;
}

export interface CaServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

export async function startCaServer(opts: CaServerOptions): Promise<CaServer> {
  const { authority, log, metrics } = opts;
  const identity = new ServerIdentity(authority, opts.serverNames, opts.serverCertTtlMs, log);
  const started = new Date();
  let tls = await identity.issue(started);

  const requests = metrics.counter("stint_http_requests_total", "HTTP requests by route and status.", [
    "route",
    "code",
  ]);
  // Per route, so the issuance SLI (finalize, agent SVID batches) has its own latency (docs/slo.md).
  const durations = metrics.histogram(
    "stint_http_request_duration_seconds",
    "Time from request to the last byte of the response, by route.",
    ["route"],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  const router = new Router(log)
    .on("GET", "/health", (_req, res) => {
      sendJson(res, 200, {
        status: "ok",
        trustDomain: authority.trustDomain,
        activeIssuer: authority.activeIssuer.id,
        serverCertificateNotAfter: tls.notAfter.toISOString(),
      });
    })
    .on("GET", "/bundle.pem", (_req, res) => {
      const body = bundlePem(authority.trustedRoots());
      res.writeHead(200, {
        "content-type": "application/x-pem-file",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
    })
    .on("GET", "/bundle.json", async (_req, res) => {
      // Keys first: dropping a retired JWT key bumps the sequence, which must then be read.
      const jwtKeys = (await opts.jwtBundleKeys?.(new Date())) ?? [];
      const sequence = Number((await opts.store.getMeta("bundle_sequence")) ?? "1");
      const refreshHintSeconds = opts.bundleRefreshHintSeconds ?? 300;
      sendJson(res, 200, spiffeBundle(authority.trustedRoots(), { sequence, refreshHintSeconds, jwtKeys }));
    })
    .on("GET", "/metrics", (_req, res) => {
      const body = metrics.render();
      res.writeHead(200, {
        "content-type": "text/plain; version=0.0.4",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
    });

  // Client certificates are requested but not required: only the admin API insists on one.
  const clientCa = () => bundlePem(authority.trustedRoots());
  const limits = opts.limits ?? DEFAULT_LIMITS;
  const server = createServer(
    {
      key: tls.key,
      cert: tls.cert,
      ca: clientCa(),
      requestCert: true,
      rejectUnauthorized: false,
      ...limitedServerOptions(limits),
    },
    (req, res) => {
      const begun = process.hrtime.bigint();
      res.on("finish", () => {
        // Runs outside the router's boundary, so it must not throw either.
        try {
          const route = routeLabel(req.url);
          requests.inc({ route, code: String(res.statusCode) });
          durations.observe(Number(process.hrtime.bigint() - begun) / 1e9, { route });
        } catch (err) {
          log.error("could not count a request", { error: err });
        }
      });
      router.handle(req, res);
    },
  );
  applyListenerLimits(server, limits, { log, metrics, listener: "https" });
  identity.keepFresh(tls, started, (next) => {
    tls = next;
    server.setSecureContext({ key: next.key, cert: next.cert, ca: clientCa() });
  });

  const bound = await listenOn(server, opts.host, opts.port);
  const url = opts.publicOrigin ?? `https://${bound}`;
  for (const mount of opts.mounts ?? []) mount(router, url);

  return {
    url,
    server,
    close: () => {
      identity.stop();
      return closeListener(server, limits);
    },
  };
}

/** Bounded label values: the known paths, everything else "other". */
function routeLabel(url: string | undefined): string {
  const path = (url ?? "/").split("?")[0];
  if (["/health", "/bundle.pem", "/bundle.json", "/metrics"].includes(path)) return path;
  // Finalize is where ACME issues: apart from reads of the order, for the issuance SLI.
  if (/^\/acme\/order\/[^/]+\/finalize$/.test(path)) return "/acme/order/finalize";
  // ACME, admin, CRL and feed paths carry ids; label by their first two segments (/acme/order, /admin/entries).
  const m = /^\/(acme|admin|crl|feed|console)(\/[a-z-]+)?|^\/agent\/v1\/[a-z0-9-]+/.exec(path);
  return m ? m[0] : "other";
}
