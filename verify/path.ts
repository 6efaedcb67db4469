import { algorithmText, signatureAlgorithmName } from "./algorithms";
import type { TrustBundle } from "./bundle";
import { type Cert, describe, keyIdsAgree, keyOf, nameOfField, Refusal } from "./cert";
import type { CaMemo } from "./memo";
import type { CompiledPolicy } from "./policy";
import { signatureVerifies } from "./signature";

/**
 * Path building (RFC 4158 in small): TLS peers send intermediates in any
 * order, with extras, or with a cross-certificate beside the one that
 * matters. From the leaf, a depth-first search tries trusted roots first,
 * then each presented certificate whose subject is the issuer's name (and
 * whose key id agrees), checking each link's signature once. Every complete
 * path is handed to `check`; the first that passes wins. The search is
 * bounded in steps, signature checks and complete paths, so a hostile chain
 * of look-alike certificates cannot make it expensive.
 */

/** Search nodes visited, at most: a legitimate chain needs one per certificate. */
const MAX_STEPS = 64;
/** Signature checks, at most, per search: each (child, issuer) pair is checked once. */
const MAX_SIGNATURES = 16;
/** Complete paths handed to `check`, at most. */
const MAX_PATHS = 4;

const TIME_DEPENDENT: ReadonlySet<string> = new Set(["expired", "not-yet-valid"]);

export interface Found<T> {
  /** Leaf first, up to the certificate the anchor signed. */
  path: Cert[];
  anchor: Cert;
  /** What `check` returned for this path. */
  result: T;
}

export interface SearchOptions {
  policy: CompiledPolicy;
  counters?: { signatures: number };
  /** Signatures of CA certificates that verified before (the verifier's memory); none without it. */
  memo?: CaMemo;
}

/**
 * The first path from `presented[0]` to a root of `bundle` whose links verify
 * and that `check` accepts (check throws a Refusal to reject a path). Throws
 * the most telling Refusal when there is none: a complete path's own
 * refusal, else the first broken link, else why the search stopped.
 */
