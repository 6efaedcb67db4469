// Must precede @peculiar/x509: its decorators read Reflect metadata at import time.
import "reflect-metadata";
import { type KeyObject, randomBytes, webcrypto } from "node:crypto";
import { isIP } from "node:net";
import * as x509 from "@peculiar/x509";
import { StintError } from "../common/errors";
import * as der from "../formats/der";
import { ecdsaDerToP1363 } from "../formats/ecdsa-signature";
import { trustDomainProblem } from "../formats/spiffe";
import { crlDistributionPointsValue } from "./engine";
import { asCaKey, type CaKey, ecdsaHalfSize, type SigningKey, signatureHashFor } from "./key-backend";
import { fingerprintSha256, keyAlgorithmOf, subjectKeyIdentifier } from "./keys";
import type { KeyAlgorithm } from "./spki";

type Algorithm = webcrypto.Algorithm;
type EcdsaParams = webcrypto.EcdsaParams;

/**
 * The one wrapper around @peculiar/x509 (STYLE habit 8), for the slow, rare
 * path: making root and intermediate certificates, and parsing certificates
 * for display and tests. Every field is passed explicitly; the library's
 * defaults (random serial, one-year validity) are never relied on.
 */

// Node's webcrypto, explicitly: the library otherwise looks for a global `crypto` at first use.
x509.cryptoProvider.set(webcrypto);

const OID_NAME_CONSTRAINTS = "2.5.29.30";
const OID_CRL_DISTRIBUTION_POINTS = "2.5.29.31";
const OID_AUTHORITY_INFO_ACCESS = "1.3.6.1.5.5.7.1.1";
const OID_CA_ISSUERS = "1.3.6.1.5.5.7.48.2";

interface SigningParams {
  importParams: webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams | Algorithm;
  signingAlgorithm: Algorithm | EcdsaParams;
}

/** Signature algorithm per issuer key: ECDSA with the curve's matching hash, Ed25519, RSA PKCS#1 v1.5 SHA-256. */
const SIGNING: Record<KeyAlgorithm, SigningParams> = {
  "ec-p256": {
    importParams: { name: "ECDSA", namedCurve: "P-256" },
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
  },
  "ec-p384": {
    importParams: { name: "ECDSA", namedCurve: "P-384" },
    signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
  },
  ed25519: { importParams: { name: "Ed25519" }, signingAlgorithm: { name: "Ed25519" } },
  "rsa-2048": {
    importParams: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    signingAlgorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  },
  "rsa-3072": {
    importParams: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    signingAlgorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  },
  "rsa-4096": {
    importParams: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    signingAlgorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  },
};

/** 16 CSPRNG bytes, top bit clear and first byte non-zero, so the INTEGER is positive and exactly 16 octets. */
export function randomSerial(random: (n: number) => Buffer = randomBytes): Buffer {
  const serial = random(16);
  serial[0] = serial[0] & 0x7f || 0x01;
  return serial;
}

function serialHex(serial: Uint8Array): string {
  const bytes = Buffer.from(serial);
  if (bytes.length === 0 || bytes.length > 20 || bytes[0] === 0 || bytes[0] & 0x80) {
    // The library would silently replace a zero serial with a random one; refuse instead.
    throw new StintError(
      "ERR_CONFIG",
      "certificate serial must be 1-20 octets, positive, without a leading zero",
    );
  }
  return bytes.toString("hex");
}

type CryptoProvider = Parameters<typeof x509.X509CertificateGenerator.create>[1];

interface X509Signer {
  /** Stands in for a CryptoKey: the library reads its algorithm and hands it back to crypto.subtle.sign. */
  key: webcrypto.CryptoKey;
  algorithm: Algorithm | EcdsaParams;
  /** Node's webcrypto, except that signing with `key` goes to the CaKey. */
  crypto: CryptoProvider;
}

/**
 * Lets @peculiar/x509 sign through a CaKey, so a token key (which cannot be
 * imported into webcrypto) signs CA certificates and requests like a file
 * key, and a file key's private bytes are never exported for it. The library
 * wants WebCrypto's r||s for ECDSA and re-encodes it as DER.
 */
