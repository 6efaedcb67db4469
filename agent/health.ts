import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { StintError } from "../common/errors";
import { listenError } from "../common/listen-error";
import type { Logger } from "../common/logger";
import { CONTENT_TYPE, type Registry } from "../common/metrics";

/**
 * The agent's local endpoint: GET /health (the status as JSON; 200 while a
 * valid certificate is held, else 503) and GET /metrics (Prometheus). Plain
 * HTTP on the address the operator chose; it is meant for localhost or a pod
 * network, so it shows no secrets, though /health does show the last error text.
 */

export type AgentState = "starting" | "ok" | "renewing" | "failing" | "expired" | "reattest-needed";
export const AGENT_STATES: readonly AgentState[] = [
  "starting",
  "ok",
  "renewing",
  "failing",
  "expired",
  "reattest-needed",
];

export interface AgentStatus {
  state: AgentState;
  certificateNotAfter: Date | null;
  spiffeId: string | null;
  lastRenewal: Date | null;
  lastError: string | null;
  renewalsOk: number;
  renewalsFailed: number;
  bundleUpdatedAt: Date | null;
  nextRenewal: Date | null;
  /** The earliest nextUpdate among the CRLs in crls.pem; null when none is written. */
  crlsNextUpdate: Date | null;
}

/** Names users alert on, declared once (STYLE habit 9). */
export const AGENT_METRICS = {
  expiry: {
    name: "stint_agent_certificate_expiry_seconds",
    help: "Seconds until the held certificate expires; negative once expired, 0 when none is held.",
  },
  renewals: {
    name: "stint_agent_renewals_total",
    help: "Renewal attempts by result (ok, failed).",
  },
  bundleAge: {
    name: "stint_agent_bundle_age_seconds",
    help: "Seconds since the trust bundle was last refreshed; +Inf before the first refresh.",
  },
  lastRenewal: {
    name: "stint_agent_last_renewal_timestamp_seconds",
    help: "Unix time of the last successful renewal; 0 before the first.",
  },
  state: {
    name: "stint_agent_state",
    help: "The agent's state: 1 for the current one, 0 for the others.",
  },
  info: {
    name: "stint_agent_info",
    help: "1, labelled with the SPIFFE ID this agent holds (empty before the first certificate): joins its other series to a workload.",
  },
  crlExpiry: {
    name: "stint_agent_crl_expiry_seconds",
    help: "Seconds until the first CRL in crls.pem passes its nextUpdate, after which servers checking CRLs refuse every peer; 0 when none is written.",
  },
} as const;

const seconds = (ms: number) => ms / 1000;

/**
 * Registers the agent's metrics on `registry`, all read from `status` when
 * scraped, so the status object stays the one source of the counts /health
 * also shows. Missing facts read as the alarming value (expiry 0, bundle age
 * +Inf) so "expires soon" and "bundle stale" alerts fire without a certificate.
 * Callback metrics cannot be registered twice: call once per registry.
 */
export function agentMetrics(
  registry: Registry,
  status: () => AgentStatus,
  now: () => Date = () => new Date(),
): void {
  const m = AGENT_METRICS;
  registry.callback(m.expiry.name, m.expiry.help, "gauge", () => {
    const notAfter = status().certificateNotAfter;
    return notAfter === null ? 0 : seconds(notAfter.getTime() - now().getTime());
  });
  // The counts live in the status. The state gauge, registered (so rendered) just before the counter,
  // copies them in at each scrape: a counter type for rate(), without a second source of truth.
  registry.gauge(m.state.name, m.state.help, ["state"], (gauge) => {
    const s = status();
    for (const state of AGENT_STATES) gauge.set(state === s.state ? 1 : 0, { state });
    catchUp("ok", s.renewalsOk);
    catchUp("failed", s.renewalsFailed);
  });
  const renewals = registry.counter(m.renewals.name, m.renewals.help, ["result"]);
  const catchUp = (result: "ok" | "failed", value: number) => {
    const by = value - renewals.get({ result });
    if (by > 0) renewals.inc({ result }, by);
  };
  catchUp("ok", 0);
  catchUp("failed", 0);
  registry.callback(m.bundleAge.name, m.bundleAge.help, "gauge", () => {
    const at = status().bundleUpdatedAt;
    return at === null ? Number.POSITIVE_INFINITY : seconds(now().getTime() - at.getTime());
  });
  registry.callback(m.lastRenewal.name, m.lastRenewal.help, "gauge", () => {
    const at = status().lastRenewal;
    return at === null ? 0 : seconds(at.getTime());
  });
  // Prometheus knows an agent by its scrape address; this names the workload for "failures by workload".
  registry.gauge(m.info.name, m.info.help, ["spiffe_id"], (gauge) => {
    gauge.set(1, { spiffe_id: status().spiffeId ?? "" });
  });
}

