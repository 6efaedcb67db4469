import { type Attestor, attestorRegistry } from "../acme/attest/attestor";
import { JoinTokenAttestor } from "../acme/attest/join-token";
import { K8sSatAttestor, loadK8sSatConfig } from "../acme/attest/k8s-sat";
import { loadX509PopConfig, X509PopAttestor } from "../acme/attest/x509pop";
import type { AcmeDeps } from "../acme/context";
import { MemoryNonceLedger, NonceService } from "../acme/nonce";
import type { Authority } from "../ca/authority";
import { parseWindow } from "../ca/renewal";
import type { CaStore } from "../ca/store/open";
import type { Logger } from "../common/logger";
import type { CaConfig } from "./ca-config";

/** Builds the ACME front end's dependencies from configuration: nonces, attestors, limits and test toggles. */
export async function acmeDeps(
  cfg: CaConfig,
  authority: Authority,
  store: CaStore,
  log: Logger,
): Promise<AcmeDeps> {
  const attestors: Attestor[] = [
    new JoinTokenAttestor({ find: (hash, now) => store.findJoinToken(hash, now) }),
  ];
  if (cfg["attest.k8sSat.issuer"] !== "") {
    const config = await loadK8sSatConfig({
      issuer: cfg["attest.k8sSat.issuer"],
      audiences: [...cfg["attest.k8sSat.audiences"]],
      publicKeyFiles: [...cfg["attest.k8sSat.publicKeyFiles"]],
      jwksFile: cfg["attest.k8sSat.jwksFile"] || undefined,
    });
    attestors.push(new K8sSatAttestor(config));
  }
  if (cfg["attest.x509pop.bundleFile"] !== "") {
    attestors.push(
      new X509PopAttestor(await loadX509PopConfig({ bundleFile: cfg["attest.x509pop.bundleFile"] })),
    );
  }
  const badNoncePercent = cfg["acme.test.badNoncePercent"];
  const validationDelayMs = cfg["acme.test.validationDelay"];
  if (badNoncePercent > 0 || validationDelayMs > 0) {
    log.warn("ACME test mode is on: clients will see refused nonces and slow validations", {
      badNoncePercent,
      validationDelayMs,
    });
  }
  return {
    authority,
    store,
    log,
    nonces: new NonceService({
      ledger: new MemoryNonceLedger(),
      ttlMs: cfg["acme.nonceTtl"],
      rejectShare: badNoncePercent / 100,
    }),
    attestor: attestorRegistry(attestors),
    options: {
      maxBodyBytes: cfg["acme.maxBodyBytes"],
      orderTtlMs: cfg["acme.orderTtl"],
      authorizationTtlMs: cfg["acme.orderTtl"],
      http01: {
        port: cfg["acme.http01.port"],
        resolveTo: cfg["acme.http01.resolveTo"] || null,
        timeoutMs: cfg["acme.http01.timeout"],
      },
      validationDelayMs,
      rateLimits: {
        perAddress: cfg["acme.rateLimit.perAddress"],
        perAccount: cfg["acme.rateLimit.perAccount"],
      },
      renewalWindow: parseWindow(cfg["renewal.window"]),
    },
  };
}
