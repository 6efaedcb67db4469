import { readFile } from "node:fs/promises";
import { StintError } from "./errors";
import { fileError } from "./files";

/**
 * A secret (the CA key passphrase, a PKCS#11 PIN) from an environment
 * variable or a file, never from a command line value: other users can read
 * argv through ps. Both set, or either set but empty, is ERR_CONFIG; neither
 * is null, for the caller to decide. A file's one trailing newline is not part
 * of the secret.
 */
export async function secretFromEnvOrFile(opts: {
  env: Record<string, string | undefined>;
  envName: string;
  file: string | null;
  /** How the file is named in "both … and <fileSetting> are set": "--passphrase-file", "a PKCS#11 PIN file". */
  fileSetting: string;
  /** What the file holds, for errors: "passphrase file", "PKCS#11 PIN file". */
  fileKind: string;
}): Promise<string | null> {
  const fromEnv = opts.env[opts.envName];
  const { file } = opts;
  if (fromEnv !== undefined && file !== null) {
    throw new StintError("ERR_CONFIG", `both ${opts.envName} and ${opts.fileSetting} are set; use only one`);
  }
  if (file !== null) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      throw fileError(err, file, `read the ${opts.fileKind}`);
    }
    const secret = text.replace(/\r?\n$/, "");
    if (secret.length === 0) throw new StintError("ERR_CONFIG", `the ${opts.fileKind} ${file} is empty`);
    return secret;
  }
  if (fromEnv !== undefined) {
    if (fromEnv.length === 0) throw new StintError("ERR_CONFIG", `${opts.envName} is set but empty`);
    return fromEnv;
  }
  return null;
}
