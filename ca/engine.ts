import { type KeyObject, randomFillSync } from "node:crypto";
import { isIP } from "node:net";
import { StintError } from "../common/errors";
import * as der from "../formats/der";
import { encodeSerial } from "../formats/serial";
import {
  asCaKey,
  type CaKey,
  type SignatureHash,
  type Signed,
  type SigningKey,
  signatureHashFor,
} from "./key-backend";
import { type KeyAlgorithm, keyIdentifier } from "./spki";

/**
 * The leaf issuance engine. Everything that is the same for every leaf of an
 * issuer (version, signature algorithm, issuer name, subject, constant
 * extensions) is encoded once; per certificate only serial, validity, public
 * key, SKI and SANs are encoded, then the issuer's CaKey signs: Node's native
 * crypto for a file key, synchronously, which keeps the cost near the
 * signature itself (tens of microseconds for P-256, where a general ASN.1
 * object model costs about a millisecond); a token answers with a promise.
 *
 * The engine checks nothing about policy: the authority decides what may be
 * issued and hands the engine a request it has already approved.
 */

export interface EngineIssuer<K extends SigningKey = KeyObject> {
  certDer: Buffer;
  /** The issuer's key: a CaKey, or a private KeyObject taken as a file key (then issue() answers at once). */
  privateKey: K;
  /** Organization put in every leaf's subject (the trust domain). */
  organization: string;
  /** URL of this issuer's CRL (ca/crl.ts crlUrl), put in every leaf as its CRL distribution point; null leaves it out. */
  crlUrl?: string | null;
  /**
   * Leaves without a SPIFFE ID (DNS names only: standard ACME clients over
   * http-01, with no attestation) get serverAuth only unless this is set, so a
   * name under policy.dnsSuffixes does not become a client identity.
   */
  dnsOnlyClientAuth?: boolean;
}

export interface LeafSpec {
  /** SubjectPublicKeyInfo DER of the leaf key. */
  spki: Buffer;
  /** From ca/spki.ts inspectSpki; decides keyUsage (RSA keys also get keyEncipherment). */
  keyAlgorithm: KeyAlgorithm;
  spiffeId: string | null;
  dnsNames: readonly string[];
  ipAddresses: readonly string[];
  notBefore: Date;
  notAfter: Date;
  sequence: number;
}

export interface IssuedLeaf {
  der: Buffer;
  serial: Buffer;
}

interface SignatureScheme {
  hash: string | null;
  algorithmIdentifier: Buffer;
}

const OID = {
  ecdsaSha256: "1.2.840.10045.4.3.2",
  ecdsaSha384: "1.2.840.10045.4.3.3",
  ed25519: "1.3.101.112",
  sha256Rsa: "1.2.840.113549.1.1.11",
  organization: "2.5.4.10",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectKeyId: "2.5.29.14",
  authorityKeyId: "2.5.29.35",
  subjectAltName: "2.5.29.17",
  crlDistributionPoints: "2.5.29.31",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

export function signatureScheme(key: KeyObject): SignatureScheme {
  const type = key.asymmetricKeyType;
  if (type === "ed25519") return { hash: null, algorithmIdentifier: der.sequence(der.oid(OID.ed25519)) };
  if (type === "rsa") {
    return { hash: "sha256", algorithmIdentifier: der.sequence(der.oid(OID.sha256Rsa), der.nullValue()) };
  }
  if (type === "ec") {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === "prime256v1")
      return { hash: "sha256", algorithmIdentifier: der.sequence(der.oid(OID.ecdsaSha256)) };
    if (curve === "secp384r1")
      return { hash: "sha384", algorithmIdentifier: der.sequence(der.oid(OID.ecdsaSha384)) };
  }
  throw new StintError("ERR_POLICY_KEY", `issuer key type ${type} is not supported for signing`);
}

export function extension(oidText: string, critical: boolean, value: Buffer): Buffer {
  return critical
    ? der.sequence(der.oid(oidText), der.booleanTrue(), der.octetString(value))
    : der.sequence(der.oid(oidText), der.octetString(value));
}

/**
 * RFC 5280 4.2.1.13 CRLDistributionPoints with one DistributionPoint whose
 * distributionPoint is fullName = one URI: SEQUENCE { SEQUENCE { [0] { [0] { [6] uri } } } }.
 */
export function crlDistributionPointsValue(url: string): Buffer {
  if (!/^https?:\/\/[\x21-\x7e]+$/.test(url)) {
    throw new StintError("ERR_CONFIG", `CRL distribution point "${url}" is not an ASCII http(s) URL`);
  }
  const uri = der.tlv(der.contextTag(6, false), Buffer.from(url, "ascii"));
  return der.sequence(der.sequence(der.tlv(der.contextTag(0, true), der.tlv(der.contextTag(0, true), uri))));
}

