import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { mountAcme } from "../acme/acme-api";
import { mountAdmin } from "../acme/admin";
import { mountAgentApi } from "../acme/agent-api";
import { mountConsole } from "../acme/console";
import { startCrlHttpServer } from "../acme/crl-http";
import { mountCrl } from "../acme/crl-routes";
import { mountFeed } from "../acme/feed-routes";
import type { ListenerLimits } from "../acme/listener-limits";
import { ORDER_RECOVERY_INTERVAL_MS, OrderRecovery } from "../acme/order-recovery";
import { startCaServer } from "../acme/server";
import type { Authority, CertificateEvent } from "../ca/authority";
import { FeedService } from "../ca/feed";
import { IssuerWatch } from "../ca/issuer-watch";
import { startJwtSvids } from "../ca/jwt-svid";
import { fingerprintSha256 } from "../ca/keys";
import { parseWindow } from "../ca/renewal";
import { SloMetrics } from "../ca/slo-metrics";
import { isPostgresUrl, openStore, STORE_FILE } from "../ca/store/open";
import { configSummary } from "../common/config";
import { StintError } from "../common/errors";
import { listenError } from "../common/listen-error";
import { createLogger, type Logger } from "../common/logger";
import { processMetrics, Registry } from "../common/metrics";
import { acmeDeps } from "./acme-setup";
import { CA_CONFIG, type CaConfig } from "./ca-config";
import { initCa } from "./ca-init";
import { keyStoreFrom } from "./ca-keys";
import { type Command, parseFlags } from "./command";
import {
  caFlagOptions,
  caHelp,
  loadConfigFromFlags,
  openCa,
  passphraseFrom,
  publicOrigin,
  rotationContext,
} from "./context";
import { listenParts } from "./listen";

/** Said after "the address is already in use" for the CA's listeners. */
const BUSY_HINT = "another stint ca serve, or another server, listens there";

const OWN_FLAGS = {
  "insecure-no-passphrase": { type: "boolean" },
  init: { type: "boolean" },
} as const;

