import { X509Certificate } from "node:crypto";
import { isStintError, StintError } from "../common/errors";
import { parsePemBlocks, toPem } from "../formats/pem";
import { type CertificateFacts, readCertificate } from "../formats/x509";
import { type Cert, criticalProblem, describe, issuerProblem, keyIdsAgree, keyOf } from "./cert";

/** The roots a verifier trusts. Immutable; a new bundle is a new object. */
export class TrustBundle {
  private readonly bySubject = new Map<string, Cert[]>();
  private readonly ders = new Set<string>();

  private constructor(
    private readonly certs: Cert[],
    readonly anchors: readonly X509Certificate[],
  ) {
    for (const c of certs) {
      const key = c.facts.subject.toString("base64");
      this.bySubject.set(key, [...(this.bySubject.get(key) ?? []), c]);
      this.ders.add(c.facts.der.toString("base64"));
    }
  }

  /**
   * A bundle from PEM text (string or Buffer) or a list of DER certificates.
   * Each must be a CA certificate this validator can process: ERR_CONFIG
   * otherwise, and for any input at all nothing but ERR_CONFIG.
   */
  static from(input: string | Buffer | readonly Uint8Array[]): TrustBundle {
    const ders = bundleDers(input);
    if (ders.length === 0) throw new StintError("ERR_CONFIG", "trust bundle: it holds no certificate");
    const anchors: X509Certificate[] = [];
    const certs = ders.map((d, i) => {
      const role = `root ${i + 1}`;
      let c: Cert;
      try {
        const facts = readCertificate(d);
        const x509 = new X509Certificate(d);
        anchors.push(x509);
        c = { x509, facts, role };
        keyOf(c);
      } catch (err) {
        const why = isStintError(err) ? err.message : "not an X.509 certificate with a key Node can use";
        throw new StintError("ERR_CONFIG", `trust bundle: certificate ${i + 1} cannot be read: ${why}`);
      }
      const problem = c.facts.ca
        ? (issuerProblem(c) ?? criticalProblem(c))
        : "is not a CA certificate (basicConstraints cA is not set)";
      if (problem) throw new StintError("ERR_CONFIG", `trust bundle: ${describe(c)} ${problem}`);
      return c;
    });
    return new TrustBundle(certs, anchors);
  }

  /** The roots as PEM text (what TLS options and feed checks take). */
  toPem(): string {
    return this.certs.map((c) => toPem("CERTIFICATE", c.facts.der)).join("");
  }

  /** Roots whose subject is `child`'s issuer and whose key id (if both sides carry one) matches. */
  issuersOf(child: CertificateFacts): readonly Cert[] {
    const named = this.bySubject.get(child.issuer.toString("base64")) ?? [];
    return named.filter((root) => keyIdsAgree(child, root.facts));
  }

  /** Whether `der` is one of the roots, byte for byte (a peer may send the root along). */
  contains(der: Uint8Array): boolean {
    return this.ders.has(Buffer.from(der.buffer, der.byteOffset, der.length).toString("base64"));
  }
}

function bundleDers(input: unknown): Uint8Array[] {
  if (typeof input === "string" || Buffer.isBuffer(input)) {
    const text = typeof input === "string" ? input : input.toString("utf8");
    try {
      return parsePemBlocks(text)
        .filter((b) => b.label === "CERTIFICATE")
        .map((b) => b.der);
    } catch (err) {
      throw new StintError("ERR_CONFIG", `trust bundle: ${isStintError(err) ? err.message : "unreadable"}`);
    }
  }
  if (!Array.isArray(input) || !input.every((d) => d instanceof Uint8Array)) {
    throw new StintError("ERR_CONFIG", "trust bundle: give PEM text or a list of DER certificates");
  }
  return [...input];
}
