import type { KeyObject } from "node:crypto";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { Agent, request as httpsRequest } from "node:https";
import { StintError } from "../common/errors";
import { algorithmForKey, flattenedJws, type Jwk } from "../formats/jose";
import { pemDecodeAll } from "../formats/pem";
import {
  type AcmeDirectory,
  AcmeProblem,
  type Identifier,
  isObject,
  type ProblemDocument,
} from "./acme-wire";

/**
 * The ACME client's HTTP side: node:https requests with a size and time cap,
 * the Replay-Nonce pool, JWS-signed POSTs with badNonce retry, and problem
 * documents turned into AcmeProblem. Knows no accounts, orders or polling.
 */

const PEM_CHAIN = "application/pem-certificate-chain";
/** Newest nonces are used first; the oldest are dropped as they are the likeliest to have expired. */
const NONCE_POOL_SIZE = 32;
const MAX_RESPONSE_BYTES = 1024 * 1024;

export interface AcmeResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

type KeyHeader = { kid: string } | { jwk: Jwk } | { x5c: string[] };
/** The key that signs a request and how the JWS header names it. */
export interface Signer {
  key: KeyObject;
  header: KeyHeader;
}

/** The transport's share of AcmeClientOptions, which documents each field. */
export interface AcmeTransportOptions {
  ca?: string | Buffer | Array<string | Buffer>;
  agent?: Agent;
  badNonceRetries?: number;
  userAgent?: string;
  requestTimeoutMs?: number;
  now?: () => number;
}

const header = (h: IncomingHttpHeaders, name: string): string | undefined => {
  const v = h[name];
  return typeof v === "string" && v !== "" ? v : undefined;
};

/** Retry-After (RFC 9110 10.2.3) in whole seconds: delay-seconds or an HTTP-date. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - nowMs) / 1000));
}

/** How long to wait before polling again: the server's Retry-After, else 1 s, never above the cap. */
export function pollDelayMs(retryAfterSeconds: number | undefined, maxIntervalMs = 10_000): number {
  return Math.min(maxIntervalMs, retryAfterSeconds === undefined ? 1000 : retryAfterSeconds * 1000);
}

/** Refuses a key that cannot sign ACME requests; `what` names it in the message. */
export function usableKey(key: KeyObject, what: string): KeyObject {
  if (key.type !== "private") throw new StintError("ERR_USAGE", `${what} must be a private key`);
  if (!algorithmForKey(key))
    throw new StintError(
      "ERR_USAGE",
      `${what} must be EC P-256, EC P-384, Ed25519 or RSA of at least 2048 bits`,
    );
  return key;
}

export class AcmeTransport {
  private readonly nonces: string[] = [];
  private readonly agent: Agent;
  private readonly ownAgent: boolean;
  private readonly tls: { ca?: AcmeTransportOptions["ca"] };
  private readonly badNonceRetries: number;
  private readonly userAgent: string;
  private readonly requestTimeoutMs: number;
  private readonly now: () => number;

  /** `directory` is read for newNonce at each use, so it may be filled in after construction. */
  constructor(
    opts: AcmeTransportOptions,
    private readonly directory: Pick<AcmeDirectory, "newNonce">,
  ) {
    this.agent = opts.agent ?? new Agent({ keepAlive: true, ca: opts.ca });
    this.ownAgent = opts.agent === undefined;
    // With the caller's agent, trust goes per request (it is part of the agent's connection key).
    this.tls = opts.agent && opts.ca !== undefined ? { ca: opts.ca } : {};
    this.badNonceRetries = opts.badNonceRetries ?? 5;
    this.userAgent = opts.userAgent ?? `stint-acme-client node/${process.versions.node}`;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.now = opts.now ?? Date.now;
  }

  /** Closes idle keep-alive connections of the transport's own agent. */
  close(): void {
    if (this.ownAgent) this.agent.destroy();
  }

  /** An unauthenticated GET; anything but 2xx throws the server's problem. */
  async get(url: string): Promise<AcmeResponse> {
    return this.expectOk("GET", url, await this.send("GET", url));
  }

  /** A signed POST; a badNonce refusal is retried with the nonce that refusal carried. */
  async post(url: string, payload: unknown | null, signer: Signer, accept?: string): Promise<AcmeResponse> {
    let nonce = await this.takeNonce();
    for (let attempt = 0; ; attempt++) {
      const jws = flattenedJws(signer.key, { nonce, url, ...signer.header }, payload);
      const res = await this.send("POST", url, JSON.stringify(jws), accept);
      if (res.status >= 200 && res.status < 300) {
        this.keepNonce(res);
        return res;
      }
      const problem = this.problem("POST", url, res);
      const fresh = header(res.headers, "replay-nonce");
      if (problem.is("badNonce") && attempt < this.badNonceRetries) {
        nonce = fresh ?? (await this.takeNonce());
        continue;
      }
      this.keepNonce(res);
      throw problem;
    }
  }