/** Subject and SPKI of a certificate, read once per issuer (here, and for its CRL in ca/crl.ts). */
export function certificateParts(certDer: Buffer): { subject: Buffer; spki: Buffer } {
  const cert = der.expectTlv(certDer, 0, der.Tag.SEQUENCE, "Certificate");
  const tbs = der.expectTlv(certDer, cert.valueStart, der.Tag.SEQUENCE, "TBSCertificate");
  const f = der.children(certDer, tbs);
  // [0] version, serial, signature, issuer, validity, subject, spki
  return { subject: der.whole(certDer, f[5]), spki: der.whole(certDer, f[6]) };
}

export class LeafEngine<K extends SigningKey = KeyObject> {
  private readonly key: CaKey;
  private readonly hash: SignatureHash;
  private readonly scheme: SignatureScheme;
  /** version + (serial goes here) */
  private readonly versionField = der.explicit(0, der.smallInteger(2));
  /** signature AlgorithmIdentifier + issuer Name */
  private readonly algAndIssuer: Buffer;
  private readonly subject: Buffer;
  /** By key kind, then by whether the leaf carries a SPIFFE ID (it decides the extended key usages). */
  private readonly fixedExtensions: Record<"ec" | "rsa", Record<"svid" | "dnsOnly", Buffer>>;
  /** Everything of the SKI extension before the 20 key-id bytes, and the SAN's extnID: issue() encodes no OIDs. */
  private readonly skiPrefix = der
    .sequence(der.oid(OID.subjectKeyId), der.octetString(der.octetString(Buffer.alloc(20))))
    .subarray(0, -20);
  private readonly sanOid = der.oid(OID.subjectAltName);
  private readonly random = Buffer.allocUnsafe(8 * 1024);
  private randomOffset = this.random.length;

  constructor(issuer: EngineIssuer<K>) {
    this.key = asCaKey(issuer.privateKey);
    this.hash = signatureHashFor(this.key.algorithm);
    this.scheme = signatureScheme(this.key.publicKey);
    const parts = certificateParts(issuer.certDer);
    this.algAndIssuer = Buffer.concat([this.scheme.algorithmIdentifier, parts.subject]);
    this.subject = der.sequence(
      der.set(der.sequence(der.oid(OID.organization), der.utf8String(issuer.organization))),
    );
    const issuerSki = keyIdentifier(parts.spki);
    const common = [
      extension(OID.authorityKeyId, false, der.sequence(der.tlv(der.contextTag(0, false), issuerSki))),
    ];
    // Encoded once here like every constant extension, so a distribution point costs issue() one copy.
    if (issuer.crlUrl) {
      common.push(extension(OID.crlDistributionPoints, false, crlDistributionPointsValue(issuer.crlUrl)));
    }
    const basicConstraints = extension(OID.basicConstraints, true, der.sequence());
    const ekuBoth = extension(
      OID.extKeyUsage,
      false,
      der.sequence(der.oid(OID.serverAuth), der.oid(OID.clientAuth)),
    );
    const ekuDnsOnly = issuer.dnsOnlyClientAuth
      ? ekuBoth
      : extension(OID.extKeyUsage, false, der.sequence(der.oid(OID.serverAuth)));
    // keyUsage: digitalSignature (bit 0); RSA leaves also keyEncipherment (bit 2) for RSA key exchange.
    const kuEc = extension(OID.keyUsage, true, Buffer.from([0x03, 0x02, 0x07, 0x80]));
    const kuRsa = extension(OID.keyUsage, true, Buffer.from([0x03, 0x02, 0x05, 0xa0]));
    const fixed = (ku: Buffer) => ({
      svid: Buffer.concat([ku, basicConstraints, ekuBoth, ...common]),
      dnsOnly: Buffer.concat([ku, basicConstraints, ekuDnsOnly, ...common]),
    });
    this.fixedExtensions = { ec: fixed(kuEc), rsa: fixed(kuRsa) };
  }

