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

/** What this attestor needs from storage; the store implements it (AcmeStateStore.consumeJoinToken). */
export interface JoinTokenLedger {
  /**
   * Atomically marks the token with this hash used and, in the same
   * transaction, appends `spend(token)` to the audit log; or says why it
   * could not ("expired", "used"), or null for an unknown hash. Of two
   * concurrent calls with the same hash, at most one gets outcome "taken".
   */
  consume(
    hash: string,
    now: Date,
    spend: (token: { id: string; spiffeId: string }) => AuditEvent,
  ): Promise<JoinTokenUse | null>;
}

export class JoinTokenAttestor implements Attestor {
  readonly name = "join_token";

  constructor(private readonly ledger: JoinTokenLedger) {}

  async attest(evidence: unknown, ctx: AttestationContext): Promise<Attestation> {
    const { token } = evidenceMembers(evidence, this.name, ["token"]);
    if (!looksLikeJoinTokenSecret(token)) {
      throw new StintError(
        "ERR_MALFORMED",
        "join_token evidence token is not a join token (43 base64url characters, as `stint token create` prints)",
      );
    }
    // Consumed before the SPIFFE ID check: a token shown with a request for another
    // identity is spent, since whoever presented it may not be who it was meant for.
    const use = await this.ledger.consume(hashJoinToken(token), ctx.now, (t) => spendRecord(t, ctx));
    if (use === null) {
      throw new StintError(
        "ERR_ATTESTATION",
        "join token is not known to this CA (mistyped, or created elsewhere)",
      );
    }
    const reference = `join_token:${use.id}`;
    ctx.reference?.(reference);
    if (use.outcome === "expired") {
      throw new StintError("ERR_ATTESTATION", "join token has expired; ask an administrator for a new one");
    }
    if (use.outcome === "used") {
      throw new StintError("ERR_ATTESTATION", "join token has already been used; join tokens work only once");
    }
    if (use.spiffeId !== ctx.spiffeId) {
      throw new StintError(
        "ERR_ATTESTATION",
        `join token ${use.id} was created for ${use.spiffeId}, not for ${ctx.spiffeId}; it is now spent`,
      );
    }
    return {
      selectors: grantedSelectors(this.name, [`join_token:${use.id}`]),
      reusable: false,
      evidence: reference,
    };
  }
}

/** The `token.spend` audit record: who spent which token, and whether it was for its own SPIFFE ID. */
function spendRecord(token: { id: string; spiffeId: string }, ctx: AttestationContext): AuditEvent {
  const own = token.spiffeId === ctx.spiffeId;
  return {
    at: ctx.now,
    actor: ctx.account,
    action: "token.spend",
    subject: token.id,
    details: own
      ? { spiffeId: token.spiffeId, outcome: "accepted" }
      : {
          spiffeId: token.spiffeId,
          outcome: "refused",
          requested: ctx.spiffeId,
          reason: "created for another SPIFFE ID",
        },
  };
}