  /** A signed POST answered with a PEM certificate chain, checked to hold certificates. */
  async postForChain(url: string, payload: unknown | null, signer: Signer): Promise<string> {
    const res = await this.post(url, payload, signer, PEM_CHAIN);
    const text = res.body.toString("utf8");
    pemDecodeAll(text, "CERTIFICATE", `certificate chain from ${url}`);
    return text;
  }

  json(res: AcmeResponse, url: string): unknown {
    try {
      return JSON.parse(res.body.toString("utf8"));
    } catch {
      throw new StintError("ERR_MALFORMED", `${url}: the server's response is not JSON`);
    }
  }

  location(res: AcmeResponse, url: string): string {
    const loc = header(res.headers, "location");
    if (!loc) throw new StintError("ERR_MALFORMED", `POST ${url}: the response has no Location header`);
    return loc;
  }

  /** The response's Retry-After in seconds, if it has a usable one. */
  retryAfter(res: AcmeResponse): number | undefined {
    return parseRetryAfter(header(res.headers, "retry-after"), this.now());
  }

  private keepNonce(res: AcmeResponse): void {
    const nonce = header(res.headers, "replay-nonce");
    if (!nonce) return;
    this.nonces.push(nonce);
    if (this.nonces.length > NONCE_POOL_SIZE) this.nonces.shift();
  }

  private async takeNonce(): Promise<string> {
    const pooled = this.nonces.pop();
    if (pooled) return pooled;
    const url = this.directory.newNonce;
    const res = await this.send("HEAD", url);
    if (res.status < 200 || res.status >= 300) throw this.problem("HEAD", url, res);
    const nonce = header(res.headers, "replay-nonce");
    if (!nonce) throw new StintError("ERR_MALFORMED", `HEAD ${url}: the response has no Replay-Nonce header`);
    return nonce;
  }

  private send(
    method: "GET" | "HEAD" | "POST",
    url: string,
    body?: string,
    accept?: string,
  ): Promise<AcmeResponse> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new StintError("ERR_CONNECTION", `${method} ${url}: ${err.message}`, { cause: err }));
      };
      const headers: OutgoingHttpHeaders = {
        "user-agent": this.userAgent,
        accept: accept ?? "application/json",
      };
      if (body !== undefined) {
        headers["content-type"] = "application/jose+json";
        headers["content-length"] = Buffer.byteLength(body);
      }
      let req: ReturnType<typeof httpsRequest>;
      try {
        req = httpsRequest(url, { method, headers, agent: this.agent, ...this.tls }, (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES)
              req.destroy(new Error(`response is larger than ${MAX_RESPONSE_BYTES} bytes`));
            else chunks.push(chunk);
          });
          res.on("error", fail);
          res.on("end", () => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
          });
        });
      } catch (err) {
        fail(err as Error);
        return;
      }
      // Covers a server that accepts and then stalls, which socket timeouts alone miss between packets.
      timer = setTimeout(
        () => req.destroy(new Error(`no complete response within ${this.requestTimeoutMs} ms`)),
        this.requestTimeoutMs,
      );
      req.on("error", fail);
      req.end(body);
    });
  }

  private expectOk(method: string, url: string, res: AcmeResponse): AcmeResponse {
    this.keepNonce(res);
    if (res.status >= 200 && res.status < 300) return res;
    throw this.problem(method, url, res);
  }

  private problem(method: string, url: string, res: AcmeResponse): AcmeProblem {
    const retryAfter = this.retryAfter(res);
    let doc: unknown;
    try {
      doc = JSON.parse(res.body.toString("utf8"));
    } catch {
      doc = undefined;
    }
    if (isObject(doc) && typeof doc.type === "string") {
      const detail = typeof doc.detail === "string" ? doc.detail : "";
      const subproblems = Array.isArray(doc.subproblems) ? (doc.subproblems as ProblemDocument[]) : [];
      const identifier = isObject(doc.identifier) ? (doc.identifier as unknown as Identifier) : undefined;
      return new AcmeProblem({ type: doc.type, detail, subproblems, identifier }, res.status, {
        retryAfter,
        url,
      });
    }
    const detail = `${method} ${url} answered HTTP ${res.status} without a problem document`;
    return new AcmeProblem({ type: "about:blank", detail }, res.status, { retryAfter, url });
  }
}
