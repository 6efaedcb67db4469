import type { KeyObject } from "node:crypto";
import { importSpkiCached } from "../ca/key-cache";
import { inspectSpki } from "../ca/spki";
import type { AccountRecord } from "../ca/store-acme";
import { type ErrorCode, isStintError, StintError } from "../common/errors";
import {
  algorithmForKey,
  exportJwk,
  fromB64u,
  importJwk,
  isJwsAlgorithm,
  JWS_ALGORITHMS,
  type Jwk,
  type JwsAlgorithm,
  jwkThumbprint,
  keyFitsAlgorithm,
  verifyJwsSignature,
} from "../formats/jose";
import { ACCEPTED_KEYS } from "../formats/key-bounds";
import { type CertificateKey, readCertificateKey } from "../formats/x509";
import { isObject } from "./wire";

/**
 * The one way an ACME POST becomes something a handler may act on. Checks
 * run in a fixed order (STYLE habit 4), each refusal with a stable code and a
 * `check` label, and the result is a `VerifiedRequest` no other code can make.
 * The signature is checked before the nonce, so a forger cannot burn nonces.
 */

/** `check` labels in pipeline order: the bounded set of metric label values for refusals. */
export const JWS_CHECKS = [
  "content_type",
  "body_size",
  "jws_shape",
  "protected_header",
  "alg",
  "key_source",
  "key",
  "account",
  "alg_key",
  "signature",
  "nonce",
  "url",
  "payload",
] as const;
export type JwsCheck = (typeof JWS_CHECKS)[number];

/**
 * Algorithms a JWS may use. RFC 8555 6.2 wants a badSignatureAlgorithm
 * problem to list them in an `algorithms` field: the edge adds this list.
 */
export const ACCEPTED_ALGORITHMS: readonly JwsAlgorithm[] = JWS_ALGORITHMS;

export type KeySource = "jwk" | "kid" | "x5c";
const KEY_SOURCES: readonly KeySource[] = ["jwk", "kid", "x5c"];
const KEY_SOURCE_MEANING: Record<KeySource, string> = {
  jwk: '"jwk" (the public key itself)',
  kid: '"kid" (the account URL)',
  x5c: '"x5c" (the current certificate chain)',
};

export interface AccountKey {
  accountUrl: string;
  key: KeyObject;
  status: "valid" | "deactivated" | "revoked";
  /** The account as read for this request, so handlers need not read it again. */
  record?: AccountRecord;
}

/** What the pipeline needs from the rest of the server: declared here, by the consumer. */
export interface JwsVerifierDeps {
  /** Throws ERR_BAD_NONCE unless the nonce is fresh and unused (see NonceService). */
  nonces: { consume(nonce: string): Promise<void> };
  lookupAccount(kid: string): Promise<AccountKey | null>;
  maxBodyBytes: number;
}

export interface JwsHttpRequest {
  contentType: string | undefined;
  body: Buffer;
  /** The absolute URL the request was sent to, as the directory advertises it. */
  url: string;
}

export type VerifiedSource =
  | { kind: "jwk"; key: KeyObject; jwk: Jwk; thumbprint: string }
  | { kind: "kid"; account: AccountKey }
  /** The leaf's key signed; the chain is validated later, by the renewal handler. */
  | { kind: "x5c"; chain: Buffer[]; key: KeyObject; leaf: CertificateKey };

interface VerifiedFields {
  url: string;
  alg: JwsAlgorithm;
  nonce: string;
  source: VerifiedSource;
  payload: unknown | null;
  protectedHeader: Readonly<Record<string, unknown>>;
}

/** Held only by this module: without it the constructor refuses, so only the pipeline makes these. */
const SEAL: unique symbol = Symbol("stint.acme.verifiedRequest");

export class VerifiedRequest implements VerifiedFields {
  readonly url: string;
  readonly alg: JwsAlgorithm;
  readonly nonce: string;
  readonly source: VerifiedSource;
  /** Parsed JSON payload; null for POST-as-GET (empty payload). */
  readonly payload: unknown | null;
  readonly protectedHeader: Readonly<Record<string, unknown>>;
  // An ES private field makes the type nominal: no object literal satisfies it.
  readonly #sealed = true;

  constructor(seal: typeof SEAL, fields: VerifiedFields) {
    if (seal !== SEAL) throw new TypeError("a VerifiedRequest comes only from verifyJwsRequest");
    this.url = fields.url;
    this.alg = fields.alg;
    this.nonce = fields.nonce;
    this.source = fields.source;
    this.payload = fields.payload;
    this.protectedHeader = fields.protectedHeader;
    Object.freeze(this);
  }

