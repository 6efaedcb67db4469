import { type KeyObject, X509Certificate } from "node:crypto";
import { type CertificateFacts, extensionName, KeyUsage, OID, unhandledCritical } from "../formats/x509";
import { publicKeyOf } from "./signature";

// What the path validator's modules share: a parsed certificate, refusals, and rules for every certificate.

export type Usage = "client" | "server";

export type ChainFailureCode =
  | "malformed"
  | "untrusted"
  | "bad-signature"
  | "bad-algorithm"
  | "bad-key"
  | "expired"
  | "not-yet-valid"
  | "constraints"
  | "usage"
  | "spiffe";

export interface Cert {
  facts: CertificateFacts;
  role: string;
  /** Read lazily, and only for a certificate that signs (or a key type the DER alone cannot tell). */
  key?: KeyObject;
  /** Node's parse, built only to print a name in a reason: on the way to a verdict it is never needed. */
  x509?: X509Certificate | null;
}

export const keyOf = (c: Cert): KeyObject => {
  c.key ??= publicKeyOf(c.facts.spki);
  return c.key;
};

/** Node's one-line text of the subject or issuer name, for reasons; "" when Node cannot read the certificate. */
export function nameOfField(c: Cert, field: "subject" | "issuer"): string {
  if (c.x509 === undefined) {
    try {
      c.x509 = new X509Certificate(c.facts.der);
    } catch {
      c.x509 = null;
    }
  }
  return nameText(c.x509?.[field]);
}

/** "CN=Example Root, O=example.org", or the SPIFFE ID for a leaf that has one. */
function nameOf(c: Cert): string {
  if (c.role === "leaf" && c.facts.uris.length === 1) return printable(c.facts.uris[0]);
  return nameOfField(c, "subject") || "empty subject";
}

export const describe = (c: Cert): string => `${c.role} certificate (${nameOf(c)})`;

/**
 * Node's one-line form of a Name: undefined for an empty one, and fields
 * separated by newlines. Names reach reasons shown to peers and logs, so
 * control characters are escaped and the length is capped.
 */
export function nameText(name: string | undefined): string {
  return printable((name ?? "").split("\n").join(", "));
}

const MAX_SHOWN = 200;

/** Text from a certificate, safe to put in a reason: no control characters, at most 200 characters. */
export function printable(text: string): string {
  const clean = text.replace(
    /[\u0000-\u001f\u007f-\u009f]/g,
    (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
  return clean.length > MAX_SHOWN ? `${clean.slice(0, MAX_SHOWN)}…` : clean;
}

/** The extensions this validator enforces; any other critical one refuses the certificate. */
const HANDLED: ReadonlySet<string> = new Set([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.nameConstraints,
  OID.subjectKeyId,
  OID.authorityKeyId,
]);

export function keyIdsAgree(child: CertificateFacts, issuer: CertificateFacts): boolean {
  return !child.authorityKeyId || !issuer.subjectKeyId || child.authorityKeyId.equals(issuer.subjectKeyId);
}

/** Thrown inside validation, turned into a ChainRefused at its edge. */
export class Refusal {
  constructor(
    readonly code: ChainFailureCode,
    readonly reason: string,
  ) {}
}

export function refuse(code: ChainFailureCode, reason: string): never {
  throw new Refusal(code, reason);
}

export const ekuName = (usage: Usage): string => (usage === "client" ? "clientAuth" : "serverAuth");
export const ekuOid = (usage: Usage): string => (usage === "client" ? OID.clientAuth : OID.serverAuth);

export function issuerProblem(c: Cert): string | null {
  if (c.facts.keyUsage !== null && !(c.facts.keyUsage & KeyUsage.keyCertSign)) {
    return "key usage does not include keyCertSign";
  }
  return null;
}

export function criticalProblem(c: Cert): string | null {
  const unknown = unhandledCritical(c.facts, HANDLED);
  if (unknown.length === 0) return null;
  return `has critical extension(s) this verifier does not process: ${unknown.map(extensionName).join(", ")}`;
}
