import { join } from "node:path";
import { adminSpiffeId, recordAdminCertificate } from "../acme/admin-auth";
import { Authority } from "../ca/authority";
import { bundlePem } from "../ca/bundle";
import { initHierarchy } from "../ca/hierarchy";
import { generateKeyPair } from "../ca/keys";
import type { Store } from "../ca/store";
import { openStore } from "../ca/store/open";
import { parseDuration } from "../common/duration";
import { StintError } from "../common/errors";
import { ensureDir, writeFileAtomic, writeSecretFile } from "../common/files";
import { ADMIN_DIR, adminFiles } from "./admin-client";
import type { CaConfig } from "./ca-config";
import { keyStoreFrom } from "./ca-keys";
import { type Command, flagValue, parseFlags, printJson } from "./command";
import {
  caFlagOptions,
  caHelp,
  ensureDataDir,
  loadConfigFromFlags,
  openCa,
  passphraseFrom,
  policyFrom,
  publicationUrls,
} from "./context";

const OWN_FLAGS = {
  "insecure-no-passphrase": { type: "boolean" },
  json: { type: "boolean" },
} as const;

export interface InitOutcome {
  dataDir: string;
  trustDomain: string;
  rootId: string;
  intermediateId: string;
  rootFingerprint: string;
  keysEncrypted: boolean;
  /** keys.backend: where the root and intermediate keys were made. */
  keyBackend: "file" | "pkcs11";
  adminCertificate: AdminCredential;
}

export interface AdminCredential {
  /** Directory holding cert.pem (leaf + intermediate), key.pem (0600) and bundle.pem (the roots). */
  dir: string;
  spiffeId: string;
  serial: string;
  /** sha256:<hex> of the certificate's DER: the only admin certificate the admin API accepts from now on. */
  fingerprint: string;
  notAfter: string;
}

/**
 * Issues the admin client certificate (spiffe://<td>/stint/admin) with a fresh
 * P-256 key through the normal issuance path, so it is recorded and audited,
 * names it in the store as the one the admin API accepts (replacing the one
 * before), and writes it to <dataDir>/admin/. It lives as long as
 * policy.maxTtl allows (or `ttlMs`): policy bounds every certificate, this one
 * too, so an expired one is renewed with `stint ca admin-cert`.
 */
export async function issueAdminCredential(
  authority: Authority,
  store: Store,
  dataDir: string,
  opts: { ttlMs?: number; now?: Date } = {},
): Promise<AdminCredential> {
  const policy = authority.policy;
  // P-256 unless the policy no longer allows it; the key is a client credential, not a CA key.
  const keyAlgorithm = policy.keyTypes.includes("ec-p256") ? "ec-p256" : policy.keyTypes[0]!;
  const keys = await generateKeyPair(keyAlgorithm);
  const spiffeId = adminSpiffeId(authority.trustDomain);
  const issued = await authority.issue(
    {
      spiffeId,
      dnsNames: [],
      ttlMs: opts.ttlMs ?? policy.maxTtlMs,
      spki: keys.publicKey.export({ format: "der", type: "spki" }),
      keyAlgorithm,
      keyDescription: `${keyAlgorithm} key`,
    },
    "cli",
    opts.now,
  );
  // Before the files: the old credential stops working now either way, and a rerun mends a crash between.
  const fingerprint = await recordAdminCertificate(store, issued);
  const files = adminFiles(join(dataDir, ADMIN_DIR));
  await ensureDir(files.dir, 0o700);
  // Key first: a command racing this may pair the new key with the old certificate; its handshake fails and a rerun works.
  await writeSecretFile(files.key, keys.privateKey.export({ format: "pem", type: "pkcs8" }).toString(), {
    overwrite: true,
  });
  await writeFileAtomic(files.cert, issued.chainPem, 0o644);
  await writeFileAtomic(files.bundle, bundlePem(authority.trustedRoots()), 0o644);
  return {
    dir: files.dir,
    spiffeId,
    serial: issued.serial,
    fingerprint: `sha256:${fingerprint}`,
    notAfter: issued.notAfter.toISOString(),
  };
}

/**
 * Creates the CA in cfg.dataDir. Without a passphrase, only an explicit
 * insecure opt-in is accepted, unless keys.backend is pkcs11: every key it
 * makes (root, intermediate, JWT-SVID) is then in the token, none in a file.
 * Shared by `ca init` and first-run `ca serve`.
 */
