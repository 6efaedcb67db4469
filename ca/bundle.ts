import { X509Certificate } from "node:crypto";
import { StintError } from "../common/errors";
import { toPem } from "../formats/pem";
import type { JwtBundleKey } from "./jwt-keys";
import type { IssuerRecord } from "./store";

/**
 * The trust bundle: every root a verifier should trust now. Prepared roots are
 * in it (root rotation publishes the next root before it signs anything), and
 * so are tainted ones until retired; only retired roots are left out.
 */

/** Roots to publish, in a stable order (oldest first), from any list of issuers. */
export function bundleRoots(issuers: readonly IssuerRecord[]): IssuerRecord[] {
  return issuers
    .filter((i) => i.kind === "root" && i.state !== "retired")
    .sort((a, b) => a.notBefore.getTime() - b.notBefore.getTime() || a.id.localeCompare(b.id));
}

/** Concatenated PEM of the roots to trust; "" when there are none. */
export function bundlePem(issuers: readonly IssuerRecord[]): string {
  return bundleRoots(issuers)
    .map((r) => toPem("CERTIFICATE", r.certDer))
    .join("");
}

/** One JWK of a SPIFFE bundle (X509-SVID profile: key parameters, use, x5c). */
export interface SpiffeBundleKey {
  kty: string;
  use: "x509-svid";
  x5c: [string];
  crv?: string;
  x?: string;
  y?: string;
  n?: string;
  e?: string;
}

export interface SpiffeBundle<K = SpiffeBundleKey> {
  keys: K[];
  spiffe_sequence: number;
  spiffe_refresh_hint: number;
}

/**
 * The SPIFFE trust bundle document (spiffe/spiffe "SPIFFE Trust Domain and
 * Bundle" §4): a JWK Set with one `x509-svid` key per root, each carrying its
 * certificate in `x5c`, then the JWT-SVID signing keys (`jwt-svid`, ca/jwt-keys.ts).
 */
export function spiffeBundle(
  issuers: readonly IssuerRecord[],
  opts: { sequence: number; refreshHintSeconds: number },
): SpiffeBundle;
export function spiffeBundle(
  issuers: readonly IssuerRecord[],
  opts: { sequence: number; refreshHintSeconds: number; jwtKeys: readonly JwtBundleKey[] },
): SpiffeBundle<SpiffeBundleKey | JwtBundleKey>;
export function spiffeBundle(
  issuers: readonly IssuerRecord[],
  opts: { sequence: number; refreshHintSeconds: number; jwtKeys?: readonly JwtBundleKey[] },
): SpiffeBundle<SpiffeBundleKey | JwtBundleKey> {
  if (!Number.isSafeInteger(opts.sequence) || opts.sequence < 0) {
    throw new StintError(
      "ERR_CONFIG",
      `bundle sequence must be a non-negative integer (got ${opts.sequence})`,
    );
  }
  if (!Number.isSafeInteger(opts.refreshHintSeconds) || opts.refreshHintSeconds < 1) {
    throw new StintError("ERR_CONFIG", `bundle refresh hint must be a positive whole number of seconds`);
  }
  const keys = bundleRoots(issuers).map((root): SpiffeBundleKey => {
    const jwk = new X509Certificate(root.certDer).publicKey.export({ format: "jwk" });
    // Only the public parameters the spec names; the spec asks for nothing else.
    const key: SpiffeBundleKey = {
      kty: String(jwk.kty),
      use: "x509-svid",
      x5c: [root.certDer.toString("base64")],
    };
    for (const p of ["crv", "x", "y", "n", "e"] as const) if (jwk[p] !== undefined) key[p] = String(jwk[p]);
    return key;
  });
  return {
    keys: [...keys, ...(opts.jwtKeys ?? [])],
    spiffe_sequence: opts.sequence,
    spiffe_refresh_hint: opts.refreshHintSeconds,
  };
}
