/**
 * One error class for the whole project, with a closed set of stable codes.
 * Tests assert the code together with the message; the HTTP edge maps codes to
 * problem documents in one table, and the CLI prints `message` on one line.
 * Messages never carry secrets (keys, passphrases, tokens, evidence).
 */
export type ErrorCode =
  // configuration and command line
  | "ERR_CONFIG"
  | "ERR_USAGE"
  // keys and files
  | "ERR_KEY_PASSPHRASE"
  | "ERR_KEY_CORRUPT"
  | "ERR_FILE"
  | "ERR_NOT_INITIALIZED"
  | "ERR_ALREADY_INITIALIZED"
  // store
  | "ERR_STORE_CORRUPT"
  | "ERR_STORE_FOREIGN"
  | "ERR_STORE_VERSION"
  | "ERR_STORE_CONFLICT"
  | "ERR_NOT_FOUND"
  // issuance and policy
  | "ERR_POLICY_TTL"
  | "ERR_POLICY_DNS"
  | "ERR_POLICY_IP"
  | "ERR_POLICY_SPIFFE"
  | "ERR_POLICY_KEY"
  | "ERR_BAD_CSR"
  | "ERR_NO_ACTIVE_ISSUER"
  // audit
  | "ERR_AUDIT_CHAIN"
  // encodings
  | "ERR_DER"
  | "ERR_PEM";

export class StintError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StintError";
    this.code = code;
  }
}

export function isStintError(err: unknown, code?: ErrorCode): err is StintError {
  return err instanceof StintError && (code === undefined || err.code === code);
}
