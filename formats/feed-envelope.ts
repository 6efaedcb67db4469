import { createPublicKey, KeyObject, sign, X509Certificate } from "node:crypto";
import { StintError } from "../common/errors";
import * as der from "./der";
import { ecdsaDerToP1363 } from "./ecdsa-signature";
import { ByteReader, malformed, uvarint } from "./feed-bytes";
import { algorithmForKey, type JwsAlgorithm, verifyJwsSignature } from "./jose";

/**
 * The signed feed envelope (docs/feed.md): the body bytes, a signature over
 * exactly those bytes, and the signer's certificate chain (DER, signer
 * first). The algorithm is the one formats/jose.ts assigns to the signer's
 * key type (ES256, ES384, EdDSA, RS256), so the envelope names none and
 * cannot be steered to a weaker one. Checking that the chain leads to a
 * trusted root is the verifier's job (verify/); feedSignerProblem gives it
 * the profile check for the signer itself.
 */

/** "STFS": the first bytes of every envelope. */
export const ENVELOPE_MAGIC = Buffer.from("STFS", "ascii");
export const ENVELOPE_VERSION = 1;
const FEED_BODY_MAGIC = Buffer.from("STFD", "ascii");
const MAX_SIGNATURE_BYTES = 1024;
const MAX_CHAIN = 8;

export interface SignedFeed {
  body: Buffer;
  signature: Buffer;
  /** DER certificates, the signer first. */
  chain: Buffer[];
}

/** Node's sign() parameters for each algorithm; ECDSA signatures are r||s as in JWS (RFC 7518 3.4). */
const SIGNING: Record<JwsAlgorithm, { hash: "sha256" | "sha384" | null; p1363: boolean }> = {
  ES256: { hash: "sha256", p1363: true },
  ES384: { hash: "sha384", p1363: true },
  EdDSA: { hash: null, p1363: false },
  RS256: { hash: "sha256", p1363: false },
};

const KEY_USAGE_OID = "2.5.29.15";
const BASIC_CONSTRAINTS_OID = "2.5.29.19";
/** cRLSign is bit 6 of KeyUsage (RFC 5280 4.2.1.3): in the first content byte after the unused-bits octet, mask 0x02. */
const CRL_SIGN_MASK = 0x02;

/**
 * basicConstraints cA and keyUsage cRLSign, read from the DER. Not Node's
 * X509Certificate.ca: OpenSSL's notion also demands keyCertSign, which a
 * CRL-signing CA certificate need not have.
 */
function signerFlags(certDer: Buffer): { ca: boolean; crlSign: boolean } {
  const flags = { ca: false, crlSign: false };
  const tbs = der.children(certDer, der.readTlv(certDer, 0))[0];
  const wrapper = der.children(certDer, tbs).find((t) => t.tag === der.contextTag(3, true));
  if (!wrapper) return flags;
  for (const ext of der.children(certDer, der.children(certDer, wrapper)[0])) {
    const parts = der.children(certDer, ext);
    const oid = der.decodeOid(der.contents(certDer, parts[0]));
    const value = der.contents(certDer, parts[parts.length - 1]);
    if (oid === BASIC_CONSTRAINTS_OID) {
      const first = der.children(value, der.expectTlv(value, 0, der.Tag.SEQUENCE, "basicConstraints"))[0];
      flags.ca = first?.tag === der.Tag.BOOLEAN && value[first.valueStart] === 0xff;
    } else if (oid === KEY_USAGE_OID) {
      const bits = der.contents(value, der.expectTlv(value, 0, der.Tag.BIT_STRING, "keyUsage"));
      flags.crlSign = bits.length >= 2 && (bits[1] & CRL_SIGN_MASK) !== 0;
    }
  }
  return flags;
}

/**
 * Why a certificate may not sign feeds, or undefined when it may: it must be
 * a CA certificate (basicConstraints cA) with keyUsage cRLSign, since the feed
 * is CRL-like data, and a key type Stint signs with.
 */
export function feedSignerProblem(certDer: Buffer): string | undefined {
  let cert: X509Certificate;
  let flags: { ca: boolean; crlSign: boolean };
  try {
    cert = new X509Certificate(certDer);
    flags = signerFlags(certDer);
  } catch {
    return "the feed signer is not a DER certificate";
  }
  if (!flags.ca) return "the feed signer is not a CA certificate";
  if (!flags.crlSign) return "the feed signer's keyUsage lacks cRLSign";
  if (!algorithmForKey(cert.publicKey)) return "the feed signer's key type cannot sign feeds";
  return undefined;
}

/**
 * A key that signs feeds without handing out its private half (ca/key-backend.ts
 * CaKey fits): it signs the message with the digest named, ECDSA as DER
 * Ecdsa-Sig-Value as X.509 carries it, maybe asynchronously (a token).
 */
export interface FeedSigningKey {
  readonly publicKey: KeyObject;
  sign(hash: "sha256" | "sha384" | "sha512", data: Buffer): Buffer | Promise<Buffer>;
}

