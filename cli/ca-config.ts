import { isIP } from "node:net";
import { parseWindow } from "../ca/renewal";
import { KEY_ALGORITHMS } from "../ca/spki";
import { type ConfigOf, declareConfig, type LoadOptions, loadConfig } from "../common/config";
import { formatDuration } from "../common/duration";
import { trustDomainProblem } from "../formats/spiffe";

/**
 * Settings of `stint ca serve`; `ca init` and `ca issue` read the same
 * dataDir, trustDomain and policy. This list is the only place these names
 * are spelled: help, README and errors are generated from it.
 * The CA passphrase is deliberately absent: it comes only from the
 * environment variable STINT_CA_PASSPHRASE, read where the key is opened.
 */

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;

function dnsNameProblem(name: string): string | undefined {
  const labels = name.replace(/\.$/, "").split(".");
  if (name.length > 253 || !labels.every((l) => DNS_LABEL.test(l))) return `"${name}" is not a DNS name`;
  return undefined;
}

export function listenProblem(v: string): string | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || port > 65535) {
    return `"${v}" is not host:port (e.g. 127.0.0.1:8443, [::1]:8443, 0.0.0.0:8443; port 0 picks a free port)`;
  }
  if (m[1] !== undefined && isIP(host) !== 6) return `"${host}" in brackets is not an IPv6 address`;
  if (m[2] !== undefined && host !== "" && isIP(host) === 0 && dnsNameProblem(host)) {
    return `"${host}" is not an IP address or host name`;
  }
  return undefined;
}

function trustDomain(v: string): string | undefined {
  if (v.includes("://")) return `trust domain "${v}" must be a bare name, without a scheme like spiffe://`;
  if (v.includes(":")) return `trust domain "${v}" must not contain a port`;
  if (v !== v.toLowerCase()) return `trust domain "${v}" must be lowercase`;
  if (v.startsWith(".") || v.endsWith(".") || v.includes(".."))
    return `trust domain "${v}" has an empty label`;
  return trustDomainProblem(v);
}

function serverNames(list: readonly string[]): string | undefined {
  if (list.length === 0) return "list at least one DNS name or IP address for the CA's HTTPS certificate";
  for (const name of list) {
    if (isIP(name) === 0 && dnsNameProblem(name)) return `"${name}" is neither a DNS name nor an IP address`;
  }
  return undefined;
}

function dnsSuffixes(list: readonly string[]): string | undefined {
  for (const s of list) {
    // ca/policy.ts matches "name === suffix or under it", so a leading dot would match nothing.
    if (s.startsWith(".") || s.includes("*")) {
      return `"${s}": write the domain itself, e.g. svc.example.com (it also allows names under it)`;
    }
    if (s !== s.toLowerCase() || dnsNameProblem(s)) return `"${s}" is not a lowercase DNS domain`;
  }
  return undefined;
}

const positive = (v: number) => (v > 0 ? undefined : "must be longer than 0s");
const nonNegative = (v: number) => (v >= 0 ? undefined : "must be 0 or more");

/** Shared by every command that logs (the CA and the agent). */
export const LOG_LEVEL_SETTING = {
  key: "log.level",
  type: "enum",
  enumValues: ["debug", "info", "warn", "error"],
  default: "info",
  description: "Lowest level of log lines written to stderr.",
} as const;

/** Shared like log.level; common/logger.ts resolves "auto" against stderr. */
export const LOG_FORMAT_SETTING = {
  key: "log.format",
  type: "enum",
  enumValues: ["auto", "json", "pretty"],
  default: "auto",
  description:
    "Format of log lines on stderr: json (one object per line), pretty (one human line per record), or auto: pretty when stderr is a terminal, json otherwise.",
} as const;

