import { createHash } from "node:crypto";
import { isStintError, StintError } from "../common/errors";
import { Lru } from "../common/lru";
import { parsePemBlocks } from "../formats/pem";
import { type AllowRule, compileAllow } from "./authorize";
import {
  type ChainAccepted,
  type ChainFailureCode,
  type ChainPolicy,
  type ChainResult,
  compilePolicy,
  MAX_CHAIN,
  TrustBundle,
  type Usage,
  validateChain,
} from "./chain";
import { CaMemo } from "./memo";

/**
 * The verifier a service holds: path validation against the trust bundle,
 * then revocation, then authorization, in that order, for every peer.
 * Path validation (the signature checks) is cached per chain until the path
 * expires; revocation and authorization are lookups and run on every call,
 * so a revocation or a narrowed allow list takes effect at once.
 */

/** Where revocation status comes from; verify/feed.ts implements it over the CA's signed feed. */
export interface RevocationSource {
  /** null until a verified feed has been loaded. */
  view(): RevocationView | null;
  /** New trusted roots (PEM) for the feed's signer and the CA connection: a root rotation. */
  updateRoots?(rootsPem: string): void;
}

export interface RevocationView {
  sequence: number;
  /** When this process adopted the feed: for displays only; the signed times below decide freshness. */
  fetchedAt: Date;
  /** When the CA signed it. */
  thisUpdate: Date;
  /** Past this (plus the verifier's clock skew) the feed is no longer used: everything is refused. */
  nextUpdate: Date;
  /** Milliseconds past notAfter that revoked certificates stay listed: the most expiry skew the feed supports. */
  maxClockSkew: number;
  status(issuerId: string, sequence: number): "revoked" | "good" | "not-covered";
  issuerRevoked(issuerId: string): boolean;
}

export type RefusalCode =
  | ChainFailureCode
  | "revoked"
  | "revocation-unavailable"
  | "unauthorized"
  | "no-certificate";

export interface VerifyAccepted {
  ok: true;
  code: "ok";
  spiffeId: string;
  /** Which allow rule admitted the ID. */
  reason: string;
  /** Set when the certificate is newer than the feed: "not yet covered by the feed …". */
  note?: string;
  issuerId: string;
  sequence: number | null;
  notAfter: Date;
}

export interface VerifyRefused {
  ok: false;
  code: RefusalCode;
  /** Only once the chain is validated (revocation and authorization refusals); null before. */
  spiffeId: string | null;
  /** Specific and human-readable; safe to show the peer (no secrets, no policy listing). */
  reason: string;
}

export type VerifyResult = VerifyAccepted | VerifyRefused;

export type BundleInput = string | Buffer | readonly Uint8Array[];

export interface VerifierOptions {
  /** Trusted roots: PEM text, or DER certificates. */
  bundle: BundleInput;
  /** "client": peers are clients (their leaf needs clientAuth); "server": peers are servers (serverAuth). */
  usage: Usage;
  /** Who may in, after validation: see verify/authorize.ts. An empty list admits nobody. */
  allow: AllowRule | readonly AllowRule[];
  /** Revocation status; when set, verification fails closed without a feed within its nextUpdate. */
  revocation?: RevocationSource;
  /**
   * Optional, stricter than the feed's nextUpdate: refuse once the feed's
   * thisUpdate (when the CA signed it) is more than this many milliseconds old.
   */
  maxFeedAge?: number;
  /** Tolerance on certificate validity, milliseconds (default 30 s). */
  clockSkew?: number;
  /** Chains whose validation outcome is kept (default 10,000); least recently used go first. */
  cacheSize?: number;
  /** Allowed signature algorithms, leaf key types and path depth (verify/policy.ts); all strong ones by default. */
  policy?: ChainPolicy;
}

export interface VerifierStats {
  cached: number;
  hits: number;
  misses: number;
  /** Signature checks done since creation: the expensive work the cache avoids. */
  signatureChecks: number;
}

export interface Verifier {
  readonly usage: Usage;
  /** Verifies a peer chain (DER list or PEM text, leaf first). Never throws. */
  verify(chain: readonly Uint8Array[] | string, now?: Date): VerifyResult;
  /**
   * The answer for a peer whose exact leaf certificate already has a valid
   * path in the cache (revocation and authorization run as usual), or null
   * when it has none and the caller must get the chain and call verify().
   * Sound because a path once validated stays valid within its window and
   * bundle; it spares a TLS server extracting the peer chain on every
   * connection (see checkSocket).
   */
  verifyKnownLeaf(leaf: Uint8Array, now?: Date): VerifyResult | null;
  /** Replaces the trusted roots (ERR_CONFIG if unusable, keeping the old ones) and empties the cache. */
  updateBundle(bundle: BundleInput): void;
  stats(): VerifierStats;
  clearCache(): void;
}

