import { createHash } from "node:crypto";
import { StintError } from "../common/errors";
import * as der from "./der";

/**
 * What path validation needs from an X.509 certificate, read strictly from
 * its DER: the CA's x509pop attestor and the verifiers (verify/) read
 * certificates one way. Node's X509Certificate checks signatures; it does not
 * expose basicConstraints, key usage bits, name constraints or which
 * extensions are critical, so those come from here.
 */

export const OID = {
  commonName: "2.5.4.3",
  subjectKeyId: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  nameConstraints: "2.5.29.30",
  certificatePolicies: "2.5.29.32",
  policyConstraints: "2.5.29.36",
  authorityKeyId: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  inhibitAnyPolicy: "2.5.29.54",
  crlDistributionPoints: "2.5.29.31",
  authorityInfoAccess: "1.3.6.1.5.5.7.1.1",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  anyExtendedKeyUsage: "2.5.29.37.0",
} as const;

/** The first 16 keyUsage bits as one number, bit 0 (digitalSignature) highest. */
export const KeyUsage = {
  digitalSignature: 0x8000,
  nonRepudiation: 0x4000,
  keyEncipherment: 0x2000,
  dataEncipherment: 0x1000,
  keyAgreement: 0x0800,
  keyCertSign: 0x0400,
  cRLSign: 0x0200,
} as const;

const EXTENSION_NAMES: Record<string, string> = {
  [OID.subjectKeyId]: "subjectKeyIdentifier",
  [OID.keyUsage]: "keyUsage",
  [OID.subjectAltName]: "subjectAltName",
  [OID.basicConstraints]: "basicConstraints",
  [OID.nameConstraints]: "nameConstraints",
  [OID.certificatePolicies]: "certificatePolicies",
  [OID.policyConstraints]: "policyConstraints",
  [OID.authorityKeyId]: "authorityKeyIdentifier",
  [OID.extKeyUsage]: "extKeyUsage",
  [OID.inhibitAnyPolicy]: "inhibitAnyPolicy",
  [OID.crlDistributionPoints]: "cRLDistributionPoints",
  [OID.authorityInfoAccess]: "authorityInfoAccess",
};

/** "nameConstraints (2.5.29.30)" for a known extension, the bare OID otherwise. */
export function extensionName(oid: string): string {
  return EXTENSION_NAMES[oid] ? `${EXTENSION_NAMES[oid]} (${oid})` : oid;
}

export type GeneralName =
  | { type: "dns"; value: string }
  | { type: "uri"; value: string }
  | { type: "email"; value: string }
  | { type: "ip"; value: Buffer }
  | { type: "directoryName"; value: Buffer }
  /** otherName, x400Address, ediPartyName, registeredID: kept only so a reader can refuse them. */
  | { type: "other"; tag: number };

export interface NameConstraints {
  permitted: GeneralName[];
  excluded: GeneralName[];
}

/** One AccessDescription of an authorityInformationAccess extension (RFC 5280 4.2.2.1). */
export interface AccessDescription {
  method: string;
  location: GeneralName;
}

export interface Extension {
  oid: string;
  critical: boolean;
  /** The extnValue's contents (the DER inside the OCTET STRING). */
  value: Buffer;
}

export interface CertificateFacts {
  der: Buffer;
  /** 1, 2 or 3. */
  version: number;
  /** The serial INTEGER's content octets. */
  serial: Buffer;
  /** OID of the signature algorithm (outer and TBS copies are checked to be equal). */
  signatureAlgorithm: string;
  /** The AlgorithmIdentifier's parameters, whole DER; null when absent. */
  signatureParams: Buffer | null;
  /** The issuer and subject Name DER, whole, for exact-match chaining. */
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** SubjectPublicKeyInfo DER, whole. */
  spki: Buffer;
  extensions: Extension[];
  /** True when basicConstraints is present with cA TRUE. */
  ca: boolean;
  pathLen: number | null;
  /** The first 16 key usage bits (see KeyUsage); null without the extension. */
  keyUsage: number | null;
  eku: string[] | null;
  subjectKeyId: Buffer | null;
  /** The authorityKeyIdentifier's keyIdentifier. */
  authorityKeyId: Buffer | null;
  /** The subject's CN values in the string types certificates use. */
  cns: string[];
  /** Every subjectAltName entry, in order. */
  sans: GeneralName[];
  dns: string[];
  uris: string[];
  nameConstraints: NameConstraints | null;
  /** authorityInformationAccess, read strictly; null without the extension. */
  authorityInfoAccess: AccessDescription[] | null;
}

