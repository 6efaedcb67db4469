import { X509Certificate } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import type { ClientRequest } from "node:http";
import { request } from "node:https";
import { StintError } from "../common/errors";
import {
  applyDelta,
  decodeFeed,
  FeedIndex,
  type FeedSnapshot,
  feedSignerProblem,
  parseSignedFeed,
  verifyFeedSignature,
} from "../formats/feed";
import { pemDecodeAll } from "../formats/pem";
import type { RevocationSource, RevocationView } from "./verifier";

/**
 * Readers of the CA's revocation feed (docs/feed.md) for the verifier:
 * `FeedClient` fetches it over HTTPS, listens on the push channel
 * (/feed/events) and polls as a fallback; `FeedFile` reads a file someone
 * else keeps fresh. Both accept a feed only if its signer chains to the
 * trusted roots, its signature verifies, it is for the expected trust
 * domain, and its sequence does not go backwards. Anything else is refused
 * and remembered as the last error; the view then ages until the verifier
 * fails closed.
 */

export interface FeedState {
  snapshot: FeedSnapshot;
  index: FeedIndex;
  fetchedAt: Date;
}

/** Checks a signed feed against trusted roots and decodes it. */
export function openSignedFeed(envelope: Buffer, rootsPem: string, trustDomain: string | null) {
  const signed = parseSignedFeed(envelope);
  const signer = signed.chain[0];
  if (!signer) throw new StintError("ERR_MALFORMED", "the feed carries no signer certificate");
  const cert = new X509Certificate(signer);
  const roots = pemDecodeAll(rootsPem, "CERTIFICATE", "trust bundle").map((d) => new X509Certificate(d));
  const now = Date.now();
  const issuedBy = (child: X509Certificate, issuer: X509Certificate) =>
    child.checkIssued(issuer) && child.verify(issuer.publicKey);
  const trustedDirectly = (c: X509Certificate) =>
    roots.some((root) => root.raw.equals(c.raw) || issuedBy(c, root));
  // During a root rotation the signer's root may be new to this verifier: the old root's cross-certificate follows it.
  const viaCross = () => {
    const cross = signed.chain[1] ? new X509Certificate(signed.chain[1]) : null;
    return cross?.ca === true && issuedBy(cert, cross) && trustedDirectly(cross);
  };
  const trusted = trustedDirectly(cert) || viaCross();
  if (!trusted)
    throw new StintError("ERR_UNAUTHORIZED", "the feed's signer does not chain to the trusted roots");
  const problem = feedSignerProblem(signer);
  if (problem)
    throw new StintError("ERR_UNAUTHORIZED", `the feed's signer is not fit to sign feeds: ${problem}`);
  if (Date.parse(cert.validTo) < now || Date.parse(cert.validFrom) > now) {
    throw new StintError("ERR_UNAUTHORIZED", "the feed's signer certificate is not valid now");
  }
  if (!verifyFeedSignature(signed))
    throw new StintError("ERR_UNAUTHORIZED", "the feed's signature does not verify");
  const doc = decodeFeed(signed.body);
  if (trustDomain !== null && doc.trustDomain !== trustDomain) {
    throw new StintError(
      "ERR_UNAUTHORIZED",
      `the feed is for trust domain ${doc.trustDomain}, not ${trustDomain}`,
    );
  }
  return doc;
}

function viewOf(state: FeedState): RevocationView {
  const revokedIssuers = new Set(state.snapshot.revokedIssuers);
  return {
    sequence: state.snapshot.sequence,
    fetchedAt: state.fetchedAt,
    nextUpdate: state.snapshot.nextUpdate,
    status: (issuerId, sequence) => state.index.status(issuerId, sequence),
    issuerRevoked: (issuerId) => revokedIssuers.has(issuerId),
  };
}

