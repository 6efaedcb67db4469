import { type Extension, KeyUsage, OID } from "../formats/x509";
import { keyTypeOf } from "./algorithms";
import { type Cert, criticalProblem, describe, keyOf, refuse } from "./cert";
import { constraintProblem, sanProblem } from "./names";
import { CA_KEYS, type CompiledPolicy } from "./policy";
import { fixedShapeKeyType } from "./signature";

/**
 * The RFC 5280 rules every certificate on a path must follow on its own,
 * whatever its issuer: serial, names, key identifiers, criticality, the
 * extended key usage profile, well-formed names and constraints, its key.
 * Where RFC 5280 only says what CAs MUST NOT issue, this verifier refuses
 * what they should not have issued (docs/verify.md lists where that is
 * stricter than `openssl verify -x509_strict`).
 */

/** Where the certificate sits: the leaf, an intermediate, or the trust anchor from the bundle. */
export type Position = "leaf" | "intermediate" | "root";

/** Refuses `c` (throws a Refusal) at the first rule it breaks. */
export function checkProfile(c: Cert, at: Position, policy: CompiledPolicy): void {
  const serial = serialProblem(c.facts.serial);
  if (serial) refuse("malformed", `${describe(c)} ${serial}`);
  checkNames(c, at);
  checkCaFlags(c);
  checkKeyIds(c, at);
  checkEku(c, at);
  checkConstraintsAndAccess(c, at);
  const critical = criticalProblem(c);
  if (critical) refuse("constraints", `${describe(c)} ${critical}`);
  checkKey(c, at === "leaf" ? policy.leafKeys : CA_KEYS, at === "leaf" ? "leaf" : "CA");
}

const extension = (c: Cert, oid: string): Extension | undefined =>
  c.facts.extensions.find((e) => e.oid === oid);

/** RFC 5280 4.1.2.4, 4.1.2.6 and 4.2.1.6. A name is empty when it has no RDN at all (DER 30 00). */
function checkNames(c: Cert, at: Position): void {
  const f = c.facts;
  const emptySubject = f.subject.length === 2;
  if (f.issuer.length === 2)
    refuse("malformed", `${describe(c)} has an empty issuer name (RFC 5280 4.1.2.4)`);
  if (emptySubject && at !== "leaf") {
    refuse("malformed", `${describe(c)} is a CA certificate with an empty subject (RFC 5280 4.1.2.6)`);
  }
  const san = extension(c, OID.subjectAltName);
  if (emptySubject && !san?.critical) {
    refuse(
      "constraints",
      `${describe(c)} has an empty subject, so its subjectAltName must be present and critical (RFC 5280 4.2.1.6)`,
    );
  }
  // RFC 5280 says SHOULD; like webpki's profile, a critical SAN beside a subject is refused.
  if (!emptySubject && san?.critical) {
    refuse(
      "constraints",
      `${describe(c)} marks subjectAltName critical although its subject is not empty (RFC 5280 4.2.1.6: non-critical)`,
    );
  }
  for (const name of f.sans) {
    const problem = sanProblem(name);
    if (problem) refuse("malformed", `${describe(c)} has a subjectAltName that is not valid: ${problem}`);
  }
}

/** RFC 5280 4.2.1.9 and 4.2.1.3: cA, keyCertSign and pathLenConstraint go together. */
function checkCaFlags(c: Cert): void {
  const f = c.facts;
  if (f.ca && !extension(c, OID.basicConstraints)?.critical) {
    refuse("constraints", `${describe(c)} is a CA certificate whose basicConstraints is not marked critical`);
  }
  const certSign = f.keyUsage !== null && (f.keyUsage & KeyUsage.keyCertSign) !== 0;
  if (certSign && !f.ca) {
    refuse(
      "constraints",
      `${describe(c)} asserts keyCertSign but is not a CA certificate (basicConstraints cA is not set)`,
    );
  }
  if (f.pathLen !== null && !(f.ca && certSign)) {
    refuse("constraints", `${describe(c)} has a pathLenConstraint without both cA and keyCertSign`);
  }
  if (f.keyUsage === 0) refuse("constraints", `${describe(c)} has a keyUsage extension with no bit set`);
}