export function findPath<T>(
  presented: Cert[],
  bundle: TrustBundle,
  opts: SearchOptions,
  check: (path: Cert[], anchor: Cert) => T,
): Found<T> {
  const { policy } = opts;
  const verified = new Map<Cert, Map<Cert, boolean>>();
  let steps = 0;
  let signatures = 0;
  let complete = 0;
  let stopped: string | null = null;
  let linkFailure: Refusal | null = null;
  let pathFailure: Refusal | null = null;
  const note = (r: Refusal) => {
    linkFailure ??= r;
  };

  const signedBy = (child: Cert, issuer: Cert): boolean => {
    const known = verified.get(child)?.get(issuer);
    if (known !== undefined) return known;
    if (opts.memo?.verified(child, issuer)) {
      if (!verified.has(child)) verified.set(child, new Map());
      verified.get(child)?.set(issuer, true);
      return true;
    }
    if (signatures >= MAX_SIGNATURES) {
      stopped = `gave up after ${MAX_SIGNATURES} signature checks`;
      return false;
    }
    signatures++;
    if (opts.counters) opts.counters.signatures++;
    let ok: boolean;
    try {
      ok = signatureVerifies(child.facts, keyOf(issuer));
    } catch {
      ok = false;
    }
    if (!verified.has(child)) verified.set(child, new Map());
    verified.get(child)?.set(issuer, ok);
    if (ok) opts.memo?.remember(child, issuer);
    return ok;
  };

  const extend = (path: Cert[]): Found<T> | null => {
    if (stopped) return null;
    if (++steps > MAX_STEPS) {
      stopped = `gave up after ${MAX_STEPS} steps`;
      return null;
    }
    const child = path[path.length - 1];
    const algorithm = algorithmProblem(child, policy);
    if (algorithm) {
      note(algorithm);
      return null;
    }

    const roots = bundle.issuersOf(child.facts);
    for (const root of roots) {
      if (!signedBy(child, root)) continue;
      complete++;
      try {
        return { path, anchor: root, result: check(path, root) };
      } catch (err) {
        if (!(err instanceof Refusal)) throw err;
        // A time-dependent refusal wins: the verifier does not cache it, as another moment may accept.
        if (!pathFailure || (!TIME_DEPENDENT.has(pathFailure.code) && TIME_DEPENDENT.has(err.code))) {
          pathFailure = err;
        }
      }
      if (complete >= MAX_PATHS) {
        stopped = `gave up after ${MAX_PATHS} complete paths`;
        return null;
      }
    }
    if (!stopped && roots.length > 0 && !roots.some((r) => verified.get(child)?.get(r))) {
      const by = roots.length === 1 ? describe(roots[0]) : "any trusted root of that name";
      note(
        new Refusal(
          "bad-signature",
          `the signature on ${describe(child)} does not verify with the key of ${by}`,
        ),
      );
    }

    const unused = presented.filter((c) => !path.includes(c) && !bundle.contains(c.facts.der));
    const issuers = unused.filter(
      (c) => c.facts.subject.equals(child.facts.issuer) && keyIdsAgree(child.facts, c.facts),
    );
    if (issuers.length > 0 && path.length - 1 >= policy.maxDepth) {
      note(
        new Refusal(
          "constraints",
          `the path to ${describe(child)}'s issuer would need more than ${policy.maxDepth} intermediate certificate(s), the most this verifier accepts`,
        ),
      );
      return null;
    }
    for (const issuer of issuers) {
      if (!signedBy(child, issuer)) {
        if (!stopped) {
          note(
            new Refusal(
              "bad-signature",
              `the signature on ${describe(child)} does not verify with the key of ${describe(issuer)}`,
            ),
          );
        }
        continue;
      }
      const found = extend([...path, issuer]);
      if (found) return found;
    }
    if (roots.length === 0 && issuers.length === 0) note(noIssuer(child, unused));
    return null;
  };

  const found = extend([presented[0]]);
  if (found) return found;
  if (pathFailure) throw pathFailure;
  if (linkFailure) throw linkFailure;
  throw new Refusal("untrusted", `no path to a trusted root was found: path building ${stopped ?? "failed"}`);
}

const issuerText = (c: Cert): string => nameOfField(c, "issuer") || "an empty name";

function noIssuer(child: Cert, unused: Cert[]): Refusal {
  const whose = `(whose issuer is ${issuerText(child)})`;
  if (unused.length === 0) {
    return new Refusal(
      "untrusted",
      `${describe(child)} is not issued by a trusted root (its issuer is ${issuerText(child)}); ` +
        `the chain ends without reaching the trust bundle`,
    );
  }
  if (unused.length === 1) {
    return new Refusal(
      "untrusted",
      `the chain is broken: ${describe(unused[0])} is not the issuer of ${describe(child)} ${whose}`,
    );
  }
  return new Refusal(
    "untrusted",
    `the chain is broken: no trusted root and none of the ${unused.length} other presented certificates is the issuer of ${describe(child)} ${whose}`,
  );
}

/** Why `c`'s signature algorithm is refused (before any signature work), or null. */
function algorithmProblem(c: Cert, policy: CompiledPolicy): Refusal | null {
  const { signatureAlgorithm: oid, signatureParams: params } = c.facts;
  const name = signatureAlgorithmName(oid, params);
  if (name === null) {
    return new Refusal(
      "bad-algorithm",
      `${describe(c)} is signed with ${algorithmText(oid, params)}, which is not accepted (SHA-1, MD5 and unusual parameters are refused)`,
    );
  }
  if (!policy.signatureAlgorithms.has(name)) {
    return new Refusal(
      "bad-algorithm",
      `${describe(c)} is signed with ${name}, which this verifier's policy does not allow (allowed: ${[...policy.signatureAlgorithms].join(", ")})`,
    );
  }
  return null;
}
