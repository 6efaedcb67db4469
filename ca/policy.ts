import { isIP } from "node:net";
import { formatDuration } from "../common/duration";
import { StintError } from "../common/errors";
import { parseWorkloadId } from "../formats/spiffe";
import { ipText } from "./csr";
import { ipBytes } from "./engine";
import type { KeyAlgorithm } from "./spki";

/**
 * What the CA will put in a workload certificate. Deny by default: a request
 * passes only what the policy grants, and every refusal names the rule and
 * the setting that would change it.
 */

export interface IssuancePolicy {
  trustDomain: string;
  defaultTtlMs: number;
  minTtlMs: number;
  maxTtlMs: number;
  /** notBefore is set this far in the past, for relying parties whose clocks run slow. */
  backdateMs: number;
  /** DNS SANs are allowed only equal to or under one of these suffixes. */
  dnsSuffixes: readonly string[];
  keyTypes: readonly KeyAlgorithm[];
  /** Certificates without a SPIFFE ID also get clientAuth (policy.dnsOnlyClientAuth); by default serverAuth only. */
  dnsOnlyClientAuth?: boolean;
}

export interface LeafRequest {
  /** null only for DNS-only certificates requested by standard ACME clients (dns identifiers, http-01). */
  spiffeId: string | null;
  dnsNames?: readonly string[];
  /** IP SANs are for the CA's own server certificate; workload policy refuses them. */
  ipAddresses?: readonly string[];
  /** Requested lifetime; the policy default when absent. */
  ttlMs?: number;
  spki: Buffer;
  keyAlgorithm: KeyAlgorithm | null;
  keyDescription: string;
}

export interface ApprovedLeaf {
  spiffeId: string | null;
  dnsNames: string[];
  ipAddresses: string[];
  keyAlgorithm: KeyAlgorithm;
  spki: Buffer;
  notBefore: Date;
  notAfter: Date;
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function normalizeDnsName(name: string): string {
  const lower = name.toLowerCase().replace(/\.$/, "");
  const labels = lower.split(".");
  if (lower.length > 253 || labels.length < 1 || !labels.every((l) => DNS_LABEL.test(l))) {
    throw new StintError(
      "ERR_POLICY_DNS",
      `"${name.slice(0, 100)}" is not a valid DNS name (wildcards are not issued)`,
    );
  }
  return lower;
}

export function dnsNameAllowed(name: string, suffixes: readonly string[]): boolean {
  return suffixes.some((s) => name === s || name.endsWith("." + s));
}

/** Canonical text of an IP SAN, as the CSR parser produces it. */
export function normalizeIp(ip: string): string {
  if (isIP(ip) === 0) throw new StintError("ERR_POLICY_IP", `"${ip.slice(0, 60)}" is not an IP address`);
  return ipText(ipBytes(ip));
}

/** Lifetime within [min, max], defaulting; shared by workload and server certificates. */
export function validityWindow(policy: IssuancePolicy, ttlMs: number | undefined, now: Date): [Date, Date] {
  const ttl = ttlMs ?? policy.defaultTtlMs;
  if (ttl > policy.maxTtlMs) {
    throw new StintError(
      "ERR_POLICY_TTL",
      `requested lifetime ${formatDuration(ttl)} is beyond the policy maximum ${formatDuration(policy.maxTtlMs)} (policy.maxTtl)`,
    );
  }
  if (ttl < policy.minTtlMs) {
    throw new StintError(
      "ERR_POLICY_TTL",
      `requested lifetime ${formatDuration(ttl)} is below the policy minimum ${formatDuration(policy.minTtlMs)} (policy.minTtl)`,
    );
  }
  // Whole seconds: certificate times carry no fractions, and notAfter must not exceed what was approved.
  const start = Math.floor((now.getTime() - policy.backdateMs) / 1000) * 1000;
  const end = Math.floor((now.getTime() + ttl) / 1000) * 1000;
  return [new Date(start), new Date(end)];
}

export function checkKeyType(
  policy: IssuancePolicy,
  req: Pick<LeafRequest, "keyAlgorithm" | "keyDescription">,
): KeyAlgorithm {
  if (!req.keyAlgorithm || !policy.keyTypes.includes(req.keyAlgorithm)) {
    throw new StintError(
      "ERR_POLICY_KEY",
      `${req.keyDescription} is not allowed; allowed key types: ${policy.keyTypes.join(", ")} (policy.keyTypes)`,
    );
  }
  return req.keyAlgorithm;
}

export function checkLeafRequest(policy: IssuancePolicy, req: LeafRequest, now: Date): ApprovedLeaf {
  const spiffeId = req.spiffeId === null ? null : parseWorkloadId(req.spiffeId, policy.trustDomain).uri;
  const dnsNames = [...new Set((req.dnsNames ?? []).map(normalizeDnsName))];
  if (spiffeId === null && dnsNames.length === 0) {
    throw new StintError("ERR_POLICY_SPIFFE", "a certificate needs a SPIFFE ID or at least one DNS name");
  }
  for (const name of dnsNames) {
    if (!dnsNameAllowed(name, policy.dnsSuffixes)) {
      const allowed = policy.dnsSuffixes.length
        ? `allowed suffixes: ${policy.dnsSuffixes.join(", ")}`
        : "none allowed";
      throw new StintError(
        "ERR_POLICY_DNS",
        `DNS name "${name}" is outside policy (${allowed}); add its suffix to policy.dnsSuffixes`,
      );
    }
  }
  if (req.ipAddresses && req.ipAddresses.length > 0) {
    throw new StintError(
      "ERR_POLICY_IP",
      "IP address SANs are not issued to workloads; use a DNS name or the SPIFFE ID",
    );
  }
  const keyAlgorithm = checkKeyType(policy, req);
  const [notBefore, notAfter] = validityWindow(policy, req.ttlMs, now);
  return { spiffeId, dnsNames, ipAddresses: [], keyAlgorithm, spki: req.spki, notBefore, notAfter };
}
