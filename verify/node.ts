import { constants, createPrivateKey, X509Certificate } from "node:crypto";
import { type FSWatcher, watch } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type {
  ConnectionOptions,
  DetailedPeerCertificate,
  PeerCertificate,
  SecureContextOptions,
  TLSSocket,
  TlsOptions,
} from "node:tls";
import { StintError } from "../common/errors";
import { currentVersion, DATA_LINK, readCurrentVersion } from "../common/versioned-dir";
import { type AllowRule, compileAllow } from "./authorize";
import { MAX_CHAIN, type Usage } from "./chain";
import type { RefusalCode, Verifier, VerifyRefused, VerifyResult } from "./verifier";

/**
 * Node glue: TLS options from the agent's output directory, kept current as
 * the agent renews; the server-side check of a connection's peer; an
 * express-style middleware; and the client-side server identity check.
 * express is never loaded: the middleware is typed structurally.
 */

declare global {
  // The augmentation express users expect (req.spiffeId), without importing express.
  namespace Express {
    interface Request {
      /** The peer's verified and authorized SPIFFE ID, set by requireSpiffeId. */
      spiffeId?: string;
    }
  }
}

// ---------- the agent's directory ----------

/** Names the agent publishes (agent/atomic-dir.ts), in the version `..data` links to. */
const FILES = { cert: "cert.pem", key: "key.pem", bundle: "bundle.pem" } as const;

export interface CredentialSet {
  /** The version directory the three files were read from. */
  version: string;
  /** Leaf and intermediates, PEM. */
  cert: Buffer;
  key: Buffer;
  /** Trusted roots, PEM. */
  bundle: Buffer;
}

/**
 * Reads cert, key and bundle from one version: `..data` is resolved once and
 * the files are opened under that version, starting over when a newer
 * publish deletes it meanwhile. Readers never see a key beside another
 * version's certificate.
 */
export async function readCredentialSet(dir: string): Promise<CredentialSet> {
  const read = await readCurrentVersion(dir, async (versionDir) => {
    const file = (name: string) => readFile(join(versionDir, name));
    const [cert, key, bundle] = await Promise.all([file(FILES.cert), file(FILES.key), file(FILES.bundle)]);
    checkPair(cert, key, versionDir);
    return { cert, key, bundle };
  });
  if (read === null) {
    throw new StintError(
      "ERR_FILE",
      `nothing is published in ${dir} yet (no ${DATA_LINK} link); start the agent and wait for its first certificate`,
    );
  }
  return { version: read.version, ...read.value };
}

