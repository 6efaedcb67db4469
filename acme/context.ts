import type { KeyObject } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Authority } from "../ca/authority";
import type { WindowFractions } from "../ca/renewal";
import type { CaStore } from "../ca/store/open";
import type { AccountRecord } from "../ca/store-acme";
import { StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import { Lru } from "../common/lru";
import { importJwk, JWS_ALGORITHMS, jwkThumbprint } from "../formats/jose";
import type { Attestor } from "./attest/attestor";
import { readBody } from "./body";
import { type AccountKey, type KeySource, type VerifiedRequest, verifyJwsRequest } from "./jws";
import type { NonceService } from "./nonce";
import { problemFor } from "./problem";
import { RateLimiter } from "./rate-limit";
import { PATHS, type Urls } from "./wire";

/**
 * What every ACME handler shares: the authority, the store, nonces,
 * attestors, and the few steps each request takes (verify the JWS, find the
 * account, reply with Replay-Nonce and the directory link).
 */

export interface AcmeOptions {
  maxBodyBytes: number;
  orderTtlMs: number;
  authorizationTtlMs: number;
  http01: { port: number; resolveTo: string | null; timeoutMs: number };
  /** Hostile test toggle: delay before validating a challenge, as pebble does. 0 in production. */
  validationDelayMs: number;
  /** Sustained rates per second; 0 turns a limit off. Bursts are ten seconds' worth. */
  rateLimits: { perAddress: number; perAccount: number };
  /** The normal ARI window (renewal.window); ca/renewal.ts's default when absent. */
  renewalWindow?: WindowFractions;
}

export interface AcmeDeps {
  authority: Authority;
  store: CaStore;
  nonces: NonceService;
  attestor: (name: unknown) => Attestor;
  log: Logger;
  options: AcmeOptions;
}

/**
 * Imported account keys by thumbprint. A thumbprint names one key forever, so
 * an entry never goes stale; the account's status and current thumbprint are
 * still read from the store on every request, so a deactivation or a
 * keyChange made by another process or replica takes effect at once.
 */
const KEY_CACHE_LIMIT = 10_000;

const BURST_SECONDS = 10;

export class AcmeContext {
  private readonly accountKeys = new Lru<KeyObject>(KEY_CACHE_LIMIT);
  readonly limits: { addresses: RateLimiter; orders: RateLimiter; renewals: RateLimiter };

  constructor(
    readonly deps: AcmeDeps,
    readonly urls: Urls,
  ) {
    const limit = (perSecond: number) => ({ perSecond, burst: Math.max(1, perSecond * BURST_SECONDS) });
    const { perAddress, perAccount } = deps.options.rateLimits;
    this.limits = {
      addresses: new RateLimiter(limit(perAddress), "requests from this address"),
      orders: new RateLimiter(limit(perAccount), "new orders from this account"),
      renewals: new RateLimiter(limit(perAccount), "renewals of this SPIFFE ID"),
    };
  }

  get store(): CaStore {
    return this.deps.store;
  }

  get authority(): Authority {
    return this.deps.authority;
  }

  /** Reads and authenticates a POST; only keys of the kinds in `allow` are accepted. */
  async verify(req: IncomingMessage, url: URL, allow: readonly KeySource[]): Promise<VerifiedRequest> {
    const body = await readBody(req, this.deps.options.maxBodyBytes);
    return verifyJwsRequest(
      // The query is part of the URL the client signs (RFC 8555 6.4): a next page's URL carries its cursor.
      { contentType: req.headers["content-type"], body, url: this.urls.origin + url.pathname + url.search },
      {
        nonces: this.deps.nonces,
        lookupAccount: (kid) => this.lookupAccount(kid),
        maxBodyBytes: this.deps.options.maxBodyBytes,
      },
      { allow },
    );
  }

  /**
   * The account behind a kid-signed request; refuses other key sources. The
   * pipeline read it (and checked it is valid) for this very request, so it is
   * not read again.
   */
  async account(vr: VerifiedRequest): Promise<AccountRecord> {
    if (vr.source.kind !== "kid")
      throw new StintError("ERR_MALFORMED", "this request must be signed with the account key (kid)");
    const read = vr.source.account.record;
    if (read?.status === "valid") return read;
    const id = this.accountId(vr.source.account.accountUrl);
    const account = id ? await this.store.getAccount(id) : null;
    if (!account) throw new StintError("ERR_ACCOUNT_DOES_NOT_EXIST", "the account in kid does not exist");
    if (account.status !== "valid") throw new StintError("ERR_UNAUTHORIZED", `account is ${account.status}`);
    return account;
  }

  private accountId(accountUrl: string): string | null {
    const prefix = this.urls.account("");
    return accountUrl.startsWith(prefix) && accountUrl.length > prefix.length
      ? accountUrl.slice(prefix.length)
      : null;
  }

  private async lookupAccount(kid: string): Promise<AccountKey | null> {
    const id = this.accountId(kid);
    if (!id) return null;
    const account = await this.store.getAccount(id);
    if (!account) return null;
    let key = this.accountKeys.get(account.thumbprint);
    if (key === undefined) {
      key = importJwk(account.jwk);
      if (jwkThumbprint(key) !== account.thumbprint)
        throw new Error(`stored key of account ${id} does not match its thumbprint`);
      this.accountKeys.set(account.thumbprint, key);
    }
    return { accountUrl: kid, key, status: account.status, record: account };
  }

  /** Headers every ACME response carries: a fresh nonce and the directory link (RFC 8555 6.5, 7.1). */
  acmeHeaders(res: ServerResponse): void {
    res.setHeader("replay-nonce", this.deps.nonces.issue());
    res.setHeader("link", `<${this.urls.path(PATHS.directory)}>;rel="index"`);
    res.setHeader("cache-control", "no-store");
  }

  reply(
    res: ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string | string[]> = {},
  ): void {
    this.acmeHeaders(res);
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
  }

  /** Problem document with ACME headers, so a client can retry a badNonce with the nonce it just got. */
  fail(res: ServerResponse, err: unknown): void {
    const { problem, errorId } = problemFor(err);
    if (errorId) this.deps.log.error("ACME request failed", { errorId, error: err });
    this.acmeHeaders(res);
    const body: Record<string, unknown> = { ...problem };
    if (problem.type.endsWith(":badSignatureAlgorithm")) body.algorithms = JWS_ALGORITHMS;
    if (err instanceof StintError && err.retryAfterSeconds !== undefined)
      res.setHeader("retry-after", String(err.retryAfterSeconds));
    const text = JSON.stringify(body);
    res.writeHead(problem.status, {
      "content-type": "application/problem+json",
      "content-length": Buffer.byteLength(text),
    });
    res.end(text);
  }
}