/** What signFeed answers: at once for a private KeyObject, maybe later for a FeedSigningKey. */
export type SignedEnvelope<K> = K extends KeyObject ? Buffer : Buffer | Promise<Buffer>;

/**
 * The envelope bytes of `body` signed with `key`. Refuses anything but a feed
 * body (so the CA key never signs other bytes through here), a signer that
 * fails feedSignerProblem, and a key that is not the signer's.
 */
export function signFeed<K extends KeyObject | FeedSigningKey>(
  body: Buffer,
  key: K,
  chain: Buffer[],
): SignedEnvelope<K> {
  if (body.length < 5 || !body.subarray(0, 4).equals(FEED_BODY_MAGIC)) {
    throw new StintError("ERR_MALFORMED", "feed: only feed bodies are signed");
  }
  if (chain.length < 1 || chain.length > MAX_CHAIN) {
    throw new StintError("ERR_CONFIG", `a feed needs 1 to ${MAX_CHAIN} chain certificates`);
  }
  const problem = feedSignerProblem(chain[0]);
  if (problem) throw new StintError("ERR_CONFIG", problem);
  const signerSpki = new X509Certificate(chain[0]).publicKey.export({ type: "spki", format: "der" });
  const bare = key instanceof KeyObject;
  const publicKey = bare ? (key.type === "private" ? createPublicKey(key) : null) : key.publicKey;
  if (!publicKey?.export({ type: "spki", format: "der" }).equals(signerSpki)) {
    throw new StintError("ERR_CONFIG", "the feed signing key is not the signer certificate's private key");
  }
  const alg = algorithmForKey(publicKey)!; // feedSignerProblem checked the key type
  const spec = SIGNING[alg];
  const envelope = (signature: Buffer) => {
    const sized = (b: Buffer) => [uvarint(b.length), b];
    return Buffer.concat([
      ENVELOPE_MAGIC,
      Buffer.from([ENVELOPE_VERSION]),
      ...sized(body),
      ...sized(signature),
      uvarint(chain.length),
      ...chain.flatMap(sized),
    ]);
  };
  if (bare) {
    return envelope(
      sign(spec.hash, body, spec.p1363 ? { key, dsaEncoding: "ieee-p1363" } : key),
    ) as SignedEnvelope<K>;
  }
  // The key signs as X.509 does; JWS wants ECDSA as r||s.
  const asJws = (s: Buffer) => (spec.p1363 ? ecdsaDerToP1363(s, spec.hash === "sha384" ? 48 : 32) : s);
  const signature = key.sign(spec.hash ?? "sha512", body);
  return (
    signature instanceof Promise ? signature.then((s) => envelope(asJws(s))) : envelope(asJws(signature))
  ) as SignedEnvelope<K>;
}

/** Splits an envelope strictly (ERR_MALFORMED on anything off); checks nothing cryptographic. */
export function parseSignedFeed(envelope: Buffer): SignedFeed {
  if (!(envelope instanceof Uint8Array)) throw malformed("envelope is not bytes");
  try {
    return parseEnvelope(envelope);
  } catch (err) {
    if (err instanceof StintError) throw err;
    throw new StintError("ERR_MALFORMED", "feed: envelope is malformed", { cause: err });
  }
}

function parseEnvelope(envelope: Uint8Array): SignedFeed {
  const r = new ByteReader(envelope);
  if (!r.bytes(4, "envelope magic").equals(ENVELOPE_MAGIC))
    throw malformed('envelope does not start with "STFS"');
  const version = r.byte("envelope version");
  if (version !== ENVELOPE_VERSION) throw malformed(`unsupported envelope version ${version}`);
  const body = r.bytes(r.uvarint("body length"), "body");
  const sigLength = r.uvarint("signature length");
  if (sigLength < 1 || sigLength > MAX_SIGNATURE_BYTES) {
    throw malformed(`signature length ${sigLength} is outside 1..${MAX_SIGNATURE_BYTES}`);
  }
  const signature = r.bytes(sigLength, "signature");
  const count = r.count("chain length", 3);
  if (count < 1 || count > MAX_CHAIN) throw malformed(`chain length ${count} is outside 1..${MAX_CHAIN}`);
  const chain: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const cert = r.bytes(r.uvarint(`certificate ${i} length`), `certificate ${i}`);
    let t: der.Tlv | null = null;
    try {
      t = der.readTlv(cert, 0);
    } catch {
      // reported below
    }
    if (!t || t.tag !== der.Tag.SEQUENCE || t.end !== cert.length) {
      throw malformed(`certificate ${i} is not one DER SEQUENCE`);
    }
    chain.push(cert);
  }
  r.expectEnd("envelope");
  return { body, signature, chain };
}

/** True when `signature` over `body` verifies with chain[0]'s public key under the algorithm its key type implies. */
export function verifyFeedSignature(feed: SignedFeed): boolean {
  try {
    const key = new X509Certificate(feed.chain[0]).publicKey;
    const alg = algorithmForKey(key);
    return alg !== null && verifyJwsSignature(alg, key, feed.body, feed.signature);
  } catch {
    return false;
  }
}
