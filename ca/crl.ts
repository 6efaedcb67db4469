import type { KeyObject } from "node:crypto";
import type { Logger } from "../common/logger";
import * as der from "../formats/der";
import { certificateParts, extension, signatureScheme } from "./engine";
import {
  asCaKey,
  type CaKey,
  type SignatureHash,
  type Signed,
  type SigningKey,
  signatureHashFor,
} from "./key-backend";
import { keyIdentifier } from "./spki";
import type { RevokedCertificate } from "./store";

/**
 * Certificate revocation lists (RFC 5280 section 5, v2), one per issuer whose
 * key the authority holds, encoded with formats/der.ts and signed by
 * the issuer's CaKey like the leaves (node:crypto for a file key, C_Sign in a token).
 *
 * Which certificates are listed: only revoked ones that have not expired, and
 * each stays for one CRL validity period past its notAfter, so it appears on at
 * least one CRL issued after it expired (RFC 5280 5.1.2.6) and then drops off.
 * Leaves live minutes to hours, so the list stays as short as the recent
 * revocations, where listing every revocation ever would only grow.
 *
 * thisUpdate is set back by the leaves' backdate: a verifier whose clock runs
 * a few seconds slow would otherwise find a just-signed CRL "not yet valid",
 * and OpenSSL then refuses every peer, revoked or not.
 */

const OID = {
  authorityKeyId: "2.5.29.35",
  crlNumber: "2.5.29.20",
  reasonCode: "2.5.29.21",
} as const;
const ENUMERATED = 0x0a;
/** After a failed refresh, try again this soon (or at half-life, if that is sooner). */
const RETRY_MS = 60_000;
/** setTimeout's ceiling (about 24.8 days); a longer delay would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The URL an issuer's CRL is served at (acme/crl-routes.ts) and leaves name as their distribution point. */
export function crlUrl(baseUrl: string, issuerId: string): string {
  return `${baseUrl.replace(/\/+$/, "")}/crl/${issuerId}.crl`;
}

/** The URL of a CA certificate (DER) on the plain-HTTP listener (acme/crl-http.ts), named by caIssuers. */
export function caCertificateUrl(baseUrl: string, issuerId: string): string {
  return `${baseUrl.replace(/\/+$/, "")}/ca/${issuerId}.cer`;
}

/**
 * Where the CA publishes what new certificates point at (cli/context.ts
 * publicationUrls): leaves and intermediates name <crlBaseUrl>/crl/<issuer>.crl
 * as their CRL distribution point, intermediates <caIssuersBaseUrl>/ca/<root>.cer
 * as caIssuers. A null origin leaves that extension out.
 */
export interface PublicationUrls {
  crlBaseUrl: string | null;
  caIssuersBaseUrl: string | null;
}

export const NO_PUBLICATION: PublicationUrls = { crlBaseUrl: null, caIssuersBaseUrl: null };

/** What an intermediate under `rootId` names: the root's CRL and the root's certificate. */
export function intermediateLinks(
  urls: PublicationUrls,
  rootId: string,
): { crlUrl: string | null; caIssuersUrl: string | null } {
  return {
    crlUrl: urls.crlBaseUrl ? crlUrl(urls.crlBaseUrl, rootId) : null,
    caIssuersUrl: urls.caIssuersBaseUrl ? caCertificateUrl(urls.caIssuersBaseUrl, rootId) : null,
  };
}

/**
 * The store meta key holding a root's CRL. The server never holds a root key,
 * so the root signs its CRL where its key is: at `ca init` (an empty list,
 * valid as long as the root) and, later, when it revokes an intermediate.
 * Verifiers that check CRLs for the whole chain (Node's `crl` option) need it.
 */
export const rootCrlKey = (rootId: string): string => `root_crl:${rootId}`;

/** A root CRL as kept in the store's metadata (JSON with the DER in base64). */
export function encodeStoredCrl(c: CurrentCrl): string {
  return JSON.stringify({
    der: c.der.toString("base64"),
    number: c.number,
    thisUpdate: c.thisUpdate.toISOString(),
    nextUpdate: c.nextUpdate.toISOString(),
  });
}

