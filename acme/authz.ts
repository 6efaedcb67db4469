import { randomBytes } from "node:crypto";
import { entryHash, findAuthorizingEntry } from "../ca/entries";
import type { AuditEvent } from "../ca/store";
import type {
  AccountRecord,
  AttestationRecord,
  AuthorizationRecord,
  ChallengeRecord,
  JoinTokenSpend,
} from "../ca/store-acme";
import { isStintError, StintError } from "../common/errors";
import type { AcmeContext } from "./context";
import { fetchKeyAuthorization } from "./http01";
import { problemFor } from "./problem";
import type { Handler } from "./router";
import { authorizationJson, challengeJson, isObject } from "./wire";

/**
 * Authorizations and their challenges (RFC 8555 7.5): reading and
 * deactivating an authorization, and answering its challenge.
 *
 * attest-01 (spiffe identifiers) is validated while the client waits: the
 * evidence is in the request, so there is nothing to fetch. http-01 (dns
 * identifiers) is validated in the background and the client polls. In the
 * hostile test mode (acme.test.validationDelay) both wait first, so clients
 * must cope with "processing".
 */

async function ownAuthorization(
  ctx: AcmeContext,
  account: AccountRecord,
  id: string,
): Promise<AuthorizationRecord> {
  const authz = await ctx.store.getAuthorization(id);
  if (!authz || authz.accountId !== account.id)
    throw new StintError("ERR_NOT_FOUND", `no authorization ${id} for this account`);
  if (authz.status === "pending" && authz.expires.getTime() <= Date.now())
    return casAuthorization(ctx, authz, { status: "expired" });
  return authz;
}

/** Compare-and-set from the status `authz` was read with; when another request moved it first, returns what that wrote. */
async function casAuthorization(
  ctx: AcmeContext,
  authz: AuthorizationRecord,
  patch: Partial<Pick<AuthorizationRecord, "status" | "challenges" | "entryId" | "selectors">>,
): Promise<AuthorizationRecord> {
  try {
    return await ctx.store.updateAuthorization(authz.id, authz.status, patch);
  } catch (err) {
    if (!isStintError(err, "ERR_STORE_CONFLICT")) throw err;
    return (await ctx.store.getAuthorization(authz.id)) ?? authz;
  }
}

const processing = (authz: AuthorizationRecord) => authz.challenges.some((c) => c.status === "processing");

