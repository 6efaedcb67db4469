import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  generateKeyPair as nodeGenerateKeyPair,
  pbkdf2,
  pbkdf2Sync,
  randomBytes,
} from "node:crypto";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { StintError } from "../common/errors";
import { fileError } from "../common/files";
import { secretFromEnvOrFile } from "../common/secret-input";
import { issuerIdFromKeyId } from "../formats/crl";
import * as der from "../formats/der";
import { RSA_PUBLIC_EXPONENT } from "../formats/key-bounds";
import { toPem } from "../formats/pem";
import { KEY_ALGORITHMS, type KeyAlgorithm, keyIdentifier } from "./spki";

/** Key algorithms and CA private keys at rest. */

export { KEY_ALGORITHMS, type KeyAlgorithm };

export const PASSPHRASE_ENV = "STINT_CA_PASSPHRASE";

const RSA_SIZES: Record<number, KeyAlgorithm> = { 2048: "rsa-2048", 3072: "rsa-3072", 4096: "rsa-4096" };

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function parseKeyAlgorithm(text: string): KeyAlgorithm {
  const alg = KEY_ALGORITHMS.find((a) => a === text.trim().toLowerCase());
  if (!alg) {
    throw new StintError(
      "ERR_CONFIG",
      `unknown key algorithm "${text.slice(0, 40)}"; use one of: ${KEY_ALGORITHMS.join(", ")}`,
    );
  }
  return alg;
}

export function generateKeyPair(alg: KeyAlgorithm): Promise<KeyPair> {
  // Async so an RSA-3072 or RSA-4096 generation does not block a serving process.
  return new Promise((resolve, reject) => {
    const cb = (err: Error | null, publicKey: KeyObject, privateKey: KeyObject) =>
      err ? reject(err) : resolve({ publicKey, privateKey });
    switch (alg) {
      case "ec-p256":
        return nodeGenerateKeyPair("ec", { namedCurve: "P-256" }, cb);
      case "ec-p384":
        return nodeGenerateKeyPair("ec", { namedCurve: "P-384" }, cb);
      case "ed25519":
        return nodeGenerateKeyPair("ed25519", {}, cb);
      case "rsa-2048":
        return nodeGenerateKeyPair("rsa", { modulusLength: 2048 }, cb);
      case "rsa-3072":
        return nodeGenerateKeyPair("rsa", { modulusLength: 3072 }, cb);
      case "rsa-4096":
        return nodeGenerateKeyPair("rsa", { modulusLength: 4096 }, cb);
    }
  });
}

/** The algorithm of a public (or private) key; ERR_POLICY_KEY for keys Stint does not use. */
export function keyAlgorithmOf(key: KeyObject): KeyAlgorithm {
  const details = key.asymmetricKeyDetails ?? {};
  let alg: KeyAlgorithm | undefined;
  let what: string = key.asymmetricKeyType ?? key.type;
  if (key.asymmetricKeyType === "ec") {
    what = `EC key on curve ${details.namedCurve}`;
    alg =
      details.namedCurve === "prime256v1"
        ? "ec-p256"
        : details.namedCurve === "secp384r1"
          ? "ec-p384"
          : undefined;
  } else if (key.asymmetricKeyType === "ed25519") {
    alg = "ed25519";
  } else if (key.asymmetricKeyType === "rsa") {
    what = `RSA-${details.modulusLength} key`;
    // Only F4 keys: the same bounds as client keys (formats/key-bounds.ts).
    if (details.publicExponent !== RSA_PUBLIC_EXPONENT)
      what += ` with public exponent ${details.publicExponent}`;
    else alg = RSA_SIZES[details.modulusLength ?? 0];
  }
  if (!alg)
    throw new StintError(
      "ERR_POLICY_KEY",
      `unsupported key (${what}); supported: ${KEY_ALGORITHMS.join(", ")}`,
    );
  return alg;
}

// ---------- fingerprints and identifiers ----------

/** "sha256:<lowercase hex>", the form `--ca-fingerprint` takes. */
export function fingerprintSha256(derBytes: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(derBytes).digest("hex");
}

/** RFC 5280 4.2.1.2 method 1 (SHA-1 of the subjectPublicKey bits), the same as the leaf engine computes; takes either half. */
export function subjectKeyIdentifier(key: KeyObject): Buffer {
  const publicKey = key.type === "private" ? createPublicKey(key) : key;
  return keyIdentifier(publicKey.export({ type: "spki", format: "der" }));
}

