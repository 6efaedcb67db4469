import { createHash, createPublicKey, type JsonWebKey, type KeyObject, sign, verify } from "node:crypto";
import { StintError } from "../common/errors";
import {
  ACCEPTED_KEYS,
  describeRsaKey,
  RSA_MAX_BITS,
  RSA_MIN_BITS,
  RSA_PUBLIC_EXPONENT,
  rsaKeyInBounds,
} from "./key-bounds";

/**
 * The JOSE pieces both ends of ACME need (RFC 7515 JWS, RFC 7517 JWK,
 * RFC 7638 thumbprints), for the server, the agent and the attestors alike.
 * Only the four signature algorithms Stint accepts exist here; "none" and
 * MACs cannot be expressed, so they cannot be accepted by mistake.
 */

export type JwsAlgorithm = "ES256" | "ES384" | "EdDSA" | "RS256";
export const JWS_ALGORITHMS: readonly JwsAlgorithm[] = ["ES256", "ES384", "EdDSA", "RS256"];

interface AlgorithmSpec {
  hash: string | null;
  /** What the key must be for this algorithm (RFC 7518 3.4, RFC 8037). */
  keyMatches: (key: KeyObject) => boolean;
  /** ECDSA signatures in JWS are r||s of fixed size, not DER. */
  dsaEncoding?: "ieee-p1363";
}

const curve = (key: KeyObject) => key.asymmetricKeyDetails?.namedCurve;
const ALGORITHMS: Record<JwsAlgorithm, AlgorithmSpec> = {
  ES256: {
    hash: "sha256",
    keyMatches: (k) => k.asymmetricKeyType === "ec" && curve(k) === "prime256v1",
    dsaEncoding: "ieee-p1363",
  },
  ES384: {
    hash: "sha384",
    keyMatches: (k) => k.asymmetricKeyType === "ec" && curve(k) === "secp384r1",
    dsaEncoding: "ieee-p1363",
  },
  EdDSA: { hash: null, keyMatches: (k) => k.asymmetricKeyType === "ed25519" },
  RS256: {
    hash: "sha256",
    // The same bounds as the JWK shape check: keys that arrive by other paths (stored, x5c) meet them too.
    keyMatches: (k) => {
      const d = k.asymmetricKeyDetails;
      const bits = d?.modulusLength ?? 0;
      return (
        k.asymmetricKeyType === "rsa" &&
        bits >= RSA_MIN_BITS &&
        bits <= RSA_MAX_BITS &&
        d?.publicExponent === RSA_PUBLIC_EXPONENT
      );
    },
  },
};

export const isJwsAlgorithm = (alg: unknown): alg is JwsAlgorithm =>
  typeof alg === "string" && (JWS_ALGORITHMS as readonly string[]).includes(alg);

const B64URL = /^[A-Za-z0-9_-]*$/;

export function b64u(data: Uint8Array | string): string {
  return Buffer.from(data).toString("base64url");
}

/** Strict base64url: the alphabet only, no padding, no whitespace, canonical trailing bits. */
export function fromB64u(text: unknown, what: string): Buffer {
  if (typeof text !== "string" || !B64URL.test(text) || text.length % 4 === 1) {
    throw new StintError("ERR_JOSE", `${what} is not base64url`);
  }
  const bytes = Buffer.from(text, "base64url");
  if (bytes.toString("base64url") !== text)
    throw new StintError("ERR_JOSE", `${what} is not canonical base64url`);
  return bytes;
}

/** The algorithm a key signs with in Stint; null for keys no accepted algorithm fits. */
export function algorithmForKey(key: KeyObject): JwsAlgorithm | null {
  return JWS_ALGORITHMS.find((alg) => ALGORITHMS[alg].keyMatches(key)) ?? null;
}

export function keyFitsAlgorithm(key: KeyObject, alg: JwsAlgorithm): boolean {
  return ALGORITHMS[alg].keyMatches(key);
}

export type Jwk = Record<string, unknown>;

/** Curve keys are refused by curve name; OpenSSL then checks the point, at a cost the curve bounds. */
const CURVES: Record<string, readonly string[]> = { EC: ["P-256", "P-384"], OKP: ["Ed25519"] };

/** A name from a client, for messages: shown only when short and plain. */
const shown = (name: unknown): string =>
  typeof name === "string" && /^[A-Za-z0-9._-]{1,16}$/.test(name) ? name : "unnamed";

/**
 * Why a JWK's key is not one Stint accepts ("an RSA-8192 key"), or null when
 * it is. Reads only the members, so it runs before the key is loaded and
 * costs nothing the client can inflate. ERR_JOSE for members that are not
 * canonical base64url, or integers with a leading zero octet (RFC 7518 6.3.1).
 */
export function jwkShapeProblem(jwk: Jwk): string | null {
  if (jwk.kty === "RSA") {
    const n = fromB64u(jwk.n, "jwk n");
    const e = fromB64u(jwk.e, "jwk e");
    if (n.length === 0 || n[0] === 0 || e.length === 0 || e[0] === 0)
      throw new StintError("ERR_JOSE", "jwk n and e must be unsigned integers without leading zero octets");
    return rsaKeyInBounds(n, e) ? null : `an ${describeRsaKey(n, e)}`;
  }
  const curves = jwk.kty === "EC" || jwk.kty === "OKP" ? CURVES[jwk.kty] : undefined;
  if (curves === undefined) return `a key of type ${shown(jwk.kty)}`;
  if (!curves.includes(jwk.crv as string)) return `an ${jwk.kty} ${shown(jwk.crv)} key`;
  return null;
}

