import { selectorProblem } from "../../ca/entries";
import type { AuditEvent } from "../../ca/store";
import { StintError } from "../../common/errors";

/**
 * The one interface every attestor implements (step-ca's provisioners in
 * spirit): it examines evidence and returns the selectors it proved, never a
 * boolean. Deny by default: a selector is produced only for a fact the
 * evidence proves; everything else is refused with ERR_ATTESTATION.
 */

export interface AttestationContext {
  /** The identifier being authorized. */
  spiffeId: string;
  /** The ACME challenge token (x509pop signs it). */
  token: string;
  /** RFC 7638 thumbprint of the ACME account key. */
  accountThumbprint: string;
  /** The ACME account's URL: the actor of the audit records an attestor writes (join_token's spend). */
  account: string;
  now: Date;
  /**
   * Told a non-secret reference to the evidence as soon as the attestor knows
   * one that is not the presenter's say-so (a join token's id once looked up, a
   * certificate's fingerprint), so a refusal's audit record can name it too.
   */
  reference?: (evidence: string) => void;
}

export interface Attestation {
  /** Deny by default: only what was proven. */
  selectors: string[];
  /** Whether this evidence kind can prove identity again later (k8s_sat, x509pop) or was one-time (join_token). */
  reusable: boolean;
  /**
   * What the audit log names as the evidence: a reference that identifies it
   * and proves nothing (the join token's id, the service account, the
   * certificate's fingerprint), never a token, a JWT or a signature.
   */
  evidence: string;
  /**
   * A one-time secret (join_token's hash) to spend in the transaction that
   * makes the authorization valid, with its `token.spend` audit record: the
   * secret is spent with what it bought, or not at all.
   */
  spend?: { hash: string; audit: (token: { id: string; spiffeId: string }) => AuditEvent };
}

export interface Attestor {
  readonly name: string;
  attest(evidence: unknown, ctx: AttestationContext): Promise<Attestation>;
}

/** A lookup from the `attestor` member of an attest-01 response to the configured attestor. */
export function attestorRegistry(list: readonly Attestor[]): (name: unknown) => Attestor {
  const byName = new Map<string, Attestor>();
  for (const attestor of list) {
    if (byName.has(attestor.name)) {
      throw new StintError("ERR_CONFIG", `attestor "${attestor.name}" is configured twice`);
    }
    byName.set(attestor.name, attestor);
  }
  const configured = byName.size > 0 ? [...byName.keys()].join(", ") : "none";
  return (name) => {
    const found = typeof name === "string" ? byName.get(name) : undefined;
    if (found) return found;
    const shown = typeof name === "string" ? JSON.stringify(name.slice(0, 40)) : typeof name;
    throw new StintError(
      "ERR_MALFORMED",
      `attestor ${shown} is not configured on this CA; configured attestors: ${configured}`,
    );
  };
}

/**
 * The members of an evidence object, which must be a JSON object with exactly
 * `members` (unknown members are refused: evidence is security input, and a
 * misspelt member should not be silently ignored).
 */
export function evidenceMembers<K extends string>(
  evidence: unknown,
  attestor: string,
  members: readonly K[],
): Record<K, unknown> {
  const shape = `{${members.map((m) => `"${m}": …`).join(", ")}}`;
  if (typeof evidence !== "object" || evidence === null || Array.isArray(evidence)) {
    throw new StintError("ERR_MALFORMED", `${attestor} evidence must be a JSON object ${shape}`);
  }
  const record = evidence as Record<string, unknown>;
  const extra = Object.keys(record).filter((k) => !(members as readonly string[]).includes(k));
  const missing = members.filter((m) => !Object.hasOwn(record, m));
  if (extra.length > 0 || missing.length > 0) {
    throw new StintError(
      "ERR_MALFORMED",
      `${attestor} evidence must have exactly the members ${shape}` +
        (missing.length > 0 ? `; missing: ${missing.join(", ")}` : "") +
        (extra.length > 0
          ? `; unexpected: ${extra.map((k) => JSON.stringify(k.slice(0, 40))).join(", ")}`
          : ""),
    );
  }
  return record as Record<K, unknown>;
}

/** Checks the selectors an attestor is about to grant against the one selector syntax (ca/entries.ts). */
export function grantedSelectors(attestor: string, selectors: readonly string[]): string[] {
  for (const s of selectors) {
    const problem = selectorProblem(s);
    if (problem) {
      throw new StintError(
        "ERR_ATTESTATION",
        `${attestor}: evidence names something Stint cannot use as a selector: ${problem}`,
      );
    }
  }
  return [...new Set(selectors)];
}