const TRAILING_FIELDS: Record<number, number> = { 129: 1, 130: 2, 163: 3 };

const fail = (message: string): never => {
  throw new StintError("ERR_DER", `DER: ${message}`);
};

/** Reads a DER certificate; ERR_DER when it is not one, or has a field this reader cannot make sense of. */
export function readCertificate(input: Uint8Array): CertificateFacts {
  const raw = Buffer.from(input.buffer, input.byteOffset, input.length);
  const outer = der.signedParts(
    raw,
    {
      outer: "Certificate",
      noun: "the certificate",
      shape: "Certificate is not SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }",
    },
    fail,
  );
  const fields = der.children(raw, outer[0]);
  let i = 0;
  let version = 1;
  if (fields[0]?.tag === der.contextTag(0, true)) {
    const v = der.expectTlv(raw, fields[0].valueStart, der.Tag.INTEGER, "version", fields[0].end);
    const n = der.contents(raw, v);
    if (n.length !== 1 || n[0] > 2) fail("version is not v1, v2 or v3");
    version = n[0] + 1;
    i = 1;
  }
  const want = (k: number, tag: number, what: string): der.Tlv => {
    const t = fields[i + k];
    if (!t || t.tag !== tag) fail(`TBSCertificate ${what} is missing or has the wrong type`);
    return t;
  };
  const serial = want(0, der.Tag.INTEGER, "serialNumber");
  const tbsAlg = want(1, der.Tag.SEQUENCE, "signature");
  const issuer = want(2, der.Tag.SEQUENCE, "issuer");
  const validity = want(3, der.Tag.SEQUENCE, "validity");
  const subject = want(4, der.Tag.SEQUENCE, "subject");
  const spki = want(5, der.Tag.SEQUENCE, "subjectPublicKeyInfo");
  if (!der.whole(raw, tbsAlg).equals(der.whole(raw, outer[1]))) {
    fail("the signature algorithm differs between the certificate and its TBSCertificate");
  }
  const times = der.children(raw, validity);
  if (times.length !== 2) fail("validity is not two times");
  let extensionsField: der.Tlv | undefined;
  let rank = 0;
  for (const t of fields.slice(i + 6)) {
    // issuerUniqueID [1], subjectUniqueID [2], extensions [3]: each at most once, in this order.
    const next = TRAILING_FIELDS[t.tag] ?? 0;
    if (next <= rank) fail("TBSCertificate has an unexpected field");
    rank = next;
    if (t.tag === der.contextTag(3, true)) extensionsField = t;
  }
  // RFC 5280 4.1.2.8-9: unique identifiers need v2 or v3, extensions v3.
  if (extensionsField && version !== 3) fail(`a v${version} certificate carries extensions, which need v3`);
  if (rank > 0 && version === 1) fail("a v1 certificate carries a unique identifier, which needs v2 or v3");
  checkName(raw, issuer, "issuer");

  const algorithm = algorithmOf(raw, outer[1]);
  const f: CertificateFacts = {
    der: Buffer.from(raw),
    version,
    serial: Buffer.from(der.contents(raw, serial)),
    signatureAlgorithm: algorithm.oid,
    signatureParams: algorithm.params,
    issuer: Buffer.from(der.whole(raw, issuer)),
    subject: Buffer.from(der.whole(raw, subject)),
    notBefore: der.decodeTime(raw, times[0]),
    notAfter: der.decodeTime(raw, times[1]),
    spki: Buffer.from(der.whole(raw, spki)),
    extensions: [],
    ca: false,
    pathLen: null,
    keyUsage: null,
    eku: null,
    subjectKeyId: null,
    authorityKeyId: null,
    cns: commonNames(raw, subject),
    sans: [],
    dns: [],
    uris: [],
    nameConstraints: null,
    authorityInfoAccess: null,
  };
  if (extensionsField) readExtensions(raw, extensionsField, f);
  return f;
}

function algorithmOf(raw: Buffer, alg: der.Tlv): { oid: string; params: Buffer | null } {
  const [id, params, ...rest] = der.children(raw, alg);
  if (!id || id.tag !== der.Tag.OID || rest.length > 0) {
    fail("an AlgorithmIdentifier is not SEQUENCE { algorithm OID, parameters OPTIONAL }");
  }
  return {
    oid: der.decodeOid(der.contents(raw, id)),
    params: params ? Buffer.from(der.whole(raw, params)) : null,
  };
}