export const caServe: Command = {
  name: "ca serve",
  summary: "run the CA's HTTPS server (--init creates the CA on first run)",
  examples: [
    "STINT_CA_PASSPHRASE=… stint ca serve --data-dir /var/lib/stint --listen 0.0.0.0:8443",
    "stint ca serve --init --data-dir ./dev-ca --insecure-no-passphrase",
    "stint help config",
  ],
  help: () =>
    caHelp(
      "stint ca serve [options]",
      "Serves the ACME API (/acme/directory), the admin API (/admin/), CRLs (/crl/), the revocation\n" +
        "feed (/feed, /feed/events), /health, /bundle.pem, /bundle.json and /metrics over\n" +
        "HTTPS with a certificate from the CA's own intermediate, renewed before it expires. With\n" +
        "crl.httpListen, a plain-HTTP listener also serves /crl/, /ca/<issuer>.cer and /bundle.pem. A data\n" +
        "directory without a CA is refused unless --init is given. Stops cleanly on SIGTERM or SIGINT.",
      "  --init                     create the CA first if there is none, as `stint ca init` would\n" +
        "  --insecure-no-passphrase   allow unencrypted CA keys when no passphrase is set (development only)",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, caFlagOptions(OWN_FLAGS));
    const cfg = loadConfigFromFlags(values);
    const log = createLogger({ level: cfg["log.level"], format: cfg["log.format"], component: "ca" });
    exitOnUncaught(log);

    if (await needsInit(cfg, values.init === true)) {
      // A mistyped --data-dir must not become a new CA with a new root that no workload trusts.
      if (values.init !== true) throw noCa(cfg);
      const created = await initCa(cfg, values["insecure-no-passphrase"] === true);
      const { keysEncrypted, ...rest } = created;
      // Named so the log redactor (which hides fields about keys) keeps it visible.
      log.info("created a new CA", { ...rest, encryptedAtRest: keysEncrypted });
    }
    const metrics = new Registry();
    processMetrics(metrics);
    const { store, authority, trustDomain } = await openCa(cfg, values, metrics);
    // In pretty mode the startup summary ends with this warning instead, where a person reads it.
    if (authority.insecureKey && log.format === "json") {
      log.warn("CA keys are stored WITHOUT encryption; use this only for development", {
        dataDir: cfg.dataDir,
      });
    }
    const feed = new FeedService({
      trustDomain,
      store,
      signer: authority,
      log,
      validityMs: cfg["feed.validity"],
      pollMs: cfg["feed.pollInterval"],
      revokedIssuers: () => authority.revokedIssuers(),
    });
    await feed.start();
    // Every revocation this server commits (admin API, console, ACME revokeCert) is published at once;
    // the admin API and the console answer only once followers were told, by awaiting `published`.
    let published: Promise<void> = Promise.resolve();
    authority.onCertificate((event) => {
      if (event.kind !== "revoked") return;
      published = feed
        .revoked()
        .catch((err: unknown) =>
          log.error("revocation feed update after a revocation failed", { error: err }),
        );
    });
    const passphrase = await passphraseFrom(cfg);
    const issuerWatch = new IssuerWatch({
      authority,
      store,
      log,
      metrics,
      pollMs: cfg["feed.pollInterval"],
      rotation: () => rotationContext(cfg, store, trustDomain, passphrase, "server"),
      onChange: () => feed.rebuild("issuers"),
    });
    await issuerWatch.start();
    const sloMetrics = new SloMetrics({
      store,
      feed,
      metrics,
      log,
      feedValidityMs: cfg["feed.validity"],
      scanMs: cfg["metrics.expiredScanInterval"],
    });
    await sloMetrics.start();
    // Before the listener opens: a client retrying a finalize the last run was killed in must find its order ready.
    const recovery = new OrderRecovery({
      store,
      log,
      intervalMs: ORDER_RECOVERY_INTERVAL_MS,
      sharedStore: isPostgresUrl(cfg["store.url"]),
    });
    await recovery.start();
    // The JWT-SVID key ring follows rotation steps, which reach this process as issuer changes.
    const jwt = await startJwtSvids({
      store,
      dataDir: cfg.dataDir,
      passphrase,
      // keys.backend pkcs11: new JWT-SVID keys are made, and sign, in the token.
      keys: keyStoreFrom(cfg, passphrase),
      maxTtlMs: cfg["jwt.maxTtl"],
      log,
    });
    authority.onIssuersChanged(() => {
      jwt
        .refresh(new Date())
        .catch((err: unknown) => log.error("could not reload the JWT-SVID keys", { error: err }));
    });
    const { host, port } = listenParts(cfg.listen);
    const server = await startCaServer({
      authority,
      store,
      log,
      metrics,
      host,
      port,
      serverNames: cfg.serverNames,
      serverCertTtlMs: cfg.serverCertTtl,
      bundleRefreshHintSeconds: Math.max(1, Math.round(cfg["bundle.refreshHint"] / 1000)),
      publicOrigin: publicOrigin(cfg) ?? undefined,
      limits: listenerLimits(cfg),
      jwtBundleKeys: (now) => jwt.bundleKeys(now),
      mounts: [
        mountAcme(await acmeDeps(cfg, authority, store, log)),
        mountAdmin({ authority, store, log, onRevoked: () => published }),
        await mountCrl(authority, log),
        mountFeed(feed),
        mountConsole({
          authority,
          store,
          log,
          feed,
          onRevoked: () => published,
          renewalWindow: parseWindow(cfg["renewal.window"]),
          rotation: (actor) => rotationContext(cfg, store, trustDomain, passphrase, actor),
        }),
        mountAgentApi({
          authority,
          store,
          jwt,
          log,
          renewalWindow: parseWindow(cfg["renewal.window"]),
        }),
      ],
    }).catch((err: unknown) => {
      throw listenError(err, "HTTPS (listen)", host, port, BUSY_HINT);
    });
    logStartup(log, {
      url: server.url,
      trustDomain,
      cfg,
      authority,
    });
    authority.onCertificate((event) => logCertificate(log, event));

    // After startCaServer, whose mountCrl signed the first CRLs this listener serves.
    const crlHttp = cfg["crl.httpListen"]
      ? await startCrlHttpServer({
          files: authority,
          log,
          metrics,
          ...listenParts(cfg["crl.httpListen"]),
          limits: listenerLimits(cfg),
        }).catch((err: unknown) => {
          const { host: crlHost, port: crlPort } = listenParts(cfg["crl.httpListen"]);
          throw listenError(err, "CRLs over HTTP (crl.httpListen)", crlHost, crlPort, BUSY_HINT);
        })
      : null;
    if (crlHttp) log.info("serving CRLs over plain HTTP", { url: crlHttp.url });

    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info("stopping", { signal });
        resolve();
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });
    sloMetrics.stop();
    issuerWatch.stop();
    await recovery.stop();
    feed.stop();
    await server.close();
    await crlHttp?.close();
    await store.close();
    log.info("stopped");
    return 0;
  },
};

/**
 * What an operator checks first after a start: where clients go, which root
 * they must pin, which data this is. JSON: one "listening" record (tests and
 * drills wait for it). Pretty: a short block, and the unencrypted-keys warning last.
 */