function x509Signer(signer: SigningKey): X509Signer {
  const caKey = asCaKey(signer);
  const params = SIGNING[caKey.algorithm];
  const hash = signatureHashFor(caKey.algorithm);
  const half = ecdsaHalfSize(caKey.algorithm);
  const key = {
    type: "private",
    extractable: false,
    algorithm: params.importParams,
    usages: ["sign"],
  } as unknown as webcrypto.CryptoKey;
  const subtle = webcrypto.subtle;
  const crypto = {
    getRandomValues: webcrypto.getRandomValues.bind(webcrypto),
    subtle: {
      digest: subtle.digest.bind(subtle),
      exportKey: subtle.exportKey.bind(subtle),
      importKey: subtle.importKey.bind(subtle),
      verify: subtle.verify.bind(subtle),
      async sign(_algorithm: Algorithm, k: webcrypto.CryptoKey, data: ArrayBuffer): Promise<ArrayBuffer> {
        if (k !== key) throw new StintError("ERR_CONFIG", "x509: signing with a key other than the issuer's");
        const der = await caKey.sign(hash, Buffer.from(data));
        const raw = half ? ecdsaDerToP1363(der, half) : der;
        return raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length) as ArrayBuffer;
      },
    },
  } as unknown as CryptoProvider;
  return { key, algorithm: params.signingAlgorithm, crypto };
}

/** Subject "CN=<commonName>, O=<trustDomain>", with the trust domain checked. */
function caName(commonName: string, trustDomain: string): x509.JsonName {
  const problem = trustDomainProblem(trustDomain);
  if (problem) throw new StintError("ERR_CONFIG", problem);
  if (commonName.length === 0 || commonName.length > 64) {
    throw new StintError("ERR_CONFIG", "a CA common name must be 1-64 characters");
  }
  return [{ CN: [commonName] }, { O: [trustDomain] }];
}

function checkValidity(notBefore: Date, notAfter: Date): void {
  if (!(notAfter.getTime() > notBefore.getTime())) {
    throw new StintError(
      "ERR_CONFIG",
      `certificate notAfter ${notAfter.toISOString()} is not after notBefore`,
    );
  }
}

/**
 * RFC 5280 4.2.1.10 NameConstraints with permitted subtrees only. A URI base
 * that is a host name matches exactly that host, so SPIFFE IDs of other trust
 * domains fail path validation. DNS bases are added only when configured.
 */
export function nameConstraintsValue(
  trustDomain: string,
  permittedDnsSuffixes: readonly string[] = [],
): Buffer {
  const subtrees = [der.tlv(der.contextTag(6, false), Buffer.from(trustDomain, "ascii"))];
  for (const suffix of permittedDnsSuffixes) {
    if (!/^\.?[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(suffix) || isIP(suffix)) {
      throw new StintError("ERR_CONFIG", `permitted DNS suffix "${suffix}" is not a lowercase DNS name`);
    }
    subtrees.push(der.tlv(der.contextTag(2, false), Buffer.from(suffix, "ascii")));
  }
  return der.sequence(der.tlv(der.contextTag(0, true), ...subtrees.map((base) => der.sequence(base))));
}

/**
 * RFC 5280 4.2.2.1 AuthorityInfoAccess with one caIssuers access description:
 * SEQUENCE { SEQUENCE { OID id-ad-caIssuers, [6] uri } }.
 */
export function caIssuersValue(url: string): Buffer {
  if (!/^https?:\/\/[\x21-\x7e]+$/.test(url)) {
    throw new StintError("ERR_CONFIG", `caIssuers URL "${url}" is not an ASCII http(s) URL`);
  }
  const uri = der.tlv(der.contextTag(6, false), Buffer.from(url, "ascii"));
  return der.sequence(der.sequence(der.oid(OID_CA_ISSUERS), uri));
}

/** A new CA key: a CaKey (maybe in a token), or a key pair from ca/keys.ts generateKeyPair. */
export type CaKeyPair = CaKey | { privateKey: KeyObject; publicKey: KeyObject };

const signerOf = (keys: CaKeyPair): SigningKey => ("sign" in keys ? keys : keys.privateKey);

export interface RootCertificateParams {
  keys: CaKeyPair;
  commonName: string;
  trustDomain: string;
  notBefore: Date;
  notAfter: Date;
  serial: Uint8Array;
  /**
   * The root's own CRL as its CRL distribution point: OpenSSL's full-chain
   * check (-crl_check_all, nginx ssl_crl) wants a CRL for the trust anchor
   * too, and -crl_download looks only where the certificate points. Absent leaves it out.
   */
  crlUrl?: string | null;
}

/** A self-signed root: CA:TRUE, keyCertSign+cRLSign, both critical; SKI; no path length limit; maybe a CRL distribution point. */
export async function createRootCertificate(p: RootCertificateParams): Promise<Buffer> {
  checkValidity(p.notBefore, p.notAfter);
  const name = caName(p.commonName, p.trustDomain);
  const signer = x509Signer(signerOf(p.keys));
  const ski = subjectKeyIdentifier(p.keys.publicKey);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serialHex(p.serial),
      subject: name,
      issuer: name,
      notBefore: p.notBefore,
      notAfter: p.notAfter,
      publicKey: p.keys.publicKey.export({ type: "spki", format: "der" }),
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectKeyIdentifierExtension(ski.toString("hex"), false),
        ...(p.crlUrl
          ? [new x509.Extension(OID_CRL_DISTRIBUTION_POINTS, false, crlDistributionPointsValue(p.crlUrl))]
          : []),
      ],
    },
    signer.crypto,
  );
  return Buffer.from(cert.rawData);
}