  /** The signed leaf: at once for a file key, as a promise when a token signs. */
  issue(spec: LeafSpec): Signed<K, IssuedLeaf> {
    const serial = encodeSerial(this.nextRandom(), spec.sequence);
    const ski = keyIdentifier(spec.spki);
    const names = generalNames(spec);
    const validity = der.sequence(der.time(spec.notBefore), der.time(spec.notAfter));
    const fixedExtensions =
      this.fixedExtensions[spec.keyAlgorithm.startsWith("rsa") ? "rsa" : "ec"][
        spec.spiffeId ? "svid" : "dnsOnly"
      ];

    // Lengths inside out, then one write pass: this runs per certificate.
    const sanSeq = der.headerSize(names.length) + names.length;
    const sanExtBody = this.sanOid.length + der.headerSize(sanSeq) + sanSeq;
    const sanExt = der.headerSize(sanExtBody) + sanExtBody;
    const extList = fixedExtensions.length + this.skiPrefix.length + ski.length + sanExt;
    const extSeq = der.headerSize(extList) + extList;
    const extField = der.headerSize(extSeq) + extSeq;
    const tbsBody =
      this.versionField.length +
      2 +
      serial.length +
      this.algAndIssuer.length +
      validity.length +
      this.subject.length +
      spec.spki.length +
      extField;
    const tbs = new der.DerWriter(der.headerSize(tbsBody) + tbsBody)
      .header(der.Tag.SEQUENCE, tbsBody)
      .bytes(this.versionField)
      .header(der.Tag.INTEGER, serial.length)
      .bytes(serial)
      .bytes(this.algAndIssuer)
      .bytes(validity)
      .bytes(this.subject)
      .bytes(spec.spki)
      .header(der.contextTag(3, true), extSeq)
      .header(der.Tag.SEQUENCE, extList)
      .bytes(fixedExtensions)
      .bytes(this.skiPrefix)
      .bytes(ski)
      .header(der.Tag.SEQUENCE, sanExtBody)
      .bytes(this.sanOid)
      .header(der.Tag.OCTET_STRING, sanSeq)
      .header(der.Tag.SEQUENCE, names.length)
      .bytes(names)
      .done();

    const signature = this.key.sign(this.hash, tbs);
    // No promise turn for a file key's Buffer: this is the issuance hot path.
    const leaf =
      signature instanceof Promise
        ? signature.then((s) => this.certificate(tbs, s, serial))
        : this.certificate(tbs, signature, serial);
    return leaf as Signed<K, IssuedLeaf>;
  }

  /** The Certificate around a signed TBSCertificate. */
  private certificate(tbs: Buffer, signature: Buffer, serial: Buffer): IssuedLeaf {
    const sigBits = signature.length + 1;
    const certBody = tbs.length + this.scheme.algorithmIdentifier.length + der.headerSize(sigBits) + sigBits;
    const certDer = new der.DerWriter(der.headerSize(certBody) + certBody)
      .header(der.Tag.SEQUENCE, certBody)
      .bytes(tbs)
      .bytes(this.scheme.algorithmIdentifier)
      .header(der.Tag.BIT_STRING, sigBits)
      .byte(0)
      .bytes(signature)
      .done();
    return { der: certDer, serial };
  }

  /** 64 random bits per serial from a pooled CSPRNG buffer; one syscall per 1,024 serials. */
  private nextRandom(): Buffer {
    if (this.randomOffset + 8 > this.random.length) {
      randomFillSync(this.random);
      this.randomOffset = 0;
    }
    const out = Buffer.from(this.random.subarray(this.randomOffset, this.randomOffset + 8));
    this.randomOffset += 8;
    return out;
  }
}

/** The subjectAltName GeneralNames, concatenated without their SEQUENCE header: SPIFFE URI, DNS names, IPs. */
function generalNames(spec: LeafSpec): Buffer {
  const names: Buffer[] = [];
  if (spec.spiffeId) names.push(der.tlv(der.contextTag(6, false), Buffer.from(spec.spiffeId, "ascii")));
  for (const dns of spec.dnsNames) names.push(der.tlv(der.contextTag(2, false), Buffer.from(dns, "ascii")));
  for (const ip of spec.ipAddresses) names.push(der.tlv(der.contextTag(7, false), ipBytes(ip)));
  return names.length === 1 ? names[0] : Buffer.concat(names);
}

export function ipBytes(ip: string): Buffer {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split(".").map(Number));
  if (family === 6) return ipv6Bytes(ip);
  throw new StintError("ERR_POLICY_IP", `"${ip}" is not an IP address`);
}

/** Expands a valid IPv6 text form (isIP said so) to 16 bytes, including "::" and a dotted IPv4 tail. */
function ipv6Bytes(ip: string): Buffer {
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = ipBytes(v4[1]);
    text =
      text.slice(0, -v4[1].length) +
      ((b[0] << 8) | b[1]).toString(16) +
      ":" +
      ((b[2] << 8) | b[3]).toString(16);
  }
  const [head, tail] = text.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups =
    tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill("0"), ...t];
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return out;
}