/**
 * Issuer ids are the first 8 bytes of the SKI in lowercase hex (see
 * IssuerRecord.id); agents derive the same id from an AKI to fetch
 * /crl/<id>.crl, so the rule lives once, in formats/crl.ts.
 */
export const issuerIdFromSki = issuerIdFromKeyId;

// ---------- private keys at rest ----------

/*
 * PKCS#8 EncryptedPrivateKeyInfo with PBES2 (RFC 8018): PBKDF2-HMAC-SHA256 and
 * AES-256-CBC. Built here rather than by KeyObject.export because Node fixes
 * PBKDF2 at 2048 iterations, too few against offline guessing of a CA key.
 * Node and OpenSSL read the result as usual.
 */
export const PBKDF2_ITERATIONS = 600_000;

const pbkdf2Async = promisify(pbkdf2);

const OID = {
  pbes2: "1.2.840.113549.1.5.13",
  pbkdf2: "1.2.840.113549.1.5.12",
  aes256cbc: "2.16.840.1.101.3.4.1.42",
} as const;
const PRFS: Record<string, string> = {
  "1.2.840.113549.2.7": "sha1",
  "1.2.840.113549.2.9": "sha256",
  "1.2.840.113549.2.10": "sha384",
  "1.2.840.113549.2.11": "sha512",
};
const HMAC_SHA256 = "1.2.840.113549.2.9";
const CIPHERS: Record<string, { name: string; keyLength: number }> = {
  "2.16.840.1.101.3.4.1.2": { name: "aes-128-cbc", keyLength: 16 },
  "2.16.840.1.101.3.4.1.22": { name: "aes-192-cbc", keyLength: 24 },
  [OID.aes256cbc]: { name: "aes-256-cbc", keyLength: 32 },
};

function positiveInteger(n: number): Buffer {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return der.unsignedInteger(Buffer.from(bytes));
}

/** Async because the key derivation takes ~0.1 s, too long to block a serving process. */
export async function encryptPrivateKeyPem(
  key: KeyObject,
  passphrase: string,
  opts: { iterations?: number } = {},
): Promise<string> {
  if (passphrase.length === 0) throw new StintError("ERR_CONFIG", "the CA key passphrase is empty");
  const iterations = opts.iterations ?? PBKDF2_ITERATIONS;
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const aesKey = await pbkdf2Async(Buffer.from(passphrase, "utf8"), salt, iterations, 32, "sha256");
  const cipher = createCipheriv("aes-256-cbc", aesKey, iv);
  const plain = key.export({ type: "pkcs8", format: "der" });
  const encrypted = Buffer.concat([cipher.update(plain), cipher.final()]);
  plain.fill(0);
  const kdf = der.sequence(
    der.oid(OID.pbkdf2),
    der.sequence(
      der.octetString(salt),
      positiveInteger(iterations),
      der.sequence(der.oid(HMAC_SHA256), der.nullValue()),
    ),
  );
  const algorithm = der.sequence(
    der.oid(OID.pbes2),
    der.sequence(kdf, der.sequence(der.oid(OID.aes256cbc), der.octetString(iv))),
  );
  return toPem("ENCRYPTED PRIVATE KEY", der.sequence(algorithm, der.octetString(encrypted)));
}

/** Unencrypted PKCS#8, only for `--insecure-no-passphrase` development setups. */
export function plainPrivateKeyPem(key: KeyObject): string {
  return key.export({ type: "pkcs8", format: "pem" }).toString();
}

interface Pbes2Params {
  salt: Buffer;
  iterations: number;
  prf: string;
  cipher: { name: string; keyLength: number };
  iv: Buffer;
}

interface Envelope {
  ciphertext: Buffer;
  /** null when the scheme is one Node may read but we do not parse (e.g. scrypt). */
  pbes2: Pbes2Params | null;
}

function readInteger(buf: Buffer, t: der.Tlv | undefined): number {
  if (t?.tag !== der.Tag.INTEGER) throw new StintError("ERR_DER", "expected an INTEGER");
  const bytes = der.contents(buf, t);
  if (bytes.length === 0 || bytes.length > 6) throw new StintError("ERR_DER", "INTEGER out of range");
  return bytes.reduce((n, b) => n * 256 + b, 0);
}

