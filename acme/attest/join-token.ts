import { hashJoinToken, looksLikeJoinTokenSecret } from "../../ca/join-token";
import type { AuditEvent } from "../../ca/store";
import type { JoinTokenUse } from "../../ca/store-acme";
import { StintError } from "../../common/errors";
import {
  type Attestation,
  type AttestationContext,
  type Attestor,
  evidenceMembers,
  grantedSelectors,
} from "./attestor";

/**
 * join_token: a one-time secret an administrator created for one SPIFFE ID.
 * Evidence `{"token": "<secret>"}`; selector `join_token:<id>`. Messages never
 * carry the secret (nor its hash, which identifies it).
 */

/** What this attestor needs from storage; the store implements it (AcmeStateStore.findJoinToken). */
export interface JoinTokenLedger {
  /** The token with this hash as of `now`, not taken: taking it is recordAttestation's, with the authorization. */
  find(hash: string, now: Date): Promise<JoinTokenUse | null>;
}

export class JoinTokenAttestor implements Attestor {
  readonly name = "join_token";

  constructor(private readonly ledger: JoinTokenLedger) {}

  async attest(evidence: unknown, ctx: AttestationContext): Promise<Attestation> {
    const { token } = evidenceMembers(evidence, this.name, ["token"]);
    if (!looksLikeJoinTokenSecret(token)) {
      throw new StintError(
        "ERR_MALFORMED",
        "join_token evidence token is not a join token (as `stint token create` prints it)",
      );
    }
    const hash = hashJoinToken(token);
    const found = await this.ledger.find(hash, ctx.now);
    if (found === null) {
      throw new StintError(
        "ERR_ATTESTATION",
        "join token is not known to this CA (mistyped, or created elsewhere)",
      );
    }
    const reference = `join_token:${found.id}`;
    ctx.reference?.(reference);
    if (found.outcome === "expired") {
      throw new StintError("ERR_ATTESTATION", "join token has expired; ask an administrator for a new one");
    }
    if (found.outcome === "used") {
      throw new StintError("ERR_ATTESTATION", "join token has already been used; join tokens work only once");
    }
    // Refused before anything is spent: a typo in the SPIFFE ID must not cost the token.
    if (found.spiffeId !== ctx.spiffeId) {
      throw new StintError(
        "ERR_ATTESTATION",
        `join token ${found.id} was created for ${found.spiffeId}, not for ${ctx.spiffeId}; it was not spent`,
      );
    }
    return {
      selectors: grantedSelectors(this.name, [`join_token:${found.id}`]),
      reusable: false,
      evidence: reference,
      spend: { hash, audit: (t) => spendRecord(t, ctx) },
    };
  }
}

/** The `token.spend` audit record: who spent which token, for its own SPIFFE ID. */
function spendRecord(token: { id: string; spiffeId: string }, ctx: AttestationContext): AuditEvent {
  return {
    at: ctx.now,
    actor: ctx.account,
    action: "token.spend",
    subject: token.id,
    details: { spiffeId: token.spiffeId, outcome: "accepted" },
  };
}
