import { mkdir } from "node:fs/promises";
import { Authority } from "../ca/authority";
import type { PublicationUrls } from "../ca/crl";
import { resolvePassphrase } from "../ca/keys";
import type { IssuancePolicy } from "../ca/policy";
import type { RotationContext } from "../ca/rotation";
import type { Store } from "../ca/store";
import { type CaStore, openStore } from "../ca/store/open";
import { flagOptions } from "../common/config";
import { StintError } from "../common/errors";
import type { Registry } from "../common/metrics";
import { CA_CONFIG, type CaConfig, loadCaConfig } from "./ca-config";
import { keyStoreFrom } from "./ca-keys";
import { checkSettingFlags, type Options } from "./command";
import { listenParts } from "./listen";

/** What the `stint ca …` commands share: config loading, the passphrase, the store and the authority. */

export const CONFIG_FLAG: Options = {
  config: { type: "string", short: "c" },
  help: { type: "boolean", short: "h" },
};

export const caFlagOptions = (extra: Options = {}): Options => ({
  ...CONFIG_FLAG,
  ...(flagOptions(CA_CONFIG) as Options),
  ...extra,
});

export function caHelp(usage: string, about: string, ownFlags: string): string {
  return [
    `usage: ${usage}`,
    "",
    about,
    "",
    "options:",
    ...(ownFlags ? [ownFlags] : []),
    "  -c, --config FILE          YAML or JSON config file (env STINT_CONFIG)",
    "  --data-dir DIR             the CA's data directory (env STINT_DATA_DIR, default ./stint-data)",
    "  -h, --help                 this help",
    "",
    // The full table is long (every server setting); one place shows it, not every command.
    "Every CA setting is also a flag and an environment variable: `stint help config` lists them.",
    "The CA key passphrase comes from STINT_CA_PASSPHRASE or --passphrase-file, never from a flag value.",
  ].join("\n");
}

type FlagValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

export function loadConfigFromFlags(values: FlagValues): CaConfig {
  checkSettingFlags(CA_CONFIG, values, "config"); // a bad flag value is a usage mistake: exit 2
  const file = (values.config as string | undefined) ?? process.env.STINT_CONFIG;
  const cfg = loadCaConfig({ file: file || undefined, env: process.env, flags: values });
  crlHttpOrigin(cfg); // refuses a crl.httpListen that certificates could not name, before anything runs
  return cfg;
}

export function policyFrom(cfg: CaConfig, trustDomain: string): IssuancePolicy {
  return {
    trustDomain,
    defaultTtlMs: cfg["policy.defaultTtl"],
    minTtlMs: cfg["policy.minTtl"],
    maxTtlMs: cfg["policy.maxTtl"],
    backdateMs: cfg["policy.backdate"],
    dnsSuffixes: cfg["policy.dnsSuffixes"],
    keyTypes: cfg["policy.keyTypes"],
    dnsOnlyClientAuth: cfg["policy.dnsOnlyClientAuth"],
  };
}

/** What rotation steps (ca/rotation.ts) run with, for a command or the server. */
export function rotationContext(
  cfg: CaConfig,
  store: Store,
  trustDomain: string,
  passphrase: string | null,
  actor: string,
): RotationContext {
  return {
    dataDir: cfg.dataDir,
    store,
    trustDomain,
    passphrase,
    keyAlgorithm: cfg.keyAlgorithm,
    actor,
    now: new Date(),
    publication: publicationUrls(cfg),
    keys: keyStoreFrom(cfg, passphrase),
  };
}

export function passphraseFrom(cfg: CaConfig): Promise<string | null> {
  return resolvePassphrase({ env: process.env, passphraseFile: cfg.passphraseFile || null });
}

/**
 * The trust domain is fixed when the CA is created and kept in the store; a
 * configured value that disagrees is a mistake worth stopping for.
 */
export async function storedTrustDomain(store: Store, cfg: CaConfig, configured: boolean): Promise<string> {
  const stored = await store.getMeta("trust_domain");
  if (stored === null) return cfg.trustDomain;
  if (configured && stored !== cfg.trustDomain) {
    throw new StintError(
      "ERR_CONFIG",
      `trustDomain "${cfg.trustDomain}" differs from this CA's trust domain "${stored}"; remove the setting or use another --data-dir`,
    );
  }
  return stored;
}

