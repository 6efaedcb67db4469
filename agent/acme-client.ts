import type { KeyObject } from "node:crypto";
import type { Agent } from "node:https";
import { StintError } from "../common/errors";
import { certIdOf, formatCertId } from "../formats/ari";
import { b64u, exportJwk, flattenedJws, type Jwk, jwkThumbprint } from "../formats/jose";
import { AcmeTransport, pollDelayMs, type Signer, usableKey } from "./acme-transport";
import {
  type Account,
  type AcmeDirectory,
  AcmeProblem,
  type Authorization,
  asAccount,
  asAuthorization,
  asChallenge,
  asOrder,
  type Challenge,
  type Identifier,
  isObject,
  type Order,
  orderProblem,
  type RenewalInfo,
} from "./acme-wire";

export { joinTokenEvidence, k8sSatEvidence, x509popEvidence } from "./acme-evidence";
export { parseRetryAfter, pollDelayMs } from "./acme-transport";
export {
  type Account,
  type AcmeDirectory,
  AcmeProblem,
  type Authorization,
  type Challenge,
  type Identifier,
  type IdentifierType,
  type Order,
  type ProblemDocument,
  type RenewalInfo,
} from "./acme-wire";

/**
 * A small ACME (RFC 8555) client for Stint's server and its extensions
 * (attest-01, renewal with the current certificate, ARI), shared by the
 * agent, the end-to-end tests and the load generator. node:https with a
 * keep-alive agent, so callers control trust and connection reuse.
 * acme-transport.ts does the HTTP and JWS work; acme-wire.ts holds the shapes.
 */

export interface WaitOptions {
  timeoutMs: number;
  /** Cap on one wait between polls, whatever Retry-After says; default 10 s. */
  maxIntervalMs?: number;
}

