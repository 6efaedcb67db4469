import { X509Certificate } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import type { ClientRequest } from "node:http";
import { request } from "node:https";
import { StintError } from "../common/errors";
import {
  applyDelta,
  decodeFeed,
  type FeedDocument,
  FeedIndex,
  type FeedSnapshot,
  feedSignerProblem,
  parseSignedFeed,
  verifyFeedSignature,
} from "../formats/feed";
import { pemDecodeAll } from "../formats/pem";
import { computedKeyId, readCertificate } from "../formats/x509";
import { FeedStateFile } from "./feed-state";
import type { RevocationSource, RevocationView } from "./verifier";

/**
 * Readers of the CA's revocation feed (docs/feed.md) for the verifier:
 * `FeedClient` fetches it over HTTPS, listens on the push channel
 * (/feed/events) and polls as a fallback; `FeedFile` reads a file someone
 * else keeps fresh. Both accept a feed only if its signer chains to the
 * trusted roots and is not revoked or retired (in the feed held, the one
 * offered, or the state kept across restarts), its signature verifies, it is
 * for the expected trust domain, and its sequence does not go backwards.
 * Anything else is refused and remembered as the last error; the view keeps
 * the last feed adopted, which the verifier stops using at its nextUpdate.
 */

export interface FeedState {
  snapshot: FeedSnapshot;
  index: FeedIndex;
  /** When this process adopted the snapshot: for displays only, never for freshness. */
  fetchedAt: Date;
}

/** A verified feed document and the key id of the issuer that signed it. */
export interface OpenedFeed {
  doc: FeedDocument;
  /** The first 8 bytes (hex) of the signer's subject key identifier: the issuer id feeds list. */
  signerId: string;
}

/** Checks a signed feed against trusted roots and decodes it (see openFeed). */
export function openSignedFeed(envelope: Buffer, rootsPem: string, trustDomain: string | null): FeedDocument {
  return openFeed(envelope, rootsPem, trustDomain).doc;
}

/**
 * Checks a signed feed against trusted roots and decodes it: the signer
 * chains to a root (directly or through the cross-certificate that follows
 * it), may sign feeds, is valid now, and is not listed as revoked or retired
 * in the feed it signed; the signature verifies; the trust domain matches.
 * What the verifier already holds is checked by FeedTracker.
 */
export function openFeed(envelope: Buffer, rootsPem: string, trustDomain: string | null): OpenedFeed {
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
  const signerId = signerIdOf(signer);
  const refusal = signerRefusal(signerId, barsOf("that feed itself", doc));
  if (refusal) throw new StintError("ERR_UNAUTHORIZED", refusal);
  return { doc, signerId };
}

/** The issuer id of a CA certificate, as feeds and chains name issuers (verify/chain.ts keyId). */
function signerIdOf(der: Buffer): string {
  const facts = readCertificate(der);
  return (facts.subjectKeyId ?? computedKeyId(facts.spki)).subarray(0, 8).toString("hex");
}

/** [where, issuer ids, as what]: a list of issuers whose keys may not sign feeds. */
type SignerBar = [string, readonly string[], string];

/** Why `signerId` may not sign a feed, from the first list that bars it; null when none does. */
function signerRefusal(signerId: string, bars: readonly SignerBar[]): string | null {
  const bar = bars.find(([, ids]) => ids.includes(signerId));
  return bar
    ? `the feed is signed by issuer ${signerId}, which ${bar[0]} lists as ${bar[2]}; refusing it`
    : null;
}

/** The lists of `doc` that bar signers, named by `where`. */
const barsOf = (where: string, doc: { revokedIssuers: string[]; retiredIssuers: string[] }): SignerBar[] => [
  [where, doc.revokedIssuers, "revoked"],
  [where, doc.retiredIssuers, "retired"],
];

function viewOf(state: FeedState): RevocationView {
  const { snapshot, index } = state;
  const revokedIssuers = new Set(snapshot.revokedIssuers);
  return {
    sequence: snapshot.sequence,
    fetchedAt: state.fetchedAt,
    thisUpdate: snapshot.thisUpdate,
    nextUpdate: snapshot.nextUpdate,
    maxClockSkew: snapshot.maxClockSkew,
    status: (issuerId, sequence) => index.status(issuerId, sequence),
    issuerRevoked: (issuerId) => revokedIssuers.has(issuerId),
  };
}

