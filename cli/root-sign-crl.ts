import { readFile } from "node:fs/promises";
import { PASSPHRASE_ENV } from "../ca/keys";
import { signRequestedCrl } from "../ca/offline-ceremony";
import { decodeCrlRequest } from "../ca/root-crl-request";
import { parseDuration } from "../common/duration";
import { fileError, writeFileAtomic } from "../common/files";
import { toPem } from "../formats/pem";
import { type Command, parseFlags, printJson } from "./command";
import { offlineUsage, readRootCertificate, refuseExisting, requireFlags } from "./offline-files";
import { rootSigningKey, TOKEN_FLAGS, TOKEN_HELP, withOfflineToken } from "./offline-token";

/**
 * `stint root sign-crl`: on the offline host, a root's next CRL, exactly as
 * the CA's request (`stint ca root crl-request`) says: its number and the
 * intermediates revoked under the root. `stint ca import-crl` publishes it.
 */

const FLAGS = {
  "root-cert": { type: "string" },
  "root-key": { type: "string" },
  request: { type: "string" },
  out: { type: "string", short: "o" },
  "next-update": { type: "string" },
  "passphrase-file": { type: "string" },
  ...TOKEN_FLAGS,
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const usage = (msg: string) => offlineUsage("root sign-crl", msg);

/** --next-update as a duration from now ("90d") or an ISO 8601 instant. */
function nextUpdateFlag(text: string | undefined, now: Date): Date | undefined {
  if (text === undefined) return undefined;
  if (/^\d{4}-\d{2}-\d{2}T/.test(text)) {
    const at = new Date(text);
    if (!Number.isNaN(at.getTime())) return at;
  } else {
    try {
      return new Date(now.getTime() + parseDuration(text));
    } catch {
      // reported below
    }
  }
  throw usage(`--next-update takes a duration like 365d or an ISO time, not "${text.slice(0, 40)}"`);
}

export const rootSignCrl: Command = {
  name: "root sign-crl",
  summary: "sign a root's next CRL from the CA's request, on the offline host",
  examples: [
    "stint root sign-crl --root-cert root.pem --root-key root.key.pem --request crl-request.json --out root.crl",
  ],
  help: () =>
    [
      "usage: stint root sign-crl --root-cert FILE --root-key FILE --request FILE --out FILE [options]",
      "",
      "Runs where the root key lives. Signs the CRL the request from `stint ca root crl-request` asks",
      "for: its CRL number and every intermediate revoked under the root (reason cACompromise), valid",
      "from an hour ago until --next-update (default: the root's expiry, since nothing re-signs it",
      "online). The request must name this root by id and fingerprint; read it before signing.",
      "Next: carry --out to the CA host and run `stint ca import-crl FILE` there.",
      "",
      "options:",
      "  --root-cert FILE             the root's certificate",
      "  --root-key FILE              the root's private key",
      "  --request FILE               the request stint ca root crl-request wrote (JSON)",
      "  -o, --out FILE               where to write the CRL (PEM); never overwrites",
      "  --next-update WHEN           a duration (365d) or an ISO time, no later than the root's expiry",
      "  --passphrase-file FILE       file holding the root key's passphrase",
      "  --json                       print the root, number, entries and validity as JSON",
      ...TOKEN_HELP,
      "  -h, --help                   this help",
      "",
      `The passphrase comes from ${PASSPHRASE_ENV} or --passphrase-file, never from a flag value.`,
    ].join("\n"),
  async run(argv) {
    const { values } = parseFlags(argv, FLAGS);
    const str = (name: keyof typeof FLAGS) => values[name] as string | undefined;
    const [rootCert, rootKey, requestFile, out] = requireFlags("root sign-crl", [
      ["--root-cert", str("root-cert")],
      ["--root-key", str("root-key")],
      ["--request", str("request")],
      ["--out", str("out")],
    ]) as [string, string, string, string];
    const now = new Date();
    const nextUpdate = nextUpdateFlag(str("next-update"), now);
    await refuseExisting(out);
    const rootCertDer = await readRootCertificate(rootCert);
    let text: string;
    try {
      text = await readFile(requestFile, "utf8");
    } catch (err) {
      throw fileError(err, requestFile, "read the CRL request");
    }
    const request = decodeCrlRequest(text);
    const crl = await withOfflineToken("root sign-crl", values, async (token) =>
      signRequestedCrl({
        rootCertDer,
        rootKey: await rootSigningKey("root sign-crl", token, rootKey, str("passphrase-file")),
        request,
        now,
        nextUpdate,
      }),
    );
    await writeFileAtomic(out, toPem("X509 CRL", crl.der), 0o644, { overwrite: false });
    if (values.json) {
      printJson({
        root: request.root,
        number: crl.number,
        revoked: request.revoked.map((r) => ({ ...r, revokedAt: r.revokedAt.toISOString() })),
        thisUpdate: crl.thisUpdate.toISOString(),
        nextUpdate: crl.nextUpdate.toISOString(),
        crlFile: out,
      });
    } else {
      console.log(`Signed CRL number ${crl.number} of root ${request.root} into ${out}`);
      for (const r of request.revoked) {
        console.log(
          `  revoked  intermediate ${r.issuer}, serial ${r.serial}, at ${r.revokedAt.toISOString()}`,
        );
      }
      if (request.revoked.length === 0) console.log("  revoked  (none)");
      console.log(`  nextUpdate  ${crl.nextUpdate.toISOString()}`);
      console.log(`Next: on the CA host, run: stint ca import-crl ${out}`);
    }
    return 0;
  },
};
