import { X509Certificate } from "node:crypto";
import { isStintError } from "../common/errors";
import { decodeSerial } from "../formats/serial";
import { computedKeyId, KeyUsage, OID, readCertificate } from "../formats/x509";
import type { TrustBundle } from "./bundle";
import {
  type Cert,
  type ChainFailureCode,
  criticalProblem,
  describe,
  ekuName,
  ekuOid,
  keyIdsAgree,
  keyOf,
  Refusal,
  refuse,
  type Usage,
} from "./cert";
import { nameConstraintProblem, unsupportedConstraint } from "./names";
import { checkLeaf } from "./svid";

export { TrustBundle } from "./bundle";
export type { ChainFailureCode, Usage } from "./cert";

/**
 * Path validation of a presented X509-SVID chain against a trust bundle,
 * strictly, for the SPIFFE profile (STYLE habit 8: our own, not a library's
 * chain builder). The chain is taken as presented, leaf first; each link must
 * chain by exact issuer name (and key identifier when both carry one) and
 * signature, until a certificate is issued by a root in the bundle. Then, in
 * order: validity of every certificate (with clock skew), the CA rules
 * (basicConstraints, keyCertSign, path length, extended key usage nesting),
 * the leaf's X509-SVID rules (one spiffe:// URI SAN, not a CA, digitalSignature,
 * the extended key usage the caller asks for), unknown critical extensions,
 * and URI/DNS/IP name constraints. Signature checks are the only expensive
 * step; the verifier caches the outcome per chain.
 */

export interface ChainAccepted {
  ok: true;
  spiffeId: string;
  leaf: X509Certificate;
  /** 16 hex digits: the first 8 bytes of the issuing CA's key identifier (the leaf's AKI). */
  issuerId: string;
  /** From the serial (formats/serial.ts); null when the serial is not in Stint's layout. */
  sequence: number | null;
  notAfter: Date;
  /** Key ids (as issuerId) of every CA on the path, issuer first, root last: each can be revoked. */
  caIds: string[];
  /** The instants between which every certificate on the path is valid, clock skew included. */
  validFrom: Date;
  validUntil: Date;
}

export interface ChainRefused {
  ok: false;
  code: ChainFailureCode;
  reason: string;
}

export type ChainResult = ChainAccepted | ChainRefused;

export interface ChainOptions {
  usage: Usage;
  now: Date;
  /** Milliseconds of tolerance on notBefore and notAfter. */
  clockSkew: number;
  /** Incremented per signature check, so tests and metrics can see the expensive work. */
  counters?: { signatures: number };
}

/** Longest chain read from a peer: more is refused before any parsing work. */
export const MAX_CHAIN = 8;

/** Signature algorithms accepted on links we check: no SHA-1 or MD5. */
const SIGNATURE_ALGORITHMS: Record<string, string> = {
  "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
  "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
  "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
  "1.3.101.112": "Ed25519",
  "1.3.101.113": "Ed448",
  "1.2.840.113549.1.1.10": "RSASSA-PSS",
  "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
  "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
  "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
};

/** Validates `chain` (DER, leaf first) against `bundle`. Never throws on hostile input. */
export function validateChain(
  chain: readonly Uint8Array[],
  bundle: TrustBundle,
  opts: ChainOptions,
): ChainResult {
  try {
    return validate(chain, bundle, opts);
  } catch (err) {
    if (err instanceof Refusal) return { ok: false, code: err.code, reason: err.reason };
    throw err;
  }
}

function validate(chain: readonly Uint8Array[], bundle: TrustBundle, opts: ChainOptions): ChainAccepted {
  if (chain.length === 0) refuse("malformed", "no certificate was presented");
  if (chain.length > MAX_CHAIN) {
    refuse("malformed", `the chain has ${chain.length} certificates; at most ${MAX_CHAIN} are accepted`);
  }
  const presented = chain.map((d, i) => parse(d, i === 0 ? "leaf" : `intermediate ${i}`));
  const { path, anchor } = buildPath(presented, bundle, opts);
  const leaf = path[0];
  const cas = [...path.slice(1), anchor];

  checkValidity([...path, anchor], opts);
  checkCas(cas, opts.usage);
  const spiffeId = checkLeaf(leaf, opts.usage);
  checkNameConstraints(path, cas);

  const issuer = cas[0];
  const keyId = (c: Cert): string =>
    (c.facts.subjectKeyId ?? computedKeyId(c.facts.spki)).subarray(0, 8).toString("hex");
  const times = [...path, anchor].map((c) => c.facts);
  return {
    ok: true,
    spiffeId,
    leaf: leaf.x509,
    issuerId: leaf.facts.authorityKeyId?.subarray(0, 8).toString("hex") ?? keyId(issuer),
    sequence: decodeSerial(leaf.facts.serial)?.sequence ?? null,
    notAfter: leaf.facts.notAfter,
    caIds: cas.map(keyId),
    validFrom: new Date(Math.max(...times.map((f) => f.notBefore.getTime())) - opts.clockSkew),
    validUntil: new Date(Math.min(...times.map((f) => f.notAfter.getTime())) + opts.clockSkew),
  };
}

function parse(der: Uint8Array, role: string): Cert {
  try {
    return { x509: new X509Certificate(der), facts: readCertificate(der), role };
  } catch (err) {
    const why = isStintError(err, "ERR_DER") ? err.message : "it is not a DER X.509 certificate";
    return refuse("malformed", `the ${role} certificate cannot be read: ${why}`);
  }
}

