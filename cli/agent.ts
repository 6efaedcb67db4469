import { readFile } from "node:fs/promises";
import { AcmeProblem } from "../agent/acme-client";
import { Agent } from "../agent/agent";
import {
  type EvidenceProvider,
  joinTokenProvider,
  k8sSatProvider,
  x509popProvider,
} from "../agent/attestation";
import { agentMetrics, crlMetrics, startHealthServer } from "../agent/health";
import { splitCommand } from "../agent/hooks";
import { Backoff } from "../agent/schedule";
import { Trust } from "../agent/trust";
import { verifyJwt } from "../agent/workload/jwt-verifier";
import { type NodeAgent, startNodeAgent } from "../agent/workload/node-agent";
import type { KeyAlgorithm } from "../ca/spki";
import { flagOptions } from "../common/config";
import { StintError } from "../common/errors";
import { ensureDir, fileError } from "../common/files";
import { createLogger, type Logger } from "../common/logger";
import { processMetrics, Registry } from "../common/metrics";
import { AGENT_CONFIG, type AgentConfig, loadAgentConfig } from "./agent-config";
import { agentSpiffeId } from "./agent-identity";
import { type Command, type Options, parseFlags } from "./command";
import { listenParts } from "./listen";

const OWN_FLAGS: Options = {
  config: { type: "string", short: "c" },
  help: { type: "boolean", short: "h" },
  once: { type: "boolean" },
  force: { type: "boolean" },
  "join-token": { type: "string" },
  // Node agent mode (issue 14): serve workload SVIDs on a Unix socket; see agent/workload.
  "workload-api-socket": { type: "string" },
};

