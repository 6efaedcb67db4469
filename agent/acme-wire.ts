import { StintError } from "../common/errors";

/**
 * What the ACME client reads off the wire: the resource shapes it hands to
 * callers, the problem error, and the checks that turn a response body into
 * one of those shapes.
 */

const ACME_ERROR = "urn:ietf:params:acme:error:";

export type IdentifierType = "spiffe" | "dns";
export interface Identifier {
  type: IdentifierType;
  value: string;
}

/** An RFC 7807 problem document as ACME servers send them (RFC 8555 6.7). */
export interface ProblemDocument {
  type: string;
  detail?: string;
  status?: number;
  identifier?: Identifier;
  subproblems?: ProblemDocument[];
}

export interface AcmeDirectory {
  newNonce: string;
  newAccount: string;
  newOrder: string;
  revokeCert?: string;
  keyChange?: string;
  renewalInfo?: string;
  /** Stint extension: renew with the current certificate. */
  renewCert?: string;
  meta?: Record<string, unknown>;
}

export interface Account {
  url: string;
  status: "valid" | "deactivated" | "revoked";
  contact?: string[];
  orders?: string;
}

export interface Order {
  url: string;
  status: "pending" | "ready" | "processing" | "valid" | "invalid";
  expires?: string;
  identifiers: Identifier[];
  authorizations: string[];
  finalize: string;
  certificate?: string;
  replaces?: string;
  error?: ProblemDocument;
}

export interface Challenge {
  type: string;
  url: string;
  status: "pending" | "processing" | "valid" | "invalid";
  token: string;
  validated?: string;
  error?: ProblemDocument;
}

export interface Authorization {
  url: string;
  status: "pending" | "valid" | "invalid" | "deactivated" | "expired" | "revoked";
  identifier: Identifier;
  expires?: string;
  challenges: Challenge[];
}

export interface RenewalInfo {
  start: Date;
  end: Date;
  retryAfterSeconds: number;
  explanationUrl?: string;
}

/** A non-2xx answer from the server. Messages carry the server's words only, never our keys or evidence. */
export class AcmeProblem extends Error {
  readonly type: string;
  readonly detail: string;
  /** HTTP status; for a problem embedded in a challenge or order, its own status member, else 0. */
  readonly status: number;
  readonly subproblems: ProblemDocument[];
  readonly identifier?: Identifier;
  /** Seconds, from Retry-After. */
  readonly retryAfter?: number;
  readonly url?: string;

  constructor(doc: ProblemDocument, status: number, extra: { retryAfter?: number; url?: string } = {}) {
    const detail = doc.detail ?? "";
    super(`${doc.type}: ${detail}`);
    this.name = "AcmeProblem";
    this.type = doc.type;
    this.detail = detail;
    this.status = status;
    this.subproblems = doc.subproblems ?? [];
    this.identifier = doc.identifier;
    this.retryAfter = extra.retryAfter;
    this.url = extra.url;
  }

  /** Whether this is the ACME error `name` ("badNonce") or exactly the type URI given. */
  is(name: string): boolean {
    return this.type === name || this.type === ACME_ERROR + name;
  }
}

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The problem of an order that ended outside the statuses waited for. */
export function orderProblem(order: Order): AcmeProblem {
  const doc = order.error ?? { type: "about:blank", detail: `order is ${order.status}` };
  const type = typeof doc.type === "string" ? doc.type : "about:blank";
  return new AcmeProblem({ ...doc, type }, order.error?.status ?? 0, { url: order.url });
}

// ---------- response shapes: checked just enough that callers never meet undefined ----------

function shape(body: unknown, url: string, what: string, fields: Record<string, "string" | "array">) {
  const ok =
    isObject(body) &&
    Object.entries(fields).every(([k, t]) => (t === "array" ? Array.isArray(body[k]) : typeof body[k] === t));
  if (!ok) throw new StintError("ERR_MALFORMED", `${url}: the server's ${what} is malformed`);
  return body as Record<string, unknown>;
}

export function asAccount(body: unknown, url: string): Account {
  return { ...shape(body, url, "account", { status: "string" }), url } as unknown as Account;
}

export function asOrder(body: unknown, url: string): Order {
  const fields = {
    status: "string",
    identifiers: "array",
    authorizations: "array",
    finalize: "string",
  } as const;
  return { ...shape(body, url, "order", fields), url } as unknown as Order;
}

export function asAuthorization(body: unknown, url: string): Authorization {
  const b = shape(body, url, "authorization", { status: "string", challenges: "array" });
  if (!isObject(b.identifier))
    throw new StintError("ERR_MALFORMED", `${url}: the authorization has no identifier`);
  for (const c of b.challenges as unknown[]) shape(c, url, "challenge", { type: "string", url: "string" });
  return { ...b, url } as unknown as Authorization;
}

export function asChallenge(body: unknown, url: string): Challenge {
  return shape(body, url, "challenge", { type: "string", status: "string" }) as unknown as Challenge;
}