/**
 * A public key from a JWK. ERR_JOSE for private keys, unknown key types and
 * malformed members; ERR_BAD_PUBLIC_KEY, before the key is loaded, for a key
 * outside formats/key-bounds.ts.
 */
export function importJwk(jwk: unknown): KeyObject {
  if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk))
    throw new StintError("ERR_JOSE", "jwk is not an object");
  const j = jwk as Jwk;
  if ("d" in j || "p" in j || "k" in j)
    throw new StintError("ERR_JOSE", "jwk must be a public key (it carries private or secret parts)");
  if (!["EC", "OKP", "RSA"].includes(j.kty as string))
    throw new StintError("ERR_JOSE", `jwk key type ${String(j.kty)} is not supported`);
  const problem = jwkShapeProblem(j);
  if (problem !== null)
    throw new StintError(
      "ERR_BAD_PUBLIC_KEY",
      `jwk is ${problem}, which is not accepted; use ${ACCEPTED_KEYS}`,
    );
  try {
    return createPublicKey({ key: j as import("node:crypto").JsonWebKey, format: "jwk" });
  } catch {
    throw new StintError("ERR_JOSE", "jwk is not a valid public key");
  }
}

/** The fixed DER before the key bits of a named-curve SPKI, with the bits' length (RFC 5480, RFC 8410). */
const SPKI_PREFIXES: ReadonlyArray<{ prefix: Buffer; bits: number; jwk: (bits: Buffer) => Jwk }> = [
  {
    prefix: Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004", "hex"),
    bits: 64,
    jwk: (b) => ({ kty: "EC", crv: "P-256", x: b64u(b.subarray(0, 32)), y: b64u(b.subarray(32)) }),
  },
  {
    prefix: Buffer.from("3076301006072a8648ce3d020106052b8104002203620004", "hex"),
    bits: 96,
    jwk: (b) => ({ kty: "EC", crv: "P-384", x: b64u(b.subarray(0, 48)), y: b64u(b.subarray(48)) }),
  },
  {
    prefix: Buffer.from("302a300506032b6570032100", "hex"),
    bits: 32,
    jwk: (b) => ({ kty: "OKP", crv: "Ed25519", x: b64u(b) }),
  },
];

/**
 * A public key from SubjectPublicKeyInfo DER. P-256, P-384 (uncompressed
 * points) and Ed25519 go through their JWK form: OpenSSL 3 loads a key from
 * coordinates in about half the time its DER decoders take, and checks the
 * point is on the curve all the same. Anything else is loaded from the DER.
 * Throws what createPublicKey throws.
 */
export function importSpki(spki: Buffer): KeyObject {
  for (const { prefix, bits, jwk } of SPKI_PREFIXES) {
    if (spki.length === prefix.length + bits && spki.subarray(0, prefix.length).equals(prefix))
      return createPublicKey({ key: jwk(spki.subarray(prefix.length)) as JsonWebKey, format: "jwk" });
  }
  return createPublicKey({ key: spki, format: "der", type: "spki" });
}

export function exportJwk(key: KeyObject): Jwk {
  const publicKey = key.type === "private" ? createPublicKey(key) : key;
  const full = publicKey.export({ format: "jwk" }) as Jwk;
  const members =
    full.kty === "EC"
      ? ["crv", "kty", "x", "y"]
      : full.kty === "OKP"
        ? ["crv", "kty", "x"]
        : ["e", "kty", "n"];
  return Object.fromEntries(members.map((m) => [m, full[m]]));
}

/** RFC 7638 thumbprint (SHA-256, base64url): the required members in lexical order, no whitespace. */
export function jwkThumbprint(key: KeyObject): string {
  const jwk = exportJwk(key);
  const json =
    "{" +
    Object.keys(jwk)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${JSON.stringify(jwk[k])}`)
      .join(",") +
    "}";
  return createHash("sha256").update(json).digest("base64url");
}

export function verifyJwsSignature(
  alg: JwsAlgorithm,
  key: KeyObject,
  signingInput: Buffer | string,
  signature: Buffer,
): boolean {
  const spec = ALGORITHMS[alg];
  if (!spec.keyMatches(key)) return false;
  return verify(
    spec.hash,
    Buffer.from(signingInput),
    spec.dsaEncoding ? { key, dsaEncoding: spec.dsaEncoding } : key,
    signature,
  );
}

export function signJws(alg: JwsAlgorithm, key: KeyObject, signingInput: string): string {
  const spec = ALGORITHMS[alg];
  const sig = sign(
    spec.hash,
    Buffer.from(signingInput),
    spec.dsaEncoding ? { key, dsaEncoding: spec.dsaEncoding } : key,
  );
  return b64u(sig);
}

export interface FlattenedJws {
  protected: string;
  payload: string;
  signature: string;
}

/** Builds a flattened JWS (as ACME clients send); `payload` null makes a POST-as-GET ("" payload). */
export function flattenedJws(key: KeyObject, header: Jwk, payload: unknown | null): FlattenedJws {
  const alg = algorithmForKey(key);
  if (!alg) throw new StintError("ERR_JOSE", "this key type cannot sign a JWS in Stint");
  const protectedB64 = b64u(JSON.stringify({ alg, ...header }));
  const payloadB64 = payload === null ? "" : b64u(JSON.stringify(payload));
  return {
    protected: protectedB64,
    payload: payloadB64,
    signature: signJws(alg, key, `${protectedB64}.${payloadB64}`),
  };
}

/** Decodes base64url JSON, refusing with ERR_MALFORMED naming `what` (never echoing the input). */
export function jsonFromB64u(text: unknown, what: string): unknown {
  const bytes = fromB64u(text, what);
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new StintError("ERR_MALFORMED", `${what} is not JSON`);
  }
}