export const agent: Command = {
  name: "agent",
  summary: "keep a workload's key and certificate fresh on disk, renewing before expiry",
  help: () =>
    [
      "usage: stint agent --ca-url URL --spiffe-id ID [--ca-fingerprint sha256:…] [options]",
      "",
      "Enrolls with the CA (attestation), writes cert.pem, key.pem, bundle.pem and crls.pem to the",
      "output directory as one atomic switch, and renews before expiry: inside the CA's ARI window, else",
      "at renew.percent of the lifetime; the CRLs are fetched again before their nextUpdate. After each",
      "switch (new certificate or new CRLs) it runs --exec and/or sends --signal. SIGHUP",
      "forces a renewal; SIGTERM exits cleanly. /health and /metrics are served on healthListen.",
      "",
      "options:",
      "  --once                     one pass (enroll or renew if due), then exit: 0 when a valid",
      "                             certificate is on disk, 1 with one line saying why not",
      "  --force                    renew now even if not due (with --once, or at daemon start)",
      "  --join-token TOKEN         the join token (visible to `ps`; prefer STINT_JOIN_TOKEN or --join-token-file)",
      "  --ca-url URL               the CA's origin, e.g. https://ca.example.com:8443",
      "  --ca-fingerprint sha256:…  the root's fingerprint, as `stint ca init` printed it",
      "                             (both default to the CA saved by `stint ca bootstrap`)",
      "  --join-token-file FILE     the join token, from `stint token create`",
      "  --out-dir DIR              where cert.pem, key.pem and bundle.pem go (default ./stint-certs)",
      "  --exec CMD, --signal SIG   reload the workload after each switch",
      "  --workload-api-socket PATH also serve the SPIFFE Workload API and Envoy SDS on this Unix",
      "                             socket to every workload whose entry names this agent as parent",
      "  -c, --config FILE          YAML or JSON config file (env STINT_CONFIG)",
      "  -h, --help                 this help",
      "",
      // The full table is long; one place shows it, not every --help.
      "Every agent setting is also a flag and an environment variable: `stint help agent-config` lists them.",
    ].join("\n"),
  examples: [
    "stint agent --ca-url https://ca:8443 --ca-fingerprint sha256:… --spiffe-id spiffe://stint.internal/web \\\n" +
      "      --join-token-file token --once",
    "stint agent --config /etc/stint/agent.yaml --exec 'systemctl reload nginx'",
    "stint help agent-config",
  ],
  async run(argv) {
    const { values } = parseFlags(argv, { ...OWN_FLAGS, ...(flagOptions(AGENT_CONFIG) as Options) });
    const file = (values.config as string | undefined) ?? process.env.STINT_CONFIG;
    const cfg = await loadAgentConfig({ file: file || undefined, env: process.env, flags: values });
    const log = createLogger({ level: cfg["log.level"], format: cfg["log.format"], component: "agent" });
    if (values["join-token"] !== undefined) {
      log.warn(
        "--join-token is visible to every local user through ps; prefer STINT_JOIN_TOKEN or --join-token-file",
      );
    }
    await ensureDir(cfg.stateDir, 0o700);
    const trustFrom = { stateDir: cfg.stateDir, caUrl: cfg.caUrl, fingerprint: cfg.caFingerprint };
    const trust = values.once === true ? await Trust.load(trustFrom) : await firstTrust(trustFrom, cfg, log);
    if (trust === null) return 0;
    const spiffeId = await agentSpiffeId(cfg, (values["join-token"] as string | undefined) ?? "");
    const stint = await Agent.open(
      {
        caUrl: cfg.caUrl,
        spiffeId,
        dnsNames: cfg.dnsNames,
        stateDir: cfg.stateDir,
        outDir: cfg.outDir,
        keyType: cfg.keyType as KeyAlgorithm,
        renewFraction: cfg["renew.percent"] / 100,
        renewJitter: cfg["renew.jitterPercent"] / 100,
        backoff: { baseMs: cfg["backoff.base"], capMs: cfg["backoff.cap"] },
        bundleRefreshMs: cfg.bundleRefresh,
        hook: {
          exec: cfg.exec === "" ? null : splitCommand(cfg.exec),
          signal: cfg.signal === "" ? null : (cfg.signal as NodeJS.Signals),
          pid: cfg.pid,
          pidFile: cfg.pidFile,
        },
        output: { combined: cfg.combined, pkcs12Password: await pkcs12Password(cfg), crls: cfg.crls },
        evidence: evidenceProvider(cfg, (values["join-token"] as string | undefined) ?? ""),
        log,
      },
      trust,
    );

    const workloadSocket = (values["workload-api-socket"] as string | undefined) ?? "";
    if (workloadSocket !== "" && values.once === true)
      throw new StintError("ERR_USAGE", "--workload-api-socket serves workloads until stopped; drop --once");
    if (values.once === true) {
      const { renewed } = await stint.cycle(values.force === true).catch((err) => {
        throw err instanceof AcmeProblem
          ? new StintError("ERR_UNAUTHORIZED", `the CA refused: ${err.detail || err.type}`)
          : err;
      });
      log.info(renewed ? "certificate written" : "certificate still valid; nothing to do", {
        outDir: cfg.outDir,
        notAfter: stint.status.certificateNotAfter?.toISOString() ?? null,
      });
      return 0;
    }
    return daemon(stint, cfg, log, values.force === true, {
      socket: workloadSocket,
      trustDomain: new URL(spiffeId).host,
    });
  },
};

/**
 * Daemon mode: the trusted roots, retrying with backoff while the CA cannot be
 * reached (agents often start before the CA, or with it). Anything else (a
 * wrong fingerprint, say) still ends the agent. Null when stopped by a signal.
 */
