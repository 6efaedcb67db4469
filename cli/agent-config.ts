import { KEY_ALGORITHMS } from "../ca/spki";
import { type ConfigOf, declareConfig, type LoadOptions, loadConfig } from "../common/config";
import { StintError } from "../common/errors";
import { parseSpiffeId } from "../formats/spiffe";
import { readSavedCa } from "./bootstrap";
import { LOG_FORMAT_SETTING, LOG_LEVEL_SETTING, listenProblem } from "./ca-config";
import { checkSettingFlags } from "./command";

/**
 * Settings of `stint agent`. This list is the only place their names are
 * spelled: help, README and errors come from it. The join token is a secret:
 * it comes from STINT_JOIN_TOKEN, a file, or the --join-token flag handled by
 * the command itself (with a warning, since argv is visible to `ps`).
 */

const positive = (v: number) => (v > 0 ? undefined : "must be longer than 0s");
const percent = (low: number, high: number) => (v: number) =>
  v >= low && v <= high ? undefined : `must be a percentage between ${low} and ${high}`;

export const AGENT_SIGNALS = ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGQUIT"] as const;

export const AGENT_CONFIG = declareConfig([
  {
    key: "caUrl",
    type: "string",
    default: "",
    description:
      "The CA's HTTPS address, e.g. https://ca.example.com:8443; when empty, the CA saved by `stint ca bootstrap`.",
    validate: (v) =>
      v === "" || /^https:\/\/[^/?#]+\/?$/.test(v) ? undefined : `"${v}" must be https://host[:port]`,
  },
  {
    key: "caFingerprint",
    type: "string",
    default: "",
    description:
      "SHA-256 fingerprint of the CA's root (sha256:<64 hex>), as `stint ca init` printed it; needed until the state directory holds the trusted roots, unless `stint ca bootstrap` saved this CA.",
    validate: (v) =>
      v === "" || /^sha256:[0-9a-f]{64}$/.test(v)
        ? undefined
        : "must be sha256: followed by 64 lowercase hex digits",
  },
  {
    key: "spiffeId",
    type: "string",
    default: "",
    description:
      "The SPIFFE ID this workload enrolls for; with a join token, the one the token names when empty.",
    validate: (v) => {
      if (v === "") return undefined;
      try {
        parseSpiffeId(v);
        return undefined;
      } catch (err) {
        return (err as Error).message;
      }
    },
  },
  {
    key: "dnsNames",
    type: "list",
    default: [],
    description: "DNS names to ask for beside the SPIFFE ID (the registration entry must list them).",
  },
  {
    key: "stateDir",
    type: "string",
    default: "./stint-agent",
    description: "Directory for the agent's own state: its ACME account key and the trusted roots.",
    validate: (v) => (v === "" ? "must not be empty" : undefined),
  },
  {
    key: "outDir",
    type: "string",
    default: "./stint-certs",
    description:
      "Directory the credentials are written to (cert.pem, key.pem, bundle.pem, …), switched atomically as one set.",
    validate: (v) => (v === "" ? "must not be empty" : undefined),
  },
  {
    key: "attestor",
    type: "enum",
    enumValues: ["join_token", "k8s_sat", "x509pop"],
    default: "join_token",
    description: "How the agent proves its identity when it has no valid certificate.",
  },
  {
    key: "joinToken",
    type: "string",
    default: "",
    secret: true,
    env: "STINT_JOIN_TOKEN",
    description: "The join token (from STINT_JOIN_TOKEN; or use joinTokenFile or --join-token).",
  },
  {
    key: "joinTokenFile",
    type: "string",
    default: "",
    description: "File holding the join token.",
  },
  {
    key: "k8sSat.tokenFile",
    type: "string",
    default: "/var/run/secrets/kubernetes.io/serviceaccount/token",
    description:
      "Kubernetes service-account token file (read at every attestation: projected tokens rotate).",
  },
  {
    key: "x509pop.certFile",
    type: "string",
    default: "",
    description: "PEM certificate (and intermediates) from the bootstrap CA, for the x509pop attestor.",
  },
  {
    key: "x509pop.keyFile",
    type: "string",
    default: "",
    description: "PEM private key of x509pop.certFile.",
  },
  {
    key: "keyType",
    type: "enum",
    enumValues: KEY_ALGORITHMS,
    default: "ec-p256",
    description: "Key algorithm of the workload keys; a new key is made for every certificate.",
  },
  {
    key: "renew.percent",
    type: "int",
    default: 60,
    description:
      "When the CA offers no ARI window, renew at this percentage of the certificate's lifetime (with jitter); with renew.jitterPercent at most 90, so the last tenth stays a runway.",
    validate: percent(10, 90),
  },
  {
    key: "renew.jitterPercent",
    type: "int",
    default: 10,
    description: "Spread of renewal times around renew.percent, as a percentage of the lifetime.",
    validate: percent(0, 50),
  },
  {
    key: "backoff.base",
    type: "duration",
    default: "1s",
    description: "First retry delay after a failure; it doubles with each failure (with full jitter).",
    validate: positive,
  },
  {
    key: "backoff.cap",
    type: "duration",
    default: "5m",
    description: "Longest retry delay after failures (never beyond the certificate's expiry).",
    validate: positive,
  },
  {
    key: "bundleRefresh",
    type: "duration",
    default: "5m",
    description:
      "How often the agent refreshes the trust bundle from the CA (over TLS it already trusts), at most: sooner when the CA's bundle refresh hint is shorter.",
    validate: positive,
  },
  {
    key: "exec",
    type: "string",
    default: "",
    description:
      'Command run (without a shell) after each switch of the set (new certificate, bundle.pem or crls.pem), e.g. "nginx -s reload"; its exit status is logged.',
  },
  {
    key: "signal",
    type: "enum",
    enumValues: ["", ...AGENT_SIGNALS],
    default: "",
    description: "Signal sent after each switch to the process in pid or pidFile, e.g. SIGHUP.",
  },
  {
    key: "pid",
    type: "int",
    default: 0,
    description: "Process to signal after each switch.",
    validate: (v) => (v >= 0 ? undefined : "must be a process id"),
  },
  {
    key: "pidFile",
    type: "string",
    default: "",
    description: "File holding the process id to signal after each switch (read each time).",
  },
  {
    key: "combined",
    type: "bool",
    default: false,
    description: "Also write combined.pem (key, then certificate chain), 0600.",
  },
  {
    key: "crls",
    type: "bool",
    default: true,
    description:
      "Also write crls.pem: the CRLs of every CA in the certificate's chain and of the CA's active intermediate, each checked against its issuer, fetched again before its nextUpdate, with the reload hook run after each change (for nginx ssl_crl, HAProxy crl-file).",
  },
  {
    key: "pkcs12PasswordFile",
    type: "string",
    default: "",
    description: "When set, also write cert.p12 (PKCS#12), encrypted with the password in this file.",
  },
  {
    key: "healthListen",
    type: "string",
    default: "127.0.0.1:8466",
    description: "Local address of the /health and /metrics endpoint, host:port; empty turns it off.",
    validate: (v) => (v === "" ? undefined : listenProblem(v)),
  },
  LOG_LEVEL_SETTING,
  LOG_FORMAT_SETTING,
]);

export type AgentConfig = ConfigOf<typeof AGENT_CONFIG>;

/** What must be given together, named with where each value came from. */
function checkAgentConfig(cfg: AgentConfig): string | undefined {
  // A join token names its SPIFFE ID (cli/agent-identity.ts); other attestors prove facts, not a name.
  if (cfg.spiffeId === "" && cfg.attestor !== "join_token")
    return "spiffeId is required: the identity to enroll for, e.g. --spiffe-id spiffe://example.org/web";
  if (cfg.attestor === "x509pop" && (cfg["x509pop.certFile"] === "" || cfg["x509pop.keyFile"] === "")) {
    return "the x509pop attestor needs x509pop.certFile and x509pop.keyFile";
  }
  if (cfg["renew.percent"] + cfg["renew.jitterPercent"] > 90)
    return `renew.percent ${cfg["renew.percent"]} plus renew.jitterPercent ${cfg["renew.jitterPercent"]} is over 90: renewals would leave less than a tenth of the lifetime to retry in`;
  if (cfg.signal !== "" && cfg.pid === 0 && cfg.pidFile === "")
    return `signal ${cfg.signal} needs pid or pidFile`;
  if (cfg.signal === "" && (cfg.pid !== 0 || cfg.pidFile !== "")) return "pid/pidFile given without signal";
  return undefined;
}

/**
 * The agent's settings, with the CA saved by `stint ca bootstrap` (in
 * $XDG_CONFIG_HOME/stint) standing in for caUrl and caFingerprint when they
 * are not given, as it does for the admin commands. Its fingerprint is used
 * only for the CA it was saved for.
 */
export async function loadAgentConfig(opts: Omit<LoadOptions<AgentConfig>, "check">): Promise<AgentConfig> {
  checkSettingFlags(AGENT_CONFIG, opts.flags, "agent-config");
  const cfg = loadConfig(AGENT_CONFIG, { ...opts, check: checkAgentConfig });
  if (cfg.caUrl !== "" && cfg.caFingerprint !== "") return cfg;
  const saved = await readSavedCa(opts.env);
  const caUrl = cfg.caUrl === "" ? (saved?.caUrl ?? "") : cfg.caUrl;
  if (caUrl === "") {
    throw new StintError(
      "ERR_CONFIG",
      "config: caUrl is required: the CA's address, e.g. --ca-url https://ca.example.com:8443, or run `stint ca bootstrap` once",
    );
  }
  const sameCa = saved !== null && sameOrigin(saved.caUrl, caUrl);
  const caFingerprint = cfg.caFingerprint === "" && sameCa ? saved.fingerprint : cfg.caFingerprint;
  return Object.freeze({ ...cfg, caUrl, caFingerprint });
}

const sameOrigin = (a: string, b: string) => a.replace(/\/$/, "") === b.replace(/\/$/, "");