const DEFAULT_CLOCK_SKEW = 30_000;
const DEFAULT_CACHE_SIZE = 10_000;
/** Failures that depend on the time are not cached: a chain not yet valid becomes valid. */
const TIME_DEPENDENT: ReadonlySet<ChainFailureCode> = new Set(["expired", "not-yet-valid"]);

interface CacheEntry {
  result: ChainResult;
  validFrom: number;
  validUntil: number;
}

export function createVerifier(opts: VerifierOptions): Verifier {
  const clockSkew = opts.clockSkew ?? DEFAULT_CLOCK_SKEW;
  const cacheSize = opts.cacheSize ?? DEFAULT_CACHE_SIZE;
  if (opts.usage !== "client" && opts.usage !== "server") {
    throw new StintError("ERR_CONFIG", 'verifier usage must be "client" or "server"');
  }
  if (!Number.isFinite(clockSkew) || clockSkew < 0) {
    throw new StintError("ERR_CONFIG", "verifier clockSkew must be a non-negative number of milliseconds");
  }
  if (!Number.isInteger(cacheSize) || cacheSize < 0) {
    throw new StintError("ERR_CONFIG", "verifier cacheSize must be a non-negative integer");
  }
  const maxFeedAge = opts.maxFeedAge;
  if (
    maxFeedAge !== undefined &&
    !(typeof maxFeedAge === "number" && Number.isFinite(maxFeedAge) && maxFeedAge > 0)
  ) {
    throw new StintError("ERR_CONFIG", "verifier maxFeedAge must be a positive number of milliseconds");
  }
  if (opts.allow === undefined) {
    throw new StintError("ERR_CONFIG", "verifier allow rules are required (deny by default)");
  }
  const authorizer = compileAllow(opts.allow);
  const revocation = opts.revocation;
  const usage = opts.usage;
  const policy = compilePolicy(opts.policy);
  let bundle = TrustBundle.from(opts.bundle);
  // Outcomes by chain, and successful paths also by leaf alone (for verifyKnownLeaf).
  const byChain = new Lru<CacheEntry>(cacheSize);
  const byLeaf = new Lru<CacheEntry>(cacheSize);
  const counters = { signatures: 0 };
  const memo = new CaMemo();
  let hits = 0;
  let misses = 0;

  const fresh = (entry: CacheEntry | undefined, now: Date): entry is CacheEntry => {
    const t = now.getTime();
    return entry !== undefined && t >= entry.validFrom && t <= entry.validUntil;
  };

  function validated(ders: readonly Uint8Array[], now: Date): ChainResult {
    const key = chainKey(ders);
    const entry = byChain.get(key);
    if (fresh(entry, now)) {
      hits++;
      return entry.result;
    }
    misses++;
    const result = validateChain(ders, bundle, { usage, now, clockSkew, policy, counters, memo });
    if (result.ok) {
      const e = { result, validFrom: result.validFrom.getTime(), validUntil: result.validUntil.getTime() };
      byChain.set(key, e);
      byLeaf.set(leafKey(ders[0]), e);
    } else if (!TIME_DEPENDENT.has(result.code)) {
      byChain.set(key, { result, validFrom: Number.NEGATIVE_INFINITY, validUntil: Number.POSITIVE_INFINITY });
    }
    return result;
  }

  function checkRevocation(path: ChainAccepted, now: Date): VerifyRefused | { note?: string } {
    if (!revocation) return {};
    const id = path.spiffeId;
    const unavailable = (reason: string): VerifyRefused => ({
      ok: false,
      code: "revocation-unavailable",
      spiffeId: id,
      reason: `${reason}; refusing ${id} (fail closed)`,
    });
    let view: RevocationView | null;
    try {
      view = revocation.view();
    } catch {
      return unavailable("the revocation source failed");
    }
    if (!view) return unavailable("no verified revocation feed has been loaded yet");
    // Only the feed's signed times count: a replayed feed or an HTTP 204 cannot make it fresher.
    if (!(now.getTime() <= view.nextUpdate.getTime() + clockSkew)) {
      return unavailable(
        `the revocation feed (version ${view.sequence}) expired at its nextUpdate, ${view.nextUpdate.toISOString()}, ` +
          "and no newer one has been verified",
      );
    }
    const age = now.getTime() - view.thisUpdate.getTime();
    if (maxFeedAge !== undefined && !(age <= maxFeedAge)) {
      return unavailable(
        `the revocation feed (version ${view.sequence}) was signed ${seconds(age)} ago (${view.thisUpdate.toISOString()}), ` +
          `beyond the ${seconds(maxFeedAge)} limit`,
      );
    }
    for (const [i, caId] of path.caIds.entries()) {
      if (view.issuerRevoked(caId)) {
        return {
          ok: false,
          code: "revoked",
          spiffeId: id,
          reason: `${i === 0 ? "the issuing CA" : "a CA on the path"} (key id ${caId}) of ${id} is revoked (feed version ${view.sequence})`,
        };
      }
    }
    if (path.sequence === null) {
      return unavailable(
        `the certificate's serial is not in Stint's layout, so the revocation feed cannot cover it`,
      );
    }
    const status = view.status(path.issuerId, path.sequence);
    if (status === "revoked") {
      return {
        ok: false,
        code: "revoked",
        spiffeId: id,
        reason: `the certificate of ${id} (issuer ${path.issuerId}, sequence ${path.sequence}) is revoked (feed version ${view.sequence})`,
      };
    }
    const pastExpiry = now.getTime() - path.notAfter.getTime();
    const expired = (why: string): VerifyRefused => ({
      ok: false,
      code: "expired",
      spiffeId: id,
      reason: `the certificate of ${id} expired at ${path.notAfter.toISOString()} and ${why}, so it may have been revoked`,
    });
    // The CA lists a revoked certificate until notAfter + maxClockSkew, however much skew this verifier allows.
    if (pastExpiry > view.maxClockSkew) {
      return expired(
        `the revocation feed keeps revoked certificates only ${seconds(view.maxClockSkew)} past expiry`,
      );
    }
    if (status === "good") return {};
    if (status === "not-covered" && pastExpiry > 0) {
      return expired(
        `the revocation feed (version ${view.sequence}) no longer covers it (issuer ${path.issuerId}, sequence ${path.sequence})`,
      );
    }
    if (status === "not-covered") {
      return {
        note: `not yet covered by the feed (version ${view.sequence}; certificate sequence ${path.sequence} of issuer ${path.issuerId}); accepted while the feed is fresh`,
      };
    }
    return unavailable(`the revocation feed gave an unknown status for this certificate`);
  }

  function verify(chain: readonly Uint8Array[] | string, now: Date = new Date()): VerifyResult {
    let ders: readonly Uint8Array[];
    if (typeof chain === "string") {
      try {
        ders = parsePemBlocks(chain)
          .filter((b) => b.label === "CERTIFICATE")
          .map((b) => b.der);
      } catch (err) {
        return refused(
          "malformed",
          `the chain is not valid PEM: ${isStintError(err) ? err.message : "unreadable"}`,
        );
      }
    } else if (Array.isArray(chain)) {
      ders = chain;
    } else {
      return refused("malformed", "the chain is neither PEM text nor a list of DER certificates");
    }
    if (ders.length === 0) return refused("no-certificate", "no certificate was presented");
    if (ders.length > MAX_CHAIN) {
      return refused(
        "malformed",
        `the chain has ${ders.length} certificates; at most ${MAX_CHAIN} are accepted`,
      );
    }
    let path: ChainResult;
    try {
      path = validated(ders, now);
    } catch (err) {
      return refused("malformed", `the chain could not be validated: ${(err as Error).message}`);
    }
    return path.ok ? admit(path, now) : refused(path.code, path.reason);
  }

  /** Revocation, then authorization, for a validated path: cheap lookups, run on every call. */
  function admit(path: ChainAccepted, now: Date): VerifyResult {
    const revoked = checkRevocation(path, now);
    if ("ok" in revoked) return revoked;
    const allowed = authorizer.check(path.spiffeId);
    if (!allowed.ok)
      return { ok: false, code: "unauthorized", spiffeId: path.spiffeId, reason: allowed.reason };
    const result: VerifyAccepted = {
      ok: true,
      code: "ok",
      spiffeId: path.spiffeId,
      reason: `allowed by rule ${allowed.rule}`,
      issuerId: path.issuerId,
      sequence: path.sequence,
      notAfter: path.notAfter,
    };
    if (revoked.note) result.note = revoked.note;
    return result;
  }

  function verifyKnownLeaf(leaf: Uint8Array, now: Date = new Date()): VerifyResult | null {
    const entry = byLeaf.get(leafKey(leaf));
    if (!fresh(entry, now) || !entry.result.ok) return null;
    hits++;
    return admit(entry.result, now);
  }

  const clear = () => {
    byChain.clear();
    byLeaf.clear();
    memo.clear();
  };

  return {
    usage,
    verify,
    verifyKnownLeaf,
    updateBundle(input: BundleInput): void {
      bundle = TrustBundle.from(input);
      revocation?.updateRoots?.(bundle.toPem());
      clear();
    },
    stats: () => ({ cached: byChain.size, hits, misses, signatureChecks: counters.signatures }),
    clearCache: clear,
  };
}

function refused(code: RefusalCode, reason: string): VerifyRefused {
  return { ok: false, code, spiffeId: null, reason };
}

/** SHA-256 over each certificate with its length: a collision-resistant name for the chain. */
function chainKey(ders: readonly Uint8Array[]): string {
  const h = createHash("sha256");
  const len = Buffer.allocUnsafe(4);
  for (const d of ders) {
    len.writeUInt32BE(d.length);
    h.update(len).update(d);
  }
  return h.digest("base64");
}

const leafKey = (leaf: Uint8Array): string => createHash("sha256").update(leaf).digest("base64");

const seconds = (ms: number): string => `${Math.round(ms / 1000)} s`;
