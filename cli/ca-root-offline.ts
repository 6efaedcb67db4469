import { StintError } from "../common/errors";
import { readPemFile } from "./pem-file";

/**
 * The offline variants of `stint ca root prepare` and `stint ca root activate`
 * (cli/ca-rotate.ts runs them through ca/offline-rotation.ts): their flags,
 * help, the files they read, and the next steps they print.
 */

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

export const OFFLINE_PREPARE_FLAGS = {
  offline: { type: "boolean" },
  "root-cert": { type: "string" },
} as const;

export const OFFLINE_PREPARE_HELP =
  "  --offline                  the new root was made on the offline host (stint root init); import\n" +
  "                             only its certificate, given as --root-cert FILE\n";

export const OFFLINE_ACTIVATE_FLAGS = {
  "cross-cert": { type: "string" },
  intermediate: { type: "string" },
} as const;

export const OFFLINE_ACTIVATE_HELP =
  "  --cross-cert FILE          the new root cross-signed by the old one (stint root cross-sign), with\n" +
  "  --intermediate FILE        the new intermediate signed by the new root (stint root sign): a root\n" +
  "                             prepared with --offline is activated with both\n";

const usage = (command: string, message: string) =>
  new StintError("ERR_USAGE", `${message} (see stint ${command} --help)`);

/** `--offline --root-cert FILE`: both or neither, then the certificate's DER. */
export async function offlineRootCertificate(values: Values): Promise<Buffer> {
  const file = values["root-cert"] as string | undefined;
  if (values.offline !== true) throw usage("ca root prepare", "--root-cert FILE goes with --offline");
  if (!file)
    throw usage("ca root prepare", "--offline needs --root-cert FILE, the certificate stint root init wrote");
  if (values["ttl-days"] !== undefined) {
    throw usage("ca root prepare", "--ttl-days is chosen on the offline host (stint root init --ttl-days)");
  }
  return readPemFile(file, "CERTIFICATE", "root certificate", "give the root-<id>.pem stint root init wrote");
}

/** `--cross-cert FILE --intermediate FILE`: both, read; null when neither is given. */
export async function offlineActivationFiles(
  values: Values,
): Promise<{ crossDer: Buffer; intermediateDer: Buffer } | null> {
  const cross = values["cross-cert"] as string | undefined;
  const intermediate = values.intermediate as string | undefined;
  if (cross === undefined && intermediate === undefined) return null;
  if (!cross || !intermediate) {
    throw usage("ca root activate", "--cross-cert FILE and --intermediate FILE go together");
  }
  if (values["ttl-days"] !== undefined) {
    throw usage(
      "ca root activate",
      "--ttl-days is chosen where the intermediate is signed (stint root sign)",
    );
  }
  return {
    crossDer: await readPemFile(
      cross,
      "CERTIFICATE",
      "cross-certificate",
      "give the file stint root cross-sign wrote as --cross-cert",
    ),
    intermediateDer: await readPemFile(
      intermediate,
      "CERTIFICATE",
      "intermediate certificate",
      "give the file stint root sign wrote as --intermediate",
    ),
  };
}

/** The next step after a root CRL changed where its key is not: the offline host signs, the CA imports. */
export function offlineCrlNextStep(rootId: string): string {
  return (
    `root ${rootId}'s key is not on this host, so its CRL does not list this yet. Next: ` +
    `stint ca root crl-request ${rootId} --out crl-request-${rootId}.json; on the offline host, ` +
    `stint root sign-crl --root-cert <root ${rootId}'s certificate> --root-key <its key> --request crl-request-${rootId}.json --out root-${rootId}.crl; ` +
    `back here, stint ca import-crl root-${rootId}.crl`
  );
}

export function preparedOfflineLines(rootId: string): string[] {
  return [
    `root ${rootId} is prepared and in the trust bundle; its key stays on the offline host`,
    `its first CRL: ${offlineCrlNextStep(rootId).replace(/^.*Next: /, "")}`,
    "then, after one bundle.refreshHint: stint ca intermediate-csr --out int.csr; on the offline host " +
      `stint root sign with root ${rootId} (int.pem) and stint root cross-sign with the current root (cross.pem); ` +
      "back here, stint ca root activate --cross-cert cross.pem --intermediate int.pem",
  ];
}
