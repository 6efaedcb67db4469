import { Lru } from "../common/lru";
import { type CertificateFacts, readCertificate } from "../formats/x509";
import type { Cert } from "./cert";

/**
 * What a verifier remembers about the CA certificates peers present, so that
 * a new leaf under a known intermediate costs one parse and one signature
 * check rather than two of each. Both are pure functions of the bytes: a
 * certificate's DER reads the same every time, and a signature over exact
 * bytes verifies with an exact key (SPKI) or not at all. Leaves are never
 * kept: each new one is a new chain anyway.
 */

/** Distinct CA certificates and links remembered, at most. */
const MAX_CAS = 1024;

export class CaMemo {
  private readonly facts = new Lru<CertificateFacts>(MAX_CAS);
  private readonly links = new Lru<true>(MAX_CAS);

  /** The strict reader's facts of a presented CA certificate (throws as readCertificate does). */
  read(der: Uint8Array): CertificateFacts {
    const id = latin1(der);
    let f = this.facts.get(id);
    if (!f) {
      f = readCertificate(der);
      this.facts.set(id, f);
    }
    return f;
  }

  /** Whether `child`'s signature by `issuer` verified before. Only CA children are remembered. */
  verified(child: Cert, issuer: Cert): boolean {
    return child.role !== "leaf" && this.links.get(linkId(child, issuer)) === true;
  }

  /** Remembers a signature that verified. */
  remember(child: Cert, issuer: Cert): void {
    if (child.role !== "leaf") this.links.set(linkId(child, issuer), true);
  }

  clear(): void {
    this.facts.clear();
    this.links.clear();
  }
}

// DER is self-delimiting, so the certificate followed by the key names the pair unambiguously.
const linkId = (child: Cert, issuer: Cert): string =>
  child.facts.der.toString("latin1") + issuer.facts.spki.toString("latin1");

const latin1 = (der: Uint8Array): string =>
  Buffer.from(der.buffer, der.byteOffset, der.length).toString("latin1");