function readExtensions(raw: Buffer, field: der.Tlv, f: CertificateFacts): void {
  const list = der.expectTlv(raw, field.valueStart, der.Tag.SEQUENCE, "extensions", field.end);
  if (list.end !== field.end) fail("trailing bytes after the extensions");
  const seen = new Set<string>();
  for (const ext of der.children(raw, list)) {
    if (ext.tag !== der.Tag.SEQUENCE) fail("an extension is not a SEQUENCE");
    const parts = der.children(raw, ext);
    const critical = parts.length === 3 && parts[1].tag === der.Tag.BOOLEAN;
    if (!(parts.length === 2 || critical) || parts[0].tag !== der.Tag.OID) {
      fail("an extension is not SEQUENCE { extnID, critical BOOLEAN OPTIONAL, extnValue }");
    }
    const last = parts[parts.length - 1];
    if (last.tag !== der.Tag.OCTET_STRING) fail("an extension's extnValue is not an OCTET STRING");
    const oid = der.decodeOid(der.contents(raw, parts[0]));
    if (seen.has(oid)) fail(`extension ${oid} appears twice`);
    seen.add(oid);
    const value = der.contents(raw, last);
    f.extensions.push({
      oid,
      critical: critical && boolean(raw, parts[1], "an extension's critical flag"),
      value: Buffer.from(value),
    });
    const read = READERS[oid];
    if (read) read(value, f);
  }
}

/** The single top-level value of an extnValue, which must fill it exactly. */
function only(value: Buffer, tag: number, what: string): der.Tlv {
  const t = der.expectTlv(value, 0, tag, what);
  if (t.end !== value.length) fail(`trailing bytes in ${what}`);
  return t;
}

/** A DER BOOLEAN: one octet, 0x00 or 0xFF. */
function boolean(buf: Buffer, t: der.Tlv, what: string): boolean {
  const v = der.contents(buf, t);
  if (v.length !== 1 || (v[0] !== 0 && v[0] !== 0xff)) fail(`${what} is not a DER BOOLEAN`);
  return v[0] === 0xff;
}

function nonNegativeInteger(value: Buffer, t: der.Tlv, what: string): number {
  const n = der.contents(value, t);
  if (n.length === 0 || n[0] & 0x80) fail(`${what} is negative`);
  return n.length <= 6 ? n.readUIntBE(0, n.length) : Number.MAX_SAFE_INTEGER;
}