export interface IntermediateCertificateParams {
  issuer: { certDer: Uint8Array; privateKey: SigningKey };
  subjectPublicKey: KeyObject;
  commonName: string;
  trustDomain: string;
  notBefore: Date;
  notAfter: Date;
  serial: Uint8Array;
  /** Only 0 is supported: intermediates sign leaves, never other CAs. */
  pathLength: 0;
  /** dNSName subtrees to permit; none means DNS SANs are unconstrained. */
  permittedDnsSuffixes?: readonly string[];
  /** The issuing root's CRL, as CRL distribution point, so full-chain checkers find it; absent leaves it out. */
  crlUrl?: string | null;
  /** The issuing root's certificate (DER over http), as AIA caIssuers; absent leaves it out. */
  caIssuersUrl?: string | null;
}

/**
 * An intermediate: CA:TRUE pathlen:0 and keyCertSign+cRLSign+digitalSignature,
 * critical; SKI; AKI = the issuer's SKI; a critical URI name constraint for the
 * trust domain; when given, a CRL distribution point and a caIssuers pointer.
 */
export async function createIntermediateCertificate(p: IntermediateCertificateParams): Promise<Buffer> {
  checkValidity(p.notBefore, p.notAfter);
  if (p.pathLength !== 0) throw new StintError("ERR_CONFIG", "intermediate path length must be 0");
  const subject = caName(p.commonName, p.trustDomain);
  const issuerCert = new x509.X509Certificate(p.issuer.certDer);
  const issuerSki =
    issuerCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ??
    subjectKeyIdentifier(asCaKey(p.issuer.privateKey).publicKey).toString("hex");
  if (p.notBefore < issuerCert.notBefore || p.notAfter > issuerCert.notAfter) {
    throw new StintError("ERR_CONFIG", "the intermediate's validity must lie within its issuer's");
  }
  const signer = x509Signer(p.issuer.privateKey);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serialHex(p.serial),
      subject,
      // The issuer's subject bytes as they are, so name chaining is an exact match.
      issuer: new x509.Name(issuerCert.subjectName.toArrayBuffer()),
      notBefore: p.notBefore,
      notAfter: p.notAfter,
      publicKey: p.subjectPublicKey.export({ type: "spki", format: "der" }),
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
          true,
        ),
        new x509.SubjectKeyIdentifierExtension(
          subjectKeyIdentifier(p.subjectPublicKey).toString("hex"),
          false,
        ),
        new x509.AuthorityKeyIdentifierExtension(issuerSki, false),
        new x509.Extension(
          OID_NAME_CONSTRAINTS,
          true,
          nameConstraintsValue(p.trustDomain, p.permittedDnsSuffixes),
        ),
        ...(p.crlUrl
          ? [new x509.Extension(OID_CRL_DISTRIBUTION_POINTS, false, crlDistributionPointsValue(p.crlUrl))]
          : []),
        ...(p.caIssuersUrl
          ? [new x509.Extension(OID_AUTHORITY_INFO_ACCESS, false, caIssuersValue(p.caIssuersUrl))]
          : []),
      ],
    },
    signer.crypto,
  );
  return Buffer.from(cert.rawData);
}

export interface CrossCertificateParams {
  /** The root that vouches (the old one in a root rotation). */
  issuer: { certDer: Uint8Array; privateKey: SigningKey };
  /** The root vouched for: its subject and key are copied as they are. */
  subjectCertDer: Uint8Array;
  serial: Uint8Array;
}

/**
 * A cross-certificate: the subject root's name and key, signed by another
 * root, so a chain leaf → intermediate → cross-certificate reaches the old
 * root for verifiers that trust only it, while verifiers that trust the new
 * root stop one step earlier. CA:TRUE pathlen:1 (it sits above one
 * intermediate), keyCertSign+cRLSign, both critical; SKI of the subject key,
 * AKI of the issuer; validity within both roots'.
 */
