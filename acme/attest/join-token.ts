import { hashJoinToken, looksLikeJoinTokenSecret } from "../../ca/join-token";
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

/** What this attestor needs from storage; the store implements it. */
export interface JoinTokenLedger {
  /**
   * Atomically marks the token with this hash used and returns it, or says why
   * not: "expired", "used" (already consumed), null (unknown). Of two
   * concurrent calls with the same hash, at most one may return the token.
   */
  consume(hash: string, now: Date): Promise<{ id: string; spiffeId: string } | "expired" | "used" | null>;
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
    const result = await this.ledger.consume(hashJoinToken(token), ctx.now);
    if (result === null) {
      throw new StintError(
        "ERR_ATTESTATION",
        "join token is not known to this CA (mistyped, or created elsewhere)",
      );
    }
    if (result === "expired") {
      throw new StintError("ERR_ATTESTATION", "join token has expired; ask an administrator for a new one");
    }
    if (result === "used") {
      throw new StintError("ERR_ATTESTATION", "join token has already been used; join tokens work only once");
    }
    if (result.spiffeId !== ctx.spiffeId) {
      throw new StintError(
        "ERR_ATTESTATION",
        `join token ${result.id} was created for ${result.spiffeId}, not for ${ctx.spiffeId}; it is now spent`,
      );
    }
    return { selectors: grantedSelectors(this.name, [`join_token:${result.id}`]), reusable: false };
  }
}