  static is(value: unknown): value is VerifiedRequest {
    return typeof value === "object" && value !== null && #sealed in value;
  }
}

function refuse(code: ErrorCode, check: JwsCheck, message: string): StintError {
  return new StintError(code, message, { check });
}

/** A short, quoted, escaped excerpt of client input for messages; never more than `max` characters of it. */
function excerpt(value: unknown, max = 40): string {
  const text = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value));
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function parseJson(bytes: Buffer): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(utf8.decode(bytes)) };
  } catch {
    return { ok: false };
  }
}

function jsonKind(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : `a ${typeof v}`;
}

// 1
function checkContentType(contentType: string | undefined): void {
  const mediaType = contentType?.split(";", 1)[0]?.trim().toLowerCase();
  if (mediaType === "application/jose+json") return;
  const got = contentType === undefined ? "none" : excerpt(contentType);
  const message = `Content-Type must be application/jose+json (got ${got})`;
  throw refuse("ERR_UNSUPPORTED_MEDIA_TYPE", "content_type", message);
}

interface FlattenedParts {
  protectedB64: string;
  payloadB64: string;
  protectedBytes: Buffer;
  payloadBytes: Buffer;
  signature: Buffer;
}

const MEMBERS = ["protected", "payload", "signature"] as const;

// 3
function parseFlattened(body: Buffer): FlattenedParts {
  const shape = (message: string) => refuse("ERR_MALFORMED", "jws_shape", message);
  const parsed = parseJson(body);
  if (!parsed.ok) throw shape("request body is not JSON; send a flattened JWS (RFC 7515 7.2.2)");
  const jws = parsed.value;
  if (!isObject(jws))
    throw shape(`request body must be a flattened JWS object (RFC 7515 7.2.2), not ${jsonKind(jws)}`);
  if (Object.hasOwn(jws, "signatures"))
    throw shape('general JWS serialization ("signatures") is not accepted; send one flattened JWS');
  if (Object.hasOwn(jws, "header"))
    throw shape('an unprotected JWS "header" is not accepted; put every header parameter in "protected"');
  for (const m of MEMBERS) {
    if (typeof jws[m] !== "string") throw shape(`JWS member "${m}" is missing or not a string`);
  }
  const extra = Object.keys(jws).find((k) => !(MEMBERS as readonly string[]).includes(k));
  if (extra !== undefined)
    throw shape(`unexpected JWS member ${excerpt(extra)}; send only "protected", "payload" and "signature"`);
  const decode = (m: (typeof MEMBERS)[number]): Buffer => {
    try {
      return fromB64u(jws[m], m);
    } catch (err) {
      if (!isStintError(err, "ERR_JOSE")) throw err;
      throw shape(`JWS "${m}" is not base64url (RFC 7515 2: URL-safe alphabet, no padding)`);
    }
  };
  return {
    protectedB64: jws.protected as string,
    payloadB64: jws.payload as string,
    protectedBytes: decode("protected"),
    payloadBytes: decode("payload"),
    signature: decode("signature"),
  };
}

// 4
function parseProtectedHeader(bytes: Buffer): Record<string, unknown> {
  const bad = (message: string) => refuse("ERR_MALFORMED", "protected_header", message);
  const parsed = parseJson(bytes);
  if (!parsed.ok || !isObject(parsed.value)) throw bad("JWS protected header is not a JSON object");
  const header = parsed.value;
  if (Object.hasOwn(header, "crit"))
    throw bad('JWS "crit" is not accepted: this server implements no critical header extensions');
  if (Object.hasOwn(header, "b64"))
    throw bad('JWS "b64" is not accepted: the payload must be base64url-encoded (no RFC 7797)');
  return header;
}

// 5
function checkAlgorithm(alg: unknown): JwsAlgorithm {
  if (isJwsAlgorithm(alg)) return alg;
  const what =
    alg === undefined ? 'JWS protected header has no "alg"' : `JWS alg ${excerpt(alg)} is not accepted`;
  throw refuse(
    "ERR_BAD_SIGNATURE_ALGORITHM",
    "alg",
    `${what}; sign with one of ${ACCEPTED_ALGORITHMS.join(", ")}`,
  );
}