const READERS: Record<string, (value: Buffer, f: CertificateFacts) => void> = {
  [OID.basicConstraints]: (value, f) => {
    // SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }, in that order.
    let rank = 0;
    for (const t of der.children(value, only(value, der.Tag.SEQUENCE, "basicConstraints"))) {
      const next = t.tag === der.Tag.BOOLEAN ? 1 : t.tag === der.Tag.INTEGER ? 2 : 0;
      if (next <= rank) fail("basicConstraints has an unexpected field");
      rank = next;
      if (next === 1) f.ca = boolean(value, t, "basicConstraints cA");
      else f.pathLen = nonNegativeInteger(value, t, "pathLenConstraint");
    }
  },
  [OID.keyUsage]: (value, f) => {
    const bits = der.contents(value, only(value, der.Tag.BIT_STRING, "keyUsage"));
    f.keyUsage = ((bits[1] ?? 0) << 8) | (bits[2] ?? 0);
  },
  [OID.extKeyUsage]: (value, f) => {
    f.eku = nonEmpty(value, only(value, der.Tag.SEQUENCE, "extKeyUsage"), "extKeyUsage").map((t) => {
      if (t.tag !== der.Tag.OID) fail("extKeyUsage holds something other than OIDs");
      return der.decodeOid(der.contents(value, t));
    });
  },
  [OID.subjectAltName]: (value, f) => {
    for (const t of nonEmpty(value, only(value, der.Tag.SEQUENCE, "subjectAltName"), "subjectAltName")) {
      const name = generalName(value, t);
      f.sans.push(name);
      if (name.type === "dns") f.dns.push(name.value);
      if (name.type === "uri") f.uris.push(name.value);
    }
  },
  [OID.subjectKeyId]: (value, f) => {
    f.subjectKeyId = Buffer.from(
      der.contents(value, only(value, der.Tag.OCTET_STRING, "subjectKeyIdentifier")),
    );
  },
  [OID.authorityKeyId]: (value, f) => {
    for (const t of der.children(value, only(value, der.Tag.SEQUENCE, "authorityKeyIdentifier"))) {
      if (t.tag === der.contextTag(0, false)) f.authorityKeyId = Buffer.from(der.contents(value, t));
    }
  },
  [OID.nameConstraints]: (value, f) => {
    const nc: NameConstraints = { permitted: [], excluded: [] };
    const fields = der.children(value, only(value, der.Tag.SEQUENCE, "nameConstraints"));
    // RFC 5280 4.2.1.10: one of the two MUST be present, and GeneralSubtrees is SIZE (1..MAX).
    if (fields.length === 0) fail("nameConstraints has neither permittedSubtrees nor excludedSubtrees");
    let rank = 0;
    for (const subtrees of fields) {
      const next =
        subtrees.tag === der.contextTag(0, true) ? 1 : subtrees.tag === der.contextTag(1, true) ? 2 : 0;
      if (next <= rank) fail("nameConstraints has an unexpected field, or a field twice or out of order");
      rank = next;
      const into = next === 1 ? nc.permitted : nc.excluded;
      const what = next === 1 ? "permittedSubtrees" : "excludedSubtrees";
      for (const subtree of nonEmpty(value, subtrees, `nameConstraints ${what}`)) {
        if (subtree.tag !== der.Tag.SEQUENCE) fail("a GeneralSubtree is not a SEQUENCE");
        const [base, ...rest] = der.children(value, subtree);
        if (!base) fail("a GeneralSubtree has no base");
        // RFC 5280 4.2.1.10: minimum is 0 (so absent in DER) and maximum is absent.
        if (rest.length > 0) fail("a GeneralSubtree has minimum or maximum, which RFC 5280 forbids");
        into.push(generalName(value, base));
      }
    }
    f.nameConstraints = nc;
  },
  [OID.authorityInfoAccess]: (value, f) => {
    const list = only(value, der.Tag.SEQUENCE, "authorityInfoAccess");
    f.authorityInfoAccess = nonEmpty(value, list, "authorityInfoAccess").map((item) => {
      const [method, location, ...rest] = item.tag === der.Tag.SEQUENCE ? der.children(value, item) : [];
      if (!method || !location || rest.length > 0 || method.tag !== der.Tag.OID) {
        fail("an authorityInfoAccess entry is not SEQUENCE { accessMethod OID, accessLocation GeneralName }");
      }
      return { method: der.decodeOid(der.contents(value, method)), location: generalName(value, location) };
    });
  },
};

/** The children of a SEQUENCE OF declared SIZE (1..MAX): empty is malformed. */
function nonEmpty(value: Buffer, t: der.Tlv, what: string): der.Tlv[] {
  const items = der.children(value, t);
  if (items.length === 0) fail(`${what} is empty`);
  return items;
}

function ia5(bytes: Buffer, what: string): string {
  for (const b of bytes) if (b > 0x7f) fail(`${what} is not an IA5String`);
  return bytes.toString("latin1");
}

/** GeneralName (RFC 5280 4.2.1.6): a context tag [0]..[8] in its defined form, or ERR_DER. */
function generalName(buf: Buffer, t: der.Tlv): GeneralName {
  switch (t.tag) {
    case der.contextTag(1, false):
      return { type: "email", value: ia5(der.contents(buf, t), "an rfc822Name") };
    case der.contextTag(2, false):
      return { type: "dns", value: ia5(der.contents(buf, t), "a dNSName") };
    case der.contextTag(6, false):
      return { type: "uri", value: ia5(der.contents(buf, t), "a URI") };
    case der.contextTag(7, false):
      return { type: "ip", value: Buffer.from(der.contents(buf, t)) };
    case der.contextTag(4, true):
      return { type: "directoryName", value: Buffer.from(der.contents(buf, t)) };
    // otherName, x400Address, ediPartyName (constructed) and registeredID (primitive).
    case der.contextTag(0, true):
    case der.contextTag(3, true):
    case der.contextTag(5, true):
    case der.contextTag(8, false):
      return { type: "other", tag: t.tag };
    default:
      return fail(`tag 0x${t.tag.toString(16)} is not a GeneralName`);
  }
}

