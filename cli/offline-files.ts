import type { KeyObject } from "node:crypto";
import { lstat } from "node:fs/promises";
import { loadPrivateKey, resolvePassphrase } from "../ca/keys";
import { StintError } from "../common/errors";
import { readPemFile } from "./pem-file";

/**
 * What the `stint root …` commands share on the offline host: required file
 * flags, outputs that are never overwritten, and the root certificate and key.
 * Cheap checks come first, so a typo fails before the key is decrypted.
 */

export const offlineUsage = (command: string, msg: string) =>
  new StintError("ERR_USAGE", `${msg} (see stint ${command} --help)`);

/** Each flag must be given; returns the values in the same order. */
export function requireFlags(
  command: string,
  pairs: readonly (readonly [string, string | undefined])[],
): string[] {
  return pairs.map(([flag, value]) => {
    if (!value) throw offlineUsage(command, `${flag} FILE is required`);
    return value;
  });
}

const exists = (path: string) =>
  lstat(path).then(
    () => true,
    () => false,
  );

/** Refuses an --out that exists: a signed file is never replaced by accident. */
export async function refuseExisting(out: string): Promise<void> {
  if (await exists(out)) {
    throw new StintError(
      "ERR_FILE",
      `${out} already exists; refusing to overwrite it (move it away first or choose another --out)`,
    );
  }
}

export function readRootCertificate(path: string, flag = "--root-cert"): Promise<Buffer> {
  return readPemFile(path, "CERTIFICATE", "certificate", `give the root's certificate as ${flag}`);
}

/** The root's private key, decrypted with STINT_CA_PASSPHRASE or --passphrase-file (never a flag value). */
export async function loadRootKey(path: string, passphraseFile: string | undefined): Promise<KeyObject> {
  const passphrase = await resolvePassphrase({ env: process.env, passphraseFile: passphraseFile ?? null });
  if (!(await exists(path))) {
    throw new StintError("ERR_FILE", `root key file ${path} does not exist; check --root-key`);
  }
  return (await loadPrivateKey(path, passphrase)).key;
}