function checkPair(cert: Buffer, key: Buffer, where: string): void {
  let matches: boolean;
  try {
    matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch {
    throw new StintError("ERR_FILE", `${where}: ${FILES.cert} or ${FILES.key} cannot be read as PEM`);
  }
  if (!matches) throw new StintError("ERR_FILE", `${where}: ${FILES.key} does not belong to ${FILES.cert}`);
}

// ---------- TLS options that follow the agent ----------

/** What attach() needs: tls.Server and https.Server have it. */
export interface SecureContextTarget {
  setSecureContext(options: SecureContextOptions): void;
}

export interface TlsDirOptions {
  /** "server": options for tls/https.createServer; "client": for tls.connect / https.request. */
  usage: Usage;
  /**
   * Kept in step with bundle.pem (updateBundle on every switch). For clients,
   * also checks the server's SPIFFE ID in place of its host name.
   */
  verifier?: Verifier;
  /** How often ..data is re-read in case a watch event was missed (ms, default 1,000). */
  pollInterval?: number;
  onReload?: (version: string) => void;
  /** A failed reload keeps the previous set; default: process.emitWarning. */
  onError?: (err: Error) => void;
}

export interface TlsDir {
  /** The current options; a getter, so new client connections take the newest set. */
  readonly options: TlsOptions & ConnectionOptions;
  /** The version directory the current set came from. */
  readonly version: string;
  /** Switches `server`'s certificate (setSecureContext) whenever the agent publishes a new set. */
  attach(server: SecureContextTarget): void;
  /** Checks for a new set now; true when it switched. */
  reload(): Promise<boolean>;
  close(): void;
}

export async function tlsOptionsFromDir(dir: string, opts: TlsDirOptions): Promise<TlsDir> {
  if (opts.usage !== "server" && opts.usage !== "client") {
    throw new StintError("ERR_CONFIG", 'tlsOptionsFromDir usage must be "server" or "client"');
  }
  const onError = opts.onError ?? ((err: Error) => process.emitWarning(err.message, "StintTlsReload"));
  const identity = opts.usage === "client" && opts.verifier ? spiffeServerIdentity(opts.verifier) : undefined;
  let current = await readCredentialSet(dir);
  opts.verifier?.updateBundle(current.bundle);

  // No session tickets on servers: a resumed session carries no peer chain, so it could not be verified.
  // They are a context option, so every setSecureContext must repeat them.
  const context = (set: CredentialSet): SecureContextOptions => ({
    key: set.key,
    cert: set.cert,
    ca: set.bundle,
    ...(opts.usage === "server" ? { secureOptions: constants.SSL_OP_NO_TICKET } : {}),
  });
  const build = (set: CredentialSet): TlsOptions & ConnectionOptions => {
    // Servers ask for a certificate and let the verifier, not OpenSSL, decide.
    if (opts.usage === "server") return { ...context(set), requestCert: true, rejectUnauthorized: false };
    return identity
      ? { ...context(set), rejectUnauthorized: true, checkServerIdentity: identity }
      : { ...context(set) };
  };
  let options = build(current);
  const servers = new Set<SecureContextTarget>();
  let closed = false;
  let running: Promise<boolean> | null = null;
  let again = false;

  const report = (err: unknown) => onError(err instanceof Error ? err : new Error(String(err)));

  async function reloadOnce(): Promise<boolean> {
    const version = await currentVersion(dir);
    if (version === null || version === current.version) return false;
    const set = await readCredentialSet(dir);
    if (set.version === current.version) return false;
    opts.verifier?.updateBundle(set.bundle);
    current = set;
    options = build(set);
    for (const server of servers) server.setSecureContext(context(set));
    opts.onReload?.(set.version);
    return true;
  }

  function reload(): Promise<boolean> {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      let switched = false;
      do {
        again = false;
        try {
          switched = (await reloadOnce()) || switched;
        } catch (err) {
          report(err);
        }
      } while (again && !closed);
      return switched;
    })().finally(() => {
      running = null;
    });
    return running;
  }

  // The rename of ..data is an event on the directory; events come in bursts, so settle first.
  let settle: NodeJS.Timeout | null = null;
  let watcher: FSWatcher | null = null;
  try {
    watcher = watch(dir, { persistent: false }, () => {
      if (settle || closed) return;
      settle = setTimeout(() => {
        settle = null;
        void reload();
      }, 20);
      settle.unref();
    });
    watcher.on("error", report);
  } catch (err) {
    report(err);
  }
  const poll = setInterval(() => void reload(), opts.pollInterval ?? 1000);
  poll.unref();

  return {
    get options() {
      return options;
    },
    get version() {
      return current.version;
    },
    attach(server: SecureContextTarget): void {
      servers.add(server);
      server.setSecureContext(context(current));
    },
    reload,
    close(): void {
      closed = true;
      watcher?.close();
      clearInterval(poll);
      if (settle) clearTimeout(settle);
    },
  };
}

// ---------- checking peers ----------

/** What was read from a connection's peer, so keep-alive requests do not convert certificates again. */
const peers = new WeakMap<object, { leaf: Buffer; chain?: Buffer[] }>();

/** DER of the peer's chain, leaf first, following issuerCertificate links. */
export function chainOf(peer: PeerCertificate | DetailedPeerCertificate | null | undefined): Buffer[] {
  const out: Buffer[] = [];
  let c = peer as DetailedPeerCertificate | undefined;
  while (c?.raw && out.length < MAX_CHAIN && !out.some((d) => d.equals(c!.raw))) {
    out.push(c.raw);
    if (c.issuerCertificate === c) break;
    c = c.issuerCertificate;
  }
  return out;
}

/**
 * Verifies the peer of a TLS connection (a server's view of its client, or
 * the reverse). The leaf alone (getPeerCertificate(false), cheap) is enough
 * when the verifier has already validated a path for it; only a leaf seen
 * for the first time costs getPeerCertificate(true), which is an order of
 * magnitude dearer. getPeerX509Certificate() is avoided on purpose: in
 * Node 20 it removes the intermediates from OpenSSL's peer chain, breaking
 * every later reader of the socket.
 */
