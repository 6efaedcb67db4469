import { DEFAULT_ROOT_TTL_DAYS } from "../ca/hierarchy";
import { KEY_ALGORITHMS, PASSPHRASE_ENV, parseKeyAlgorithm, resolvePassphrase } from "../ca/keys";
import { createOfflineRoot } from "../ca/offline-ceremony";
import { PIN_ENV } from "../ca/pkcs11";
import { StintError } from "../common/errors";
import { trustDomainProblem } from "../formats/spiffe";
import { type Command, flagValue, parseFlags, printJson } from "./command";
import { offlineUsage } from "./offline-files";
import { rootKeyStore, TOKEN_FLAGS, withOfflineToken } from "./offline-token";

/**
 * `stint root init`: the next root, made on the offline host for a root
 * rotation that never brings a root key to the CA host (`stint ca root prepare
 * --offline` imports only its certificate). No data directory, store or network.
 */

const FLAGS = {
  "out-dir": { type: "string" },
  "trust-domain": { type: "string" },
  "key-algorithm": { type: "string" },
  "ttl-days": { type: "string" },
  "crl-base-url": { type: "string" },
  "passphrase-file": { type: "string" },
  "insecure-no-passphrase": { type: "boolean" },
  ...TOKEN_FLAGS,
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const usage = (msg: string) => offlineUsage("root init", msg);

export const rootInit: Command = {
  name: "root init",
  summary: "make the next root on the offline host (root rotation with the root key kept offline)",
  examples: [
    "stint root init --out-dir /media/usb/roots --trust-domain example.org",
    "stint root init --out-dir roots --trust-domain example.org --crl-base-url http://ca.example.org:8080 --json",
  ],
  help: () =>
    [
      "usage: stint root init --out-dir DIR --trust-domain TD [options]",
      "",
      "Runs where root keys live (no data directory, store or network). Makes a root the way",
      "`stint ca root prepare` would (CN=Stint Root CA <id>, O=<trust domain>; CA:TRUE, keyCertSign and",
      "cRLSign, critical): its key as DIR/root-<id>.key.pem (0600, encrypted) and its certificate as",
      "DIR/root-<id>.pem. Neither overwrites a file.",
      "Next: carry only root-<id>.pem to the CA host and run",
      "`stint ca root prepare --offline --root-cert root-<id>.pem` there.",
      "",
      "options:",
      "  --out-dir DIR                where to write the key and certificate (made 0700 if missing)",
      "  --trust-domain TD            the CA's trust domain (stint ca status shows it)",
      `  --key-algorithm ALG          ${KEY_ALGORITHMS.join(", ")} (default ec-p256)`,
      `  --ttl-days N                 lifetime in days (default ${DEFAULT_ROOT_TTL_DAYS})`,
      "  --crl-base-url URL           the CA's CRL origin, http://<crl.httpListen>: the root names",
      "                               URL/crl/<id>.crl as its CRL, as roots the CA makes do (default: none)",
      "  --passphrase-file FILE       file holding the passphrase that encrypts the key",
      "  --insecure-no-passphrase     write the key unencrypted when no passphrase is set (tests only)",
      "  --pkcs11-module PATH         make the key inside a PKCS#11 token (not extractable) instead of",
      "                               a file; with --pkcs11-token LABEL or --pkcs11-slot N, and the PIN",
      `                               from --pkcs11-pin-file or ${PIN_ENV}; prints the key's pkcs11: URI`,
      "  --json                       print id, fingerprint, files and expiry as JSON",
      "  -h, --help                   this help",
      "",
      `The passphrase comes from ${PASSPHRASE_ENV} or --passphrase-file, never from a flag value.`,
    ].join("\n"),
  async run(argv) {
    const { values } = parseFlags(argv, FLAGS);
    const str = (name: keyof typeof FLAGS) => values[name] as string | undefined;
    const outDir = str("out-dir");
    const trustDomain = str("trust-domain");
    if (!outDir) throw usage("--out-dir DIR is required");
    if (!trustDomain) throw usage("--trust-domain TD is required (the CA's, as stint ca status shows it)");
    const problem = trustDomainProblem(trustDomain);
    if (problem) throw usage(`--trust-domain: ${problem}`);
    const keyAlgorithm = flagValue("root init", "key-algorithm", () =>
      parseKeyAlgorithm(str("key-algorithm") ?? "ec-p256"),
    );
    const ttlText = str("ttl-days") ?? String(DEFAULT_ROOT_TTL_DAYS);
    const ttlDays = Number(ttlText);
    if (!/^[0-9]{1,5}$/.test(ttlText) || ttlDays < 1 || ttlDays > 36500)
      throw usage(
        `--ttl-days must be a whole number of days between 1 and 36500 (got "${ttlText.slice(0, 20)}")`,
      );
    const crlBaseUrl = str("crl-base-url") ?? null;
    if (crlBaseUrl !== null && !/^https?:\/\/[\x21-\x7e]+$/.test(crlBaseUrl))
      throw usage(`--crl-base-url must be an http:// origin such as http://ca.example.org:8080`);

    const inToken = values["pkcs11-module"] !== undefined;
    const passphrase = await resolvePassphrase({
      env: process.env,
      passphraseFile: str("passphrase-file") ?? null,
    });
    if (!inToken && passphrase === null && values["insecure-no-passphrase"] !== true) {
      throw new StintError(
        "ERR_CONFIG",
        `a root key needs a passphrase: set ${PASSPHRASE_ENV} or --passphrase-file (or --insecure-no-passphrase for tests)`,
      );
    }
    const root = await withOfflineToken("root init", values, (token) =>
      createOfflineRoot({
        outDir,
        trustDomain,
        keyAlgorithm,
        ttlDays,
        passphrase,
        keyStore: rootKeyStore(token),
        crlBaseUrl,
        now: new Date(),
      }),
    );
    if (values.json) {
      printJson({
        id: root.id,
        fingerprint: root.fingerprint,
        notAfter: root.notAfter.toISOString(),
        certFile: root.certFile,
        keyFile: root.keyFile,
        keyRef: root.keyRef,
      });
    } else {
      console.log(`Made root ${root.id}`);
      console.log(`  certificate  ${root.certFile}`);
      console.log(`  key          ${root.keyRef} (keep it here; give it as --root-key)`);
      console.log(`  notAfter     ${root.notAfter.toISOString()}`);
      console.log(`  fingerprint  ${root.fingerprint}`);
      console.log(`Next: on the CA host, run: stint ca root prepare --offline --root-cert ${root.certFile}`);
    }
    return 0;
  },
};