export interface AcmeClientOptions {
  directoryUrl: string;
  /** PEM trust anchors for the server's TLS certificate; undefined means the system store. */
  ca?: string | Buffer | Array<string | Buffer>;
  accountKey: KeyObject;
  /** An account URL known from earlier, so no newAccount round trip is needed. */
  accountUrl?: string;
  /** Used as given (and not closed by close()); otherwise the client makes a keep-alive agent. */
  agent?: Agent;
  badNonceRetries?: number;
  userAgent?: string;
  /** Per HTTP request, until the response has fully arrived; default 30 s. */
  requestTimeoutMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Answers one challenge for obtainCertificate (attest for attest-01; serve the
 * key authorization, then respondChallenge, for http-01). Returning the
 * answered challenge lets a synchronous verdict skip polling.
 */
export type Authorize = (authz: Authorization, challenge: Challenge) => Promise<Challenge | unknown>;

/** The certificate downloaded by obtainCertificate, and the order that led to it. */
export interface ObtainedCertificate {
  pem: string;
  order: Order;
}

const sleepReal = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class AcmeClient {
  readonly directory: AcmeDirectory;
  private accountKey: KeyObject;
  private accountJwk: Jwk;
  private accountThumbprint: string;
  private kid: string | undefined;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  private constructor(
    opts: AcmeClientOptions,
    private readonly transport: AcmeTransport,
    directory: AcmeDirectory,
  ) {
    this.accountKey = opts.accountKey;
    this.accountJwk = exportJwk(opts.accountKey);
    this.accountThumbprint = jwkThumbprint(opts.accountKey);
    this.kid = opts.accountUrl;
    this.now = opts.now ?? Date.now;
    this.sleep = opts.sleep ?? sleepReal;
    this.directory = directory;
  }

  /** Fetches the directory and returns a client ready for newAccount (or with accountUrl, for anything). */
  static async connect(opts: AcmeClientOptions): Promise<AcmeClient> {
    usableKey(opts.accountKey, "the ACME account key");
    if (!opts.directoryUrl.startsWith("https://"))
      throw new StintError("ERR_USAGE", `the ACME directory URL must be https:// (got ${opts.directoryUrl})`);
    const directory: AcmeDirectory = { newNonce: "", newAccount: "", newOrder: "" };
    const transport = new AcmeTransport(opts, directory);
    const client = new AcmeClient(opts, transport, directory);
    try {
      const dir = transport.json(await transport.get(opts.directoryUrl), opts.directoryUrl);
      for (const k of ["newNonce", "newAccount", "newOrder"] as const) {
        if (!isObject(dir) || typeof dir[k] !== "string")
          throw new StintError("ERR_MALFORMED", `ACME directory ${opts.directoryUrl} has no "${k}" URL`);
      }
      // Filled in place: the transport reads newNonce from this same object.
      Object.assign(directory, dir);
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** Closes idle keep-alive connections of the client's own agent. */
  close(): void {
    this.transport.close();
  }

  /** RFC 7638 thumbprint of the current account key. */
  get thumbprint(): string {
    return this.accountThumbprint;
  }

  get accountUrl(): string | undefined {
    return this.kid;
  }

  /** http-01 key authorization (RFC 8555 8.1). */
  keyAuthorization(token: string): string {
    return `${token}.${this.accountThumbprint}`;
  }

  // ---------- accounts ----------

  async newAccount(opts: { contact?: string[]; onlyReturnExisting?: boolean } = {}): Promise<Account> {
    const payload = {
      termsOfServiceAgreed: true,
      ...(opts.contact ? { contact: opts.contact } : {}),
      ...(opts.onlyReturnExisting ? { onlyReturnExisting: true } : {}),
    };
    const url = this.directory.newAccount;
    const res = await this.transport.post(url, payload, {
      key: this.accountKey,
      header: { jwk: this.accountJwk },
    });
    this.kid = this.transport.location(res, url);
    return asAccount(this.transport.json(res, url), this.kid);
  }

  async account(): Promise<Account> {
    const url = this.requireKid();
    return asAccount(await this.postJson(url, null), url);
  }

  async deactivateAccount(): Promise<Account> {
    const url = this.requireKid();
    return asAccount(await this.postJson(url, { status: "deactivated" }), url);
  }

  /** RFC 8555 7.3.5: the new key signs {account, oldKey} inside the old key's request; then the client uses it. */
  async keyChange(newKey: KeyObject): Promise<Account> {
    usableKey(newKey, "the new account key");
    const url = this.requireUrl("keyChange");
    const account = this.requireKid();
    const newJwk = exportJwk(newKey);
    const inner = flattenedJws(newKey, { jwk: newJwk, url }, { account, oldKey: this.accountJwk });
    const body = await this.postJson(url, inner);
    this.accountKey = newKey;
    this.accountJwk = newJwk;
    this.accountThumbprint = jwkThumbprint(newKey);
    return asAccount(body, account);
  }

  /** Every order URL in the account's orders list (RFC 8555 7.1.2.1), following rel="next" pages. */
  async listOrders(): Promise<string[]> {
    const account = await this.account();
    if (!account.orders) throw new StintError("ERR_MALFORMED", `account ${account.url} has no orders URL`);
    const all: string[] = [];
    for (let url: string | undefined = account.orders; url !== undefined; ) {
      const res = await this.transport.post(url, null, this.accountSigner());
      const body = this.transport.json(res, url) as { orders?: unknown };
      if (!Array.isArray(body.orders) || !body.orders.every((o) => typeof o === "string"))
        throw new StintError("ERR_MALFORMED", `${url} did not answer with a list of orders`);
      all.push(...body.orders);
      url = nextLink(res.headers.link);
    }
    return all;
  }

  // ---------- orders, authorizations, challenges ----------

  async newOrder(identifiers: Identifier[], opts: { replaces?: string } = {}): Promise<Order> {
    const url = this.directory.newOrder;
    const payload = { identifiers, ...(opts.replaces ? { replaces: opts.replaces } : {}) };
    const res = await this.transport.post(url, payload, this.accountSigner());
    const orderUrl = this.transport.location(res, url);
    return asOrder(this.transport.json(res, url), orderUrl);
  }

  async getOrder(url: string): Promise<Order> {
    return (await this.readOrder(url)).order;
  }

  async getAuthorization(url: string): Promise<Authorization> {
    return (await this.readAuthorization(url)).authz;
  }

  /** RFC 8555 7.5.2: gives up an authorization, pending or valid. */
  async deactivateAuthorization(url: string): Promise<Authorization> {
    return asAuthorization(await this.postJson(url, { status: "deactivated" }), url);
  }

  async respondChallenge(url: string, payload: Record<string, unknown> = {}): Promise<Challenge> {
    return asChallenge(await this.postJson(url, payload), url);
  }

  /** Answers an attest-01 challenge with evidence for the named attestor. */
  attest(challengeUrl: string, attestor: string, evidence: unknown): Promise<Challenge> {
    return this.respondChallenge(challengeUrl, { attestor, evidence });
  }

  /** Polls until the authorization is valid; an invalid one throws the failed challenge's problem. */
  async waitForAuthorization(url: string, opts: WaitOptions): Promise<Authorization> {
    const deadline = this.now() + opts.timeoutMs;
    for (;;) {
      const { authz, retryAfter } = await this.readAuthorization(url);
      if (authz.status === "valid") return authz;
      if (authz.status !== "pending") {
        const failed = authz.challenges.find((c) => c.error)?.error;
        throw new AcmeProblem(
          failed ?? {
            type: "about:blank",
            detail: `authorization for ${authz.identifier.value} is ${authz.status}`,
          },
          failed?.status ?? 0,
          { url },
        );
      }
      await this.pause(deadline, retryAfter, opts, `authorization ${url} to become valid`);
    }
  }

  /** Polls until the order reaches one of `statuses`; an order that ends elsewhere throws its problem. */
  async waitForOrder(url: string, statuses: Order["status"][], opts: WaitOptions): Promise<Order> {
    const deadline = this.now() + opts.timeoutMs;
    for (;;) {
      const { order, retryAfter } = await this.readOrder(url);
      if (statuses.includes(order.status)) return order;
      if (order.status === "invalid" || order.status === "valid") throw orderProblem(order);
      await this.pause(deadline, retryAfter, opts, `order ${url} to become ${statuses.join(" or ")}`);
    }
  }

  async finalize(order: Order, csrDer: Buffer): Promise<Order> {
    return asOrder(await this.postJson(order.finalize, { csr: b64u(csrDer) }), order.url);
  }

  async downloadCertificate(url: string): Promise<string> {
    return this.transport.postForChain(url, null, this.accountSigner());
  }

  /**
   * Runs a whole issuance: order, the challenge of each pending authorization
   * handed to `authorize` (attest-01 for spiffe, http-01 for dns), finalize,
   * download. `authorize` answers the challenge itself; when it returns the
   * answered challenge, a synchronous verdict saves a poll.
   */
  async obtainCertificate(opts: {
    identifiers: Identifier[];
    csrDer: Buffer;
    authorize: Authorize;
    replaces?: string;
    timeoutMs?: number;
    maxIntervalMs?: number;
  }): Promise<ObtainedCertificate> {
    const wait: WaitOptions = { timeoutMs: opts.timeoutMs ?? 60_000, maxIntervalMs: opts.maxIntervalMs };
    let order = await this.newOrder(opts.identifiers, { replaces: opts.replaces });
    if (order.status === "pending") {
      const authzs = await Promise.all(order.authorizations.map((u) => this.getAuthorization(u)));
      // SPIFFE first: on this server an entry's DNS names are authorized by the SPIFFE authorization.
      const pending = authzs
        .filter((a) => a.status === "pending")
        .sort((a, b) => Number(b.identifier.type === "spiffe") - Number(a.identifier.type === "spiffe"));
      let allValid = authzs.every((a) => a.status === "pending" || a.status === "valid");
      for (const authz of pending) {
        if (authz.identifier.type === "dns" && pending[0].identifier.type === "spiffe") {
          order = await this.getOrder(order.url);
          if (order.status !== "pending") break;
        }
        allValid = (await this.authorizeOne(authz, opts.authorize, wait)) && allValid;
      }
      // When every answer said valid the order is ready, so it is finalized without reading it first.
      if (order.status === "pending" && !allValid)
        order = await this.waitForOrder(order.url, ["ready", "processing", "valid"], wait);
    }
    return this.finishOrder(order, opts.csrDer, wait);
  }

  /**
   * Finalizes an order believed ready, waits for it to be valid and downloads
   * its certificate. A server that has not yet made it ready answers
   * orderNotReady (RFC 8555 7.4); then the order is polled and finalized again.
   */
  private async finishOrder(order: Order, csrDer: Buffer, wait: WaitOptions): Promise<ObtainedCertificate> {
    if (order.status === "pending") {
      try {
        order = await this.finalize(order, csrDer);
      } catch (err) {
        if (!(err instanceof AcmeProblem) || !err.is("orderNotReady")) throw err;
        order = await this.waitForOrder(order.url, ["ready", "processing", "valid"], wait);
      }
    }
    if (order.status === "ready") order = await this.finalize(order, csrDer);
    if (order.status !== "valid") order = await this.waitForOrder(order.url, ["valid"], wait);
    if (!order.certificate)
      throw new StintError("ERR_MALFORMED", `order ${order.url} is valid but names no certificate URL`);
    return { pem: await this.downloadCertificate(order.certificate), order };
  }

  /** Answers one authorization's challenge; true when the answer itself said valid (nothing was polled). */
  private async authorizeOne(
    authz: Authorization,
    authorize: Authorize,
    wait: WaitOptions,
  ): Promise<boolean> {
    const type = authz.identifier.type === "spiffe" ? "attest-01" : "http-01";
    const challenge = authz.challenges.find((c) => c.type === type);
    if (!challenge)
      throw new StintError("ERR_MALFORMED", `authorization ${authz.url} offers no ${type} challenge`);
    const result = await authorize(authz, challenge);
    const answered =
      isObject(result) && typeof result.status === "string" ? (result as unknown as Challenge) : undefined;
    if (answered?.status === "valid") return true;
    if (answered?.status === "invalid")
      throw new AcmeProblem(
        answered.error ?? { type: "about:blank", detail: `${type} challenge is invalid` },
        answered.error?.status ?? 0,
        { url: answered.url },
      );
    await this.waitForAuthorization(authz.url, wait);
    return false;
  }

  // ---------- certificates ----------

  /** revokeCert; with signWith (the certificate's key) the request carries its jwk instead of the account. */
  async revoke(certDer: Buffer, opts: { reason?: number; signWith?: KeyObject } = {}): Promise<void> {
    const url = this.requireUrl("revokeCert");
    const signer = opts.signWith
      ? { key: usableKey(opts.signWith, "the certificate key"), header: { jwk: exportJwk(opts.signWith) } }
      : this.accountSigner();
    const payload = {
      certificate: b64u(certDer),
      ...(opts.reason === undefined ? {} : { reason: opts.reason }),
    };
    await this.transport.post(url, payload, signer);
  }

  /** ARI (RFC 9773): an unauthenticated GET of the certificate's suggested renewal window. */
  async renewalInfo(certDer: Buffer): Promise<RenewalInfo> {
    const url = `${this.requireUrl("renewalInfo")}/${formatCertId(certIdOf(certDer))}`;
    const res = await this.transport.get(url);
    const body = this.transport.json(res, url);
    const w = isObject(body) && isObject(body.suggestedWindow) ? body.suggestedWindow : {};
    const start = new Date(typeof w.start === "string" ? w.start : Number.NaN);
    const end = new Date(typeof w.end === "string" ? w.end : Number.NaN);
    if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime()))
      throw new StintError("ERR_MALFORMED", `GET ${url}: renewalInfo has no valid suggestedWindow`);
    // Without Retry-After, ask again after a tenth of the time left in the window, within [1 min, 6 h].
    const fallback = Math.min(6 * 3600, Math.max(60, Math.ceil((end.getTime() - this.now()) / 10_000)));
    return {
      start,
      end,
      retryAfterSeconds: this.transport.retryAfter(res) ?? fallback,
      ...(isObject(body) && typeof body.explanationURL === "string"
        ? { explanationUrl: body.explanationURL }
        : {}),
    };
  }

  /**
   * Stint extension: a new certificate for the same names, authorized by the
   * current one. The leaf's key signs; the chain goes in x5c (standard
   * base64, leaf first) and no account is involved.
   */
  async renewWithCertificate(chainDer: Buffer[], key: KeyObject, csrDer: Buffer): Promise<string> {
    const url = this.requireUrl("renewCert");
    const signer = {
      key: usableKey(key, "the certificate key"),
      header: { x5c: chainDer.map((c) => c.toString("base64")) },
    };
    return this.transport.postForChain(url, { csr: b64u(csrDer) }, signer);
  }

  // ---------- helpers ----------

  private accountSigner(): Signer {
    return { key: this.accountKey, header: { kid: this.requireKid() } };
  }

  private requireKid(): string {
    if (!this.kid) throw new StintError("ERR_USAGE", "no ACME account yet: call newAccount first");
    return this.kid;
  }

  private requireUrl(name: "revokeCert" | "keyChange" | "renewalInfo" | "renewCert"): string {
    const url = this.directory[name];
    if (typeof url !== "string" || url === "")
      throw new StintError("ERR_USAGE", `this ACME server's directory has no "${name}" URL`);
    return url;
  }

  private async postJson(url: string, payload: unknown | null): Promise<unknown> {
    return this.transport.json(await this.transport.post(url, payload, this.accountSigner()), url);
  }

  private async pause(deadline: number, retryAfter: number | undefined, opts: WaitOptions, what: string) {
    const left = deadline - this.now();
    if (left <= 0)
      throw new StintError("ERR_CONNECTION", `timed out after ${opts.timeoutMs} ms waiting for ${what}`);
    await this.sleep(Math.min(left, pollDelayMs(retryAfter, opts.maxIntervalMs)));
  }

  private async readOrder(url: string): Promise<{ order: Order; retryAfter?: number }> {
    const res = await this.transport.post(url, null, this.accountSigner());
    const retryAfter = this.transport.retryAfter(res);
    return { order: asOrder(this.transport.json(res, url), url), retryAfter };
  }

  private async readAuthorization(url: string): Promise<{ authz: Authorization; retryAfter?: number }> {
    const res = await this.transport.post(url, null, this.accountSigner());
    const retryAfter = this.transport.retryAfter(res);
    return { authz: asAuthorization(this.transport.json(res, url), url), retryAfter };
  }
}

/** The rel="next" target among Link headers, if any. */
function nextLink(link: string | string[] | undefined): string | undefined {
  for (const value of [link ?? []].flat()) {
    for (const part of value.split(",")) {
      const m = /^\s*<([^>]+)>\s*;\s*rel="?next"?\s*$/.exec(part);
      if (m) return m[1];
    }
  }
  return undefined;
}
