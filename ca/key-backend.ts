import { createPublicKey, type KeyObject, sign } from "node:crypto";
import { type KeyAlgorithm, keyAlgorithmOf } from "./keys";

/**
 * Where a CA key lives and how it signs. Every CA signature (leaves, CA
 * certificates, cross-certificates, CRLs, the revocation feed) goes through a
 * CaKey, so the code that builds what is signed never holds private key bytes
 * it does not need:
 *
 *   file    the passphrase-encrypted PKCS#8 file of today (ca/keys.ts), the
 *           default; signs with node:crypto, synchronously (the leaf engine's
 *           hot path, about 20 µs for P-256).
 *   pkcs11  a key generated inside a PKCS#11 token (CKA_SENSITIVE, not
 *           extractable), signed with C_Sign on a pooled session (ca/pkcs11/).
 *
 * The store records only a key's reference (IssuerRecord.keyPath): a path
 * relative to the data directory for `file`, an RFC 7512 `pkcs11:` URI
 * naming the token and the object for `pkcs11`.
 */

export type KeyBackendName = "file" | "pkcs11";

/** The digest an X.509, CRL or feed signature is made over. */
export type SignatureHash = "sha256" | "sha384" | "sha512";

export interface CaKey {
  readonly backend: KeyBackendName;
  /** What the store records for this key (IssuerRecord.keyPath): a data-dir-relative path or a `pkcs11:` URI. */
  readonly ref: string;
  readonly algorithm: KeyAlgorithm;
  /** The public half: certificates, key identifiers and signature checks use it. */
  readonly publicKey: KeyObject;
  /**
   * Signs `data` (the message, not its digest) as X.509 and CRLs carry it:
   * ECDSA as a DER Ecdsa-Sig-Value, RSA as PKCS#1 v1.5, Ed25519 as is.
   * Synchronous for file keys, so the leaf engine's path stays free of
   * promise turns; a token answers asynchronously. A failure is a
   * StintError (ERR_KEY_UNAVAILABLE when the token is gone or refuses).
   */
  sign(hash: SignatureHash, data: Buffer): Buffer | Promise<Buffer>;
  /** The private KeyObject for file keys; null for a key that never leaves its token. */
  readonly privateKey: KeyObject | null;
}

/** Signs and always answers a promise: for callers that are async anyway. */
export async function signWith(key: CaKey, hash: SignatureHash, data: Buffer): Promise<Buffer> {
  return key.sign(hash, data);
}

/**
 * What the signing code takes: a CaKey, or a bare private KeyObject (tests,
 * benchmarks, `stint root sign` on an offline host), taken as a file key.
 */
export type SigningKey = CaKey | KeyObject;

/**
 * What signing with K answers: a bare KeyObject signs at once; a CaKey may
 * answer later (a token), so its callers handle both without a promise turn
 * for file keys.
 */
export type Signed<K extends SigningKey, T> = K extends KeyObject ? T : T | Promise<T>;

export function isCaKey(key: SigningKey): key is CaKey {
  return typeof (key as CaKey).sign === "function" && typeof (key as CaKey).backend === "string";
}

/** A file key (ca/keys.ts loadPrivateKey or generateKeyPair) as a CaKey: node:crypto signs, synchronously. */
export function fileKey(privateKey: KeyObject, ref = ""): CaKey {
  const algorithm = keyAlgorithmOf(privateKey);
  // Ed25519 hashes inside the signature scheme: node:crypto takes no digest name for it.
  const digest = algorithm === "ed25519" ? () => null : (hash: SignatureHash) => hash;
  return {
    backend: "file",
    ref,
    algorithm,
    publicKey: createPublicKey(privateKey),
    privateKey,
    sign: (hash, data) => sign(digest(hash), data, privateKey),
  };
}

/** The CaKey for either form SigningKey allows. */
export function asCaKey(key: SigningKey): CaKey {
  return isCaKey(key) ? key : fileKey(key);
}

/**
 * The digest X.509 pairs with each key algorithm (ECDSA with its curve's
 * size, RSA with SHA-256); Ed25519 has none of its own and is given SHA-512,
 * which a backend ignores for it.
 */
export function signatureHashFor(algorithm: KeyAlgorithm): SignatureHash {
  if (algorithm === "ec-p384") return "sha384";
  return algorithm === "ed25519" ? "sha512" : "sha256";
}

/** Bytes of each half of an r||s ECDSA signature for the key, or null for other algorithms. */
export function ecdsaHalfSize(algorithm: KeyAlgorithm): number | null {
  return algorithm === "ec-p256" ? 32 : algorithm === "ec-p384" ? 48 : null;
}
