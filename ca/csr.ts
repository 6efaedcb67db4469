import { type KeyObject, verify } from "node:crypto";
import { isStintError, StintError } from "../common/errors";
import * as der from "../formats/der";
import { importSpki } from "../formats/jose";
import { inspectSpki, type KeyAlgorithm } from "./spki";

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

const SIGNATURE_HASHES: Record<string, string | null> = {
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.3.101.112": null,
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
};

const badCsr = (why: string): StintError => new StintError("ERR_BAD_CSR", `CSR ${why}`);

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
  const [info, sigAlg, sigBits] = der.children(csr, outer);
  if (!info || !sigAlg || !sigBits || sigBits.tag !== der.Tag.BIT_STRING)
    throw badCsr("is not a PKCS#10 request");
  const [version, , spkiTlv, attributes] = der.children(csr, info);
  if (!version || version.tag !== der.Tag.INTEGER || !spkiTlv) throw badCsr("is not a PKCS#10 request");
  const spki = Buffer.from(der.whole(csr, spkiTlv));
  const facts = inspectSpki(spki);

  const sigOid = der.decodeOid(der.contents(csr, der.children(csr, sigAlg)[0]));
  if (!(sigOid in SIGNATURE_HASHES)) throw badCsr(`uses unsupported signature algorithm ${sigOid}`);
  const sig = der.contents(csr, sigBits);
  let publicKey: KeyObject;
  try {
    publicKey = importSpki(spki);
  } catch {
    throw badCsr("carries a public key that cannot be loaded");
  }
  const ok =
    sig[0] === 0 && verify(SIGNATURE_HASHES[sigOid], der.whole(csr, info), publicKey, sig.subarray(1));
  if (!ok) throw badCsr("signature does not verify with the key it carries");

  const parsed: ParsedCsr = {
    spki,
    keyAlgorithm: facts.algorithm,
    keyDescription: facts.description,
    uris: [],
    dnsNames: [],
    ipAddresses: [],
    requestsCa: false,
  };
  if (attributes && attributes.tag === der.contextTag(0, true)) readAttributes(csr, attributes, parsed);
  return parsed;
}

function readAttributes(csr: Buffer, attributes: der.Tlv, out: ParsedCsr): void {
  for (const attr of der.children(csr, attributes)) {
    const [type, values] = der.children(csr, attr);
    if (der.decodeOid(der.contents(csr, type)) !== OID.extensionRequest) continue;
    const extensions = der.children(csr, values)[0];
    for (const ext of der.children(csr, extensions)) {
      const parts = der.children(csr, ext);
      const extOid = der.decodeOid(der.contents(csr, parts[0]));
      const value = der.contents(csr, parts[parts.length - 1]);
      if (extOid === OID.subjectAltName) readGeneralNames(value, out);
      if (extOid === OID.basicConstraints) {
        const bc = der.children(value, der.readTlv(value, 0));
        out.requestsCa = bc.length > 0 && bc[0].tag === der.Tag.BOOLEAN && value[bc[0].valueStart] !== 0;
      }
    }
  }
}

function readGeneralNames(value: Buffer, out: ParsedCsr): void {
  for (const name of der.children(value, der.expectTlv(value, 0, der.Tag.SEQUENCE, "subjectAltName"))) {
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
