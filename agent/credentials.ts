import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  randomBytes,
  X509Certificate,
} from "node:crypto";
import { asn1, md, pkcs12, pki, util } from "node-forge";
import { StintError } from "../common/errors";
import { pemDecode, pemDecodeAll } from "../formats/pem";
import type { FileSpec } from "./atomic-dir";

/**
 * The credential set the agent publishes, file by file. node-forge is used
 * here only, for PKCS#12's ASN.1 and its password-to-MAC-key derivation.
 */

export interface CredentialOptions {
  /** Leaf first, then intermediates. */
  chainPem: string;
  /** PKCS#8 (or any PEM node:crypto reads) private key of the leaf. */
  keyPem: string;
  /** Trust bundle (roots). */
  bundlePem: string;
  /** Also write combined.pem: the key, then the chain. */
  combined?: boolean;
  /** Also write cert.p12, protected by this password. */
  pkcs12?: { password: string };
}

const PUBLIC = 0o644;
const SECRET = 0o600;
/** OpenSSL 3's default for both the key encryption and the MAC (node:crypto's PKCS#8 export uses 2048 too). */
const PKCS12_ITERATIONS = 2048;

export function credentialFiles(opts: CredentialOptions): Record<string, FileSpec> {
  const chain = pemDecodeAll(opts.chainPem, "CERTIFICATE", "certificate chain");
  pemDecodeAll(opts.bundlePem, "CERTIFICATE", "trust bundle");
  const key = parseKey(opts.keyPem);
  if (!leafMatches(chain[0], key)) {
    throw new StintError(
      "ERR_KEY_CORRUPT",
      "the leaf certificate is not for this private key; refusing to write the set",
    );
  }
  const chainPem = withNewline(opts.chainPem);
  const keyPem = withNewline(opts.keyPem);
  const files: Record<string, FileSpec> = {
    "cert.pem": { data: chainPem, mode: PUBLIC },
    "key.pem": { data: keyPem, mode: SECRET },
    "bundle.pem": { data: withNewline(opts.bundlePem), mode: PUBLIC },
  };
  if (opts.combined) files["combined.pem"] = { data: keyPem + chainPem, mode: SECRET };
  if (opts.pkcs12) files["cert.p12"] = { data: buildPkcs12(key, chain, opts.pkcs12.password), mode: SECRET };
  return files;
}

/**
 * True when the chain's first certificate is for this private key. Never
 * throws: input that does not parse is not a matching pair.
 */
export function checkMatchingPair(chainPem: string, keyPem: string): boolean {
  try {
    return leafMatches(pemDecode(chainPem, "CERTIFICATE", "certificate chain"), createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

function leafMatches(leafDer: Buffer, key: KeyObject): boolean {
  // equals() compares the keys, not their encodings (a point may be compressed in one and not the other).
  return new X509Certificate(leafDer).publicKey.equals(createPublicKey(key));
}

function parseKey(keyPem: string): KeyObject {
  try {
    return createPrivateKey(keyPem);
  } catch (err) {
    throw new StintError("ERR_KEY_CORRUPT", "the private key does not parse as an unencrypted PEM key", {
      cause: err,
    });
  }
}

const withNewline = (pem: string): string => (pem.endsWith("\n") ? pem : `${pem}\n`);

/**
 * PKCS#12 (RFC 7292) holding the key, the leaf and the intermediates.
 * node-forge's own writer (toPkcs12Asn1) could encrypt with AES-256, but it
 * accepts only forge RSA keys, so the file is assembled here for every key
 * type (RSA, EC, Ed25519): the key bag is a pkcs8ShroudedKeyBag that
 * node:crypto encrypts as PBES2 with PBKDF2-HMAC-SHA256 (2048 iterations) and
 * AES-256-CBC; the integrity MAC is HMAC-SHA-256 keyed by the PKCS#12 KDF.
 * These are OpenSSL 3's defaults, not 3DES: OpenSSL 1.1.1+ and Windows Server
 * 2019+ read them; older readers that know only 3DES/RC2 do not. Certificates
 * are public and sit in an unencrypted bag.
 */
function buildPkcs12(key: KeyObject, chain: Buffer[], password: string): Buffer {
  if (password.length === 0)
    throw new StintError("ERR_CONFIG", "the PKCS#12 password is empty; set a non-empty password");
  // Pairs the key with its certificate, as OpenSSL does: SHA-1 of the leaf certificate.
  const localKeyId = set(
    seq(oid(pki.oids.localKeyId), set(octets(createHash("sha1").update(chain[0]).digest()))),
  );
  const certBags = chain.map((der, i) => {
    const certBag = seq(oid(pki.oids.x509Certificate), explicit0(octets(der)));
    return seq(oid(pki.oids.certBag), explicit0(certBag), ...(i === 0 ? [localKeyId] : []));
  });
  const encryptedKey = key.export({
    type: "pkcs8",
    format: "der",
    cipher: "aes-256-cbc",
    passphrase: password,
  });
  const keyBag = seq(oid(pki.oids.pkcs8ShroudedKeyBag), explicit0(fromDer(encryptedKey)), localKeyId);
  const authSafe = toDer(seq(dataContent(toDer(seq(...certBags))), dataContent(toDer(seq(keyBag)))));

  const salt = randomBytes(16);
  const macKey = pkcs12.generateKey(
    password,
    util.createBuffer(salt.toString("binary")),
    3,
    PKCS12_ITERATIONS,
    32,
    md.sha256.create(),
  );
  const mac = createHmac("sha256", Buffer.from(macKey.getBytes(), "binary")).update(authSafe).digest();
  const macData = seq(
    seq(seq(oid(pki.oids.sha256), nullValue()), octets(mac)),
    octets(salt),
    integer(PKCS12_ITERATIONS),
  );
  return toDer(seq(integer(3), dataContent(authSafe), macData));
}

// Thin helpers over forge's ASN.1, which carries bytes as binary strings.
const U = asn1.Class.UNIVERSAL;
const seq = (...items: asn1.Asn1[]): asn1.Asn1 => asn1.create(U, asn1.Type.SEQUENCE, true, items);
const set = (...items: asn1.Asn1[]): asn1.Asn1 => asn1.create(U, asn1.Type.SET, true, items);
const oid = (dotted: string): asn1.Asn1 =>
  asn1.create(U, asn1.Type.OID, false, asn1.oidToDer(dotted).getBytes());
const octets = (b: Buffer): asn1.Asn1 => asn1.create(U, asn1.Type.OCTETSTRING, false, b.toString("binary"));
const integer = (n: number): asn1.Asn1 =>
  asn1.create(U, asn1.Type.INTEGER, false, asn1.integerToDer(n).getBytes());
const nullValue = (): asn1.Asn1 => asn1.create(U, asn1.Type.NULL, false, "");
const explicit0 = (inner: asn1.Asn1): asn1.Asn1 => asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [inner]);
/** PKCS#7 ContentInfo of type data around already-encoded content. */
const dataContent = (content: Buffer): asn1.Asn1 => seq(oid(pki.oids.data), explicit0(octets(content)));
const toDer = (obj: asn1.Asn1): Buffer => Buffer.from(asn1.toDer(obj).getBytes(), "binary");
const fromDer = (der: Buffer): asn1.Asn1 => asn1.fromDer(util.createBuffer(der.toString("binary")));
