import { X509Certificate } from "node:crypto";
import { isStintError } from "../common/errors";
import { decodeSerial } from "../formats/serial";
import { computedKeyId, KeyUsage, readCertificate } from "../formats/x509";
import type { TrustBundle } from "./bundle";
import {
  type Cert,
  type ChainFailureCode,
  describe,
  ekuName,
  ekuOid,
  Refusal,
  refuse,
  type Usage,
} from "./cert";
import type { CaMemo } from "./memo";
import { nameConstraintProblem, unsupportedConstraint } from "./names";
import { findPath } from "./path";
import { type CompiledPolicy, DEFAULT_POLICY, MAX_CHAIN } from "./policy";
import { checkProfile } from "./profile";
import { checkLeaf } from "./svid";

export { TrustBundle } from "./bundle";
export type { ChainFailureCode, Usage } from "./cert";
export { type ChainPolicy, type CompiledPolicy, compilePolicy, MAX_CHAIN } from "./policy";

/**
 * Path validation of a presented X509-SVID chain against a trust bundle,
 * strictly, for the SPIFFE profile (STYLE habit 8: our own, not a library's
 * chain builder). The presented certificates may come in any order: a
 * bounded search (verify/path.ts) finds paths from the leaf to a root in the
 * bundle whose links chain by exact issuer name, key identifier and
 * signature, with allowed signature algorithms. Each such path is then
 * checked, top down: every certificate's own RFC 5280 profile
 * (verify/profile.ts: serial, names, key identifiers, criticality, key type),
 * validity (with clock skew), the CA rules (basicConstraints, keyCertSign,
 * path length, extended key usage nesting), the leaf's X509-SVID rules, and
 * URI/DNS/IP name constraints. The first path that passes is the answer.
 * Signature checks are the only expensive step; the verifier caches the
 * outcome per chain.
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
  /** Allowed signature algorithms, leaf key types and path depth (compilePolicy); all strong ones by default. */
  policy?: CompiledPolicy;
  /** Incremented per signature check, so tests and metrics can see the expensive work. */
  counters?: { signatures: number };
  /** CA certificates read and signatures checked before, by the same verifier (verify/memo.ts). */
  memo?: CaMemo;
}

/** Validates `chain` (DER, leaf first) against `bundle`. Never throws, whatever the input. */
export function validateChain(
  chain: readonly Uint8Array[],
  bundle: TrustBundle,
  opts: ChainOptions,
): ChainResult {
  try {
    return validate(chain, bundle, opts);
  } catch (err) {
    if (err instanceof Refusal) return { ok: false, code: err.code, reason: err.reason };
    // A bug, not a verdict on the chain: refuse without the internal detail (the fuzz test looks for this).
    return {
      ok: false,
      code: "malformed",
      reason: `${INTERNAL_ERROR} (${(err as Error)?.name ?? "unknown"})`,
    };
  }
}

/** The start of the reason given when validation failed in an unexpected way. */
export const INTERNAL_ERROR = "the chain could not be validated: internal error";

function validate(chain: readonly Uint8Array[], bundle: TrustBundle, opts: ChainOptions): ChainAccepted {
  if (!Array.isArray(chain)) refuse("malformed", "the chain is not a list of DER certificates");
  if (chain.length === 0) refuse("malformed", "no certificate was presented");
  if (chain.length > MAX_CHAIN) {
    refuse("malformed", `the chain has ${chain.length} certificates; at most ${MAX_CHAIN} are accepted`);
  }
  const presented = chain.map((d, i) => parse(d, i === 0 ? "leaf" : `intermediate ${i}`, opts.memo));
  const policy = opts.policy ?? DEFAULT_POLICY;
  const search = { policy, counters: opts.counters, memo: opts.memo };
  const found = findPath(presented, bundle, search, (path, anchor) => checkPath(path, anchor, opts, policy));
  const { path, anchor } = found;
  const leaf = path[0];
  const cas = [...path.slice(1), anchor];
  const keyId = (c: Cert): string =>
    (c.facts.subjectKeyId ?? computedKeyId(c.facts.spki)).subarray(0, 8).toString("hex");
  const times = [...path, anchor].map((c) => c.facts);
  let leafX509: X509Certificate | undefined;
  return {
    ok: true,
    spiffeId: found.result,
    // Built on first use: no caller on the verify path needs Node's parse of the leaf.
    get leaf() {
      leafX509 ??= new X509Certificate(leaf.facts.der);
      return leafX509;
    },
    issuerId: leaf.facts.authorityKeyId?.subarray(0, 8).toString("hex") ?? keyId(cas[0]),
    sequence: decodeSerial(leaf.facts.serial)?.sequence ?? null,
    notAfter: leaf.facts.notAfter,
    caIds: cas.map(keyId),
    validFrom: new Date(Math.max(...times.map((f) => f.notBefore.getTime())) - opts.clockSkew),
    validUntil: new Date(Math.min(...times.map((f) => f.notAfter.getTime())) + opts.clockSkew),
  };
}

/**
 * Every rule for one candidate path; throws a Refusal at the first broken
 * one, returns the leaf's SPIFFE ID. Top down, so a CA's fault is reported
 * at the CA rather than as its symptom in what it issued.
 */
function checkPath(path: Cert[], anchor: Cert, opts: ChainOptions, policy: CompiledPolicy): string {
  const cas = [...path.slice(1), anchor];
  checkProfile(anchor, "root", policy);
  for (let i = path.length - 1; i > 0; i--) checkProfile(path[i], "intermediate", policy);
  checkProfile(path[0], "leaf", policy);
  checkValidity([...path, anchor], opts);
  checkCas(cas, opts.usage);
  const spiffeId = checkLeaf(path[0], opts.usage);
  checkNameConstraints(path, cas);
  return spiffeId;
}

function parse(der: Uint8Array, role: string, memo: CaMemo | undefined): Cert {
  try {
    if (!(der instanceof Uint8Array)) throw new TypeError("not bytes");
    // Our strict reader is the only parse: Node's X509Certificate costs more than a signature check.
    const facts = memo && role !== "leaf" ? memo.read(der) : readCertificate(der);
    return { facts, role };
  } catch (err) {
    const why = isStintError(err, "ERR_DER") ? err.message : "it is not a DER X.509 certificate";
    return refuse("malformed", `the ${role} certificate cannot be read: ${why}`);
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
    // anyExtendedKeyUsage never gets here: the profile refuses it.
    if (eku && !eku.includes(ekuOid(usage))) {
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
