import { initHierarchy } from "../ca/hierarchy";
import { openStore } from "../ca/store/open";
import { StintError } from "../common/errors";
import type { CaConfig } from "./ca-config";
import { type Command, parseFlags, printJson } from "./command";
import { caFlagOptions, caHelp, ensureDataDir, loadConfigFromFlags, passphraseFrom } from "./context";

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
}

/**
 * Creates the CA in cfg.dataDir. Without a passphrase, only an explicit
 * insecure opt-in is accepted. Shared by `ca init` and first-run `ca serve`.
 */
export async function initCa(cfg: CaConfig, allowInsecure: boolean, now = new Date()): Promise<InitOutcome> {
  const passphrase = await passphraseFrom(cfg);
  if (passphrase === null && !allowInsecure) {
    throw new StintError(
      "ERR_CONFIG",
      "CA keys need a passphrase: set STINT_CA_PASSPHRASE or --passphrase-file (or --insecure-no-passphrase for development)",
    );
  }
  await ensureDataDir(cfg.dataDir);
  const store = await openStore(cfg.dataDir, { create: true, url: cfg["store.url"] });
  try {
    const result = await initHierarchy({
      dataDir: cfg.dataDir,
      store,
      trustDomain: cfg.trustDomain,
      keyAlgorithm: cfg.keyAlgorithm,
      passphrase,
      now,
    });
    await store.setMeta("trust_domain", cfg.trustDomain);
    await store.setMeta("bundle_sequence", "1");
    return {
      dataDir: cfg.dataDir,
      trustDomain: cfg.trustDomain,
      rootId: result.root.id,
      intermediateId: result.intermediate.id,
      rootFingerprint: result.rootFingerprint,
      keysEncrypted: passphrase !== null,
    };
  } finally {
    await store.close();
  }
}

export const caInit: Command = {
  name: "ca init",
  summary: "create a root CA and an intermediate in the data directory",
  help: () =>
    caHelp(
      "stint ca init [options]",
      "Creates a root and an intermediate CA (keys encrypted with the passphrase) and prints the root\n" +
        "fingerprint that agents bootstrap with (--ca-fingerprint).",
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
      console.log(
        `  keys          ${out.keysEncrypted ? "encrypted with the passphrase" : "NOT ENCRYPTED (development only)"}`,
      );
      console.log(`Root fingerprint (agents use --ca-fingerprint):\n  ${out.rootFingerprint}`);
    }
    return 0;
  },
};