/** Adopts a snapshot unless it goes backwards. */
function adopt(current: FeedState | null, snapshot: FeedSnapshot, at: Date): FeedState {
  if (current && snapshot.sequence < current.snapshot.sequence) {
    throw new StintError(
      "ERR_UNAUTHORIZED",
      `the feed's sequence went backwards (${snapshot.sequence} after ${current.snapshot.sequence}); refusing it`,
    );
  }
  if (current && snapshot.sequence === current.snapshot.sequence) return { ...current, fetchedAt: at };
  return { snapshot, index: new FeedIndex(snapshot), fetchedAt: at };
}

export interface FeedClientOptions {
  /** The CA's origin, e.g. https://ca.example.com:8443. */
  url: string;
  /** Trusted roots (PEM): for the CA's TLS certificate and the feed's signer. */
  rootsPem: string;
  /** Refuse feeds for another trust domain; null accepts the first one seen. */
  trustDomain?: string | null;
  /** Fallback poll interval when the push channel is quiet or down (default 30 s). */
  pollMs?: number;
  /** Listen on /feed/events (default true). */
  push?: boolean;
  timeoutMs?: number;
}

export class FeedClient implements RevocationSource {
  private state: FeedState | null = null;
  private closed = false;
  private pollTimer: NodeJS.Timeout | null = null;
  private events: ClientRequest | null = null;
  private updating: Promise<void> | null = null;
  /** The last refusal or failure, for health displays; null after a success. */
  lastError: string | null = null;

  private constructor(private opts: FeedClientOptions) {}

  /** Takes up a new bundle (the verifier passes on its own): later fetches check against these roots. */
  updateRoots(rootsPem: string): void {
    this.opts = { ...this.opts, rootsPem };
  }

  /** Fetches the feed once (failing if that fails), then keeps it fresh. */
  static async open(opts: FeedClientOptions): Promise<FeedClient> {
    const client = new FeedClient(opts);
    await client.update();
    if (client.state === null)
      throw new StintError("ERR_CONNECTION", client.lastError ?? "could not load the revocation feed");
    client.schedulePoll();
    if (opts.push ?? true) client.listen();
    return client;
  }

  view(): RevocationView | null {
    return this.state ? viewOf(this.state) : null;
  }

  get sequence(): number | null {
    return this.state?.snapshot.sequence ?? null;
  }

  close(): void {
    this.closed = true;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.events?.destroy();
    this.events = null;
  }

  /** Fetches what changed since the held sequence (or a snapshot); one at a time. */
  update(): Promise<void> {
    if (!this.updating) {
      this.updating = this.fetchOnce().finally(() => {
        this.updating = null;
      });
    }
    return this.updating;
  }

  private async fetchOnce(): Promise<void> {
    const since = this.state ? `?since=${this.state.snapshot.sequence}` : "";
    try {
      const res = await this.get(`/feed${since}`);
      const at = new Date();
      if (res.status === 204 && this.state) {
        this.state = { ...this.state, fetchedAt: at };
      } else if (res.status === 200) {
        const doc = openSignedFeed(res.body, this.opts.rootsPem, this.trustDomain());
        const snapshot = doc.kind === "snapshot" ? doc : applyDelta(this.requireState().snapshot, doc);
        this.state = adopt(this.state, snapshot, at);
      } else {
        throw new StintError("ERR_CONNECTION", `GET /feed answered HTTP ${res.status}`);
      }
      this.lastError = null;
    } catch (err) {
      this.lastError = err instanceof Error ? err.message : String(err);
    }
  }

  private trustDomain(): string | null {
    return this.opts.trustDomain ?? this.state?.snapshot.trustDomain ?? null;
  }

  private requireState(): FeedState {
    if (!this.state) throw new StintError("ERR_MALFORMED", "the CA sent a delta before any snapshot");
    return this.state;
  }

  private schedulePoll(): void {
    if (this.closed) return;
    this.pollTimer = setTimeout(async () => {
      await this.update();
      this.schedulePoll();
    }, this.opts.pollMs ?? 30_000).unref();
  }