/**
 * The one place a feed is adopted, for FeedClient and FeedFile. A snapshot is
 * taken only if its sequence is above everything seen (the held feed, and the
 * mark recorded across restarts), and its signer is not revoked or retired in
 * the held feed, the recorded mark or the snapshot itself. The same sequence
 * again changes nothing: a replay or an HTTP 204 confirms nothing, and only
 * the feed's own nextUpdate decides how long it may be used.
 */
class FeedTracker {
  state: FeedState | null = null;

  constructor(private readonly stateFile: FeedStateFile | null) {}

  /** Adopts `snapshot` (signed by `signerId`), or throws why not; false when it is the one already held. */
  async adopt(snapshot: FeedSnapshot, signerId: string): Promise<boolean> {
    const held = this.state?.snapshot ?? null;
    const mark = await this.stateFile?.read(snapshot.trustDomain);
    const floor = Math.max(held?.sequence ?? 0, mark?.sequence ?? 0);
    if (snapshot.sequence < floor) {
      const recorded =
        floor > (held?.sequence ?? 0) ? `, the highest recorded in ${this.stateFile?.path}` : "";
      throw new StintError(
        "ERR_UNAUTHORIZED",
        `the feed's sequence went backwards (${snapshot.sequence} after ${floor}${recorded}); refusing it`,
      );
    }
    if (held && snapshot.sequence === held.sequence) return false;
    const bars = barsOf("the new feed", snapshot);
    if (held) bars.push(...barsOf(`the feed held (version ${held.sequence})`, held));
    if (mark) {
      const where = `the verifier's feed state (${this.stateFile?.path})`;
      bars.push([where, mark.refusedSigners, "revoked or retired"]);
    }
    const refusal = signerRefusal(signerId, bars);
    if (refusal) throw new StintError("ERR_UNAUTHORIZED", refusal);
    // Recorded before it is used: a verifier that cannot remember a feed does not rely on it.
    await this.stateFile?.record(snapshot.trustDomain, {
      sequence: snapshot.sequence,
      refusedSigners: [...snapshot.revokedIssuers, ...snapshot.retiredIssuers],
    });
    this.state = { snapshot, index: new FeedIndex(snapshot), fetchedAt: new Date() };
    return true;
  }
}

export interface FeedClientOptions {
  /** The CA's origin, e.g. https://ca.example.com:8443. */
  url: string;
  /** Trusted roots (PEM): for the CA's TLS certificate and the feed's signer. */
  rootsPem: string;
  /** Refuse feeds for another trust domain; null accepts the first one seen. */
  trustDomain?: string | null;
  /**
   * A file where the highest adopted sequence and the refused signers are
   * kept across restarts (verify/feed-state.ts); without it a restarted
   * verifier can be handed an older feed that is still within its nextUpdate.
   */
  stateFile?: string;
  /** Fallback poll interval when the push channel is quiet or down (default 30 s). */
  pollMs?: number;
  /** Listen on /feed/events (default true). */
  push?: boolean;
  timeoutMs?: number;
}

export class FeedClient implements RevocationSource {
  private readonly tracker: FeedTracker;
  private closed = false;
  private pollTimer: NodeJS.Timeout | null = null;
  private events: ClientRequest | null = null;
  private updating: Promise<void> | null = null;
  /** The last refusal or failure, for health displays; null after a success. */
  lastError: string | null = null;

  private constructor(private opts: FeedClientOptions) {
    this.tracker = new FeedTracker(opts.stateFile ? new FeedStateFile(opts.stateFile) : null);
  }

  /** Takes up a new bundle (the verifier passes on its own): later fetches check against these roots. */
  updateRoots(rootsPem: string): void {
    this.opts = { ...this.opts, rootsPem };
  }

  /** Fetches the feed once (failing if that fails), then keeps it fresh. */
  static async open(opts: FeedClientOptions): Promise<FeedClient> {
    const client = new FeedClient(opts);
    await client.update();
    if (client.tracker.state === null)
      throw new StintError("ERR_CONNECTION", client.lastError ?? "could not load the revocation feed");
    client.schedulePoll();
    if (opts.push ?? true) client.listen();
    return client;
  }

