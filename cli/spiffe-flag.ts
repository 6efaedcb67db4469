import { RESERVED_PATH } from "../ca/entries";
import { StintError } from "../common/errors";

/**
 * Refuses a --spiffe-id under the CA's reserved path (spiffe://<td>/stint/…:
 * its admin and server certificates) before a command does anything, so no
 * command can issue, register or revoke one of the CA's own identities. The
 * authority applies its full SPIFFE rules afterwards; this only finds the path.
 */
export function refuseReservedId(command: string, text: string): string {
  const path = /^spiffe:\/\/[^/]*(\/.*)?$/i.exec(text)?.[1] ?? "";
  if (path === RESERVED_PATH || path.startsWith(`${RESERVED_PATH}/`)) {
    throw new StintError(
      "ERR_POLICY_SPIFFE",
      `SPIFFE IDs under ${RESERVED_PATH}/ are reserved for the CA's own certificates (${command} refuses them); ` +
        "choose another path, or run `stint ca admin-cert` to replace the admin certificate",
    );
  }
  return text;
}