/** Follows issuer links from the leaf to the first certificate a bundle root issued. */
function buildPath(
  presented: Cert[],
  bundle: TrustBundle,
  opts: ChainOptions,
): { path: Cert[]; anchor: Cert } {
  const path: Cert[] = [];
  for (let i = 0; i < presented.length; i++) {
    const child = presented[i];
    path.push(child);
    const algorithm = SIGNATURE_ALGORITHMS[child.facts.signatureAlgorithm];
    if (!algorithm) {
      refuse(
        "bad-signature",
        `${describe(child)} is signed with algorithm ${child.facts.signatureAlgorithm}, which is not accepted (SHA-1 and MD5 signatures are refused)`,
      );
    }
    const roots = bundle.issuersOf(child.facts);
    if (roots.length > 0) {
      const anchor = roots.find((root) => signedBy(child, root, opts));
      if (anchor) return { path, anchor };
      refuse(
        "bad-signature",
        `the signature on ${describe(child)} does not verify with the key of ${roots.length === 1 ? describe(roots[0]) : "any trusted root of that name"}`,
      );
    }
    const next = presented[i + 1];
    if (!next) {
      refuse(
        "untrusted",
        `${describe(child)} is not issued by a trusted root (its issuer is ${issuerText(child)}); ` +
          `the chain ends without reaching the trust bundle`,
      );
    }
    if (!next.facts.subject.equals(child.facts.issuer) || !keyIdsAgree(child.facts, next.facts)) {
      refuse(
        "untrusted",
        `the chain is broken: ${describe(next)} is not the issuer of ${describe(child)} (whose issuer is ${issuerText(child)})`,
      );
    }
    if (!signedBy(child, next, opts)) {
      refuse(
        "bad-signature",
        `the signature on ${describe(child)} does not verify with the key of ${describe(next)}`,
      );
    }
  }
  return refuse("untrusted", "the chain does not reach the trust bundle");
}

const issuerText = (c: Cert): string => c.x509.issuer.split("\n").join(", ") || "an empty name";

function signedBy(child: Cert, issuer: Cert, opts: ChainOptions): boolean {
  if (opts.counters) opts.counters.signatures++;
  try {
    return child.x509.verify(keyOf(issuer));
  } catch {
    return false;
  }
}

function checkValidity(certs: Cert[], opts: ChainOptions): void {
  const now = opts.now.getTime();
  const skew = `clock skew allowance ${opts.clockSkew / 1000} s`;
  for (const c of certs) {
    if (now > c.facts.notAfter.getTime() + opts.clockSkew) {
      refuse(
        "expired",
        `${describe(c)} expired at ${c.facts.notAfter.toISOString()}; it is now ${opts.now.toISOString()} (${skew})`,
      );
    }
    if (now < c.facts.notBefore.getTime() - opts.clockSkew) {
      refuse(
        "not-yet-valid",
        `${describe(c)} is not valid before ${c.facts.notBefore.toISOString()}; it is now ${opts.now.toISOString()} (${skew})`,
      );
    }
  }
}

/** `cas` is issuer first, root last. */
function checkCas(cas: Cert[], usage: Usage): void {
  let below = 0;
  for (const [i, c] of cas.entries()) {
    const isRoot = i === cas.length - 1;
    const problem = criticalProblem(c);
    if (problem) refuse("constraints", `${describe(c)} ${problem}`);
    if (!c.facts.ca) {
      refuse(
        "constraints",
        `${describe(c)} issued a certificate but is not a CA certificate (basicConstraints cA is not set)`,
      );
    }
    // The keyUsage extension is required on CAs (RFC 5280 4.2.1.3); a root may predate that rule.
    if (c.facts.keyUsage === null && !isRoot) {
      refuse("usage", `${describe(c)} has no keyUsage extension; a CA certificate needs keyCertSign`);
    }
    if (c.facts.keyUsage !== null && !(c.facts.keyUsage & KeyUsage.keyCertSign)) {
      refuse(
        "usage",
        `${describe(c)} key usage does not include keyCertSign, so it may not issue certificates`,
      );
    }
    if (c.facts.pathLen !== null && below > c.facts.pathLen) {
      refuse(
        "constraints",
        `${describe(c)} has path length constraint ${c.facts.pathLen}, but ${below} intermediate CA certificate(s) follow it`,
      );
    }
    const eku = c.facts.eku;
    if (eku && !eku.includes(ekuOid(usage)) && !eku.includes(OID.anyExtendedKeyUsage)) {
      refuse(
        "usage",
        `${describe(c)} restricts extended key usage to ${eku.join(", ")}, which excludes ${ekuName(usage)}`,
      );
    }
    // RFC 5280 6.1.4 (l): self-issued certificates do not count against path length.
    if (!c.facts.subject.equals(c.facts.issuer)) below++;
  }
}

/**
 * RFC 5280 4.2.1.10 for URI, DNS and IP names: each CA's constraints apply to
 * the SANs of every certificate below it (self-issued intermediates excepted).
 * Constraints of other name types are refused, not ignored.
 */
function checkNameConstraints(path: Cert[], cas: Cert[]): void {
  for (const ca of cas) {
    const nc = ca.facts.nameConstraints;
    if (!nc) continue;
    const unsupported = unsupportedConstraint(nc);
    if (unsupported) {
      refuse(
        "constraints",
        `${describe(ca)} has name constraints on ${unsupported} names, which this verifier does not process`,
      );
    }
    const at = path.indexOf(ca);
    for (const c of at < 0 ? path : path.slice(0, at)) {
      if (c.role !== "leaf" && c.facts.subject.equals(c.facts.issuer)) continue;
      const problem = nameConstraintProblem(c.facts.sans, nc);
      if (problem)
        refuse("constraints", `${describe(ca)} name constraints refuse ${describe(c)}: ${problem}`);
    }
  }
}
