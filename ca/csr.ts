import { type KeyObject, verify } from "node:crypto";
import { isStintError, StintError } from "../common/errors";
import * as der from "../formats/der";
import { importSpkiCached } from "./key-cache";
import { inspectSpki, KEY_ALGORITHMS, type KeyAlgorithm } from "./spki";

/**
 * PKCS#10 certification requests (RFC 2986), parsed strictly and with the
 * signature checked, so the requester proves it holds the key. Only the
 * fields issuance uses are extracted; the subject DN is ignored (names come
 * from the subjectAltName extension request).
 */

export interface ParsedCsr {
  spki: Buffer;
  keyAlgorithm: KeyAlgorithm | null;
  keyDescription: string;
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  /** The CSR asked for basicConstraints CA:TRUE; never granted, but callers say so clearly. */
  requestsCa: boolean;
}

const OID = {
  extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
} as const;

/** Signature algorithms a CSR may use, and the key family each needs (a label must not lie about the key). */
const SIGNATURES: Record<string, { hash: string | null; family: "ec" | "ed25519" | "rsa" }> = {
  "1.2.840.10045.4.3.2": { hash: "sha256", family: "ec" },
  "1.2.840.10045.4.3.3": { hash: "sha384", family: "ec" },
  "1.2.840.10045.4.3.4": { hash: "sha512", family: "ec" },
  "1.3.101.112": { hash: null, family: "ed25519" },
  "1.2.840.113549.1.1.11": { hash: "sha256", family: "rsa" },
  "1.2.840.113549.1.1.12": { hash: "sha384", family: "rsa" },
  "1.2.840.113549.1.1.13": { hash: "sha512", family: "rsa" },
};

const badCsr = (why: string): StintError => new StintError("ERR_BAD_CSR", `CSR ${why}`);

/**
 * Parses and verifies a DER request. Total: any bytes give a ParsedCsr or
 * ERR_BAD_CSR with the reason, never another exception. The whole structure
 * is read, and the key's shape checked, before the one costly step, the
 * signature check.
 */
export function parseCsr(csr: Buffer): ParsedCsr {
  try {
    return parseCsrUnchecked(csr);
  } catch (err) {
    if (isStintError(err, "ERR_DER")) throw badCsr(`is not valid DER: ${err.message.replace(/^DER: /, "")}`);
    throw err;
  }
}

function parseCsrUnchecked(csr: Buffer): ParsedCsr {
  const outer = der.expectTlv(csr, 0, der.Tag.SEQUENCE, "CertificationRequest");
  if (outer.end !== csr.length) throw badCsr("has trailing bytes after the request");
  const top = der.children(csr, outer);
  const [info, sigAlg, sigBits] = top;
  if (top.length !== 3 || info.tag !== der.Tag.SEQUENCE || sigBits.tag !== der.Tag.BIT_STRING)
    throw badCsr("is not a PKCS#10 request (request info, signature algorithm, signature)");
  const fields = der.children(csr, info);
  const [version, subject, spkiTlv, attributes] = fields;
  if (
    fields.length < 3 ||
    fields.length > 4 ||
    version.tag !== der.Tag.INTEGER ||
    subject.tag !== der.Tag.SEQUENCE ||
    spkiTlv.tag !== der.Tag.SEQUENCE
  )
    throw badCsr("request info is not a version, a subject, a public key and attributes");
  const spki = Buffer.from(der.whole(csr, spkiTlv));
  const facts = inspectSpki(spki);
  const scheme = signatureScheme(csr, sigAlg);
  const parsed: ParsedCsr = {
    spki,
    keyAlgorithm: facts.algorithm,
    keyDescription: facts.description,
    uris: [],
    dnsNames: [],
    ipAddresses: [],
    requestsCa: false,
  };
  if (attributes !== undefined) {
    if (attributes.tag !== der.contextTag(0, true)) throw badCsr("attributes are not tagged [0]");
    readAttributes(csr, attributes, parsed);
  }

  // Deny by default, and bound the cost: only keys this CA issues for reach the signature check.
  // badCSR, not badPublicKey: RFC 8555 6.7 names "a short key" as a reason for badCSR and keeps
  // badPublicKey for the key that signed the JWS.
  if (facts.algorithm === null)
    throw badCsr(
      `carries an unsupported key (${facts.description}); supported: ${KEY_ALGORITHMS.join(", ")}`,
    );
  if (scheme.family !== facts.algorithm.split("-")[0])
    throw badCsr(`signature algorithm does not fit its key (${facts.description})`);
  let publicKey: KeyObject;
  try {
    publicKey = importSpkiCached(spki);
  } catch {
    throw badCsr("carries a public key that cannot be loaded");
  }
  const sig = der.contents(csr, sigBits);
  if (
    sig.length < 2 ||
    sig[0] !== 0 ||
    !verifies(scheme.hash, der.whole(csr, info), publicKey, sig.subarray(1))
  )
    throw badCsr("signature does not verify with the key it carries");
  return parsed;
}

function verifies(hash: string | null, data: Buffer, key: KeyObject, signature: Buffer): boolean {
  try {
    return verify(hash, data, key, signature);
  } catch {
    // OpenSSL throws on some malformed signatures instead of returning false.
    return false;
  }
}

