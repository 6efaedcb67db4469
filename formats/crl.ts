import { type KeyObject, verify } from "node:crypto";
import { StintError } from "../common/errors";
import * as der from "./der";

/**
 * Reading a CRL (RFC 5280 section 5) strictly from its DER, and checking its
 * signature: the agent keeps the CRLs of its chain for servers that check
 * them (nginx ssl_crl, HAProxy crl-file) and writes none it has not checked.
 * ca/crl.ts writes what this reads.
 */

export interface CrlFacts {
  der: Buffer;
  /** The whole TBSCertList: what the signature covers. */
  tbs: Buffer;
  /** OID of the signature algorithm (outer and TBS copies are checked to be equal). */
  signatureAlgorithm: string;
  /** The signature BIT STRING's bits. */
  signature: Buffer;
  /** The issuer Name DER, whole, for exact comparison with the issuer certificate's subject. */
  issuer: Buffer;
  thisUpdate: Date;
  /** Null when absent; RFC 5280 requires it, and readers here refuse a CRL without it. */
  nextUpdate: Date | null;
  authorityKeyId: Buffer | null;
  /** cRLNumber, as a bigint (it may run to 20 octets); null when absent. */
  number: bigint | null;
  /** Serial numbers of the listed certificates, lowercase hex of the INTEGER's content octets. */
  revoked: string[];
}

const OID = {
  authorityKeyId: "2.5.29.35",
  crlNumber: "2.5.29.20",
} as const;

/** Signature algorithms the CA signs with, and the hash node:crypto.verify needs for each. */
const SIGNATURE_HASH: Record<string, string | null> = {
  "1.2.840.113549.1.1.11": "sha256", // sha256WithRSAEncryption
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.2.840.10045.4.3.2": "sha256", // ecdsa-with-SHA256
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.3.101.112": null, // Ed25519
};

const fail = (message: string): never => {
  throw new StintError("ERR_DER", `CRL: ${message}`);
};

/** Reads a DER CRL; ERR_DER when it is not one, or carries a critical extension this reader does not know. */
export function readCrl(input: Uint8Array): CrlFacts {
  const raw = Buffer.from(input.buffer, input.byteOffset, input.length);
  const outer = der.signedParts(
    raw,
    {
      outer: "CertificateList",
      noun: "the CRL",
      shape: "not SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }",
    },
    fail,
  );
  const fields = der.children(raw, outer[0]);
  let i = 0;
  if (fields[0]?.tag === der.Tag.INTEGER) {
    const v = der.contents(raw, fields[0]);
    // Only v2 (1) is written with a version; v1 CRLs leave it out.
    if (v.length !== 1 || v[0] !== 1) fail("version is not v2");
    i = 1;
  }
  const want = (tag: number, what: string): der.Tlv => {
    const t = fields[i];
    if (!t || t.tag !== tag) fail(`TBSCertList ${what} is missing or has the wrong type`);
    i++;
    return t;
  };
  const tbsAlg = want(der.Tag.SEQUENCE, "signature");
  const issuer = want(der.Tag.SEQUENCE, "issuer");
  const isTime = (t: der.Tlv | undefined) =>
    t !== undefined && (t.tag === der.Tag.UTC_TIME || t.tag === der.Tag.GENERALIZED_TIME);
  if (!isTime(fields[i])) fail("TBSCertList thisUpdate is missing or not a time");
  const thisUpdate = der.decodeTime(raw, fields[i++]);
  const nextUpdate = isTime(fields[i]) ? der.decodeTime(raw, fields[i++]) : null;
  const revoked: string[] = [];
  if (fields[i]?.tag === der.Tag.SEQUENCE) {
    for (const entry of der.children(raw, fields[i++])) {
      const serial = entry.tag === der.Tag.SEQUENCE ? der.children(raw, entry)[0] : undefined;
      if (serial?.tag !== der.Tag.INTEGER) fail("a revoked entry does not start with a serial number");
      revoked.push(der.contents(raw, serial!).toString("hex"));
    }
  }
  let authorityKeyId: Buffer | null = null;
  let number: bigint | null = null;
  if (fields[i]?.tag === der.contextTag(0, true)) {
    ({ authorityKeyId, number } = readExtensions(raw, fields[i++]));
  }
  if (i !== fields.length) fail("TBSCertList has an unexpected field");
  if (!der.whole(raw, tbsAlg).equals(der.whole(raw, outer[1]))) {
    fail("the signature algorithm differs between the CRL and its TBSCertList");
  }
  const bits = der.contents(raw, outer[2]);
  if (bits.length < 1 || bits[0] !== 0) fail("the signature is not a whole number of bytes");
  const id = der.expectTlv(raw, outer[1].valueStart, der.Tag.OID, "AlgorithmIdentifier", outer[1].end);
  return {
    der: Buffer.from(raw),
    tbs: Buffer.from(der.whole(raw, outer[0])),
    signatureAlgorithm: der.decodeOid(der.contents(raw, id)),
    signature: Buffer.from(bits.subarray(1)),
    issuer: Buffer.from(der.whole(raw, issuer)),
    thisUpdate,
    nextUpdate,
    authorityKeyId,
    number,
    revoked,
  };
}