// 6
function keySource(header: Record<string, unknown>, allow: readonly KeySource[]): KeySource {
  const expects = allow.map((s) => KEY_SOURCE_MEANING[s]).join(" or ");
  const present = KEY_SOURCES.filter((s) => Object.hasOwn(header, s));
  if (present.length !== 1) {
    const found = present.length === 0 ? "none" : present.join(" and ");
    throw refuse(
      "ERR_MALFORMED",
      "key_source",
      `JWS protected header must carry exactly one of jwk, kid, x5c (found ${found}); this resource expects ${expects}`,
    );
  }
  const source = present[0]!;
  if (!allow.includes(source))
    throw refuse("ERR_MALFORMED", "key_source", `this resource expects ${expects}, not "${source}"`);
  return source;
}

function describeKey(key: KeyObject): string {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === "rsa") return `RSA-${d?.modulusLength ?? "?"}`;
  if (key.asymmetricKeyType === "ec") return `EC ${d?.namedCurve ?? "?"}`;
  return key.asymmetricKeyType ?? "unknown";
}

/**
 * Refuses keys that no accepted algorithm fits. The shape checks before
 * loading (importJwk, inspectSpki) already refused them; this holds for keys
 * from any other path too.
 */
function supportedKey(key: KeyObject, what: string): KeyObject {
  if (algorithmForKey(key) === null)
    throw refuse(
      "ERR_BAD_PUBLIC_KEY",
      "key",
      `${what} is an ${describeKey(key)} key, which is not accepted; use ${ACCEPTED_KEYS}`,
    );
  return key;
}

function jwkKey(jwk: unknown): KeyObject {
  // Checked here so importJwk's message never quotes an unbounded client value.
  if (isObject(jwk) && !["EC", "OKP", "RSA"].includes(jwk.kty as string))
    throw refuse("ERR_BAD_PUBLIC_KEY", "key", `jwk key type ${excerpt(jwk.kty, 10)} is not supported`);
  try {
    // importJwk refuses a key by its members' shape before loading it: no signature check is priced by the client.
    return supportedKey(importJwk(jwk), "jwk");
  } catch (err) {
    if (!isStintError(err, "ERR_JOSE") && !isStintError(err, "ERR_BAD_PUBLIC_KEY")) throw err;
    throw refuse("ERR_BAD_PUBLIC_KEY", "key", err.message);
  }
}

/** x5c uses standard base64 with padding, not base64url (RFC 7515 4.1.6). */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const MAX_X5C = 10;

function x5cChain(x5c: unknown): { chain: Buffer[]; key: KeyObject; leaf: CertificateKey } {
  const bad = (message: string) => refuse("ERR_MALFORMED", "key", message);
  if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > MAX_X5C)
    throw bad(`"x5c" must be an array of 1 to ${MAX_X5C} certificates, leaf first`);
  const chain = x5c.map((entry: unknown, i) => {
    const der = typeof entry === "string" && BASE64.test(entry) ? Buffer.from(entry, "base64") : null;
    if (!der || der.length === 0 || der.toString("base64") !== entry)
      throw bad(
        `x5c[${i}] is not standard base64 (x5c uses base64 with padding, not base64url: RFC 7515 4.1.6)`,
      );
    return der;
  });
  // Only the serial and key: the renewal handler accepts the leaf only if it equals, byte for byte,
  // one this CA stored, so node:crypto's X509Certificate (twice the cost, key included) adds nothing.
  let leaf: CertificateKey;
  let facts: ReturnType<typeof inspectSpki>;
  try {
    leaf = readCertificateKey(chain[0]!);
    facts = inspectSpki(leaf.spki);
  } catch {
    throw bad("x5c[0] is not a DER X.509 certificate");
  }
  // The key's shape, read from its DER, before it is loaded or anything is verified with it.
  if (facts.algorithm === null)
    throw refuse(
      "ERR_BAD_PUBLIC_KEY",
      "key",
      `the x5c leaf certificate's key (${facts.description}) is not accepted; use ${ACCEPTED_KEYS}`,
    );
  let key: KeyObject;
  try {
    key = importSpkiCached(leaf.spki);
  } catch {
    throw bad("x5c[0] is not a DER X.509 certificate");
  }
  return { chain, leaf, key: supportedKey(key, "the x5c leaf certificate's key") };
}

