import type { AccountRecord, AuthorizationRecord, ChallengeRecord, OrderRecord } from "../ca/store-acme";

/**
 * The ACME resource URLs and JSON shapes (RFC 8555 section 7), in one place
 * so handlers never spell a path or a field twice.
 */

export const ACME_PREFIX = "/acme";

/** A JSON object (not null, not an array): what every ACME payload must be. */
export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

export const PATHS = {
  directory: `${ACME_PREFIX}/directory`,
  newNonce: `${ACME_PREFIX}/new-nonce`,
  newAccount: `${ACME_PREFIX}/new-account`,
  newOrder: `${ACME_PREFIX}/new-order`,
  revokeCert: `${ACME_PREFIX}/revoke-cert`,
  keyChange: `${ACME_PREFIX}/key-change`,
  renewalInfo: `${ACME_PREFIX}/renewal-info`,
  /** Stint extension: renew with the current certificate (docs/acme.md). */
  renewCert: `${ACME_PREFIX}/renew-cert`,
  account: `${ACME_PREFIX}/acct/:id`,
  accountOrders: `${ACME_PREFIX}/acct/:id/orders`,
  order: `${ACME_PREFIX}/order/:id`,
  finalize: `${ACME_PREFIX}/order/:id/finalize`,
  authorization: `${ACME_PREFIX}/authz/:id`,
  challenge: `${ACME_PREFIX}/chall/:authz/:id`,
  certificate: `${ACME_PREFIX}/cert/:serial`,
  renewalInfoItem: `${ACME_PREFIX}/renewal-info/:id`,
} as const;

/** Absolute URLs for one public origin, e.g. https://ca.example:8443. */
export class Urls {
  constructor(readonly origin: string) {}

  path(path: string): string {
    return this.origin + path;
  }
  account(id: string): string {
    return `${this.origin}${ACME_PREFIX}/acct/${id}`;
  }
  /** The account's orders list; `after` (an order id) names the page that follows it. */
  accountOrders(id: string, after?: string): string {
    const page = after === undefined ? "" : `?after=${encodeURIComponent(after)}`;
    return `${this.account(id)}/orders${page}`;
  }
  order(id: string): string {
    return `${this.origin}${ACME_PREFIX}/order/${id}`;
  }
  finalize(id: string): string {
    return `${this.order(id)}/finalize`;
  }
  authorization(id: string): string {
    return `${this.origin}${ACME_PREFIX}/authz/${id}`;
  }
  challenge(authzId: string, id: string): string {
    return `${this.origin}${ACME_PREFIX}/chall/${authzId}/${id}`;
  }
  certificate(serial: string): string {
    return `${this.origin}${ACME_PREFIX}/cert/${serial}`;
  }

  directory(meta: Record<string, unknown>): Record<string, unknown> {
    return {
      newNonce: this.path(PATHS.newNonce),
      newAccount: this.path(PATHS.newAccount),
      newOrder: this.path(PATHS.newOrder),
      revokeCert: this.path(PATHS.revokeCert),
      keyChange: this.path(PATHS.keyChange),
      renewalInfo: this.path(PATHS.renewalInfo),
      renewCert: this.path(PATHS.renewCert),
      meta,
    };
  }
}

/** No "orders" list: like Boulder, Stint does not serve one (docs/acme.md). */
export function accountJson(a: AccountRecord, urls: Urls): Record<string, unknown> {
  return { status: a.status, contact: a.contact, orders: urls.accountOrders(a.id) };
}

export function orderJson(o: OrderRecord, urls: Urls): Record<string, unknown> {
  return {
    status: o.status,
    expires: o.expires.toISOString(),
    identifiers: o.identifiers,
    authorizations: o.authorizationIds.map((id) => urls.authorization(id)),
    finalize: urls.finalize(o.id),
    ...(o.certificateSerial ? { certificate: urls.certificate(o.certificateSerial) } : {}),
    ...(o.replaces ? { replaces: o.replaces } : {}),
    ...(o.error ? { error: o.error } : {}),
  };
}

export function challengeJson(authzId: string, c: ChallengeRecord, urls: Urls): Record<string, unknown> {
  return {
    type: c.type,
    url: urls.challenge(authzId, c.id),
    status: c.status,
    token: c.token,
    ...(c.validated ? { validated: c.validated.toISOString() } : {}),
    ...(c.error ? { error: c.error } : {}),
  };
}

export function authorizationJson(a: AuthorizationRecord, urls: Urls): Record<string, unknown> {
  return {
    status: a.status,
    expires: a.expires.toISOString(),
    identifier: a.identifier,
    challenges: a.challenges.map((c) => challengeJson(a.id, c, urls)),
  };
}