export function checkSocket(socket: TLSSocket, verifier: Verifier, now?: Date): VerifyResult {
  if (typeof socket?.getPeerCertificate !== "function") {
    return refusal("no-certificate", "this endpoint requires mutual TLS, and the connection is not TLS");
  }
  let peer = peers.get(socket);
  if (!peer) {
    const leaf = socket.getPeerCertificate(false)?.raw;
    if (!leaf) return refusal("no-certificate", "the peer presented no certificate");
    peer = { leaf };
    peers.set(socket, peer);
  }
  const known = verifier.verifyKnownLeaf(peer.leaf, now);
  if (known) return known;
  peer.chain ??= chainOf(socket.getPeerCertificate(true));
  const result = verifier.verify(peer.chain, now);
  if (!result.ok && result.code === "untrusted" && socket.isSessionReused()) {
    result.reason +=
      " (the TLS session was resumed, so the peer's intermediate certificates are not available;" +
      " disable session tickets on this server, as tlsOptionsFromDir does)";
  }
  return result;
}

function refusal(code: RefusalCode, reason: string): VerifyRefused {
  return { ok: false, code, spiffeId: null, reason };
}

/** The subset of an HTTP request the middleware reads (express, or node:http/https). */
export interface RequestLike {
  socket: unknown;
  spiffeId?: string;
}

/** The subset of an HTTP response the middleware writes. */
export interface ResponseLike {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body: string): unknown;
}

/** HTTP status for a refusal: 403 when the peer is known but not allowed, 503 when our own feed is stale. */
export function refusalStatus(code: RefusalCode): 401 | 403 | 503 {
  if (code === "unauthorized") return 403;
  if (code === "revocation-unavailable") return 503;
  return 401;
}

/**
 * Express-style middleware: runs the verifier on the connection's peer,
 * then the route's own allow rules if given (on top of the verifier's), and
 * answers 401 / 403 / 503 with {"error": code, "reason": …}; on success sets
 * req.spiffeId and calls next().
 */
export function requireSpiffeId(
  verifier: Verifier,
  allow?: AllowRule | readonly AllowRule[],
): (req: RequestLike, res: ResponseLike, next: (err?: unknown) => void) => void {
  const route = allow === undefined ? null : compileAllow(allow);
  return (req, res, next) => {
    let result = checkSocket(req.socket as TLSSocket, verifier);
    if (result.ok && route) {
      const allowed = route.check(result.spiffeId);
      if (!allowed.ok)
        result = { ok: false, code: "unauthorized", spiffeId: result.spiffeId, reason: allowed.reason };
    }
    if (!result.ok) {
      res.statusCode = refusalStatus(result.code);
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ error: result.code, reason: result.reason }));
      return;
    }
    req.spiffeId = result.spiffeId;
    next();
  };
}

/** The error spiffeServerIdentity returns; tls sets authorizationError to its code. */
export class SpiffeIdentityError extends Error {
  readonly code: string;
  constructor(readonly result: VerifyRefused) {
    super(`server identity refused: ${result.reason}`);
    this.name = "SpiffeIdentityError";
    this.code = `ERR_SPIFFE_${result.code.toUpperCase().replace(/-/g, "_")}`;
  }
}

/**
 * For tls.connect / https.request `checkServerIdentity`: the server must
 * present an X509-SVID the verifier accepts (usage "server"), in place of the
 * host name check. Node calls it only after OpenSSL accepted the chain
 * against `ca`, and not on resumed sessions (already checked once).
 */
export function spiffeServerIdentity(
  verifier: Verifier,
): (hostname: string, cert: PeerCertificate) => Error | undefined {
  if (verifier.usage !== "server") {
    throw new StintError(
      "ERR_CONFIG",
      'spiffeServerIdentity needs a verifier with usage "server" (it checks the server\'s serverAuth)',
    );
  }
  return (_hostname, cert) => {
    const result = verifier.verify(chainOf(cert));
    return result.ok ? undefined : new SpiffeIdentityError(result);
  };
}
