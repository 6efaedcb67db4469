import { readFile } from "node:fs/promises";
import { importRootCrl, rootCrlRequest } from "../ca/offline-rotation";
import { encodeCrlRequest } from "../ca/root-crl-request";
import { StintError } from "../common/errors";
import { fileError, writeFileAtomic } from "../common/files";
import { pemDecode } from "../formats/pem";
import { command, report, TAKEN_UP, withRotation } from "./ca-rotate";
import { refuseExisting } from "./offline-files";

/**
 * A root's CRL when its key is offline: `stint ca root crl-request` says what
 * the next CRL must list, `stint root sign-crl` signs it on the offline host,
 * `stint ca import-crl` checks and publishes it (ca/offline-rotation.ts).
 */

export const caRootCrlRequest = command({
  name: "ca root crl-request",
  summary: "what an offline root's next CRL must say, for stint root sign-crl",
  usage: "stint ca root crl-request [ROOT] [--out FILE] [options]",
  about:
    "Writes a small JSON request: the root, its fingerprint, the next CRL number and every intermediate\n" +
    "revoked under it (serial and time). ROOT defaults to the only root whose key is not on this host.\n" +
    "Carry it to the offline host: `stint root sign-crl --request FILE …`, then `stint ca import-crl`.\n" +
    "Changes nothing here.",
  flags: { out: { type: "string", short: "o" } },
  flagHelp: "  -o, --out FILE             write the request here (never overwrites); default: stdout",
  examples: ["stint ca root crl-request --out crl-request.json", "stint ca root crl-request ROOT_ID"],
  maxPositionals: 1,
  run: async (values, positionals) => {
    const out = values.out as string | undefined;
    if (out !== undefined) await refuseExisting(out);
    const request = await withRotation(values, { writesKeys: false }, (ctx) =>
      rootCrlRequest(ctx, positionals[0]),
    );
    const text = encodeCrlRequest(request);
    if (out === undefined) {
      process.stdout.write(text);
      return 0;
    }
    await writeFileAtomic(out, text, 0o644, { overwrite: false });
    console.log(
      `CRL request for root ${request.root}: number ${request.number}, ${request.revoked.length} revoked intermediate(s), in ${out}`,
    );
    console.log(
      `Next: on the offline host, run: stint root sign-crl --root-cert <root ${request.root}'s certificate> --root-key <its key> --request ${out} --out root-${request.root}.crl`,
    );
    return 0;
  },
});

/** A CRL file as PEM ("X509 CRL") or DER, the way /crl/<id>.crl serves it. */
async function readCrlFile(path: string): Promise<Buffer> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw fileError(err, path, "read the CRL");
  }
  if (bytes[0] === 0x30) return bytes;
  try {
    return pemDecode(bytes.toString("latin1"), "X509 CRL", path);
  } catch {
    throw new StintError(
      "ERR_PEM",
      `${path} holds no CRL (neither DER nor an "X509 CRL" PEM block); give the file stint root sign-crl wrote`,
    );
  }
}

export const caImportCrl = command({
  name: "ca import-crl",
  summary: "publish a root CRL signed on the offline host by stint root sign-crl",
  usage: "stint ca import-crl FILE [--json] [options]",
  about:
    "Checks that FILE (PEM or DER) is signed by a root of this CA, is current, carries a higher CRL\n" +
    "number than any published for that root, and lists every intermediate revoked under it; then\n" +
    "stores it, and the server serves it at /crl/<root id>.crl. Nothing is stored when a check fails.\n" +
    TAKEN_UP,
  flags: { json: { type: "boolean" } },
  flagHelp: "  --json                     print the root, number and entries as JSON",
  examples: ["stint ca import-crl root-ROOTID.crl"],
  maxPositionals: 1,
  run: async (values, positionals) => {
    if (positionals.length !== 1) {
      throw new StintError("ERR_USAGE", "give the CRL file to import (see stint ca import-crl --help)");
    }
    const der = await readCrlFile(positionals[0]!);
    const r = await withRotation(values, { writesKeys: false }, (ctx) => importRootCrl(ctx, der));
    return report(
      values,
      { root: r.root.id, number: r.number, revoked: r.revoked, nextUpdate: r.nextUpdate.toISOString() },
      [
        `root ${r.root.id}'s CRL number ${r.number} (${r.revoked} revoked) is published until ${r.nextUpdate.toISOString()}`,
        TAKEN_UP,
      ],
    );
  },
});
