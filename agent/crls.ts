import { createPublicKey, type KeyObject } from "node:crypto";
import { StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import { type CrlFacts, crlSignedBy, issuerIdFromKeyId, readCrl } from "../formats/crl";
import { parsePemBlocks, toPem } from "../formats/pem";
import { type CertificateFacts, computedKeyId, KeyUsage, readCertificate } from "../formats/x509";
import { crlRefreshTime } from "./schedule";

/**
 * The CRLs the agent writes as crls.pem beside the certificate, for servers
 * that check client certificates against CRLs (nginx ssl_crl, HAProxy
 * crl-file). Those servers check every certificate of a peer's chain (OpenSSL's
 * CRL_CHECK_ALL) and refuse everyone once a loaded CRL passes its nextUpdate,
 * so the file holds the CRL of every CA a peer's chain goes through, each
 * checked against its issuer's certificate and fetched again well before its
 * nextUpdate.
 */

export const CRLS_FILE = "crls.pem";
const PEM_LABEL = "X509 CRL";

/** A CA whose CRL is wanted, with the certificate its CRL is checked against. */
export interface CrlIssuer {
  /** The CA's id, as /crl/<id>.crl names it. */
  id: string;
  cert: CertificateFacts;
  key: KeyObject;
}

const keyIdOf = (f: CertificateFacts): Buffer => f.subjectKeyId ?? computedKeyId(f.spki);

/**
 * The CAs a peer's chain may go through, given chains the agent has checked
 * (its own, and the feed signer's: the CA's active intermediate, which other
 * workloads may already be issued from) and the trusted roots: every CA
 * certificate among them and the issuer of every certificate, found by name
 * and key identifier. Roots are preferred as the certificate to check against.
 */
export function crlIssuers(
  chains: readonly (readonly Buffer[])[],
  roots: readonly Buffer[],
): Map<string, CrlIssuer> {
  const rootFacts = roots.map((d) => readCertificate(d));
  const chainFacts = chains.map((chain) => chain.map((d) => readCertificate(d)));
  const authorities = [...rootFacts, ...chainFacts.flat()].filter((f) => f.ca);
  const out = new Map<string, CrlIssuer>();
  const want = (ca: CertificateFacts) => {
    const id = issuerIdFromKeyId(keyIdOf(ca));
    if (!out.has(id))
      out.set(id, { id, cert: ca, key: createPublicKey({ key: ca.spki, format: "der", type: "spki" }) });
  };
  for (const root of rootFacts) want(root);
  for (const cert of chainFacts.flat()) {
    const issuer = authorities.find(
      (a) =>
        a.subject.equals(cert.issuer) &&
        (cert.authorityKeyId === null || keyIdOf(a).equals(cert.authorityKeyId)),
    );
    if (issuer) want(issuer);
    if (cert.ca) want(cert);
  }
  return out;
}

/** Reads a CRL and checks it is `issuer`'s, signed by it, and not past its nextUpdate; ERR_UNAUTHORIZED (or ERR_DER) says why not. */
export function checkCrl(der: Buffer, issuer: CrlIssuer, now: Date): CrlFacts {
  const crl = readCrl(der);
  const refuse = (why: string): never => {
    throw new StintError("ERR_UNAUTHORIZED", `the CRL for issuer ${issuer.id} ${why}`);
  };
  if (!crl.issuer.equals(issuer.cert.subject)) refuse("names another issuer");
  if (crl.authorityKeyId !== null && !crl.authorityKeyId.equals(keyIdOf(issuer.cert)))
    refuse("names another issuer key");
  if (issuer.cert.keyUsage !== null && !(issuer.cert.keyUsage & KeyUsage.cRLSign))
    refuse("comes from a certificate without the cRLSign key usage");
  if (!crlSignedBy(crl, issuer.key)) refuse("has a signature that does not verify with the issuer's key");
  if (crl.nextUpdate === null) refuse("has no nextUpdate");
  if (crl.nextUpdate!.getTime() <= now.getTime())
    refuse(`expired at ${crl.nextUpdate!.toISOString()} (its nextUpdate)`);
  return crl;
}

/** Whether `a` was issued after `b`: by cRLNumber, else by thisUpdate. */
function newer(a: CrlFacts, b: CrlFacts): boolean {
  if (a.number !== null && b.number !== null) return a.number > b.number;
  return a.thisUpdate.getTime() > b.thisUpdate.getTime();
}

export interface CrlKeeperOptions {
  /** GET the DER CRL of the CA with this id; ERR_NOT_FOUND when the CA keeps none for it. */
  fetch: (issuerId: string) => Promise<Buffer>;
  /** The longest wait between two fetches of one CRL (a root's CRL is valid for years, yet changes when an intermediate is revoked). */
  maxIntervalMs: () => number;
  log: Logger;
  /** Uniform in [0, 1); Math.random by default. */
  random?: () => number;
}

interface Held {
  crl: CrlFacts | null;
  due: Date;
}

/**
 * The checked CRLs of the wanted CAs and when each is to be fetched again.
 * A failed or refused fetch keeps the last good CRL (it is retried sooner);
 * an older CRL than the one held (a stale cache) is ignored.
 */
export class CrlKeeper {
  private readonly held = new Map<string, Held>();
  private readonly random: () => number;

  constructor(private readonly opts: CrlKeeperOptions) {
    this.random = opts.random ?? Math.random;
  }

  /**
   * Takes up CRLs written earlier (a crls.pem from before a restart) that
   * still check out, so a CA that is down at start does not empty the file.
   * They are fetched again at the next refresh all the same.
   */
  adopt(pem: string, issuers: Map<string, CrlIssuer>, now: Date): void {
    for (const block of parsePemBlocks(pem)) {
      if (block.label !== PEM_LABEL) continue;
      for (const issuer of issuers.values()) {
        if (this.held.has(issuer.id)) continue;
        try {
          this.held.set(issuer.id, { crl: checkCrl(block.der, issuer, now), due: now });
          break;
        } catch {
          // Not this issuer's, or no longer valid: left out.
        }
      }
    }
  }

  /**
   * Fetches the CRL of every wanted CA that is due (or not held yet), and
   * forgets CAs no longer wanted. Returns whether the set of CRLs changed.
   */
  async refresh(issuers: Map<string, CrlIssuer>, now: Date): Promise<boolean> {
    let changed = false;
    for (const id of [...this.held.keys()]) {
      if (!issuers.has(id)) {
        changed ||= this.held.get(id)!.crl !== null;
        this.held.delete(id);
      }
    }
    const due = [...issuers.values()].filter((issuer) => {
      const h = this.held.get(issuer.id);
      return h === undefined || h.due.getTime() <= now.getTime();
    });
    const results = await Promise.all(due.map((issuer) => this.fetchOne(issuer, now)));
    return results.some(Boolean) || changed;
  }

  private async fetchOne(issuer: CrlIssuer, now: Date): Promise<boolean> {
    const held = this.held.get(issuer.id)?.crl ?? null;
    const maxMs = this.opts.maxIntervalMs();
    const schedule = (crl: CrlFacts | null, failed: boolean) =>
      crlRefreshTime({ now, nextUpdate: crl?.nextUpdate ?? null, maxMs, failed, random: this.random });
    try {
      const crl = checkCrl(await this.opts.fetch(issuer.id), issuer, now);
      const take = held === null || newer(crl, held);
      const kept = take ? crl : held;
      this.held.set(issuer.id, { crl: kept, due: schedule(kept, false) });
      return take;
    } catch (err) {
      const notKept = (err as StintError).code === "ERR_NOT_FOUND";
      // A CA that keeps no CRL for this issuer (a root whose key signed none) is asked again rarely, and quietly.
      const due = notKept ? new Date(now.getTime() + maxMs) : schedule(held, true);
      this.held.set(issuer.id, { crl: held, due });
      const fields = {
        issuer: issuer.id,
        error: (err as Error).message,
        heldNextUpdate: held?.nextUpdate?.toISOString() ?? null,
        retryAt: due.toISOString(),
      };
      if (notKept) this.opts.log.debug("the CA serves no CRL for this issuer", fields);
      else this.opts.log.warn("could not refresh a CRL; keeping the last one", fields);
      return false;
    }
  }

  /** When the next CRL is due, or null when none is wanted. */
  nextDue(): Date | null {
    let next: number | null = null;
    for (const h of this.held.values()) next = Math.min(next ?? h.due.getTime(), h.due.getTime());
    return next === null ? null : new Date(next);
  }

  /** The earliest nextUpdate among the CRLs held (what /health reports), or null. */
  earliestNextUpdate(): Date | null {
    const times = [...this.held.values()].flatMap((h) =>
      h.crl?.nextUpdate ? [h.crl.nextUpdate.getTime()] : [],
    );
    return times.length === 0 ? null : new Date(Math.min(...times));
  }

  /** crls.pem: the held CRLs as PEM, in issuer id order so equal sets give equal files; null when none is held. */
  pem(): string | null {
    const blocks = [...this.held.entries()]
      .filter(([, h]) => h.crl !== null)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, h]) => toPem(PEM_LABEL, h.crl!.der));
    return blocks.length === 0 ? null : blocks.join("");
  }
}