export async function initCa(cfg: CaConfig, allowInsecure: boolean, now = new Date()): Promise<InitOutcome> {
  const passphrase = await passphraseFrom(cfg);
  if (passphrase === null && !allowInsecure && cfg["keys.backend"] !== "pkcs11") {
    throw new StintError(
      "ERR_CONFIG",
      "CA keys need a passphrase: set STINT_CA_PASSPHRASE or --passphrase-file (or --insecure-no-passphrase for development)",
    );
  }
  // The token first: a missing token or a wrong PIN stops here, before a data directory is made.
  const keys = keyStoreFrom(cfg, passphrase);
  await keys.ready();
  await ensureDataDir(cfg.dataDir);
  const store = await openStore(cfg.dataDir, { create: true, url: cfg["store.url"] });
  try {
    const result = await initHierarchy({
      keys,
      dataDir: cfg.dataDir,
      store,
      trustDomain: cfg.trustDomain,
      keyAlgorithm: cfg.keyAlgorithm,
      passphrase,
      now,
      // The intermediate names its root's CRL where the server will publish it (crl.httpListen or publicUrl).
      publication: publicationUrls(cfg),
    });
    await store.setMeta("trust_domain", cfg.trustDomain);
    await store.setMeta("bundle_sequence", "1");
    const authority = await Authority.open({
      dataDir: cfg.dataDir,
      store,
      policy: policyFrom(cfg, cfg.trustDomain),
      passphrase,
      keys,
    });
    const adminCertificate = await issueAdminCredential(authority, store, cfg.dataDir, { now });
    return {
      dataDir: cfg.dataDir,
      trustDomain: cfg.trustDomain,
      rootId: result.root.id,
      intermediateId: result.intermediate.id,
      rootFingerprint: result.rootFingerprint,
      keysEncrypted: passphrase !== null || keys.backend === "pkcs11",
      keyBackend: keys.backend,
      adminCertificate,
    };
  } finally {
    await store.close();
  }
}

export const caInit: Command = {
  name: "ca init",
  summary: "create a root CA and an intermediate in the data directory",
  examples: [
    "STINT_CA_PASSPHRASE=… stint ca init --data-dir /var/lib/stint --trust-domain prod.example.com",
    "stint ca init --data-dir ./dev-ca --insecure-no-passphrase",
  ],
  help: () =>
    caHelp(
      "stint ca init [options]",
      "Creates a root and an intermediate CA (keys encrypted with the passphrase) and prints the root\n" +
        "fingerprint that agents bootstrap with (--ca-fingerprint). With keys.backend pkcs11 every key is\n" +
        "made in the token and no passphrase is needed. Also issues the admin client\n" +
        "certificate into <dataDir>/admin/ (renew it with stint ca admin-cert).",
      "  --insecure-no-passphrase   write the CA keys unencrypted (development only)\n" +
        "  --json                     print the result as JSON",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, caFlagOptions(OWN_FLAGS));
    const cfg = loadConfigFromFlags(values);
    const out = await initCa(cfg, values["insecure-no-passphrase"] === true);
    if (values.json) printJson(out);
    else {
      console.log(`Created CA for trust domain ${out.trustDomain} in ${out.dataDir}`);
      console.log(`  root          ${out.rootId}`);
      console.log(`  intermediate  ${out.intermediateId} (active)`);
      const keysAt =
        out.keyBackend === "pkcs11"
          ? `in the PKCS#11 token ${cfg["keys.pkcs11.tokenLabel"] || `in slot ${cfg["keys.pkcs11.slot"]}`} (not extractable)`
          : out.keysEncrypted
            ? "encrypted with the passphrase"
            : "NOT ENCRYPTED (development only)";
      console.log(`  keys          ${keysAt}`);
      console.log(
        `  admin cert    ${out.adminCertificate.dir} until ${out.adminCertificate.notAfter} (renew: stint ca admin-cert)`,
      );
      console.log(`Root fingerprint (agents use --ca-fingerprint):\n  ${out.rootFingerprint}`);
    }
    return 0;
  },
};

export const caAdminCert: Command = {
  name: "ca admin-cert",
  summary: "issue a new admin client certificate into <dataDir>/admin (renewal)",
  examples: ["stint ca admin-cert --data-dir /var/lib/stint", "stint ca admin-cert --ttl 8h --json"],
  help: () =>
    caHelp(
      "stint ca admin-cert [--ttl D] [--json] [options]",
      "Issues a new admin client certificate (spiffe://<trust domain>/stint/admin) with a fresh key\n" +
        "and writes cert.pem, key.pem (0600) and bundle.pem into <dataDir>/admin/, replacing the old\n" +
        "ones. The stint entry, token, cert and audit commands present it to the admin API, which\n" +
        "accepts only the admin certificate issued last, and only while its intermediate is the active\n" +
        "one: the previous certificate stops working at once, and every intermediate rotation (ca rotate,\n" +
        "ca import-intermediate, ca root activate) means running this again. Like every certificate it\n" +
        "lives at most policy.maxTtl (24h by default): run this again when they say it has expired.\n" +
        "Needs the CA key passphrase; the issuance is audited.",
      "  --ttl DURATION             lifetime (default policy.maxTtl)\n" +
        "  --json                     print directory, serial and expiry as JSON",
    ),
  async run(argv) {
    const { values } = parseFlags(
      argv,
      caFlagOptions({ ttl: { type: "string" }, json: { type: "boolean" } }),
    );
    const cfg = loadConfigFromFlags(values);
    const ttlMs = values.ttl
      ? flagValue("ca admin-cert", "ttl", () => parseDuration(values.ttl as string))
      : undefined;
    const { store, authority } = await openCa(cfg, values);
    try {
      const out = await issueAdminCredential(authority, store, cfg.dataDir, { ttlMs });
      if (values.json) printJson(out);
      else console.log(`Issued admin certificate ${out.serial} until ${out.notAfter} into ${out.dir}`);
      return 0;
    } finally {
      await store.close();
    }
  },
};