function logStartup(
  log: Logger,
  s: { url: string; trustDomain: string; cfg: CaConfig; authority: Authority },
): void {
  const postgres = isPostgresUrl(s.cfg["store.url"]);
  const roots = s.authority.trustedRoots();
  const active = s.authority.activeIssuer;
  // The root clients pin (--ca-fingerprint): the one above the active intermediate; others are mid-rotation.
  const root = roots.find((r) => r.id === active.parentId) ?? roots[0];
  const facts = {
    url: s.url,
    directory: `${s.url}/acme/directory`,
    rootFingerprint: root ? fingerprintSha256(root.certDer) : null,
    rootFingerprints: roots.map((r) => fingerprintSha256(r.certDer)),
    dataDir: resolve(s.cfg.dataDir),
    // The URL may hold a password: name the kind only.
    store: postgres ? "postgresql" : "sqlite",
    trustDomain: s.trustDomain,
    activeIssuer: active.id,
    encryptedAtRest: !s.authority.insecureKey,
  };
  if (log.format === "json") {
    log.info("listening", {
      ...facts,
      // The trust domain in force is the stored one (above), not the configured default.
      config: { ...configSummary(CA_CONFIG, s.cfg), trustDomain: undefined },
    });
    return;
  }
  const others = facts.rootFingerprints.length - 1;
  log.info(`listening on ${facts.url}`);
  log.info(`  ACME directory   ${facts.directory}`);
  log.info(
    `  root fingerprint ${facts.rootFingerprint}${others > 0 ? ` (+${others} more trusted, mid-rotation)` : ""}`,
  );
  log.info(`  data             ${facts.dataDir} (${postgres ? "PostgreSQL store.url" : "SQLite"})`);
  log.info(`  trust domain     ${facts.trustDomain}, issuing with ${facts.activeIssuer}`);
  if (!facts.encryptedAtRest) {
    log.warn(
      "  CA keys are stored WITHOUT encryption (--insecure-no-passphrase): use this only for development",
    );
  }
}

/** One line per certificate issued or revoked, with what an operator searches by; never the key or evidence. */
function logCertificate(log: Logger, event: CertificateEvent): void {
  if (event.kind === "revoked") {
    log.info("certificate revoked", { serial: event.serial, reason: event.reason, actor: event.actor });
    return;
  }
  log.info("certificate issued", {
    serial: event.serial,
    spiffeId: event.spiffeId,
    dnsNames: event.dnsNames,
    issuer: event.issuerId,
    notAfter: event.notAfter,
    via: issuancePath(event),
    actor: event.actor,
  });
}

/** How the certificate was obtained, in the words of the docs. */
function issuancePath(event: Extract<CertificateEvent, { kind: "issued" }>): string {
  if (event.profile === "server") return "server-certificate";
  if (event.renews !== null) return "renew-with-certificate";
  if (event.method !== null) return `acme attest-01 (${event.method})`;
  return event.actor === "cli" ? "ca issue" : "acme";
}

/** The listener limits from the config; the plain-HTTP CRL listener uses the same ones. */
function listenerLimits(cfg: CaConfig): ListenerLimits {
  return {
    handshakeTimeoutMs: cfg["http.handshakeTimeout"],
    headersTimeoutMs: cfg["http.headersTimeout"],
    bodyTimeoutMs: cfg["http.bodyTimeout"],
    keepAliveTimeoutMs: cfg["http.keepAliveTimeout"],
    maxConnectionsPerAddress: cfg["http.maxConnectionsPerAddress"],
  };
}

/**
 * Last line of defence, not the fix: requests fail inside the router's
 * boundary. Anything that still escapes leaves the process in an unknown
 * state, so log it and exit non-zero (70, EX_SOFTWARE) for a supervisor to restart.
 */
function exitOnUncaught(log: Logger): void {
  const die = (kind: string) => (err: unknown) => {
    try {
      log.error(`${kind}; exiting`, { error: err });
    } finally {
      process.exit(70);
    }
  };
  process.on("uncaughtException", die("uncaught exception"));
  process.on("unhandledRejection", die("unhandled promise rejection"));
}

/**
 * First run: no store yet (SQLite file missing, or a PostgreSQL store with no
 * issuers). Without `init`, the PostgreSQL schema is not created either.
 */
async function needsInit(cfg: CaConfig, init: boolean): Promise<boolean> {
  if (!isPostgresUrl(cfg["store.url"])) return !existsSync(join(cfg.dataDir, STORE_FILE));
  let store: Awaited<ReturnType<typeof openStore>>;
  try {
    store = await openStore(cfg.dataDir, { url: cfg["store.url"], create: init });
  } catch (err) {
    if (err instanceof StintError && err.code === "ERR_NOT_INITIALIZED") return true;
    throw err;
  }
  try {
    return (await store.listIssuers()).length === 0;
  } finally {
    await store.close();
  }
}

function noCa(cfg: CaConfig): StintError {
  const where = isPostgresUrl(cfg["store.url"]) ? "the PostgreSQL store (store.url)" : cfg.dataDir;
  return new StintError(
    "ERR_NOT_INITIALIZED",
    `no CA in ${where}: run "stint ca init" first, or pass --init to create one here (check --data-dir if a CA should be there)`,
  );
}
