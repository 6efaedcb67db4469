import { randomBytes } from "node:crypto";
import { lstat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { intermediateCommonName } from "../ca/hierarchy";
import { type CaKeyStore, pendingKeyMeta } from "../ca/key-store";
import { issuerIdFromSki, type KeyAlgorithm, subjectKeyIdentifier } from "../ca/keys";
import { createIntermediateRequest, type IntermediateRequest } from "../ca/offline-root";
import type { Store } from "../ca/store";
import { createCaCertificateRequest } from "../ca/x509";
import { StintError } from "../common/errors";
import { writeFileAtomic } from "../common/files";
import { toPem } from "../formats/pem";
import { keyStoreFrom } from "./ca-keys";
import { type Command, parseFlags, printJson } from "./command";
import { caFlagOptions, caHelp, loadConfigFromFlags, openCa, passphraseFrom } from "./context";

/** `stint ca intermediate-csr`: step 1 of the offline-root path; the key stays on the CA host, the CSR travels. */

const OWN_FLAGS = {
  out: { type: "string", short: "o" },
  "insecure-no-passphrase": { type: "boolean" },
  json: { type: "boolean" },
} as const;

/**
 * keys.backend pkcs11: the new key is made in the token and its URI kept in
 * the store (pendingKeyMeta), where `ca import-intermediate` finds it.
 */
async function tokenRequest(
  keys: CaKeyStore,
  store: Store,
  opts: { keyAlgorithm: KeyAlgorithm; trustDomain: string },
): Promise<IntermediateRequest> {
  const key = await keys.generate(opts.keyAlgorithm, `stint-intermediate-${randomBytes(4).toString("hex")}`);
  const id = issuerIdFromSki(subjectKeyIdentifier(key.publicKey));
  const csrDer = await createCaCertificateRequest({
    keys: key,
    commonName: intermediateCommonName(id),
    trustDomain: opts.trustDomain,
  });
  await store.setMeta(pendingKeyMeta(id), key.ref);
  return { id, csrDer, keyPath: key.ref };
}

/** Refuses early, before a key is made, when the output file is already there. */
async function checkAbsent(path: string): Promise<void> {
  try {
    await lstat(path);
  } catch {
    return;
  }
  throw new StintError(
    "ERR_FILE",
    `${path} already exists; refusing to overwrite it (move it away first or choose another --out)`,
  );
}

export const caIntermediateCsr: Command = {
  name: "ca intermediate-csr",
  summary: "make a key and a CSR for a new intermediate, for a root kept offline",
  examples: [
    "stint ca intermediate-csr --out int.csr",
    "stint ca intermediate-csr --key-algorithm ec-p384 --out int.csr --json",
  ],
  help: () =>
    caHelp(
      "stint ca intermediate-csr [--out FILE] [--key-algorithm ALG] [--json] [options]",
      "Generates the key of a new intermediate in <dataDir>/keys/<id>.key.pem (0600, encrypted with the\n" +
        "CA key passphrase), or with keys.backend pkcs11 inside the token (the store keeps its pkcs11: URI),\n" +
        "and writes a PKCS#10 request for it (PEM) to --out or stdout. The active intermediate keeps\n" +
        "issuing. Next steps:\n" +
        "  1. carry the CSR to the machine holding the root key and run there:\n" +
        "       stint root sign --root-cert root.pem --root-key root.key.pem --csr FILE --out int.pem\n" +
        "  2. carry int.pem back and run here: stint ca import-intermediate int.pem",
      "  -o, --out FILE             write the CSR here (default: stdout); never overwrites a file\n" +
        "  --key-algorithm ALG        key type of the new intermediate (default: the keyAlgorithm setting)\n" +
        "  --insecure-no-passphrase   write the key unencrypted (development only)\n" +
        "  --json                     print { id, keyPath, csrFile } (and csrPem when there is no --out)",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, caFlagOptions(OWN_FLAGS));
    const cfg = loadConfigFromFlags(values);
    const out = values.out as string | undefined;
    if (out !== undefined) await checkAbsent(out);
    const passphrase = await passphraseFrom(cfg);
    // A key made in the token needs no passphrase; a key file does.
    const inToken = cfg["keys.backend"] === "pkcs11";
    if (passphrase === null && !inToken && values["insecure-no-passphrase"] !== true) {
      throw new StintError(
        "ERR_CONFIG",
        "CA keys need a passphrase: set STINT_CA_PASSPHRASE or --passphrase-file (or --insecure-no-passphrase for development)",
      );
    }
    // Opening the CA proves it is initialised, gives its trust domain, and checks the passphrase
    // opens the active key, so the new key is not encrypted under a mistyped one.
    const { store, trustDomain } = await openCa(cfg, values);
    const keys = keyStoreFrom(cfg, passphrase);
    let req: IntermediateRequest;
    try {
      req = inToken
        ? await tokenRequest(keys, store, { keyAlgorithm: cfg.keyAlgorithm, trustDomain })
        : await createIntermediateRequest({
            dataDir: cfg.dataDir,
            passphrase,
            keyAlgorithm: cfg.keyAlgorithm,
            trustDomain,
            now: new Date(),
          });
    } finally {
      await store.close();
    }
    const keyFile = inToken ? req.keyPath : join(cfg.dataDir, req.keyPath);
    const pem = toPem("CERTIFICATE REQUEST", req.csrDer);
    if (out !== undefined) {
      try {
        await writeFileAtomic(out, pem, 0o644, { overwrite: false });
      } catch (err) {
        // A key whose CSR nobody can see is only a liability (a token key stays: nothing here deletes token objects).
        if (!inToken) await unlink(keyFile).catch(() => undefined);
        throw err;
      }
    }
    if (values.json) {
      printJson({ id: req.id, keyPath: keyFile, csrFile: out ?? null, ...(out ? {} : { csrPem: pem }) });
      return 0;
    }
    const next =
      `Next: on the machine holding the root key, run\n` +
      `  stint root sign --root-cert root.pem --root-key root.key.pem --csr ${out ?? "FILE"} --out int.pem\n` +
      "then bring int.pem back here and run: stint ca import-intermediate int.pem";
    const summary = `Made intermediate ${req.id} (${cfg.keyAlgorithm}); key in ${keyFile}, trust domain ${trustDomain}`;
    if (out === undefined) {
      // stdout carries only the PEM, so `> req.pem` works; the guidance goes to stderr.
      process.stdout.write(pem);
      process.stderr.write(`${summary}\n${next}\n`);
    } else {
      console.log(`${summary}\nWrote the CSR to ${out}\n${next}`);
    }
    return 0;
  },
};