/** Checks the unencrypted outer structure; throws ERR_DER when the file is damaged. */
function parseEnvelope(buf: Buffer): Envelope {
  const outer = der.expectTlv(buf, 0, der.Tag.SEQUENCE, "EncryptedPrivateKeyInfo");
  if (outer.end !== buf.length) throw new StintError("ERR_DER", "trailing bytes");
  const [alg, data, extra] = der.children(buf, outer);
  if (alg?.tag !== der.Tag.SEQUENCE || data?.tag !== der.Tag.OCTET_STRING || extra) {
    throw new StintError("ERR_DER", "not an EncryptedPrivateKeyInfo");
  }
  const ciphertext = der.contents(buf, data);
  if (ciphertext.length === 0) throw new StintError("ERR_DER", "empty ciphertext");
  const pbes2 = parsePbes2(buf, alg);
  if (pbes2 && ciphertext.length % 16 !== 0)
    throw new StintError("ERR_DER", "ciphertext is not whole AES blocks");
  return { ciphertext, pbes2 };
}

/**
 * PBES2 with PBKDF2 and AES-CBC, the scheme we write: null for any other
 * scheme (Node may still read it); ERR_DER when ours is malformed.
 */
function parsePbes2(buf: Buffer, alg: der.Tlv): Pbes2Params | null {
  const oidOf = (t: der.Tlv | undefined) =>
    t?.tag === der.Tag.OID ? der.decodeOid(der.contents(buf, t)) : "";
  const seq = (t: der.Tlv | undefined, what: string): der.Tlv[] => {
    if (t?.tag !== der.Tag.SEQUENCE) throw new StintError("ERR_DER", `${what} is not a SEQUENCE`);
    return der.children(buf, t);
  };
  const [algOid, params] = seq(alg, "AlgorithmIdentifier");
  if (oidOf(algOid) !== OID.pbes2) return null;
  const [kdf, enc] = seq(params, "PBES2-params");
  const [kdfOid, kdfParams] = seq(kdf, "keyDerivationFunc");
  const [encOid, ivTlv] = seq(enc, "encryptionScheme");
  const cipher = CIPHERS[oidOf(encOid)];
  if (oidOf(kdfOid) !== OID.pbkdf2 || !cipher) return null;
  const [saltTlv, iterTlv, ...rest] = seq(kdfParams, "PBKDF2-params");
  const keyLengthTlv = rest.find((t) => t.tag === der.Tag.INTEGER);
  const prfTlv = rest.find((t) => t.tag === der.Tag.SEQUENCE);
  // RFC 8018: the PRF defaults to hmacWithSHA1.
  const prf = PRFS[prfTlv ? oidOf(seq(prfTlv, "prf")[0]) : "1.2.840.113549.2.7"];
  if (!prf) return null;
  if (saltTlv?.tag !== der.Tag.OCTET_STRING || ivTlv?.tag !== der.Tag.OCTET_STRING) {
    throw new StintError("ERR_DER", "PBES2 salt or IV is not an OCTET STRING");
  }
  const iv = der.contents(buf, ivTlv);
  if (iv.length !== 16) throw new StintError("ERR_DER", "AES-CBC IV is not 16 bytes");
  const keyLength = keyLengthTlv ? readInteger(buf, keyLengthTlv) : cipher.keyLength;
  if (keyLength !== cipher.keyLength)
    throw new StintError("ERR_DER", "PBKDF2 key length does not fit the cipher");
  const iterations = readInteger(buf, iterTlv);
  if (iterations < 1) throw new StintError("ERR_DER", "PBKDF2 iteration count is zero");
  return { salt: der.contents(buf, saltTlv), iterations, prf, cipher, iv };
}

/**
 * After a failed decryption, tells a wrong passphrase from damaged ciphertext.
 * CBC has no MAC, so Node cannot: a wrong passphrase usually fails the padding
 * check ("bad decrypt") but 1 time in 256 yields garbage that fails to parse
 * ("unsupported"), and damage near the end also fails the padding. With the
 * right key the first block is the start of a PrivateKeyInfo
 * (30 len 02 01 0v 30); with a wrong one it is noise.
 */
function firstBlockLooksRight(p: Pbes2Params, ciphertext: Buffer, passphrase: string): boolean | null {
  if (p.iterations > 10_000_000) return null;
  const key = pbkdf2Sync(Buffer.from(passphrase, "utf8"), p.salt, p.iterations, p.cipher.keyLength, p.prf);
  const decipher = createDecipheriv(p.cipher.name, key, p.iv).setAutoPadding(false);
  const block = decipher.update(ciphertext.subarray(0, 16));
  key.fill(0);
  if (block[0] !== 0x30) return false;
  const lenBytes = block[1] < 0x80 ? 0 : block[1] & 0x7f;
  if (lenBytes > 3) return false;
  const at = 2 + lenBytes;
  return block[at] === 0x02 && block[at + 1] === 0x01 && block[at + 2] <= 1 && block[at + 3] === 0x30;
}

