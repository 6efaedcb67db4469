import { entryHash, entryRefusal } from "../ca/entries";
import type { CertificateBinding } from "../ca/store";
import type { AttestationRecord, EntryRecord } from "../ca/store-acme";
import { StintError } from "../common/errors";
import type { AcmeContext } from "./context";

/**
 * What a certificate is issued under: the registration entry an attestation
 * matched, as it is now. Finalize and renew-cert both go through here, so the
 * same rules hold for the first certificate and every renewal: the entry must
 * still exist with the selectors the attestation matched, list the DNS names,
 * and its TTL applies. The store re-checks the entry in the transaction that
 * records the certificate (CertificateBinding.entryHash).
 */
export interface EntryGrant {
  entry: EntryRecord;
  /** For Authority.issue: the binding to record, and what the audit record adds. */
  bound: { binding: CertificateBinding; details: Record<string, unknown> };
}

/**
 * The grant for a certificate with `dnsNames` (those it holds through the
 * entry) under `attestation`; `renews` is the certificate renewed without a
 * new attestation. ERR_UNAUTHORIZED says why not.
 */
export async function entryGrant(
  ctx: AcmeContext,
  attestation: AttestationRecord,
  dnsNames: readonly string[],
  renews: string | null,
): Promise<EntryGrant> {
  const entry = await ctx.store.getEntry(attestation.entryId);
  const refusal = entryRefusal(entry, attestation, dnsNames);
  if (refusal !== null || entry === null) throw new StintError("ERR_UNAUTHORIZED", refusal ?? "");
  const binding: CertificateBinding = {
    entryId: entry.id,
    entryHash: entryHash(entry),
    attestationId: attestation.id,
    renews,
    requestedBy: null,
  };
  return {
    entry,
    bound: { binding, details: { method: attestation.method, evidence: attestation.evidence } },
  };
}
