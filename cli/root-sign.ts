import { PASSPHRASE_ENV } from "../ca/keys";
import { DEFAULT_SIGN_TTL_DAYS, describeIntermediate, signIntermediateRequest } from "../ca/offline-root";
import { writeFileAtomic } from "../common/files";
import { toPem } from "../formats/pem";
import { type Command, parseFlags, printJson } from "./command";
import { offlineUsage, refuseExisting, requireFlags } from "./offline-files";
import { rootSigningKey, TOKEN_FLAGS, TOKEN_HELP, withOfflineToken } from "./offline-token";
import { readPemFile } from "./pem-file";

/**
 * `stint root sign`: step 2 of the offline-root path, run where the root key
 * lives. It reads three files and writes one; no data directory, store or
 * network, so it runs on an air-gapped machine.
 */

const FLAGS = {
  "root-cert": { type: "string" },
  "root-key": { type: "string" },
  csr: { type: "string" },
  out: { type: "string", short: "o" },
  "ttl-days": { type: "string" },
  "permitted-dns-suffix": { type: "string", multiple: true },
  "crl-url": { type: "string" },
  "ca-issuers-url": { type: "string" },
  "passphrase-file": { type: "string" },
  ...TOKEN_FLAGS,
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const usage = (msg: string) => offlineUsage("root sign", msg);

/** An optional URL flag: absent is null; anything but an ASCII http(s) URL is a usage error. */
function urlFlag(flag: string, value: string | undefined): string | null {
  if (value === undefined) return null;
  if (!/^https?:\/\/[\x21-\x7e]+$/.test(value) || value.length > 2000) {
    throw usage(
      `${flag} must be an http:// URL such as http://ca.example.com/crl/ROOT_ID.crl (got "${value.slice(0, 80)}")`,
    );
  }
  return value;
}

export const rootSign: Command = {
  name: "root sign",
  summary: "sign an intermediate CSR with a root key kept offline",
  examples: [
    "stint root sign --root-cert root.pem --root-key root.key.pem --csr int.csr --out int.pem",
    "stint root sign --root-cert root.pem --root-key root.key.pem --csr int.csr --out int.pem \\\n" +
      "      --passphrase-file /media/usb/passphrase --crl-url http://ca.example.com/crl/<root id>.crl",
  ],
  help: () =>
    [
      "usage: stint root sign --root-cert FILE --root-key FILE --csr FILE --out FILE [options]",
      "",
      "Runs where the root key lives (it needs no data directory, store or network). Signs a CSR",
      "made by `stint ca intermediate-csr` as an intermediate of that root: CA:TRUE pathlen:0, limited",
      "to the root's trust domain by a URI name constraint, valid from an hour ago for --ttl-days",
      "(cut to the root's expiry). Only the CSR's key is taken from it; the CSR must verify, carry a",
      "key type Stint uses and name a Stint intermediate of the root's trust domain.",
      "Next: carry the --out file to the CA host and run `stint ca import-intermediate FILE` there.",
      "",
      "options:",
      "  --root-cert FILE             the root certificate (the CA's root.pem)",
      "  --root-key FILE              the root's private key (the CA's keys/root.key.pem)",
      "  --csr FILE                   the request from stint ca intermediate-csr (PEM)",
      "  -o, --out FILE               where to write the intermediate certificate (PEM); never overwrites",
      `  --ttl-days N                 lifetime in days (default ${DEFAULT_SIGN_TTL_DAYS})`,
      "  --permitted-dns-suffix S     also constrain DNS SANs to this suffix (repeatable; default: none,",
      "                               DNS names unconstrained)",
      "  --crl-url URL                the root's CRL as the intermediate's CRL distribution point, so",
      "                               full-chain checkers find it: http://<crl.httpListen>/crl/<root id>.crl",
      "                               (or the CA's https origin); default: none",
      "  --ca-issuers-url URL         the root's certificate as caIssuers: http://<crl.httpListen>/ca/<root id>.cer",
      "  --passphrase-file FILE       file holding the root key passphrase",
      "  --json                       print id, subject, validity and fingerprint as JSON",
      ...TOKEN_HELP,
      "  -h, --help                   this help",
      "",
      `The root key passphrase comes from ${PASSPHRASE_ENV} or --passphrase-file, never from a flag value.`,
    ].join("\n"),
  async run(argv) {
    const { values } = parseFlags(argv, FLAGS);
    const str = (name: keyof typeof FLAGS) => values[name] as string | undefined;
    const [rootCertPath, rootKeyPath, csrPath, out] = requireFlags("root sign", [
      ["--root-cert", str("root-cert")],
      ["--root-key", str("root-key")],
      ["--csr", str("csr")],
      ["--out", str("out")],
    ]) as [string, string, string, string];
    const crlUrl = urlFlag("--crl-url", str("crl-url"));
    const caIssuersUrl = urlFlag("--ca-issuers-url", str("ca-issuers-url"));
    const ttlText = str("ttl-days") ?? String(DEFAULT_SIGN_TTL_DAYS);
    if (!/^[0-9]{1,5}$/.test(ttlText))
      throw usage(`--ttl-days must be a whole number of days (got "${ttlText}")`);

    // Cheap checks first: an existing --out or a bad input file fails before the key is decrypted.
    await refuseExisting(out);
    const rootCertDer = await readPemFile(
      rootCertPath,
      "CERTIFICATE",
      "certificate",
      "give the CA's root.pem as --root-cert",
    );
    const csrDer = await readPemFile(
      csrPath,
      "CERTIFICATE REQUEST",
      "certificate request",
      "give the file stint ca intermediate-csr wrote as --csr",
    );
    const certDer = await withOfflineToken("root sign", values, async (token) =>
      signIntermediateRequest({
        rootCertDer,
        rootKey: await rootSigningKey("root sign", token, rootKeyPath, str("passphrase-file")),
        csrDer,
        ttlDays: Number(ttlText),
        now: new Date(),
        permittedDnsSuffixes: (values["permitted-dns-suffix"] as string[] | undefined) ?? [],
        crlUrl,
        caIssuersUrl,
      }),
    );
    await writeFileAtomic(out, toPem("CERTIFICATE", certDer), 0o644, { overwrite: false });

    const d = describeIntermediate(certDer);
    if (values.json) {
      printJson({
        id: d.id,
        subject: d.subject,
        notBefore: d.notBefore.toISOString(),
        notAfter: d.notAfter.toISOString(),
        fingerprint: d.fingerprint,
        certFile: out,
      });
    } else {
      console.log(`Signed intermediate ${d.id} into ${out}`);
      console.log(`  subject      ${d.subject}`);
      console.log(`  notAfter     ${d.notAfter.toISOString()}`);
      console.log(`  fingerprint  ${d.fingerprint}`);
      console.log(`Next: on the CA host, run: stint ca import-intermediate ${out}`);
    }
    return 0;
  },
};
