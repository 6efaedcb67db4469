/**
 * CA keys in a PKCS#11 token (issue 15): what ca/key-backend.ts's `pkcs11`
 * backend opens. The private keys are generated in the token and never leave
 * it; the store records their RFC 7512 URI.
 */

export { Pkcs11Key } from "./key";
export type { KeyExposure } from "./objects";
export { DEFAULT_SESSIONS, PIN_ENV, type Pkcs11Settings, resolvePin } from "./settings";
export { Pkcs11Token, RECONNECT_INTERVAL_MS } from "./token";
export { formatPkcs11Uri, isPkcs11Ref, type Pkcs11Uri, parsePkcs11Uri } from "./uri";
