import { StintError } from "../common/errors";

/**
 * RFC 5280 5.3.1 CRLReason codes a leaf may be revoked with. certificateHold
 * (6) is refused: short-lived certificates are replaced, never suspended; the
 * CA-only reasons (2 cACompromise, 10 aACompromise) belong to issuers.
 */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  privilegeWithdrawn: 9,
} as const;

export type RevocationReasonName = keyof typeof REVOCATION_REASONS;

const BY_CODE = new Map<number, RevocationReasonName>(
  Object.entries(REVOCATION_REASONS).map(([name, code]) => [code, name as RevocationReasonName]),
);

/** A reason given as a name ("keyCompromise") or a code (1). */
export function parseRevocationReason(value: unknown): number {
  if (value === undefined) return REVOCATION_REASONS.unspecified;
  if (typeof value === "number" && BY_CODE.has(value)) return value;
  if (typeof value === "string" && value in REVOCATION_REASONS)
    return REVOCATION_REASONS[value as RevocationReasonName];
  throw new StintError(
    "ERR_BAD_REVOCATION_REASON",
    `revocation reason ${JSON.stringify(value)} is not accepted; use one of ${Object.entries(
      REVOCATION_REASONS,
    )
      .map(([n, c]) => `${n} (${c})`)
      .join(", ")}`,
  );
}

export function revocationReasonName(code: number): string {
  return BY_CODE.get(code) ?? `reason ${code}`;
}