/** A Name is SEQUENCE OF SET SIZE (1..MAX) OF SEQUENCE { type OID, value }: anything else is malformed. */
function checkName(raw: Buffer, name: der.Tlv, what: string): void {
  for (const rdn of der.children(raw, name)) {
    if (rdn.tag !== der.Tag.SET) fail(`the ${what} name holds something other than SETs`);
    for (const atv of nonEmpty(raw, rdn, `a relative distinguished name of the ${what}`)) {
      const parts = atv.tag === der.Tag.SEQUENCE ? der.children(raw, atv) : [];
      if (parts.length !== 2 || parts[0].tag !== der.Tag.OID) {
        fail(`an attribute of the ${what} name is not SEQUENCE { type OID, value }`);
      }
      der.decodeOid(der.contents(raw, parts[0]));
    }
  }
}

/** The subject's CN values in the string types certificates use; other types are skipped. */
function commonNames(raw: Buffer, subject: der.Tlv): string[] {
  checkName(raw, subject, "subject");
  const out: string[] = [];
  for (const rdn of der.children(raw, subject)) {
    for (const atv of der.children(raw, rdn)) {
      const [type, value] = der.children(raw, atv);
      if (!value || type.tag !== der.Tag.OID || der.decodeOid(der.contents(raw, type)) !== OID.commonName) {
        continue;
      }
      const bytes = der.contents(raw, value);
      if (value.tag === der.Tag.UTF8_STRING) {
        try {
          out.push(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
        } catch {
          fail("a subject CN is not valid UTF-8");
        }
      } else if (value.tag === der.Tag.PRINTABLE_STRING || value.tag === der.Tag.IA5_STRING) {
        out.push(bytes.toString("latin1"));
      }
    }
  }
  return out;
}

/** OIDs of the critical extensions not in `handled`: a reader must refuse a certificate that has any. */
export function unhandledCritical(f: CertificateFacts, handled: ReadonlySet<string>): string[] {
  return f.extensions.filter((e) => e.critical && !handled.has(e.oid)).map((e) => e.oid);
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits, for certificates without an SKI. */
export function computedKeyId(spki: Uint8Array): Buffer {
  const outer = der.expectTlv(spki, 0, der.Tag.SEQUENCE, "SubjectPublicKeyInfo");
  const algorithm = der.readTlv(spki, outer.valueStart, outer.end);
  const bits = der.expectTlv(spki, algorithm.end, der.Tag.BIT_STRING, "subjectPublicKey", outer.end);
  return createHash("sha1")
    .update(Buffer.from(spki.buffer, spki.byteOffset + bits.valueStart + 1, bits.end - bits.valueStart - 1))
    .digest();
}

/** What `readCertificateKey` reads: enough to find a certificate in a store and use its key. */
export interface CertificateKey {
  /** The serial INTEGER's content octets. */
  serial: Buffer;
  /** SubjectPublicKeyInfo DER, whole. */
  spki: Buffer;
}

/**
 * The serial and key of a DER certificate, reading only the fields before
 * them: for a certificate the caller then compares byte for byte with one it
 * stored, so the rest need not be parsed (about an eighth of readCertificate's
 * cost). ERR_DER when the outer structure is not a certificate's.
 */
export function readCertificateKey(input: Uint8Array): CertificateKey {
  const raw = Buffer.from(input.buffer, input.byteOffset, input.length);
  const cert = der.expectTlv(raw, 0, der.Tag.SEQUENCE, "Certificate");
  if (cert.end !== raw.length) fail("trailing bytes after the certificate");
  const tbs = der.expectTlv(raw, cert.valueStart, der.Tag.SEQUENCE, "TBSCertificate", cert.end);
  let at = tbs.valueStart;
  const first = der.readTlv(raw, at, tbs.end);
  if (first.tag === der.contextTag(0, true)) at = first.end;
  const serial = der.expectTlv(raw, at, der.Tag.INTEGER, "serialNumber", tbs.end);
  at = serial.end;
  for (const what of ["signature", "issuer", "validity", "subject"]) {
    at = der.expectTlv(raw, at, der.Tag.SEQUENCE, what, tbs.end).end;
  }
  const spki = der.expectTlv(raw, at, der.Tag.SEQUENCE, "subjectPublicKeyInfo", tbs.end);
  return { serial: Buffer.from(der.contents(raw, serial)), spki: Buffer.from(der.whole(raw, spki)) };
}