export function getAuthorization(ctx: AcmeContext): Handler {
  return async (req, res, url, params) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      const account = await ctx.account(vr);
      let authz = await ownAuthorization(ctx, account, params.id);
      if (isObject(vr.payload) && vr.payload.status !== undefined) {
        if (vr.payload.status !== "deactivated")
          throw new StintError(
            "ERR_MALFORMED",
            'an authorization\'s status may only be set to "deactivated"',
          );
        if (authz.status !== "pending" && authz.status !== "valid") {
          throw new StintError(
            "ERR_MALFORMED",
            `authorization is ${authz.status}; only pending or valid ones can be deactivated`,
          );
        }
        authz = await ctx.store.updateAuthorization(authz.id, authz.status, { status: "deactivated" });
      }
      ctx.reply(
        res,
        200,
        authorizationJson(authz, ctx.urls),
        processing(authz) ? { "retry-after": "1" } : {},
      );
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

export function respondChallenge(ctx: AcmeContext): Handler {
  return async (req, res, url, params) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      const account = await ctx.account(vr);
      const authz = await ownAuthorization(ctx, account, params.authz);
      const challenge = authz.challenges.find((c) => c.id === params.id);
      if (!challenge)
        throw new StintError("ERR_NOT_FOUND", `authorization ${authz.id} has no challenge ${params.id}`);
      const up = {
        link: [
          `<${ctx.urls.path("/acme/directory")}>;rel="index"`,
          `<${ctx.urls.authorization(authz.id)}>;rel="up"`,
        ],
      };
      // POST-as-GET, or a repeated answer to a challenge already under way or done: report its state.
      if (vr.payload === null || authz.status !== "pending" || challenge.status !== "pending") {
        ctx.reply(res, 200, challengeJson(authz.id, challenge, ctx.urls), up);
        return;
      }
      if (!isObject(vr.payload))
        throw new StintError("ERR_MALFORMED", "a challenge response must be a JSON object");
      const validate = prepareValidation(ctx, account, authz, challenge, vr.payload);
      const delay = ctx.deps.options.validationDelayMs;
      if (challenge.type === "attest-01" && delay === 0) {
        const done = await validate(true);
        const answered = done.challenges.find((c) => c.id === challenge.id) ?? challenge;
        ctx.reply(res, 200, challengeJson(authz.id, answered, ctx.urls), up);
        return;
      }
      const started = await ctx.store.updateAuthorization(authz.id, "pending", {
        challenges: authz.challenges.map((c) => (c.id === challenge.id ? { ...c, status: "processing" } : c)),
      });
      setTimeout(() => {
        validate(false).catch((err) =>
          ctx.deps.log.error("challenge validation failed", { authorizationId: authz.id, error: err }),
        );
      }, delay).unref();
      const answered = started.challenges.find((c) => c.id === challenge.id) ?? challenge;
      ctx.reply(res, 200, challengeJson(authz.id, answered, ctx.urls), { ...up, "retry-after": "1" });
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/** What a passed check makes of the authorization: an attestation to record, or (http-01) nothing more. */
type Passed = { attested: AttestedRecord } | { attested: null };

interface AttestedRecord {
  record: AttestationRecord;
  audit: AuditEvent;
  /** A join token, spent in the transaction that records the attestation. */
  token?: JoinTokenSpend;
}

/**
 * Checks the response's shape now and returns the validation to run, which
 * records its outcome on the authorization and returns it. While the client
 * waits, malformed evidence is refused with the challenge left pending, so a
 * client bug costs one request, not the authorization.
 */
function prepareValidation(
  ctx: AcmeContext,
  account: AccountRecord,
  authz: AuthorizationRecord,
  challenge: ChallengeRecord,
  payload: Record<string, unknown>,
): (clientWaits: boolean) => Promise<AuthorizationRecord> {
  const attempt =
    challenge.type === "attest-01" ? attestation(ctx, account, authz, challenge, payload) : null;
  const check: () => Promise<Passed> = attempt
    ? async () => ({ attested: await attempt.run() })
    : http01(ctx, account, authz, challenge);
  return async (clientWaits) => {
    // While the client waits, `authz` was read for this request a moment ago; after a delay, read it again.
    const current = clientWaits ? authz : ((await ctx.store.getAuthorization(authz.id)) ?? authz);
    const mark = (status: ChallengeRecord["status"], error: ChallengeRecord["error"]) =>
      current.challenges.map((c) =>
        c.id === challenge.id
          ? { ...c, status, error, validated: status === "valid" ? new Date() : null }
          : c,
      );
    try {
      const passed = await check();
      if (passed.attested === null) {
        return await casAuthorization(ctx, current, { status: "valid", challenges: mark("valid", null) });
      }
      // A token used meanwhile by another authorization fails here, as a refusal below, with nothing written.
      return await record(passed.attested, current.status, mark("valid", null));
    } catch (err) {
      // Only refusals become the challenge's error; a fault of ours stays a 500 and leaves the challenge to retry.
      if (!(err instanceof StintError) || problemFor(err).internal) throw err;
      if (clientWaits && err.code === "ERR_MALFORMED") {
        attempt?.log("attestation malformed; challenge left pending", err);
        throw err;
      }
      const { problem } = problemFor(err);
      if (attempt) {
        // The refusal is recorded before the challenge is marked, so no outcome goes unaudited.
        await ctx.store.appendAudit(attempt.refused(problem.detail));
        attempt.log("attestation refused", err);
      } else {
        ctx.deps.log.info("challenge refused", {
          accountId: account.id,
          authorizationId: authz.id,
          type: challenge.type,
          problem: problem.type,
          detail: problem.detail,
        });
      }
      return casAuthorization(ctx, current, {
        status: "invalid",
        challenges: mark("invalid", { ...problem }),
      });
    }
  };

  async function record(
    attested: AttestedRecord,
    expect: AuthorizationRecord["status"],
    challenges: ChallengeRecord[],
  ): Promise<AuthorizationRecord> {
    try {
      const valid = await ctx.store.recordAttestation(
        attested.record,
        expect,
        challenges,
        attested.audit,
        attested.token,
      );
      attempt?.log("attestation accepted", null, attested.record);
      return valid;
    } catch (err) {
      if (!isStintError(err, "ERR_STORE_CONFLICT")) throw err;
      return (await ctx.store.getAuthorization(authz.id)) ?? authz;
    }
  }
}

/**
 * An attest-01 answer: checks its shape now, and returns the attestation to
 * run with what its audit records and log lines say. Only references to the
 * evidence (a token's id, a fingerprint) are ever recorded, never the evidence.
 */
function attestation(
  ctx: AcmeContext,
  account: AccountRecord,
  authz: AuthorizationRecord,
  challenge: ChallengeRecord,
  payload: Record<string, unknown>,
) {
  const keys = Object.keys(payload);
  if (keys.length !== 2 || !keys.includes("attestor") || !keys.includes("evidence")) {
    throw new StintError(
      "ERR_MALFORMED",
      'an attest-01 response is {"attestor": NAME, "evidence": {...}} and nothing else',
    );
  }
  const attestor = ctx.deps.attestor(payload.attestor);
  const spiffeId = authz.identifier.value;
  const accountUrl = ctx.urls.account(account.id);
  let reference: string | null = null;
  let proven: string[] = [];
  const event = (action: string, at: Date, details: Record<string, unknown>): AuditEvent => ({
    at,
    actor: accountUrl,
    action,
    subject: spiffeId,
    details: { method: attestor.name, authorizationId: authz.id, ...details },
  });
  return {
    run: async (): Promise<AttestedRecord> => {
      const now = new Date();
      const attested = await attestor.attest(payload.evidence, {
        spiffeId,
        token: challenge.token,
        accountThumbprint: account.thumbprint,
        account: accountUrl,
        now,
        reference: (r) => {
          reference = r;
        },
      });
      proven = attested.selectors;
      reference = attested.evidence;
      const entry = findAuthorizingEntry(await ctx.store.listEntries({ spiffeId }), spiffeId, proven);
      if (!entry) {
        throw new StintError(
          "ERR_UNAUTHORIZED",
          `no registration entry for ${spiffeId} has all its selectors among those ${attestor.name} proved (${proven.join(", ") || "none"}); an administrator creates entries with \`stint entry create\``,
        );
      }
      const record: AttestationRecord = {
        id: randomBytes(12).toString("base64url"),
        at: now,
        accountId: account.id,
        authorizationId: authz.id,
        method: attestor.name,
        spiffeId,
        selectors: proven,
        evidence: attested.evidence,
        entryId: entry.id,
        entrySelectors: entry.selectors,
        entryHash: entryHash(entry),
      };
      const { id, entryId, entryHash: hash, selectors, evidence } = record;
      return {
        record,
        audit: event("attest.ok", now, { attestationId: id, entryId, entryHash: hash, selectors, evidence }),
        ...(attested.spend && {
          token: { hash: attested.spend.hash, now, spend: attested.spend.audit },
        }),
      };
    },
    /** The attest.refused record: what was proven before the refusal, and the evidence's reference if known. */
    refused: (reason: string): AuditEvent =>
      event("attest.refused", new Date(), {
        selectors: proven,
        ...(reference === null ? {} : { evidence: reference }),
        reason,
      }),
    /** One info line per outcome, with account, method and SPIFFE ID (and ids, never evidence). */
    log: (msg: string, err: StintError | null, record?: AttestationRecord) =>
      ctx.deps.log.info(msg, {
        accountId: account.id,
        method: attestor.name,
        spiffeId,
        authorizationId: authz.id,
        ...(reference === null ? {} : { reference }),
        ...(record ? { attestationId: record.id, entryId: record.entryId } : {}),
        ...(err ? { code: err.code, detail: err.message } : {}),
      }),
  };
}

function http01(
  ctx: AcmeContext,
  account: AccountRecord,
  authz: AuthorizationRecord,
  challenge: ChallengeRecord,
): () => Promise<Passed> {
  const { port, resolveTo, timeoutMs } = ctx.deps.options.http01;
  return async () => {
    const expected = `${challenge.token}.${account.thumbprint}`;
    const body = await fetchKeyAuthorization({
      domain: authz.identifier.value,
      token: challenge.token,
      port,
      resolveTo,
      timeoutMs,
    });
    if (body.trim() !== expected) {
      throw new StintError(
        "ERR_INCORRECT_RESPONSE",
        `the key authorization served for ${authz.identifier.value} does not match this challenge and account key`,
      );
    }
    return { attested: null };
  };
}
