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
  // a CA key in a PKCS#11 token that cannot sign now (token removed, PIN refused, session lost)
  | "ERR_KEY_UNAVAILABLE"
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
  // rotation: a step the issuers' states do not allow yet, a key kept elsewhere
  | "ERR_ROTATION_STATE"
  | "ERR_KEY_OFFLINE"
  | "ERR_KEY_MISMATCH"
  // audit
  | "ERR_AUDIT_CHAIN"
  // encodings
  | "ERR_DER"
  | "ERR_PEM"
  | "ERR_JOSE"
  // ACME requests (RFC 8555 6.7); each maps to one problem type in acme/problem.ts
  | "ERR_MALFORMED"
  | "ERR_UNSUPPORTED_MEDIA_TYPE"
  | "ERR_PAYLOAD_TOO_LARGE"
  | "ERR_BAD_NONCE"
  | "ERR_BAD_SIGNATURE_ALGORITHM"
  | "ERR_BAD_PUBLIC_KEY"
  | "ERR_UNAUTHORIZED"
  | "ERR_ACCOUNT_DOES_NOT_EXIST"
  | "ERR_ORDER_NOT_READY"
  | "ERR_RATE_LIMITED"
  | "ERR_ALREADY_REVOKED"
  | "ERR_BAD_REVOCATION_REASON"
  | "ERR_UNSUPPORTED_IDENTIFIER"
  | "ERR_REJECTED_IDENTIFIER"
  | "ERR_INCORRECT_RESPONSE"
  | "ERR_CONNECTION"
  | "ERR_ATTESTATION";

export interface StintErrorOptions {
  cause?: unknown;
  /** Which check refused a request (e.g. "nonce", "signature"): a bounded metric label, never user input. */
  check?: string;
  /** For rate limits and not-yet-ready resources: when the client may try again. */
  retryAfterSeconds?: number;
}

export class StintError extends Error {
  readonly code: ErrorCode;
  readonly check?: string;
  readonly retryAfterSeconds?: number;

  constructor(code: ErrorCode, message: string, options?: StintErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "StintError";
    this.code = code;
    this.check = options?.check;
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

export function isStintError(err: unknown, code?: ErrorCode): err is StintError {
  return err instanceof StintError && (code === undefined || err.code === code);
}
