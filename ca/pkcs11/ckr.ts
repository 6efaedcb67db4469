/**
 * PKCS#11 return values as pkcs11js reports them (Pkcs11Error, message
 * "CKR_NAME", numeric code), and which of them mean the token or our
 * sessions are gone rather than that one request was bad.
 */

/** "CKR_PIN_INCORRECT" for a PKCS#11 failure; the first line of the message (no secrets in pkcs11js messages) otherwise. */
export function ckrName(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const match = /CKR_[A-Z0-9_]+/.exec(message);
  return match ? match[0] : (message.split("\n")[0] ?? "").slice(0, 200);
}

export function isCkr(err: unknown, ...names: string[]): boolean {
  return names.includes(ckrName(err));
}

/*
 * Failures that concern the request, not the token: the session stays good.
 * Everything else (CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
 * CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_ERROR,
 * CKR_USER_NOT_LOGGED_IN, CKR_GENERAL_ERROR, and SoftHSM's
 * CKR_OBJECT_HANDLE_INVALID once its token directory vanished) makes us drop
 * the sessions and reconnect: a spurious reconnect costs a few milliseconds,
 * a missed one leaves the CA unable to sign.
 */
const REQUEST_FAILURES = new Set([
  "CKR_ARGUMENTS_BAD",
  "CKR_BUFFER_TOO_SMALL",
  "CKR_DATA_INVALID",
  "CKR_DATA_LEN_RANGE",
  "CKR_FUNCTION_NOT_SUPPORTED",
  "CKR_KEY_FUNCTION_NOT_PERMITTED",
  "CKR_KEY_TYPE_INCONSISTENT",
  "CKR_MECHANISM_INVALID",
  "CKR_MECHANISM_PARAM_INVALID",
  "CKR_TEMPLATE_INCOMPLETE",
  "CKR_TEMPLATE_INCONSISTENT",
  "CKR_ATTRIBUTE_VALUE_INVALID",
  "CKR_ATTRIBUTE_TYPE_INVALID",
  "CKR_ATTRIBUTE_SENSITIVE",
  "CKR_DOMAIN_PARAMS_INVALID",
  "CKR_CURVE_NOT_SUPPORTED",
]);

export function meansConnectionLost(err: unknown): boolean {
  if (err instanceof TypeError) return false;
  return !REQUEST_FAILURES.has(ckrName(err));
}
