import { randomBytes } from "node:crypto";
import type { ServerResponse } from "node:http";
import { type ErrorCode, StintError } from "../common/errors";
import type { LogFields, Logger } from "../common/logger";

/**
 * Typed errors become RFC 7807 problem documents here, at the HTTP edge, and
 * nowhere else. Unknown errors become a generic 500 whose body carries only
 * an id; the details go to the log under that id.
 */

const ACME = "urn:ietf:params:acme:error:";

/** HTTP status and ACME problem type for each internal error code; unlisted codes are server errors. */
const TABLE: Partial<Record<ErrorCode, [number, string]>> = {
  ERR_USAGE: [400, "malformed"],
  ERR_DER: [400, "malformed"],
  ERR_PEM: [400, "malformed"],
  ERR_BAD_CSR: [400, "badCSR"],
  ERR_POLICY_KEY: [400, "badPublicKey"],
  ERR_POLICY_TTL: [400, "rejectedIdentifier"],
  ERR_POLICY_DNS: [400, "rejectedIdentifier"],
  ERR_POLICY_IP: [400, "rejectedIdentifier"],
  ERR_POLICY_SPIFFE: [400, "rejectedIdentifier"],
  ERR_NOT_FOUND: [404, "malformed"],
  ERR_STORE_CONFLICT: [409, "malformed"],
  ERR_JOSE: [400, "malformed"],
  ERR_MALFORMED: [400, "malformed"],
  ERR_UNSUPPORTED_MEDIA_TYPE: [415, "malformed"],
  ERR_PAYLOAD_TOO_LARGE: [413, "malformed"],
  ERR_BAD_NONCE: [400, "badNonce"],
  ERR_BAD_SIGNATURE_ALGORITHM: [400, "badSignatureAlgorithm"],
  ERR_BAD_PUBLIC_KEY: [400, "badPublicKey"],
  ERR_UNAUTHORIZED: [403, "unauthorized"],
  ERR_ACCOUNT_DOES_NOT_EXIST: [400, "accountDoesNotExist"],
  ERR_ORDER_NOT_READY: [403, "orderNotReady"],
  ERR_RATE_LIMITED: [429, "rateLimited"],
  ERR_ALREADY_REVOKED: [400, "alreadyRevoked"],
  ERR_BAD_REVOCATION_REASON: [400, "badRevocationReason"],
  ERR_UNSUPPORTED_IDENTIFIER: [400, "unsupportedIdentifier"],
  ERR_REJECTED_IDENTIFIER: [400, "rejectedIdentifier"],
  ERR_INCORRECT_RESPONSE: [403, "incorrectResponse"],
  ERR_CONNECTION: [400, "connection"],
  ERR_ATTESTATION: [403, "unauthorized"],
};

export interface Problem {
  type: string;
  title?: string;
  detail: string;
  status: number;
}

export interface ProblemFor {
  problem: Problem;
  internal: boolean;
  /** For internal errors: the id the response shows and the log line must carry. */
  errorId?: string;
}

export function problemFor(err: unknown): ProblemFor {
  if (err instanceof StintError && TABLE[err.code]) {
    const [status, type] = TABLE[err.code]!;
    return { problem: { type: ACME + type, detail: err.message, status }, internal: false };
  }
  const errorId = randomBytes(6).toString("hex");
  return {
    problem: {
      type: ACME + "serverInternal",
      detail: `internal error; the CA log has details under id ${errorId}`,
      status: 500,
    },
    internal: true,
    errorId,
  };
}

/**
 * Sends the problem for `err`; an internal error is logged here, once, under
 * the id the response shows. `fields` must be secret-free (method, route).
 */
export function sendProblem(res: ServerResponse, err: unknown, log: Logger, fields?: LogFields): void {
  const { problem, errorId } = problemFor(err);
  if (errorId) log.error("request failed", { ...fields, errorId, error: err });
  sendJson(res, problem.status, problem, "application/problem+json");
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  type = "application/json",
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export function notFound(path: string): StintError {
  return new StintError("ERR_NOT_FOUND", `no resource at ${path.slice(0, 200)}`);
}
