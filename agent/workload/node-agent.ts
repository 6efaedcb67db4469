import type { Logger } from "../../common/logger";
import type { Registry } from "../../common/metrics";
import { AgentApiClient, type AgentCredentials } from "./ca-client";
import { workloadHealth, workloadMetrics } from "./metrics";
import { startWorkloadServer } from "./server";
import { SvidCache } from "./svids";
import type { JwtVerifier } from "./workload-api";

/**
 * Node agent mode (`stint agent --workload-api-socket`): next to its own
 * identity, the agent keeps SVIDs for the workload entries parented to it and
 * serves them on the socket. Runs beside the agent's own renewal loop, which
 * keeps the client certificate and the trusted roots this mode uses fresh.
 */

export interface NodeAgentOptions {
  caUrl: string;
  socketPath: string;
  trustDomain: string;
  own: () => Promise<{ chainPem: string; keyPem: string } | null>;
  roots: () => string;
  verifyJwt: JwtVerifier;
  registry: Registry;
  log: Logger;
  entrySyncMs?: number;
}

export interface NodeAgent {
  cache: SvidCache;
  health: (now: Date) => { healthy: boolean; body: Record<string, unknown> };
  close(): Promise<void>;
}

/** The loop looks at least this often: the roots the agent's own loop refreshes may have changed. */
const MAX_SLEEP_MS = 1000;

export async function startNodeAgent(opts: NodeAgentOptions): Promise<NodeAgent> {
  const credentials = async (): Promise<AgentCredentials | null> => {
    const own = await opts.own();
    return own === null ? null : { ...own, rootsPem: opts.roots() };
  };
  const client = new AgentApiClient(opts.caUrl, credentials);
  const cache = new SvidCache({
    client,
    roots: opts.roots,
    trustDomain: opts.trustDomain,
    log: opts.log,
    entrySyncMs: opts.entrySyncMs,
  });
  workloadMetrics(opts.registry, cache);
  const server = await startWorkloadServer({
    socketPath: opts.socketPath,
    cache,
    client,
    trustDomain: opts.trustDomain,
    verifyJwt: opts.verifyJwt,
    log: opts.log,
  });

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | null = null;
  const loop = (async () => {
    while (!stopped) {
      try {
        await cache.tick();
      } catch (err) {
        opts.log.warn("workload SVID pass failed", { error: (err as Error).message });
      }
      const wait = Math.max(50, Math.min(MAX_SLEEP_MS, cache.nextDue() - Date.now()));
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, wait);
      });
    }
  })();

  return {
    cache,
    health: (now) => workloadHealth(cache, now),
    close: async () => {
      stopped = true;
      clearTimeout(timer);
      (wake as (() => void) | null)?.();
      await loop;
      await server.close();
      client.close();
    },
  };
}