/** The CRL gauge, registered only when the agent writes crls.pem, so an agent without them raises no alarm. */
export function crlMetrics(
  registry: Registry,
  status: () => AgentStatus,
  now: () => Date = () => new Date(),
): void {
  registry.callback(AGENT_METRICS.crlExpiry.name, AGENT_METRICS.crlExpiry.help, "gauge", () => {
    const at = status().crlsNextUpdate;
    return at === null ? 0 : seconds(at.getTime() - now().getTime());
  });
}

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

/**
 * The /health document, and whether it is healthy: a certificate is held, has
 * not expired, and can be renewed (not reattest-needed: a revoked certificate
 * is still within its dates, but the workload must not count on it).
 */
export function healthDocument(
  s: AgentStatus,
  now: Date,
): { healthy: boolean; body: Record<string, unknown> } {
  const t = now.getTime();
  const notAfter = s.certificateNotAfter;
  return {
    healthy: notAfter !== null && notAfter.getTime() > t && s.state !== "reattest-needed",
    body: {
      state: s.state,
      spiffeId: s.spiffeId,
      certificateNotAfter: iso(notAfter),
      secondsUntilExpiry: notAfter === null ? null : Math.floor(seconds(notAfter.getTime() - t)),
      nextRenewal: iso(s.nextRenewal),
      lastRenewal: iso(s.lastRenewal),
      lastError: s.lastError,
      renewalsOk: s.renewalsOk,
      renewalsFailed: s.renewalsFailed,
      bundleUpdatedAt: iso(s.bundleUpdatedAt),
      bundleAgeSeconds:
        s.bundleUpdatedAt === null ? null : Math.floor(seconds(t - s.bundleUpdatedAt.getTime())),
      crlsNextUpdate: iso(s.crlsNextUpdate),
    },
  };
}

export interface HealthServerOptions {
  listen: { host: string; port: number };
  status: () => AgentStatus;
  registry: Registry;
  /** More checks under `key` in /health (a node agent's workload SVIDs); unhealthy if any is. */
  extra?: { key: string; check: (now: Date) => { healthy: boolean; body: Record<string, unknown> } };
  /** Injected for tests. */
  now?: () => Date;
  logger?: Logger;
}

export interface HealthServer {
  /** e.g. http://127.0.0.1:9443 (the bound port, when 0 was asked for). */
  url: string;
  close(): Promise<void>;
}

export function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const now = opts.now ?? (() => new Date());
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?", 1)[0];
    if (path !== "/health" && path !== "/metrics")
      return send(res, 404, "text/plain; charset=utf-8", "not found\n");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      return send(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
    }
    try {
      if (path === "/metrics") return send(res, 200, CONTENT_TYPE, opts.registry.render(), req.method);
      const at = now();
      const doc = healthDocument(opts.status(), at);
      const extra = opts.extra?.check(at);
      const healthy = doc.healthy && (extra?.healthy ?? true);
      const body = extra ? { ...doc.body, [opts.extra!.key]: extra.body } : doc.body;
      send(res, healthy ? 200 : 503, "application/json", `${JSON.stringify(body)}\n`, req.method);
    } catch (err) {
      opts.logger?.error("health endpoint failed", { path, error: err });
      send(res, 500, "text/plain; charset=utf-8", "internal error\n");
    }
  });
  // Scrapes are tiny; a client that stalls is dropped rather than holding a socket.
  server.headersTimeout = 5000;
  server.requestTimeout = 10_000;

  return new Promise((resolve, reject) => {
    const { host, port } = opts.listen;
    const onListenError = (err: NodeJS.ErrnoException) => {
      const failure = listenError(err, "health", host, port);
      if (failure !== err) return reject(failure);
      const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
      reject(
        new StintError("ERR_CONFIG", `cannot serve health on ${where}: ${err.code ?? err.message}`, {
          cause: err,
        }),
      );
    };
    server.once("error", onListenError);
    server.listen(port, host, () => {
      server.off("error", onListenError);
      server.on("error", (err) => opts.logger?.error("health server error", { error: err }));
      const addr = server.address() as AddressInfo;
      const shown = addr.address.includes(":") ? `[${addr.address}]` : addr.address;
      resolve({
        url: `http://${shown}:${addr.port}`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            // Keep-alive scrapers would otherwise hold close() open until they time out.
            server.closeAllConnections();
          }),
      });
    });
  });
}

function send(res: ServerResponse, status: number, type: string, body: string, method = "GET"): void {
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
  });
  res.end(method === "HEAD" ? undefined : body);
}