/** AlgorithmIdentifier: an OID this CA accepts, with no parameters or NULL ones (RFC 4055 2.1). */
function signatureScheme(csr: Buffer, sigAlg: der.Tlv): (typeof SIGNATURES)[string] {
  const parts = sigAlg.tag === der.Tag.SEQUENCE ? der.children(csr, sigAlg) : [];
  const [algorithm, params] = parts;
  if (parts.length < 1 || parts.length > 2 || algorithm.tag !== der.Tag.OID)
    throw badCsr("signature algorithm is not an OID with optional parameters");
  if (params !== undefined && (params.tag !== der.Tag.NULL || params.end !== params.valueStart))
    throw badCsr("signature algorithm has parameters; none or NULL are accepted");
  const oid = der.decodeOid(der.contents(csr, algorithm));
  if (!Object.hasOwn(SIGNATURES, oid)) throw badCsr(`uses unsupported signature algorithm ${oid}`);
  return SIGNATURES[oid];
}

/** Attributes (RFC 2986 4.1): each a type and a non-empty SET of values; only extensionRequest is read. */
function readAttributes(csr: Buffer, attributes: der.Tlv, out: ParsedCsr): void {
  let sawExtensions = false;
  for (const attr of der.children(csr, attributes)) {
    const parts = attr.tag === der.Tag.SEQUENCE ? der.children(csr, attr) : [];
    const [type, values] = parts;
    if (parts.length !== 2 || type.tag !== der.Tag.OID || values.tag !== der.Tag.SET)
      throw badCsr("has an attribute that is not a type and a SET of values");
    const valueList = der.children(csr, values);
    if (valueList.length === 0) throw badCsr("has an attribute with an empty set of values");
    if (der.decodeOid(der.contents(csr, type)) !== OID.extensionRequest) continue;
    if (sawExtensions) throw badCsr("has more than one extensionRequest attribute");
    sawExtensions = true;
    if (valueList.length !== 1 || valueList[0].tag !== der.Tag.SEQUENCE)
      throw badCsr("extensionRequest must hold one SEQUENCE of extensions");
    const extensions = der.children(csr, valueList[0]);
    if (extensions.length === 0)
      throw badCsr("has an empty extensionRequest (RFC 5280: at least one extension)");
    readExtensions(csr, extensions, out);
  }
}

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } (RFC 5280 4.1). */
function readExtensions(csr: Buffer, extensions: der.Tlv[], out: ParsedCsr): void {
  const seen = new Set<string>();
  for (const ext of extensions) {
    const parts = ext.tag === der.Tag.SEQUENCE ? der.children(csr, ext) : [];
    const [id, ...rest] = parts;
    const value = rest[rest.length - 1];
    const critical = rest.length === 2 ? rest[0] : undefined;
    if (
      parts.length < 2 ||
      parts.length > 3 ||
      id.tag !== der.Tag.OID ||
      value.tag !== der.Tag.OCTET_STRING ||
      (critical !== undefined &&
        (critical.tag !== der.Tag.BOOLEAN || critical.end - critical.valueStart !== 1))
    )
      throw badCsr("has an extension that is not an OID, an optional critical flag and an OCTET STRING");
    const extOid = der.decodeOid(der.contents(csr, id));
    if (seen.has(extOid)) throw badCsr(`repeats extension ${extOid} (RFC 5280 4.2: at most one of each)`);
    seen.add(extOid);
    const bytes = der.contents(csr, value);
    if (extOid === OID.subjectAltName) readGeneralNames(bytes, out);
    if (extOid === OID.basicConstraints) out.requestsCa = asksForCa(bytes);
  }
}

/** basicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLen INTEGER OPTIONAL }: true when cA is set. */
function asksForCa(value: Buffer): boolean {
  const bc = der.expectTlv(value, 0, der.Tag.SEQUENCE, "basicConstraints");
  if (bc.end !== value.length) throw badCsr("basicConstraints has trailing bytes");
  const first = der.children(value, bc)[0];
  if (first === undefined || first.tag !== der.Tag.BOOLEAN) return false;
  if (first.end - first.valueStart !== 1) throw badCsr("basicConstraints cA is not a one-octet BOOLEAN");
  return value[first.valueStart] !== 0;
}

function readGeneralNames(value: Buffer, out: ParsedCsr): void {
  const san = der.expectTlv(value, 0, der.Tag.SEQUENCE, "subjectAltName");
  if (san.end !== value.length) throw badCsr("subjectAltName has trailing bytes");
  const names = der.children(value, san);
  if (names.length === 0) throw badCsr("has an empty subjectAltName (RFC 5280 4.2.1.6: at least one name)");
  for (const name of names) {
    const bytes = der.contents(value, name);
    if (name.tag === der.contextTag(6, false)) out.uris.push(bytes.toString("ascii"));
    else if (name.tag === der.contextTag(2, false)) out.dnsNames.push(bytes.toString("ascii"));
    else if (name.tag === der.contextTag(7, false)) out.ipAddresses.push(ipText(bytes));
    else
      throw badCsr(
        `requests a subjectAltName of a kind this CA does not issue (tag 0x${name.tag.toString(16)})`,
      );
  }
}

/** Canonical text of an IP address (RFC 5952 for IPv6), so names compare as strings. */
export function ipText(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length !== 16) throw badCsr(`has an IP address of ${bytes.length} bytes`);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  // Compress the longest run of two or more zero groups, leftmost on ties.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}