export function decodeStoredCrl(text: string): CurrentCrl {
  const v = JSON.parse(text) as { der: string; number: number; thisUpdate: string; nextUpdate: string };
  return {
    der: Buffer.from(v.der, "base64"),
    number: v.number,
    thisUpdate: new Date(v.thisUpdate),
    nextUpdate: new Date(v.nextUpdate),
  };
}

/** The store meta key holding an issuer's last CRL number. */
export const crlNumberKey = (issuerId: string): string => `crl_number:${issuerId}`;

export interface CrlContents {
  /** cRLNumber: strictly increasing per issuer, never reused. */
  number: number;
  thisUpdate: Date;
  nextUpdate: Date;
  revoked: readonly RevokedCertificate[];
}

/** Integer (0..2^53) as a DER INTEGER. */
function integer(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`CRL number ${n} is out of range`);
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return der.unsignedInteger(b);
}

/** Encodes and signs one issuer's CRLs; the parts every CRL repeats are encoded once. */
export class CrlSigner<K extends SigningKey = KeyObject> {
  private readonly key: CaKey;
  private readonly hash: SignatureHash;
  private readonly algorithm: Buffer;
  /** version v2, signature algorithm, issuer: the issuer certificate's subject bytes exactly, so names match. */
  private readonly head: Buffer;
  private readonly aki: Buffer;

  constructor(issuer: { certDer: Buffer; privateKey: K }) {
    this.key = asCaKey(issuer.privateKey);
    const scheme = signatureScheme(this.key.publicKey);
    const parts = certificateParts(issuer.certDer);
    this.hash = signatureHashFor(this.key.algorithm);
    this.algorithm = scheme.algorithmIdentifier;
    this.head = Buffer.concat([der.smallInteger(1), scheme.algorithmIdentifier, parts.subject]);
    // The same key identifier the engine puts in the leaves' AKI, so verifiers pair CRL and leaf.
    const ski = keyIdentifier(parts.spki);
    this.aki = extension(OID.authorityKeyId, false, der.sequence(der.tlv(der.contextTag(0, false), ski)));
  }

  /** The signed CRL: at once for a file key, as a promise when a token signs. */
  sign(c: CrlContents): Signed<K, Buffer> {
    if (!(c.nextUpdate.getTime() > c.thisUpdate.getTime())) {
      throw new RangeError("CRL nextUpdate must be after thisUpdate");
    }
    const entries = c.revoked.map((r) =>
      der.sequence(
        der.unsignedInteger(Buffer.from(r.serial, "hex")),
        der.time(r.revokedAt),
        // RFC 5280 5.3.1: the reason code extension is left out rather than saying "unspecified".
        ...(r.reason === 0
          ? []
          : [der.sequence(extension(OID.reasonCode, false, der.tlv(ENUMERATED, Buffer.from([r.reason]))))]),
      ),
    );
    const tbs = der.sequence(
      this.head,
      der.time(c.thisUpdate),
      der.time(c.nextUpdate),
      // An empty list is left out, not encoded empty (RFC 5280 5.1.2.6).
      ...(entries.length === 0 ? [] : [der.sequence(...entries)]),
      der.explicit(0, der.sequence(this.aki, extension(OID.crlNumber, false, integer(c.number)))),
    );
    const signature = this.key.sign(this.hash, tbs);
    const crl = (s: Buffer) => der.sequence(tbs, this.algorithm, der.bitString(s));
    return (signature instanceof Promise ? signature.then(crl) : crl(signature)) as Signed<K, Buffer>;
  }
}

/** What CRLs need from storage, declared by their consumer. */
export interface CrlStore {
  listRevoked(issuerId: string, unexpiredAt: Date): Promise<RevokedCertificate[]>;
  incrementMeta(key: string): Promise<number>;
}

export interface CurrentCrl {
  der: Buffer;
  number: number;
  thisUpdate: Date;
  nextUpdate: Date;
}

export interface CrlPublisherOptions {
  store: CrlStore;
  /** nextUpdate − signing time; each CRL is re-signed at half of it. */
  validityMs: number;
  /** How far thisUpdate is set into the past (the leaves' backdate). */
  backdateMs: number;
  now?: () => Date;
}