async function firstTrust(
  from: Parameters<typeof Trust.load>[0],
  cfg: AgentConfig,
  log: Logger,
): Promise<Trust | null> {
  const backoff = new Backoff({ baseMs: cfg["backoff.base"], capMs: cfg["backoff.cap"] });
  let stop: (() => void) | null = null;
  const stopped = new Promise<"stop">((resolve) => {
    stop = () => resolve("stop");
  });
  const onSignal = () => stop?.();
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  try {
    for (;;) {
      try {
        return await Trust.load(from);
      } catch (err) {
        if (!(err instanceof StintError) || err.code !== "ERR_CONNECTION") throw err;
        const waitMs = backoff.next(new Date());
        log.warn("cannot reach the CA yet; retrying", {
          error: err.message,
          retryInSeconds: Math.round(waitMs / 100) / 10,
          attempt: backoff.attempts,
        });
        let timer: NodeJS.Timeout | undefined;
        const slept = await Promise.race([
          stopped,
          new Promise<"timeout">((resolve) => {
            timer = setTimeout(() => resolve("timeout"), waitMs);
          }),
        ]);
        clearTimeout(timer);
        if (slept === "stop") {
          log.info("stopped before the CA could be reached");
          return null;
        }
      }
    }
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
}

function evidenceProvider(cfg: AgentConfig, flagToken: string): EvidenceProvider {
  switch (cfg.attestor) {
    case "k8s_sat":
      return k8sSatProvider({ tokenFile: cfg["k8sSat.tokenFile"] });
    case "x509pop":
      return x509popProvider({ certFile: cfg["x509pop.certFile"], keyFile: cfg["x509pop.keyFile"] });
    default:
      return joinTokenProvider({
        token: flagToken || cfg.joinToken,
        tokenFile: cfg.joinTokenFile,
        stateDir: cfg.stateDir,
      });
  }
}

async function pkcs12Password(cfg: AgentConfig): Promise<string | null> {
  const path = cfg.pkcs12PasswordFile;
  if (path === "") return null;
  try {
    const password = (await readFile(path, "utf8")).replace(/\r?\n$/, "");
    if (password === "")
      throw new StintError("ERR_CONFIG", `${path} is empty; a PKCS#12 file needs a password`);
    return password;
  } catch (err) {
    throw err instanceof StintError ? err : fileError(err, path, "read the PKCS#12 password file");
  }
}

/** Daemon mode: the renewal loop, the health endpoint, SIGHUP to renew now, SIGTERM/SIGINT to stop. */
async function daemon(
  stint: Agent,
  cfg: AgentConfig,
  log: Logger,
  forceFirst: boolean,
  workloads: { socket: string; trustDomain: string },
): Promise<number> {
  const registry = new Registry();
  processMetrics(registry);
  agentMetrics(registry, () => stint.status);
  if (cfg.crls) crlMetrics(registry, () => stint.status);

  let stopped = false;
  let forced = forceFirst;
  let wake: ((why: "wake" | "stop") => void) | null = null;
  const onHup = () => {
    log.info("SIGHUP: renewing now");
    forced = true;
    wake?.("wake");
  };
  const onStop = (signal: string) => () => {
    log.info("stopping", { signal });
    stopped = true;
    wake?.("stop");
  };
  const onTerm = onStop("SIGTERM");
  const onInt = onStop("SIGINT");
  process.on("SIGHUP", onHup);
  process.once("SIGTERM", onTerm);
  process.once("SIGINT", onInt);
  // Handlers first: a SIGHUP sent when the health endpoint reports listening must renew, not end the agent.
  let health: Awaited<ReturnType<typeof startHealthServer>> | null = null;
  let nodeAgent: NodeAgent | null = null;
  try {
    if (workloads.socket !== "") {
      nodeAgent = await startNodeAgent({
        caUrl: cfg.caUrl,
        socketPath: workloads.socket,
        trustDomain: workloads.trustDomain,
        own: () => stint.ownCredentials(),
        roots: () => stint.trustedRootsPem(),
        verifyJwt,
        registry,
        log: log.child({ component: "workload-api" }),
      });
    }
    const served = nodeAgent;
    health =
      cfg.healthListen === ""
        ? null
        : await startHealthServer({
            listen: listenParts(cfg.healthListen),
            status: () => stint.status,
            registry,
            extra: served ? { key: "workloads", check: (now) => served.health(now) } : undefined,
          });
    if (health) log.info("health endpoint listening", { url: health.url });
    await stint.run({
      stopped: () => stopped,
      forced: () => {
        const f = forced;
        forced = false;
        return f;
      },
      sleep: (ms) =>
        new Promise((resolve) => {
          if (stopped) return resolve("stop");
          if (forced) return resolve("wake");
          const timer = setTimeout(() => {
            wake = null;
            resolve("timeout");
          }, ms);
          wake = (why) => {
            clearTimeout(timer);
            wake = null;
            resolve(why);
          };
        }),
    });
  } finally {
    process.off("SIGHUP", onHup);
    await nodeAgent?.close();
    await health?.close();
  }
  log.info("stopped");
  return 0;
}
