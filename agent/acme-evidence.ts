import type { KeyObject } from "node:crypto";
import { signX509Pop } from "../formats/x509pop";

/** attest-01 evidence, one builder per attestor (acme/attest/*.ts is the other side). */

/** x509pop: the chain as standard base64 DER, leaf first, and the leaf key's proof for this challenge and account. */
export function x509popEvidence(opts: {
  chainDer: Buffer[];
  key: KeyObject;
  token: string;
  accountThumbprint: string;
}): { chain: string[]; signature: string } {
  return {
    chain: opts.chainDer.map((c) => c.toString("base64")),
    signature: signX509Pop(opts.key, opts.token, opts.accountThumbprint),
  };
}

export function joinTokenEvidence(secret: string): { token: string } {
  return { token: secret };
}

export function k8sSatEvidence(jwt: string): { token: string } {
  return { token: jwt };
}
