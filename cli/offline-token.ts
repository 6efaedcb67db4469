import type { SigningKey } from "../ca/key-backend";
import { CaKeyStore } from "../ca/key-store";
import { isPkcs11Ref, PIN_ENV, Pkcs11Token, resolvePin } from "../ca/pkcs11";
import { StintError } from "../common/errors";
import { loadRootKey, offlineUsage } from "./offline-files";

/**
 * Root keys in a PKCS#11 token on the offline host: the `stint root …`
 * commands take the token's module, label or slot and PIN file as flags
 * (the offline host has no CA configuration), the PIN from STINT_PKCS11_PIN
 * or that file. `root init` generates the key in the token; the others take
 * `--root-key pkcs11:…`, the URI `root init` printed, where a file would go.
 */

export const TOKEN_FLAGS = {
  "pkcs11-module": { type: "string" },
  "pkcs11-token": { type: "string" },
  "pkcs11-slot": { type: "string" },
  "pkcs11-pin-file": { type: "string" },
} as const;

export const TOKEN_HELP = [
  "  --pkcs11-module PATH         the root key is in a PKCS#11 token: the vendor's library",
  "                               (SoftHSM: /usr/lib/softhsm/libsofthsm2.so); --root-key is then",
  "                               the pkcs11: URI stint root init printed",
  "  --pkcs11-token LABEL         the token's label (or --pkcs11-slot N)",
  `  --pkcs11-pin-file FILE       file holding the token's user PIN (else ${PIN_ENV})`,
];

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** Opens the token the flags name, or null without --pkcs11-module. */
async function openToken(command: string, values: Values): Promise<Pkcs11Token | null> {
  const module = values["pkcs11-module"] as string | undefined;
  const label = (values["pkcs11-token"] as string | undefined) ?? null;
  const slotText = values["pkcs11-slot"] as string | undefined;
  if (module === undefined) {
    if (label !== null || slotText !== undefined || values["pkcs11-pin-file"] !== undefined) {
      throw offlineUsage(command, "--pkcs11-token, --pkcs11-slot and --pkcs11-pin-file need --pkcs11-module");
    }
    return null;
  }
  if (slotText !== undefined && !/^[0-9]{1,10}$/.test(slotText)) {
    throw offlineUsage(command, `--pkcs11-slot must be a slot number (got "${slotText.slice(0, 20)}")`);
  }
  if (label === null && slotText === undefined) {
    throw offlineUsage(command, "--pkcs11-module needs --pkcs11-token LABEL or --pkcs11-slot N");
  }
  const pin = await resolvePin({
    env: process.env,
    pinFile: (values["pkcs11-pin-file"] as string | undefined) ?? null,
  });
  return Pkcs11Token.open({
    module,
    tokenLabel: label,
    slot: slotText === undefined ? null : Number(slotText),
    pin,
    sessions: 1,
  });
}

/** Runs `step` with the token open (closed after, whatever happens); token is null without --pkcs11-module. */
export async function withOfflineToken<T>(
  command: string,
  values: Values,
  step: (token: Pkcs11Token | null) => Promise<T>,
): Promise<T> {
  const token = await openToken(command, values);
  try {
    return await step(token);
  } finally {
    await token?.close();
  }
}

/** Where `root init` makes the key: in the token, or in memory to be written as a file. */
export function rootKeyStore(token: Pkcs11Token | null): CaKeyStore | undefined {
  if (!token) return undefined;
  return new CaKeyStore({ dataDir: "", passphrase: null, backend: "pkcs11", openToken: async () => token });
}

/** The root key `--root-key` names: a `pkcs11:` URI in the open token, else an (encrypted) key file. */
export async function rootSigningKey(
  command: string,
  token: Pkcs11Token | null,
  rootKey: string,
  passphraseFile: string | undefined,
): Promise<SigningKey> {
  if (!isPkcs11Ref(rootKey)) return loadRootKey(rootKey, passphraseFile);
  if (!token) throw offlineUsage(command, "--root-key pkcs11:… needs --pkcs11-module and --pkcs11-token");
  try {
    return await token.openKey(rootKey);
  } catch (err) {
    if (err instanceof StintError) throw err;
    throw new StintError("ERR_KEY_UNAVAILABLE", `cannot open ${rootKey.slice(0, 120)} in the token`);
  }
}