export async function createCrossCertificate(p: CrossCertificateParams): Promise<Buffer> {
  const issuerCert = new x509.X509Certificate(p.issuer.certDer);
  const subjectCert = new x509.X509Certificate(p.subjectCertDer);
  const notBefore = new Date(Math.max(subjectCert.notBefore.getTime(), issuerCert.notBefore.getTime()));
  const notAfter = new Date(Math.min(subjectCert.notAfter.getTime(), issuerCert.notAfter.getTime()));
  checkValidity(notBefore, notAfter);
  const keyId = (c: x509.X509Certificate) => c.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const subjectSki = keyId(subjectCert);
  const issuerSki = keyId(issuerCert);
  if (!subjectSki || !issuerSki)
    throw new StintError("ERR_CONFIG", "both roots need a subject key identifier");
  const signer = x509Signer(p.issuer.privateKey);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serialHex(p.serial),
      subject: new x509.Name(subjectCert.subjectName.toArrayBuffer()),
      issuer: new x509.Name(issuerCert.subjectName.toArrayBuffer()),
      notBefore,
      notAfter,
      publicKey: subjectCert.publicKey,
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, 1, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectKeyIdentifierExtension(subjectSki, false),
        new x509.AuthorityKeyIdentifierExtension(issuerSki, false),
      ],
    },
    signer.crypto,
  );
  return Buffer.from(cert.rawData);
}

export function parseCertificate(derBytes: Uint8Array): x509.X509Certificate {
  try {
    return new x509.X509Certificate(derBytes);
  } catch (err) {
    throw new StintError("ERR_DER", "not a parseable X.509 certificate", { cause: err });
  }
}

export interface CertificateDescription {
  subject: string;
  issuer: string;
  /** Lowercase hex of the serial's content octets, without a sign pad byte. */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  /** "sha256:<hex>" of the DER. */
  fingerprint: string;
  isCa: boolean;
  sans: { uris: string[]; dns: string[]; ips: string[] };
}

export function describeCertificate(derBytes: Uint8Array): CertificateDescription {
  const cert = parseCertificate(derBytes);
  const sans: CertificateDescription["sans"] = { uris: [], dns: [], ips: [] };
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  for (const name of san?.names.items ?? []) {
    if (name.type === "url") sans.uris.push(name.value);
    else if (name.type === "dns") sans.dns.push(name.value);
    else if (name.type === "ip") sans.ips.push(name.value);
  }
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    serialHex: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    fingerprint: fingerprintSha256(derBytes),
    isCa: cert.getExtension(x509.BasicConstraintsExtension)?.ca ?? false,
    sans,
  };
}

// ---------- CA certificate requests (offline root, issue 6) ----------

/** The two parts of a name `caName` makes. */
export interface CaNameParts {
  commonName: string;
  trustDomain: string;
}

/**
 * A PKCS#10 request for a new CA key: subject "CN=<commonName>, O=<trustDomain>"
 * (as caName makes it), signed by that key, no attributes. The signer takes
 * only the name and key from it, so there is nothing else worth asking for.
 */
export async function createCaCertificateRequest(p: {
  keys: CaKeyPair;
  commonName: string;
  trustDomain: string;
}): Promise<Buffer> {
  const name = caName(p.commonName, p.trustDomain);
  const signer = x509Signer(signerOf(p.keys));
  const publicKey = await webcrypto.subtle.importKey(
    "spki",
    p.keys.publicKey.export({ type: "spki", format: "der" }),
    SIGNING[keyAlgorithmOf(p.keys.publicKey)].importParams,
    true,
    ["verify"],
  );
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name,
      keys: { privateKey: signer.key, publicKey },
      signingAlgorithm: signer.algorithm,
    },
    signer.crypto,
  );
  return Buffer.from(csr.rawData);
}

/**
 * The CN and O of a certificate's or request's subject when it has exactly
 * caName's shape (one CN, then one O, nothing else); null for any other name.
 * Throws ERR_DER when the bytes do not parse.
 */
export function caNameOf(derBytes: Uint8Array, kind: "certificate" | "request"): CaNameParts | null {
  let name: x509.Name;
  try {
    name =
      kind === "certificate"
        ? new x509.X509Certificate(derBytes).subjectName
        : new x509.Pkcs10CertificateRequest(derBytes).subjectName;
  } catch (err) {
    throw new StintError("ERR_DER", `not a parseable ${kind}`, { cause: err });
  }
  const rdns = name.toJSON();
  const single = (rdn: Record<string, string[]> | undefined, type: string): string | null => {
    const keys = rdn ? Object.keys(rdn) : [];
    return keys.length === 1 && keys[0] === type && rdn![type].length === 1 ? rdn![type][0] : null;
  };
  const commonName = single(rdns[0], "CN");
  const trustDomain = single(rdns[1], "O");
  if (rdns.length !== 2 || commonName === null || trustDomain === null) return null;
  return { commonName, trustDomain };
}
