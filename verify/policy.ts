import { StintError } from "../common/errors";
import { KEY_TYPES, type KeyType, SIGNATURE_ALGORITHMS, type SignatureAlgorithm } from "./algorithms";

/**
 * What a verifier's owner may narrow: the signature algorithms accepted on
 * the links it checks, the key types accepted in a leaf, and how many
 * intermediates a path may have. Defaults allow every name in
 * verify/algorithms.ts, which are all strong; nothing can widen them.
 */
export interface ChainPolicy {
  /** Default: all of SIGNATURE_ALGORITHMS. */
  signatureAlgorithms?: readonly SignatureAlgorithm[];
  /** Key types a leaf may carry. Default: all of KEY_TYPES. CA keys are always held to all of KEY_TYPES. */
  leafKeys?: readonly KeyType[];
  /** Most intermediate certificates between the leaf and the trusted root (default 6, at most MAX_CHAIN - 1). */
  maxDepth?: number;
}

export interface CompiledPolicy {
  signatureAlgorithms: ReadonlySet<string>;
  leafKeys: ReadonlySet<string>;
  maxDepth: number;
}

/** Longest chain read from a peer: more is refused before any parsing work. */
export const MAX_CHAIN = 8;

/** As webpki: six intermediates is more than any sane hierarchy needs. */
const DEFAULT_MAX_DEPTH = 6;

/** Checks and freezes a policy; ERR_CONFIG names the first unknown or empty setting. */
export function compilePolicy(p: ChainPolicy = {}): CompiledPolicy {
  const names = <T extends string>(
    what: string,
    given: readonly string[] | undefined,
    known: readonly T[],
  ): ReadonlySet<string> => {
    if (given === undefined) return new Set(known);
    if (!Array.isArray(given) || given.length === 0) {
      throw new StintError("ERR_CONFIG", `verifier policy ${what} must be a non-empty list`);
    }
    for (const n of given) {
      if (!(known as readonly string[]).includes(n)) {
        throw new StintError(
          "ERR_CONFIG",
          `verifier policy ${what}: "${String(n).slice(0, 40)}" is not one of ${known.join(", ")}`,
        );
      }
    }
    return new Set(given);
  };
  const maxDepth = p.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 0 || maxDepth > MAX_CHAIN - 1) {
    throw new StintError(
      "ERR_CONFIG",
      `verifier policy maxDepth must be an integer from 0 to ${MAX_CHAIN - 1}`,
    );
  }
  return {
    signatureAlgorithms: names("signatureAlgorithms", p.signatureAlgorithms, SIGNATURE_ALGORITHMS),
    leafKeys: names("leafKeys", p.leafKeys, KEY_TYPES),
    maxDepth,
  };
}

export const DEFAULT_POLICY: CompiledPolicy = compilePolicy();

/** Every key type: what CA keys are held to whatever the leaf policy says. */
export const CA_KEYS: ReadonlySet<string> = new Set(KEY_TYPES);