export const CA_CONFIG = declareConfig([
  {
    key: "dataDir",
    type: "string",
    default: "./stint-data",
    description: "Directory holding the CA's encrypted keys, database and audit log.",
    validate: (v) => (v === "" ? "must not be empty" : undefined),
  },
  {
    key: "trustDomain",
    type: "string",
    default: "stint.internal",
    description: "SPIFFE trust domain of every identity this CA issues (lowercase name, no scheme or port).",
    validate: trustDomain,
  },
  {
    key: "listen",
    type: "string",
    default: "127.0.0.1:8443",
    description: "Address the HTTPS (ACME) server listens on, host:port; port 0 picks a free port.",
    validate: listenProblem,
  },
  {
    key: "publicUrl",
    type: "string",
    default: "",
    description:
      "Origin clients reach the CA at (https://ca.example.com:8443), used in ACME URLs and JWS url checks; empty means https://<listen address>, or https://<first serverName>:<port> when listening on all addresses.",
    validate: (v) =>
      v === "" || /^https:\/\/[^/?#]+$/.test(v)
        ? undefined
        : `"${v}" must be https://host[:port] with no path`,
  },
  {
    key: "serverNames",
    type: "list",
    default: ["localhost", "127.0.0.1"],
    description: "DNS names and IP addresses in the CA's own HTTPS certificate.",
    validate: serverNames,
  },
  {
    key: "serverCertTtl",
    type: "duration",
    default: "24h",
    description: "Lifetime of the CA's own HTTPS certificate; it is renewed before it expires.",
    validate: positive,
  },
  {
    key: "passphraseFile",
    type: "string",
    default: "",
    description:
      "File holding the CA key passphrase; when empty, the passphrase comes from STINT_CA_PASSPHRASE.",
  },
  {
    key: "keyAlgorithm",
    type: "enum",
    enumValues: KEY_ALGORITHMS,
    default: "ec-p256",
    description: "Algorithm of keys the CA generates for itself (issuers and its HTTPS certificate).",
  },
  {
    key: "keys.backend",
    type: "enum",
    enumValues: ["file", "pkcs11"],
    default: "file",
    description:
      "Where `ca init`, `ca rotate`, `ca root prepare` and `ca intermediate-csr` make new root and intermediate keys: file (PKCS#8 in <dataDir>/keys, encrypted with the passphrase) or pkcs11 (inside the token keys.pkcs11.* names, sensitive and not extractable; the store records a pkcs11: URI). Keys made before a switch keep working where they are.",
  },
  {
    key: "keys.pkcs11.module",
    type: "string",
    default: "",
    description:
      "Path of the token's PKCS#11 library (Debian's SoftHSM: /usr/lib/softhsm/libsofthsm2.so); needed for keys.backend pkcs11 and for any key recorded as a pkcs11: URI.",
  },
  {
    key: "keys.pkcs11.tokenLabel",
    type: "string",
    default: "",
    description:
      "Label of the PKCS#11 token holding the CA keys; give it or keys.pkcs11.slot (or both, to check one against the other).",
  },
  {
    key: "keys.pkcs11.slot",
    type: "string",
    default: "",
    description:
      "Slot id of the PKCS#11 token, a whole number; empty picks the token by keys.pkcs11.tokenLabel.",
    validate: (v) => (v === "" || /^\d{1,10}$/.test(v) ? undefined : `"${v}" is not a slot number`),
  },
  {
    key: "keys.pkcs11.pinFile",
    type: "string",
    default: "",
    description:
      "File holding the token's user PIN; when empty, the PIN comes from STINT_PKCS11_PIN. Never a flag value.",
  },
  {
    key: "keys.pkcs11.sessions",
    type: "int",
    default: 4,
    description:
      "Token sessions kept logged in, so concurrent signatures (leaves, CRLs, the feed) do not queue on one.",
    validate: (v) => (v >= 1 && v <= 64 ? undefined : "must be 1 to 64"),
  },
  {
    key: "policy.defaultTtl",
    type: "duration",
    default: "1h",
    description: "Certificate lifetime when neither the registration entry nor the request asks for one.",
    validate: positive,
  },
  {
    key: "policy.minTtl",
    type: "duration",
    default: "1m",
    description: "Shortest certificate lifetime the CA issues.",
    validate: positive,
  },
  {
    key: "policy.maxTtl",
    type: "duration",
    default: "24h",
    description: "Longest certificate lifetime the CA issues, whatever an entry or request asks.",
    validate: positive,
  },
  {
    key: "policy.backdate",
    type: "duration",
    default: "30s",
    description: "How far notBefore is set into the past, to allow for clock skew between machines.",
  },
  {
    key: "policy.dnsSuffixes",
    type: "list",
    default: [],
    description:
      "DNS SANs are allowed only equal to or under these domains (e.g. svc.example.com); empty allows none.",
    validate: dnsSuffixes,
  },
  {
    key: "policy.keyTypes",
    type: "list",
    enumValues: KEY_ALGORITHMS,
    default: KEY_ALGORITHMS,
    description: "Workload key algorithms the CA accepts in CSRs.",
    validate: (v) => (v.length === 0 ? "list at least one key algorithm" : undefined),
  },
  {
    key: "renewal.window",
    type: "string",
    default: "50%-75%",
    description:
      "Normal ARI renewal window, as percentages of each certificate's lifetime from issuance (start-end, ending by 90%); revoked or tainted certificates get an early window whatever this says.",
    validate: (v) => {
      try {
        parseWindow(v);
        return undefined;
      } catch (err) {
        return (err as Error).message;
      }
    },
  },
  {
    key: "store.url",
    type: "string",
    default: "",
    secret: true,
    description:
      "PostgreSQL URL (postgres://user:password@host:5432/database) of a store shared by several CA replicas; empty keeps SQLite in dataDir. From STINT_STORE_URL or the config file only.",
    validate: (v) =>
      v === "" || /^postgres(?:ql)?:\/\//i.test(v)
        ? undefined
        : "must start with postgres:// or postgresql://",
  },
  {
    key: "acme.maxBodyBytes",
    type: "int",
    default: 65536,
    description:
      "Largest ACME request body accepted, in bytes; larger ones get a malformed problem (HTTP 413).",
    validate: (v) => (v >= 1024 && v <= 16 * 1024 * 1024 ? undefined : "must be between 1024 and 16777216"),
  },
  {
    key: "acme.nonceTtl",
    type: "duration",
    default: "5m",
    description: "How long a Replay-Nonce stays usable.",
    validate: positive,
  },
  {
    key: "acme.orderTtl",
    type: "duration",
    default: "1h",
    description: "How long an order (and its authorizations) may take before it expires.",
    validate: positive,
  },
  {
    key: "acme.http01.port",
    type: "int",
    default: 80,
    description:
      "Port the http-01 validator connects to (80 in production; another for tests and local use).",
    validate: (v) => (v >= 1 && v <= 65535 ? undefined : "must be a port between 1 and 65535"),
  },
  {
    key: "acme.http01.resolveTo",
    type: "string",
    default: "",
    description:
      "When set, the http-01 validator connects to this address for every dns identifier instead of resolving it (tests, local use; like pebble's challenge server).",
    validate: (v) =>
      v === "" || isIP(v) !== 0 || !dnsNameProblem(v) ? undefined : `"${v}" is not an address or host name`,
  },
  {
    key: "acme.http01.timeout",
    type: "duration",
    default: "10s",
    description: "How long the http-01 validator waits for an answer.",
    validate: positive,
  },
  {
    key: "acme.rateLimit.perAddress",
    type: "int",
    default: 200,
    description:
      "ACME requests per second from one client address (bursts of ten seconds' worth); 0 turns the limit off.",
    validate: nonNegative,
  },
  {
    key: "acme.rateLimit.perAccount",
    type: "int",
    default: 20,
    description:
      "New orders per second per ACME account, and renewals per second per SPIFFE ID (bursts of ten seconds' worth); 0 turns the limit off.",
    validate: nonNegative,
  },
  {
    key: "acme.test.badNoncePercent",
    type: "int",
    default: 0,
    description:
      "TEST ONLY: refuse this percentage of valid nonces with badNonce, so clients prove they retry (like pebble's PEBBLE_WFE_NONCEREJECT).",
    validate: (v) => (v >= 0 && v <= 100 ? undefined : "must be a percentage between 0 and 100"),
  },
  {
    key: "acme.test.validationDelay",
    type: "duration",
    default: "0s",
    description: "TEST ONLY: wait this long before validating any challenge, so clients must poll.",
  },
  {
    key: "attest.k8sSat.issuer",
    type: "string",
    default: "",
    description:
      "Issuer (iss) of Kubernetes service-account tokens the k8s_sat attestor accepts; empty turns k8s_sat off.",
  },
  {
    key: "attest.k8sSat.audiences",
    type: "list",
    default: [],
    description: "Audiences (aud) a k8s_sat token must carry one of.",
  },
  {
    key: "attest.k8sSat.publicKeyFiles",
    type: "list",
    default: [],
    description: "PEM public keys that sign service-account tokens (the cluster's sa.pub); or use jwksFile.",
  },
  {
    key: "attest.k8sSat.jwksFile",
    type: "string",
    default: "",
    description: "JWKS file (the cluster's /openid/v1/jwks) with the keys that sign service-account tokens.",
  },
  {
    key: "attest.x509pop.bundleFile",
    type: "string",
    default: "",
    description:
      "PEM file of the bootstrap CA certificates x509pop evidence must chain to; empty turns x509pop off.",
  },
  {
    key: "http.handshakeTimeout",
    type: "duration",
    default: "10s",
    description:
      "How long a client may take to finish the TLS handshake on the CA's listeners before the connection is closed.",
    validate: positive,
  },
  {
    key: "http.headersTimeout",
    type: "duration",
    default: "10s",
    description:
      "How long a client may take to send a request's headers before it gets 408 and is disconnected.",
    validate: positive,
  },
  {
    key: "http.bodyTimeout",
    type: "duration",
    default: "30s",
    description:
      "How long a client may take to send a whole request, body included, before it gets 408 and is disconnected.",
    validate: positive,
  },
  {
    key: "http.keepAliveTimeout",
    type: "duration",
    default: "5s",
    description: "How long an idle keep-alive connection stays open waiting for the next request.",
    validate: positive,
  },
  {
    key: "http.maxConnectionsPerAddress",
    type: "int",
    default: 256,
    description:
      "Most connections one client address may hold open at once on each listener; further ones are closed at once. 0 turns the cap off.",
    validate: nonNegative,
  },
  {
    key: "crl.httpListen",
    type: "string",
    default: "",
    description:
      "Address (host:port, a fixed port) of an optional plain-HTTP listener serving only /crl/…, /ca/<id>.cer and /bundle.pem, for CRL fetchers that refuse HTTPS (RFC 5280 expects http). When set, new certificates carry http:// CRL distribution points, and intermediates a caIssuers pointer to their root. Empty: off.",
    validate: (v) => (v === "" ? undefined : listenProblem(v)),
  },
  {
    key: "policy.dnsOnlyClientAuth",
    type: "bool",
    default: false,
    description:
      "Also give certificates without a SPIFFE ID (DNS names only, as lego or certbot obtain over http-01) the clientAuth usage; by default they are server certificates only.",
  },
  {
    key: "crl.validity",
    type: "duration",
    default: "1h",
    description:
      "How long each CRL is valid (nextUpdate); CRLs are re-signed at half of it and after every revocation.",
    validate: positive,
  },
  {
    key: "feed.validity",
    type: "duration",
    default: "10m",
    description:
      "How long each revocation feed snapshot is valid (nextUpdate): verifiers refuse every certificate once it has passed. It is re-signed at a third of it, even when nothing changed, and on every revocation.",
    validate: positive,
  },
  {
    key: "feed.pollInterval",
    type: "duration",
    default: "500ms",
    description:
      "How often the server checks the store for revocations (also those made by `stint ca revoke` or another replica) to publish them in the feed, and for rotation steps (`stint ca rotate`, `taint`, `root …`) to take them up.",
    validate: positive,
  },
  {
    key: "metrics.expiredScanInterval",
    type: "duration",
    default: "30s",
    description:
      "How often the server counts SPIFFE IDs whose newest certificate expired in the last hour with no later one, for the `stint_certificates_expired_unrenewed` gauge (docs/slo.md); the count reads the store, so it is not taken per scrape.",
    validate: positive,
  },
  {
    key: "bundle.refreshHint",
    type: "duration",
    default: "5m",
    description:
      "How often verifiers and agents should refetch the trust bundle (spiffe_refresh_hint in /bundle.json); `stint ca root activate` waits this long after `root prepare` so every verifier trusts the new root first. Agents refresh at the smaller of this and their own bundleRefresh.",
    validate: positive,
  },
  {
    key: "jwt.maxTtl",
    type: "duration",
    default: "5m",
    description:
      "Longest lifetime of a JWT-SVID the agent API signs (node agents ask for them for their workloads). A signing key retired by `stint ca rotate` stays in /bundle.json this long after, until its last token has expired.",
    validate: positive,
  },
  LOG_LEVEL_SETTING,
  LOG_FORMAT_SETTING,
]);

export type CaConfig = ConfigOf<typeof CA_CONFIG>;

/** The k8s_sat settings go together: an issuer without keys or audiences would refuse every token. */
function k8sSatConfigProblem(cfg: CaConfig): string | undefined {
  if (cfg["attest.k8sSat.issuer"] === "") return undefined;
  if (cfg["attest.k8sSat.audiences"].length === 0)
    return "attest.k8sSat.issuer is set, so attest.k8sSat.audiences must list at least one audience";
  if (cfg["attest.k8sSat.publicKeyFiles"].length === 0 && cfg["attest.k8sSat.jwksFile"] === "") {
    return "attest.k8sSat.issuer is set, so give attest.k8sSat.publicKeyFiles or attest.k8sSat.jwksFile";
  }
  return undefined;
}

/** minTtl ≤ defaultTtl ≤ maxTtl and the k8s_sat settings together, named with where each value came from. */
export function checkCaConfig(cfg: CaConfig, origin: (key: keyof CaConfig) => string): string | undefined {
  const keys = ["policy.minTtl", "policy.defaultTtl", "policy.maxTtl"] as const;
  const show = (k: (typeof keys)[number]) => `${k} ${formatDuration(cfg[k])} (from ${origin(k)})`;
  for (let i = 0; i + 1 < keys.length; i++) {
    const [low, high] = [keys[i]!, keys[i + 1]!];
    if (cfg[low] > cfg[high]) {
      return `${show(low)} is longer than ${show(high)}; need policy.minTtl ≤ policy.defaultTtl ≤ policy.maxTtl`;
    }
  }
  return k8sSatConfigProblem(cfg);
}

/** loadConfig for the CA with the cross-field check always applied. */
export function loadCaConfig(opts: Omit<LoadOptions<CaConfig>, "check">): CaConfig {
  return loadConfig(CA_CONFIG, { ...opts, check: checkCaConfig });
}