interface IssuerCrl {
  signer: CrlSigner<SigningKey>;
  current: CurrentCrl | null;
  /** The last refresh in line (settled, never rejecting): refreshes of one issuer run one at a time. */
  tail: Promise<unknown>;
  /** A refresh waiting for the running one: callers that arrive meanwhile share it. */
  queued: Promise<CurrentCrl> | null;
  timer: NodeJS.Timeout | null;
}

const wholeSeconds = (ms: number) => new Date(Math.floor(ms / 1000) * 1000);

/**
 * Keeps the current CRL of each issuer: signs one on start, again after every
 * revocation the authority makes (once it is durable), and at half-life
 * otherwise, which is also when revocations made by another process (`stint
 * ca revoke`, another replica) are picked up. Timers are unref'd.
 */
export class CrlPublisher {
  private readonly issuers = new Map<string, IssuerCrl>();
  private readonly now: () => Date;
  private log: Logger | undefined;
  private started = false;

  constructor(private readonly opts: CrlPublisherOptions) {
    if (!(opts.validityMs >= 2000)) throw new RangeError("CRL validity must be at least 2 s");
    this.now = opts.now ?? (() => new Date());
  }

  add(issuerId: string, signer: CrlSigner<SigningKey>): void {
    this.issuers.set(issuerId, { signer, current: null, tail: Promise.resolve(), queued: null, timer: null });
  }

  get running(): boolean {
    return this.started;
  }

  issuerIds(): string[] {
    return [...this.issuers.keys()];
  }

  current(issuerId: string): CurrentCrl | null {
    return this.issuers.get(issuerId)?.current ?? null;
  }

  /** Signs every issuer's first CRL and keeps them fresh from then on; rejects if one cannot be made. */
  async start(log?: Logger): Promise<void> {
    this.log = log;
    this.started = true;
    await Promise.all(this.issuerIds().map((id) => this.refresh(id)));
  }

  stop(): void {
    this.started = false;
    for (const s of this.issuers.values()) {
      if (s.timer) clearTimeout(s.timer);
      s.timer = null;
    }
  }

  /** A CRL reflecting every revocation durable before this call. */
  refresh(issuerId: string): Promise<CurrentCrl> {
    const s = this.issuers.get(issuerId);
    if (!s) return Promise.reject(new RangeError(`no CRL is kept for issuer ${issuerId}`));
    if (s.queued) return s.queued;
    const run = s.tail.then(() => {
      s.queued = null;
      return this.build(issuerId, s);
    });
    s.queued = run;
    s.tail = run.catch(() => undefined);
    return run;
  }

  private async build(issuerId: string, s: IssuerCrl): Promise<CurrentCrl> {
    const { validityMs, backdateMs, store } = this.opts;
    try {
      const now = this.now().getTime();
      const thisUpdate = wholeSeconds(now - backdateMs);
      const nextUpdate = wholeSeconds(now + validityMs);
      const revoked = await store.listRevoked(issuerId, new Date(now - validityMs));
      // Reserved durably before signing, so a number is never used twice, across restarts and replicas.
      const number = await store.incrementMeta(crlNumberKey(issuerId));
      const signed = await s.signer.sign({ number, thisUpdate, nextUpdate, revoked });
      s.current = { der: signed, number, thisUpdate, nextUpdate };
      this.log?.debug("CRL signed", { issuer: issuerId, number, entries: revoked.length });
      this.schedule(issuerId, s, validityMs / 2);
      return s.current;
    } catch (err) {
      this.log?.error("CRL refresh failed; the previous CRL stays served", { issuer: issuerId, error: err });
      this.schedule(issuerId, s, Math.min(RETRY_MS, validityMs / 2));
      throw err;
    }
  }

  private schedule(issuerId: string, s: IssuerCrl, delayMs: number): void {
    if (!this.started) return;
    if (s.timer) clearTimeout(s.timer);
    s.timer = setTimeout(
      () => {
        s.timer = null;
        this.refresh(issuerId).catch(() => undefined); // logged in build()
      },
      Math.min(delayMs, MAX_TIMER_MS),
    ).unref();
  }
}