/** RFC 5280 4.2.1.1-2: both non-critical; AKI in all but the trust anchor, SKI in every CA. */
function checkKeyIds(c: Cert, at: Position): void {
  if (extension(c, OID.authorityKeyId)?.critical) {
    refuse("constraints", `${describe(c)} marks authorityKeyIdentifier critical`);
  }
  if (extension(c, OID.subjectKeyId)?.critical) {
    refuse("constraints", `${describe(c)} marks subjectKeyIdentifier critical`);
  }
  if (at !== "root" && c.facts.authorityKeyId === null) {
    refuse("constraints", `${describe(c)} has no authorityKeyIdentifier keyIdentifier (RFC 5280 4.2.1.1)`);
  }
  if (at !== "leaf" && c.facts.subjectKeyId === null) {
    refuse(
      "constraints",
      `${describe(c)} is a CA certificate without subjectKeyIdentifier (RFC 5280 4.2.1.2)`,
    );
  }
}

/** Stint's profile (stricter than RFC 5280 and SPIFFE, which allow a critical EKU): see docs/verify.md. */
function checkEku(c: Cert, at: Position): void {
  const eku = extension(c, OID.extKeyUsage);
  if (eku?.critical) refuse("usage", `${describe(c)} marks extendedKeyUsage critical`);
  if (c.facts.eku?.includes(OID.anyExtendedKeyUsage)) {
    refuse("usage", `${describe(c)} extended key usage includes anyExtendedKeyUsage`);
  }
  if (eku && at === "root") {
    refuse(
      "usage",
      `${describe(c)} is a trusted root with an extendedKeyUsage extension; a root must not restrict usage`,
    );
  }
}

/** Name constraints only in CAs, with valid bases (RFC 5280 4.2.1.10); AIA locations that are URIs (4.2.2.1). */
function checkConstraintsAndAccess(c: Cert, at: Position): void {
  const nc = c.facts.nameConstraints;
  if (nc && at === "leaf") {
    refuse(
      "constraints",
      `${describe(c)} has name constraints, which only CA certificates may carry (RFC 5280 4.2.1.10)`,
    );
  }
  for (const base of [...(nc?.permitted ?? []), ...(nc?.excluded ?? [])]) {
    const problem = constraintProblem(base);
    if (problem) refuse("malformed", `${describe(c)} has a name constraint that is not valid: ${problem}`);
  }
  for (const d of c.facts.authorityInfoAccess ?? []) {
    if (!(d.method === ACCESS.caIssuers || d.method === ACCESS.ocsp)) continue;
    if (d.location.type !== "uri" || !URI.test(d.location.value)) {
      refuse(
        "malformed",
        `${describe(c)} has an authorityInformationAccess ${d.method === ACCESS.ocsp ? "OCSP" : "caIssuers"} location that is not a URI`,
      );
    }
  }
}

function checkKey(c: Cert, allowed: ReadonlySet<string>, what: string): void {
  let key: ReturnType<typeof keyTypeOf>;
  try {
    // The common key types follow from the SPKI's bytes; only unusual ones need a KeyObject.
    const fixed = fixedShapeKeyType(c.facts.spki);
    key = fixed ? { type: fixed, text: fixed } : keyTypeOf(keyOf(c));
  } catch {
    refuse("bad-key", `${describe(c)} has a public key this verifier cannot read`);
  }
  if (key.type === null || !allowed.has(key.type)) {
    refuse(
      "bad-key",
      `${describe(c)} has a ${key.text} key, which is not allowed for a ${what} (allowed: ${[...allowed].join(", ")})`,
    );
  }
}

const ACCESS = { ocsp: "1.3.6.1.5.5.7.48.1", caIssuers: "1.3.6.1.5.5.7.48.2" } as const;

/** An absolute URI with no spaces or control characters (RFC 3986 scheme ":" rest). */
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+$/;

/** RFC 5280 4.1.2.2: a positive INTEGER of at most 20 octets, in minimal DER. */
function serialProblem(serial: Buffer): string | null {
  if (serial.length === 0) return "has an empty serial number";
  if (
    serial.length > 1 &&
    ((serial[0] === 0 && !(serial[1] & 0x80)) || (serial[0] === 0xff && serial[1] & 0x80))
  ) {
    return "has a serial number that is not minimally encoded";
  }
  if (serial[0] & 0x80) return "has a negative serial number (RFC 5280 4.1.2.2 requires a positive one)";
  if (serial.every((b) => b === 0)) return "has serial number 0 (RFC 5280 4.1.2.2 requires a positive one)";
  // The value's octets: a sign octet (0x00 before a high bit) does not count, as zlint counts.
  const octets = serial[0] === 0 ? serial.length - 1 : serial.length;
  if (octets > 20) return `has a ${octets}-octet serial number; RFC 5280 4.1.2.2 allows at most 20`;
  return null;
}
