import { fingerprintSha256, PASSPHRASE_ENV } from "../ca/keys";
import { crossSignRoot } from "../ca/offline-ceremony";
import { writeFileAtomic } from "../common/files";
import { toPem } from "../formats/pem";
import { type Command, parseFlags, printJson } from "./command";
import { readRootCertificate, refuseExisting, requireFlags } from "./offline-files";
import { rootSigningKey, TOKEN_FLAGS, TOKEN_HELP, withOfflineToken } from "./offline-token";

/**
 * `stint root cross-sign`: on the offline host, the old root vouches for the
 * new one, so chains through the new root reach verifiers that still trust
 * only the old one. `stint ca root activate --cross-cert` imports the result.
 */

const FLAGS = {
  "root-cert": { type: "string" },
  "root-key": { type: "string" },
  "new-root-cert": { type: "string" },
  out: { type: "string", short: "o" },
  "passphrase-file": { type: "string" },
  ...TOKEN_FLAGS,
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export const rootCrossSign: Command = {
  name: "root cross-sign",
  summary: "cross-sign the next root with the current one, on the offline host",
  examples: [
    "stint root cross-sign --root-cert root.pem --root-key root.key.pem --new-root-cert root-NEWID.pem --out cross.pem",
  ],
  help: () =>
    [
      "usage: stint root cross-sign --root-cert OLD --root-key OLDKEY --new-root-cert NEW --out FILE [options]",
      "",
      "Runs where the current (old) root's key lives. Writes a certificate with the new root's name and",
      "key signed by the old root (CA:TRUE pathlen:1, valid within both roots), so a chain leaf,",
      "intermediate, cross-certificate validates for verifiers that trust only the old root. Both must",
      "be Stint roots of the same trust domain, valid now.",
      "Next: carry --out to the CA host: stint ca root activate --cross-cert FILE --intermediate FILE",
      "(the intermediate: stint ca intermediate-csr there, stint root sign with the new root here).",
      "",
      "options:",
      "  --root-cert FILE             the current root's certificate (the one the active intermediate has)",
      "  --root-key FILE              its private key",
      "  --new-root-cert FILE         the root stint root init made (root-<id>.pem)",
      "  -o, --out FILE               where to write the cross-certificate (PEM); never overwrites",
      "  --passphrase-file FILE       file holding the old root key's passphrase",
      "  --json                       print the roots, the file and its fingerprint as JSON",
      ...TOKEN_HELP,
      "  -h, --help                   this help",
      "",
      `The passphrase comes from ${PASSPHRASE_ENV} or --passphrase-file, never from a flag value.`,
    ].join("\n"),
  async run(argv) {
    const { values } = parseFlags(argv, FLAGS);
    const str = (name: keyof typeof FLAGS) => values[name] as string | undefined;
    const [rootCert, rootKey, newRootCert, out] = requireFlags("root cross-sign", [
      ["--root-cert", str("root-cert")],
      ["--root-key", str("root-key")],
      ["--new-root-cert", str("new-root-cert")],
      ["--out", str("out")],
    ]) as [string, string, string, string];
    await refuseExisting(out);
    const oldCertDer = await readRootCertificate(rootCert);
    const newCertDer = await readRootCertificate(newRootCert, "--new-root-cert");
    const cross = await withOfflineToken("root cross-sign", values, async (token) =>
      crossSignRoot({
        oldCertDer,
        oldKey: await rootSigningKey("root cross-sign", token, rootKey, str("passphrase-file")),
        newCertDer,
        now: new Date(),
      }),
    );
    await writeFileAtomic(out, toPem("CERTIFICATE", cross.der), 0o644, { overwrite: false });
    const fingerprint = fingerprintSha256(cross.der);
    if (values.json) {
      printJson({ root: cross.newId, crossSignedBy: cross.oldId, fingerprint, certFile: out });
    } else {
      console.log(`Cross-signed root ${cross.newId} by root ${cross.oldId} into ${out}`);
      console.log(`  fingerprint  ${fingerprint}`);
      console.log(
        `Next: on the CA host, run: stint ca root activate --cross-cert ${out} --intermediate <the new intermediate>`,
      );
    }
    return 0;
  },
};