  /** The push channel: each announced sequence newer than ours triggers a fetch. Reconnects after a second. */
  private listen(): void {
    if (this.closed) return;
    const url = new URL("/feed/events", this.opts.url);
    const req = request(url, { ca: this.opts.rootsPem, headers: { accept: "text/event-stream" } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return;
      }
      res.setEncoding("utf8");
      let buffer = "";
      res.on("data", (chunk: string) => {
        buffer += chunk;
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = /^data: (.*)$/m.exec(message)?.[1];
          const sequence = data ? Number(JSON.parse(data).sequence) : Number.NaN;
          if (Number.isSafeInteger(sequence) && sequence > (this.sequence ?? -1)) void this.update();
        }
      });
    });
    this.events = req;
    req.on("close", () => {
      if (this.events === req) this.events = null;
      if (!this.closed) setTimeout(() => this.listen(), 1000).unref();
    });
    req.on("error", () => undefined); // reconnects on close
    req.end();
  }

  private get(path: string): Promise<{ status: number; body: Buffer }> {
    const url = new URL(path, this.opts.url);
    return new Promise((resolve, reject) => {
      const req = request(url, { ca: this.opts.rootsPem, timeout: this.opts.timeoutMs ?? 10_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      });
      req.on("timeout", () =>
        req.destroy(new Error(`no answer from ${url.origin} within ${this.opts.timeoutMs ?? 10_000} ms`)),
      );
      req.on("error", (err) =>
        reject(new StintError("ERR_CONNECTION", `cannot fetch the feed from ${url.origin}: ${err.message}`)),
      );
      req.end();
    });
  }
}

/**
 * A feed kept in a file by someone else (an agent syncing it, a sidecar).
 * The file's modification time stands for when the feed was last confirmed,
 * so a writer that stops updating it makes the verifier fail closed.
 */
export class FeedFile implements RevocationSource {
  private state: FeedState | null = null;
  private timer: NodeJS.Timeout | null = null;
  lastError: string | null = null;

  private constructor(
    private readonly path: string,
    private rootsPem: string,
    private readonly trustDomain: string | null,
  ) {}

  /** Reads the file now, then again whenever its modification time changes (checked every `reloadMs`). */
  static async open(
    path: string,
    rootsPem: string,
    opts: { trustDomain?: string | null; reloadMs?: number } = {},
  ): Promise<FeedFile> {
    const file = new FeedFile(path, rootsPem, opts.trustDomain ?? null);
    await file.reload();
    if (!file.state) throw new StintError("ERR_FILE", file.lastError ?? `cannot read the feed file ${path}`);
    const check = async () => {
      const mtime = await stat(path).then(
        (s) => s.mtimeMs,
        () => 0,
      );
      if (mtime !== file.state?.fetchedAt.getTime()) await file.reload();
      file.timer = setTimeout(check, opts.reloadMs ?? 1000).unref();
    };
    file.timer = setTimeout(check, opts.reloadMs ?? 1000).unref();
    return file;
  }

  view(): RevocationView | null {
    return this.state ? viewOf(this.state) : null;
  }

  updateRoots(rootsPem: string): void {
    this.rootsPem = rootsPem;
  }

  async reload(): Promise<void> {
    try {
      const [bytes, info] = await Promise.all([readFile(this.path), stat(this.path)]);
      const doc = openSignedFeed(
        bytes,
        this.rootsPem,
        this.trustDomain ?? this.state?.snapshot.trustDomain ?? null,
      );
      if (doc.kind !== "snapshot")
        throw new StintError("ERR_MALFORMED", `${this.path} holds a delta; a feed file must hold a snapshot`);
      this.state = adopt(this.state, doc, info.mtime);
      this.lastError = null;
    } catch (err) {
      this.lastError = err instanceof Error ? err.message : String(err);
    }
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
