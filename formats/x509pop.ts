import type { KeyObject } from "node:crypto";
import { StintError } from "../common/errors";
import { algorithmForKey, signJws } from "./jose";

/**
 * The x509pop attestation proof, shared by the agent that makes it and the
 * CA that checks it: the leaf key signs "stint-x509pop:" + challenge token +
 * "." + the account key's RFC 7638 thumbprint, so a captured proof cannot be
 * replayed for another challenge or by another account. Signatures are
 * encoded as in JWS (ECDSA r||s, Ed25519, RSA PKCS#1 v1.5), base64url.
 */

export const X509POP_PREFIX = "stint-x509pop:";

/** The exact bytes the leaf key signs. */
export function x509PopMessage(challengeToken: string, accountThumbprint: string): Buffer {
  return Buffer.from(`${X509POP_PREFIX}${challengeToken}.${accountThumbprint}`, "utf8");
}

/** The evidence signature a client sends (base64url), with its leaf private key. */
export function signX509Pop(leafKey: KeyObject, challengeToken: string, accountThumbprint: string): string {
  const alg = algorithmForKey(leafKey);
  if (!alg) throw new StintError("ERR_CONFIG", "this key type cannot make an x509pop proof");
  return signJws(alg, leafKey, x509PopMessage(challengeToken, accountThumbprint).toString("utf8"));
}
