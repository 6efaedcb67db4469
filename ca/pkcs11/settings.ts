import { StintError } from "../../common/errors";
import { secretFromEnvOrFile } from "../../common/secret-input";

/** How the CA reaches its PKCS#11 token (keys.pkcs11.* settings plus the resolved PIN). */
export interface Pkcs11Settings {
  /** Path of the vendor's PKCS#11 library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so). */
  module: string;
  /** The token's label; or null to pick the token by slot. */
  tokenLabel: string | null;
  /** The slot id; or null to pick the token by label. With both set, the slot's token must carry the label. */
  slot: number | null;
  /** The user PIN (resolvePin); never logged, never in an error message. */
  pin: string;
  /** Sessions kept logged in, so concurrent signatures do not queue on one (default 4). */
  sessions: number;
}

export const PIN_ENV = "STINT_PKCS11_PIN";
export const DEFAULT_SESSIONS = 4;
export const MAX_SESSIONS = 64;

export function checkSettings(s: Pkcs11Settings): void {
  if (!s.module)
    throw new StintError(
      "ERR_CONFIG",
      "keys.pkcs11.module is not set; give the path of the token's PKCS#11 library",
    );
  if (s.tokenLabel === null && s.slot === null) {
    throw new StintError(
      "ERR_CONFIG",
      "set keys.pkcs11.tokenLabel or keys.pkcs11.slot to say which PKCS#11 token holds the CA keys",
    );
  }
  if (s.slot !== null && (!Number.isSafeInteger(s.slot) || s.slot < 0)) {
    throw new StintError("ERR_CONFIG", `keys.pkcs11.slot must be a non-negative integer, not ${s.slot}`);
  }
  if (!Number.isInteger(s.sessions) || s.sessions < 1 || s.sessions > MAX_SESSIONS) {
    throw new StintError(
      "ERR_CONFIG",
      `keys.pkcs11.sessions must be an integer from 1 to ${MAX_SESSIONS}, not ${s.sessions}`,
    );
  }
  if (s.pin.length === 0) throw new StintError("ERR_CONFIG", "the PKCS#11 PIN is empty");
}

/**
 * The token's user PIN, from STINT_PKCS11_PIN or a PIN file; never a command
 * line value (other users can read argv through ps). Unlike the key
 * passphrase there is no PIN-less mode: a token without login exposes no
 * private keys.
 */
export async function resolvePin(opts: {
  env: Record<string, string | undefined>;
  pinFile?: string | null;
}): Promise<string> {
  const pin = await secretFromEnvOrFile({
    env: opts.env,
    envName: PIN_ENV,
    file: opts.pinFile ?? null,
    fileSetting: "a PKCS#11 PIN file",
    fileKind: "PKCS#11 PIN file",
  });
  if (pin !== null) return pin;
  throw new StintError(
    "ERR_CONFIG",
    `the PKCS#11 token needs its user PIN; set ${PIN_ENV} or keys.pkcs11.pinFile (never a command line value)`,
  );
}