// 7: resolves the signing key and what the handler needs to know about it.
async function resolveKey(
  source: KeySource,
  header: Record<string, unknown>,
  deps: JwsVerifierDeps,
): Promise<{ key: KeyObject; source: VerifiedSource }> {
  if (source === "jwk") {
    const key = jwkKey(header.jwk);
    return { key, source: { kind: "jwk", key, jwk: exportJwk(key), thumbprint: jwkThumbprint(key) } };
  }
  if (source === "x5c") {
    const { chain, key, leaf } = x5cChain(header.x5c);
    return { key, source: { kind: "x5c", chain, key, leaf } };
  }
  if (typeof header.kid !== "string" || header.kid === "")
    throw refuse("ERR_MALFORMED", "key", '"kid" must be the account URL, a string');
  const account = await deps.lookupAccount(header.kid);
  if (!account)
    throw refuse(
      "ERR_ACCOUNT_DOES_NOT_EXIST",
      "account",
      'no account exists at this "kid"; check the account URL or register with newAccount',
    );
  const inactive = `account is ${account.status} and can no longer authorize requests`;
  if (account.status !== "valid") throw refuse("ERR_UNAUTHORIZED", "account", inactive);
  return { key: account.key, source: { kind: "kid", account } };
}

/**
 * An accepted alg with an accepted key of another type (ES256 header, RSA key)
 * is badSignatureAlgorithm: RFC 8555 6.2 defines badPublicKey for keys the
 * server does not support, and this key is supported, just not with this alg
 * (Boulder's checkAlgorithm answers the same). Unsupported keys were refused above.
 */
function checkKeyFitsAlg(key: KeyObject, alg: JwsAlgorithm, jwkAlg: unknown): void {
  if (!keyFitsAlgorithm(key, alg))
    throw refuse(
      "ERR_BAD_SIGNATURE_ALGORITHM",
      "alg_key",
      `JWS alg ${alg} does not fit the signing key (${describeKey(key)}), which signs with ${algorithmForKey(key)}`,
    );
  if (jwkAlg !== undefined && jwkAlg !== alg)
    throw refuse("ERR_BAD_SIGNATURE_ALGORITHM", "alg_key", `JWS alg ${alg} differs from the jwk's own "alg"`);
}

function signatureVerifies(alg: JwsAlgorithm, key: KeyObject, input: string, signature: Buffer): boolean {
  try {
    return verifyJwsSignature(alg, key, input, signature);
  } catch {
    // OpenSSL throws on some malformed signatures instead of returning false.
    return false;
  }
}

export async function verifyJwsRequest(
  req: JwsHttpRequest,
  deps: JwsVerifierDeps,
  opts: { allow: readonly KeySource[] },
): Promise<VerifiedRequest> {
  checkContentType(req.contentType);
  // 2: the HTTP layer stops reading early too; this keeps the pipeline safe on its own.
  if (req.body.length > deps.maxBodyBytes)
    throw refuse(
      "ERR_PAYLOAD_TOO_LARGE",
      "body_size",
      `request body is ${req.body.length} bytes; the limit is ${deps.maxBodyBytes}`,
    );
  const jws = parseFlattened(req.body);
  const header = parseProtectedHeader(jws.protectedBytes);
  const alg = checkAlgorithm(header.alg);
  const kind = keySource(header, opts.allow);
  const { key, source } = await resolveKey(kind, header, deps);
  checkKeyFitsAlg(key, alg, kind === "jwk" && isObject(header.jwk) ? header.jwk.alg : undefined);

  // 8: before the nonce, so a request that does not verify cannot burn a client's nonce.
  if (!signatureVerifies(alg, key, `${jws.protectedB64}.${jws.payloadB64}`, jws.signature))
    throw refuse("ERR_MALFORMED", "signature", "JWS signature does not verify");

  // 9
  const nonce = header.nonce;
  if (typeof nonce !== "string")
    throw refuse(
      "ERR_BAD_NONCE",
      "nonce",
      'JWS protected header has no "nonce" string; get one from newNonce or any response\'s Replay-Nonce header',
    );
  await deps.nonces.consume(nonce);

  // 10: RFC 8555 6.4 — a missing url is malformed, a different one unauthorized.
  if (typeof header.url !== "string")
    throw refuse("ERR_MALFORMED", "url", 'JWS protected header has no "url"; set it to this request\'s URL');
  if (header.url !== req.url)
    throw refuse(
      "ERR_UNAUTHORIZED",
      "url",
      `JWS "url" ${excerpt(header.url, 120)} does not match the URL this request was sent to (${req.url})`,
    );

  // 11
  let payload: unknown | null = null;
  if (jws.payloadB64 !== "") {
    const parsed = parseJson(jws.payloadBytes);
    const notJson = "JWS payload is not JSON (send an empty payload for POST-as-GET)";
    if (!parsed.ok) throw refuse("ERR_MALFORMED", "payload", notJson);
    payload = parsed.value;
  }

  return new VerifiedRequest(SEAL, { url: req.url, alg, nonce, source, payload, protectedHeader: header });
}