function readExtensions(
  raw: Buffer,
  field: der.Tlv,
): { authorityKeyId: Buffer | null; number: bigint | null } {
  const list = der.expectTlv(raw, field.valueStart, der.Tag.SEQUENCE, "crlExtensions", field.end);
  if (list.end !== field.end) fail("trailing bytes after the extensions");
  let authorityKeyId: Buffer | null = null;
  let number: bigint | null = null;
  const seen = new Set<string>();
  for (const ext of der.children(raw, list)) {
    const parts = ext.tag === der.Tag.SEQUENCE ? der.children(raw, ext) : [];
    const hasCritical = parts.length === 3 && parts[1].tag === der.Tag.BOOLEAN;
    if (!(parts.length === 2 || hasCritical) || parts[0].tag !== der.Tag.OID) {
      fail("an extension is not SEQUENCE { extnID, critical BOOLEAN OPTIONAL, extnValue }");
    }
    const last = parts[parts.length - 1];
    if (last.tag !== der.Tag.OCTET_STRING) fail("an extension's extnValue is not an OCTET STRING");
    const oid = der.decodeOid(der.contents(raw, parts[0]));
    if (seen.has(oid)) fail(`extension ${oid} appears twice`);
    seen.add(oid);
    const value = der.contents(raw, last);
    if (oid === OID.authorityKeyId) {
      const aki = der.expectTlv(value, 0, der.Tag.SEQUENCE, "authorityKeyIdentifier");
      for (const t of der.children(value, aki)) {
        if (t.tag === der.contextTag(0, false)) authorityKeyId = Buffer.from(der.contents(value, t));
      }
    } else if (oid === OID.crlNumber) {
      const n = der.contents(value, der.expectTlv(value, 0, der.Tag.INTEGER, "cRLNumber"));
      if (n.length === 0 || n.length > 20 || n[0] & 0x80)
        fail("cRLNumber is not a number of at most 20 octets");
      number = BigInt(`0x${n.toString("hex")}`);
    } else if (hasCritical && raw[parts[1].valueStart] !== 0) {
      // issuingDistributionPoint and deltaCRLIndicator narrow what the CRL covers: a reader that ignored them would misjudge it.
      fail(`extension ${oid} is critical and not understood`);
    }
  }
  return { authorityKeyId, number };
}

/** Whether `issuerKey` made the CRL's signature. False for a signature algorithm the CA does not use. */
export function crlSignedBy(crl: CrlFacts, issuerKey: KeyObject): boolean {
  const hash = SIGNATURE_HASH[crl.signatureAlgorithm];
  if (hash === undefined) return false;
  try {
    return verify(hash, crl.tbs, issuerKey, crl.signature);
  } catch {
    // A key of the wrong type for the algorithm is a mismatch, not a crash.
    return false;
  }
}

/**
 * The CA's name for an issuer, from its key identifier (the SKI, which the
 * issuer's children carry as their AKI): the first 8 bytes in lowercase hex,
 * as ca/keys.ts issuerIdFromSki makes it and /crl/<id>.crl serves it.
 */
export function issuerIdFromKeyId(keyId: Uint8Array): string {
  return Buffer.from(keyId.subarray(0, 8)).toString("hex");
}