export function trustDomainConfigured(values: FlagValues): boolean {
  return values["trust-domain"] !== undefined || process.env.STINT_TRUST_DOMAIN !== undefined;
}

/**
 * The origin clients reach the CA at, for ACME URLs and the CRL distribution
 * point in every leaf: publicUrl, else https://<listen host>:<port>, with the
 * first server name standing in for a wildcard address (no place to send a
 * client). Null when listen's port is 0 and no publicUrl is set: the address
 * is known only once the server has bound it (tests).
 */
export function publicOrigin(cfg: Pick<CaConfig, "publicUrl" | "listen" | "serverNames">): string | null {
  if (cfg.publicUrl !== "") return cfg.publicUrl;
  const { host, port } = listenParts(cfg.listen);
  if (port === 0) return null;
  const name = host === "0.0.0.0" || host === "::" || host === "" ? (cfg.serverNames[0] ?? host) : host;
  return `https://${name.includes(":") ? `[${name}]` : name}:${port}`;
}

/** The host of publicUrl (already checked to be https://host[:port]), without IPv6 brackets. */
function publicHost(publicUrl: string): string | undefined {
  if (publicUrl === "") return undefined;
  try {
    return new URL(publicUrl).hostname.replace(/^\[|\]$/g, "");
  } catch {
    throw new StintError("ERR_CONFIG", `publicUrl "${publicUrl}" is not a URL`);
  }
}

type OriginSettings = Pick<CaConfig, "publicUrl" | "listen" | "serverNames" | "crl.httpListen">;

/**
 * The origin of the plain-HTTP listener (crl.httpListen), as certificates name
 * it: http://<host>:<port>, where a wildcard host stands for publicUrl's host,
 * else the first server name. Null when the listener is off. Port 0 is refused:
 * every certificate made from now on carries the URL, so it must be known first.
 */
export function crlHttpOrigin(cfg: OriginSettings): string | null {
  const listen = cfg["crl.httpListen"];
  if (listen === "") return null;
  const { host, port } = listenParts(listen);
  if (port === 0) {
    throw new StintError(
      "ERR_CONFIG",
      `crl.httpListen "${listen}" needs a fixed port: certificates name it as their CRL distribution point`,
    );
  }
  const wildcard = host === "0.0.0.0" || host === "::" || host === "";
  const name = wildcard ? (publicHost(cfg.publicUrl) ?? cfg.serverNames[0] ?? host) : host;
  return `http://${name.includes(":") ? `[${name}]` : name}${port === 80 ? "" : `:${port}`}`;
}

/**
 * Where new certificates point (ca/crl.ts PublicationUrls): CRLs over plain
 * HTTP when crl.httpListen is set (RFC 5280 expects http, and OpenSSL's
 * -crl_download fetches nothing else), else over the HTTPS origin; the root's
 * certificate (caIssuers) only over plain HTTP. `ca init`, `ca rotate`, `ca
 * issue` and the server all derive them here, so they agree.
 */
export function publicationUrls(cfg: OriginSettings): PublicationUrls {
  const http = crlHttpOrigin(cfg);
  return { crlBaseUrl: http ?? publicOrigin(cfg), caIssuersBaseUrl: http };
}

export interface OpenedCa {
  store: CaStore;
  authority: Authority;
  trustDomain: string;
}

/** Opens an initialised CA: store, then the active issuer's key. Closes the store if the key fails. */
export async function openCa(cfg: CaConfig, values: FlagValues, metrics?: Registry): Promise<OpenedCa> {
  const store = await openStore(cfg.dataDir, { url: cfg["store.url"] });
  try {
    const trustDomain = await storedTrustDomain(store, cfg, trustDomainConfigured(values));
    const passphrase = await passphraseFrom(cfg);
    const keys = keyStoreFrom(cfg, passphrase);
    // With keys.backend pkcs11 the token opens here: missing, or a wrong PIN, is one line before anything serves.
    await keys.ready();
    const authority = await Authority.open({
      dataDir: cfg.dataDir,
      store,
      policy: policyFrom(cfg, trustDomain),
      passphrase,
      keys,
      metrics,
      // The same origin whether the server or a one-shot command (`ca issue`) signs the leaf.
      crlBaseUrl: publicationUrls(cfg).crlBaseUrl,
      crlValidityMs: cfg["crl.validity"],
    });
    return { store, authority, trustDomain };
  } catch (err) {
    await store.close();
    throw err;
  }
}

export async function ensureDataDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}