  view(): RevocationView | null {
    return this.tracker.state ? viewOf(this.tracker.state) : null;
  }

  get sequence(): number | null {
    return this.tracker.state?.snapshot.sequence ?? null;
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
    const held = this.tracker.state?.snapshot ?? null;
    const since = held ? `?since=${held.sequence}` : "";
    try {
      const res = await this.get(`/feed${since}`);
      // A 204 ("nothing newer") confirms nothing: only a newer signed feed extends the held one's nextUpdate.
      if (res.status === 204 && held) {
        this.lastError = null;
        return;
      }
      if (res.status !== 200) throw new StintError("ERR_CONNECTION", `GET /feed answered HTTP ${res.status}`);
      const { doc, signerId } = openFeed(res.body, this.opts.rootsPem, this.trustDomain());
      if (doc.kind === "delta" && !held)
        throw new StintError("ERR_MALFORMED", "the CA sent a delta before any snapshot");
      const snapshot = doc.kind === "snapshot" ? doc : applyDelta(held as FeedSnapshot, doc);
      await this.tracker.adopt(snapshot, signerId);
      this.lastError = null;
    } catch (err) {
      this.lastError = err instanceof Error ? err.message : String(err);
    }
  }

  private trustDomain(): string | null {
    return this.opts.trustDomain ?? this.tracker.state?.snapshot.trustDomain ?? null;
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

export interface FeedFileOptions {
  trustDomain?: string | null;
  /** How often the file's modification time is checked for a new feed (default 1 s). */
  reloadMs?: number;
  /** As FeedClientOptions.stateFile: the mark that keeps an older feed file from being taken after a restart. */
  stateFile?: string;
}

/**
 * A feed kept in a file by someone else (an agent syncing it, a sidecar).
 * The feed's own thisUpdate and nextUpdate say how fresh it is, never the
 * file's modification time (which anyone who can write the file, or copy an
 * old one, sets): a writer that stops updating it makes the verifier fail
 * closed at the feed's nextUpdate. The modification time only tells when to
 * read the file again.
 */
export class FeedFile implements RevocationSource {
  private readonly tracker: FeedTracker;
  private readMtime = -1;
  private timer: NodeJS.Timeout | null = null;
  lastError: string | null = null;

  private constructor(
    private readonly path: string,
    private rootsPem: string,
    private readonly opts: FeedFileOptions,
  ) {
    this.tracker = new FeedTracker(opts.stateFile ? new FeedStateFile(opts.stateFile) : null);
  }

  /** Reads the file now, then again whenever its modification time changes (checked every `reloadMs`). */
  static async open(path: string, rootsPem: string, opts: FeedFileOptions = {}): Promise<FeedFile> {
    const file = new FeedFile(path, rootsPem, opts);
    await file.reload();
    if (!file.tracker.state)
      throw new StintError("ERR_FILE", file.lastError ?? `cannot read the feed file ${path}`);
    const check = async () => {
      const mtime = await stat(path).then(
        (s) => s.mtimeMs,
        () => 0,
      );
      if (mtime !== file.readMtime) await file.reload();
      file.timer = setTimeout(check, opts.reloadMs ?? 1000).unref();
    };
    file.timer = setTimeout(check, opts.reloadMs ?? 1000).unref();
    return file;
  }

  view(): RevocationView | null {
    return this.tracker.state ? viewOf(this.tracker.state) : null;
  }

  updateRoots(rootsPem: string): void {
    this.rootsPem = rootsPem;
  }

  async reload(): Promise<void> {
    try {
      const [bytes, info] = await Promise.all([readFile(this.path), stat(this.path)]);
      this.readMtime = info.mtimeMs;
      const trustDomain = this.opts.trustDomain ?? this.tracker.state?.snapshot.trustDomain ?? null;
      const { doc, signerId } = openFeed(bytes, this.rootsPem, trustDomain);
      if (doc.kind !== "snapshot")
        throw new StintError("ERR_MALFORMED", `${this.path} holds a delta; a feed file must hold a snapshot`);
      await this.tracker.adopt(doc, signerId);
      this.lastError = null;
    } catch (err) {
      this.lastError = err instanceof Error ? err.message : String(err);
    }
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