export interface LoadedKey {
  key: KeyObject;
  /** False for an unencrypted key file, so the server can warn about it. */
  encrypted: boolean;
}

const KEY_BLOCK = /-----BEGIN ((?:ENCRYPTED |EC |RSA )?PRIVATE KEY)-----([\s\S]*?)-----END \1-----/;

function nodeCode(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code;
}

/**
 * Reads a private key file, telling apart the failures an operator fixes
 * differently. Node's codes (OpenSSL 3): ERR_OSSL_BAD_DECRYPT for a wrong
 * passphrase, ERR_OSSL_CRYPTO_INTERRUPTED_OR_CANCELLED when an encrypted key
 * gets none, ERR_OSSL_UNSUPPORTED for anything it cannot decode. No message or
 * cause carries the passphrase.
 */
export async function loadPrivateKey(path: string, passphrase: string | null): Promise<LoadedKey> {
  let text: string;
  try {
    text = await readFile(path, "latin1");
  } catch (err) {
    if (nodeCode(err) === "ENOENT") {
      throw new StintError(
        "ERR_FILE",
        `private key file ${path} does not exist; check --data-dir or restore it from backup`,
      );
    }
    throw fileError(err, path, "read private key");
  }
  const corrupt = () =>
    new StintError(
      "ERR_KEY_CORRUPT",
      `${path} is not a readable private key (damaged or not PEM); restore it from backup`,
    );
  const missing = () =>
    new StintError(
      "ERR_KEY_PASSPHRASE",
      `${path} is encrypted and no passphrase was given; set ${PASSPHRASE_ENV} or use --passphrase-file`,
    );
  const wrong = () => new StintError("ERR_KEY_PASSPHRASE", `wrong passphrase for ${path}`);

  const block = KEY_BLOCK.exec(text);
  if (!block) throw corrupt();
  const [, label, body] = block;

  if (label !== "ENCRYPTED PRIVATE KEY") {
    // Unencrypted PKCS#8/SEC1/PKCS#1, or legacy OpenSSL PEM encryption (Proc-Type header): let Node decide.
    const legacyEncrypted = /Proc-Type:\s*4,ENCRYPTED/.test(body);
    try {
      const key = createPrivateKey({ key: block[0], format: "pem", passphrase: passphrase ?? undefined });
      return { key, encrypted: legacyEncrypted };
    } catch (err) {
      const code = nodeCode(err);
      if (legacyEncrypted && code === "ERR_OSSL_CRYPTO_INTERRUPTED_OR_CANCELLED") throw missing();
      if (legacyEncrypted && code === "ERR_OSSL_BAD_DECRYPT") throw wrong();
      throw corrupt();
    }
  }

  const b64 = body.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw corrupt();
  const envelopeDer = Buffer.from(b64, "base64");
  let envelope: Envelope;
  try {
    envelope = parseEnvelope(envelopeDer);
  } catch {
    throw corrupt();
  }
  if (passphrase === null) throw missing();
  try {
    const key = createPrivateKey({ key: envelopeDer, format: "der", type: "pkcs8", passphrase });
    return { key, encrypted: true };
  } catch (err) {
    const verdict = envelope.pbes2
      ? firstBlockLooksRight(envelope.pbes2, envelope.ciphertext, passphrase)
      : null;
    if (verdict === true) throw corrupt();
    if (verdict === false || nodeCode(err) === "ERR_OSSL_BAD_DECRYPT") throw wrong();
    // A scheme we do not parse (scrypt, PBES1, 3DES): Node alone cannot tell the two apart.
    throw new StintError(
      "ERR_KEY_PASSPHRASE",
      `cannot decrypt ${path}: the passphrase is wrong or the file is damaged (restore it from backup if the passphrase is right)`,
    );
  }
}

/**
 * The CA key passphrase, from STINT_CA_PASSPHRASE or a file; never a command
 * line value (other users can read argv through ps). null when neither is set.
 */
export async function resolvePassphrase(opts: {
  env: Record<string, string | undefined>;
  passphraseFile?: string | null;
}): Promise<string | null> {
  return secretFromEnvOrFile({
    env: opts.env,
    envName: PASSPHRASE_ENV,
    file: opts.passphraseFile ?? null,
    fileSetting: "--passphrase-file",
    fileKind: "passphrase file",
  });
}
