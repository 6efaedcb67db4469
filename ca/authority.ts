import { isStintError, StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import type { Registry } from "../common/metrics";
import { signFeed } from "../formats/feed";
import { toPem } from "../formats/pem";
import { serialHex } from "../formats/serial";
import { CrlPublisher, CrlSigner, type CurrentCrl, crlUrl, decodeStoredCrl, rootCrlKey } from "./crl";
import { LeafEngine } from "./engine";
import type { CaKey } from "./key-backend";
import { CaKeyStore, type OpenedCaKey } from "./key-store";
import {
  type ApprovedLeaf,
  checkKeyType,
  checkLeafRequest,
  type IssuancePolicy,
  type LeafRequest,
  normalizeDnsName,
  normalizeIp,
  validityWindow,
} from "./policy";
import { REVOCATION_REASONS, revocationReasonName } from "./revocation";
import { activeIntermediate, ISSUERS_GENERATION, type RotationState, readRotationState } from "./rotation";
import { SequenceAllocator } from "./sequence";
import type { KeyAlgorithm } from "./spki";
import type { CertificateBinding, CertificateRecord, IssuerRecord, OrderCompletion, Store } from "./store";

/**
 * The authority: the only holder of CA private keys. Front ends (acme/, cli/)
 * hand it requests; it checks them against policy, then issues in three
 * steps: prepare (the sequence number is already durably reserved), sign,
 * record durably, and only then returns the certificate.
 */

export interface AuthorityOptions {
  dataDir: string;
  store: Store;
  policy: IssuancePolicy;
  /** null in --insecure-no-passphrase development mode. */
  passphrase: string | null;
  /** Where the issuers' keys are opened (keys.backend, a token); absent: key files under dataDir, with `passphrase`. */
  keys?: CaKeyStore;
  metrics?: Registry;
  /** Sequence numbers reserved per store round trip; a crash wastes at most this many. */
  sequenceBlock?: number;
  /**
   * The CA's public origin (cli/context.ts publicOrigin): leaves name
   * <crlBaseUrl>/crl/<issuerId>.crl as their CRL distribution point. Null or
   * absent leaves the extension out.
   */
  crlBaseUrl?: string | null;
  /** nextUpdate − thisUpdate of the CRLs (default 1 h); they are re-signed at half of it. */
  crlValidityMs?: number;
}

export const DEFAULT_CRL_VALIDITY_MS = 60 * 60 * 1000;

export interface IssuedCertificate {
  der: Buffer;
  serial: string;
  sequence: number;
  issuerId: string;
  notBefore: Date;
  notAfter: Date;
  /** Leaf then intermediates, as served with application/pem-certificate-chain. */
  chainPem: string;
}

/** Told after a certificate is durably issued or revoked: ca serve logs one line for each. */
export type CertificateEvent =
  | {
      kind: "issued";
      serial: string;
      issuerId: string;
      spiffeId: string | null;
      dnsNames: readonly string[];
      notAfter: Date;
      /** "workload" or "server" (the CA's own HTTPS certificate). */
      profile: string;
      actor: string;
      /** The serial renewed without a new attestation (renew-with-certificate), else null. */
      renews: string | null;
      /** The attestation method that justified it (join_token, k8s_sat, …), else null. */
      method: string | null;
    }
  | { kind: "revoked"; serial: string; reason: string; actor: string };

export interface ServerCertificateRequest {
  spki: Buffer;
  keyAlgorithm: KeyAlgorithm | null;
  keyDescription: string;
  /** DNS names and IP addresses for the CA's own HTTPS endpoint (from config, not from a client). */
  names: readonly string[];
  ttlMs: number;
}

/** An intermediate whose key is loaded: the active one signs leaves; every one signs its own CRL. */
interface KeyedIssuer {
  record: IssuerRecord;
  engine: LeafEngine<CaKey>;
  sequences: SequenceAllocator;
  crlSigner: CrlSigner<CaKey>;
  /** Signs the revocation feed (like CRLs: the intermediate has cRLSign); never leaves this class. */
  key: CaKey;
  encrypted: boolean;
}

/** What the active intermediate serves with each leaf, fixed when it becomes active or roots change. */
interface Active {
  issuer: KeyedIssuer;
  /** DER of the certificates served after each leaf: the intermediate, then a cross-certificate during a root rotation. */
  chainTail: Buffer[];
  chainTailPem: string;
}

export class Authority {
  private readonly issued?: ReturnType<Registry["counter"]>;
  private readonly latency?: ReturnType<Registry["histogram"]>;
  private readonly revoked?: ReturnType<Registry["counter"]>;
  /** CRLs of the intermediates whose key is here: the active one and those it replaced. */
  private readonly crls: CrlPublisher;
  /** Roots' CRLs, signed where their keys are and kept in the store. */
  private readonly rootCrls = new Map<string, CurrentCrl>();
  private readonly keyed = new Map<string, KeyedIssuer>();
  private readonly changeListeners: (() => void)[] = [];
  private readonly certificateListeners: ((event: CertificateEvent) => void)[] = [];
  private active!: Active;
  private issuers: IssuerRecord[] = [];
  private rotation: RotationState = { taints: new Map(), revoked: new Map(), cross: new Map() };
  private generation: string | null = null;
  private crlLog?: Logger;

  private constructor(private readonly opts: AuthorityOptions) {
    this.crls = new CrlPublisher({
      store: opts.store,
      validityMs: opts.crlValidityMs ?? DEFAULT_CRL_VALIDITY_MS,
      backdateMs: opts.policy.backdateMs,
    });
    this.issued = opts.metrics?.counter("stint_certificates_issued_total", "Certificates issued.", [
      "profile",
    ]);
    this.revoked = opts.metrics?.counter("stint_certificates_revoked_total", "Certificates revoked.", [
      "reason",
    ]);
    this.latency = opts.metrics?.histogram(
      "stint_issuance_seconds",
      "Time to issue and durably record one certificate.",
      ["profile"],
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    );
  }

  static async open(opts: AuthorityOptions): Promise<Authority> {
    const authority = new Authority(opts);
    await authority.load();
    return authority;
  }

  /** True when the active issuer's key was stored without encryption (development only). */
  get insecureKey(): boolean {
    return !this.active.issuer.encrypted;
  }

  /**
   * Re-reads the issuers if a rotation step (ca/rotation.ts, maybe in another
   * process) changed them since the last look. Returns whether anything
   * changed; listeners hear of it after the new issuers are in force.
   */
  async reload(): Promise<boolean> {
    if ((await this.opts.store.getMeta(ISSUERS_GENERATION)) === this.generation) return false;
    await this.load();
    for (const listener of this.changeListeners) listener();
    return true;
  }

  /** Called after every reload() that changed the issuers (the server re-issues its own certificate). */
  onIssuersChanged(listener: () => void): void {
    this.changeListeners.push(listener);
  }

  /** Called after each certificate is durably issued or revoked, once its transaction committed. */
  onCertificate(listener: (event: CertificateEvent) => void): void {
    this.certificateListeners.push(listener);
  }

  /** The event is about something already durable: a listener that throws must not fail it. */
  private tell(event: CertificateEvent): void {
    for (const listener of this.certificateListeners) {
      try {
        listener(event);
      } catch {
        // Listeners only report (ca serve's log line); the audit record is the durable trace.
      }
    }
  }

  private async load(): Promise<void> {
    const { store, dataDir } = this.opts;
    // Read first: a rotation finishing meanwhile bumps it again, so the next reload() sees that too.
    const generation = await store.getMeta(ISSUERS_GENERATION);
    const issuers = await store.listIssuers();
    if (issuers.length === 0) {
      throw new StintError("ERR_NOT_INITIALIZED", `no CA in ${dataDir}; run "stint ca init" first`);
    }
    const record = activeIntermediate(issuers);
    if (!record)
      throw new StintError("ERR_NO_ACTIVE_ISSUER", 'no active intermediate; see "stint ca status"');
    const rotation = await readRotationState(store, issuers);
    const now = Date.now();
    // The active one must load; others only for their CRLs, while their certificates may still be live.
    const active = await this.keyedIssuer(record, true);
    for (const other of issuers) {
      if (other.kind === "intermediate" && other.id !== record.id && other.notAfter.getTime() > now) {
        await this.keyedIssuer(other, false);
      }
    }
    this.issuers = issuers;
    this.rotation = rotation;
    this.active = { issuer: active!, ...this.chainTail(active!.record, issuers, rotation) };
    this.generation = generation;
    if (this.crls.running) await this.loadRootCrls();
  }

  /** Loads (once) an intermediate's key and its CRL signer; null when the key is not here and not required. */
  private async keyedIssuer(record: IssuerRecord, required: boolean): Promise<KeyedIssuer | null> {
    const known = this.keyed.get(record.id);
    if (known) {
      known.record = record;
      return known;
    }
    if (!record.keyPath) {
      if (!required) return null;
      throw new StintError(
        "ERR_NO_ACTIVE_ISSUER",
        `the key of active intermediate ${record.id} is not on this host`,
      );
    }
    let loaded: OpenedCaKey;
    try {
      const keys = this.opts.keys ?? CaKeyStore.files(this.opts.dataDir, this.opts.passphrase);
      loaded = await keys.open(record.keyPath);
    } catch (err) {
      if (required) throw err;
      return null;
    }
    const { key, encrypted } = loaded;
    const keyed: KeyedIssuer = {
      record,
      engine: new LeafEngine({
        certDer: record.certDer,
        privateKey: key,
        organization: this.opts.policy.trustDomain,
        crlUrl: this.opts.crlBaseUrl ? crlUrl(this.opts.crlBaseUrl, record.id) : null,
        dnsOnlyClientAuth: this.opts.policy.dnsOnlyClientAuth === true,
      }),
      sequences: new SequenceAllocator(this.opts.store, record.id, this.opts.sequenceBlock ?? 1000),
      crlSigner: new CrlSigner({ certDer: record.certDer, privateKey: key }),
      key,
      encrypted,
    };
    this.keyed.set(record.id, keyed);
    this.crls.add(record.id, keyed.crlSigner);
    if (this.crls.running) await this.crls.refresh(record.id).catch(() => undefined);
    return keyed;
  }

  /**
   * The intermediate, and while the root that signed it was cross-signed by
   * a root still in the bundle, that cross-certificate: verifiers trusting
   * only the old root reach it through the cross-certificate, the others stop
   * at the new root (OpenSSL, Node and verify/ all stop at the first trusted issuer).
   */
  private chainTail(
    record: IssuerRecord,
    issuers: readonly IssuerRecord[],
    rotation: RotationState,
  ): Omit<Active, "issuer"> {
    const chainTail = [record.certDer];
    const cross = record.parentId ? rotation.cross.get(record.parentId) : undefined;
    const vouching = cross && issuers.find((i) => i.id === cross.by);
    if (cross && vouching && vouching.state !== "retired") chainTail.push(cross.der);
    return { chainTail, chainTailPem: chainTail.map((d) => toPem("CERTIFICATE", d)).join("") };
  }

  get trustDomain(): string {
    return this.opts.policy.trustDomain;
  }

  get policy(): IssuancePolicy {
    return this.opts.policy;
  }

  get activeIssuer(): IssuerRecord {
    return this.active.issuer.record;
  }

  /** Every issuer as last loaded, with its state. */
  allIssuers(): readonly IssuerRecord[] {
    return this.issuers;
  }

  /** Intermediates put in the revocation feed by `stint ca revoke-issuer`. */
  revokedIssuers(): string[] {
    return [...this.rotation.revoked.keys()].sort();
  }

  /** Taints whose revocation deadline has passed and which are not revoked yet. */
  taintsDue(now: Date): string[] {
    return [...this.rotation.taints]
      .filter(([id, t]) => t.deadline !== null && t.deadline <= now && !this.rotation.revoked.has(id))
      .map(([id]) => id);
  }

  /** Roots verifiers should trust: every root not retired, prepared ones included. */
  trustedRoots(): IssuerRecord[] {
    return this.issuers.filter((i) => i.kind === "root" && i.state !== "retired");
  }

  /**
   * Starts keeping CRLs (the server does; one-shot commands never sign one):
   * signs each issuer's first CRL now, then re-signs after every revocation
   * made here and at half-life, when revocations by other processes show up.
   */
  async startCrls(log?: Logger): Promise<void> {
    this.crlLog = log;
    await this.crls.start(log);
    await this.loadRootCrls();
  }

  private async loadRootCrls(): Promise<void> {
    for (const root of this.trustedRoots()) {
      const stored = await this.opts.store.getMeta(rootCrlKey(root.id));
      if (stored) this.rootCrls.set(root.id, decodeStoredCrl(stored));
      else
        this.crlLog?.warn("no CRL for this root: Node verifiers with the crl option will refuse its chains", {
          root: root.id,
        });
    }
  }

  stopCrls(): void {
    this.crls.stop();
  }

  /** The current CRL of an issuer whose key is here once startCrls() has made it, or a root's CRL signed where its key is; else null. */
  crl(issuerId: string): CurrentCrl | null {
    return this.crls.current(issuerId) ?? this.rootCrls.get(issuerId) ?? null;
  }

  /** The signed envelope of a revocation feed body (docs/feed.md), by the active intermediate; a token answers later. */
  signFeed(body: Buffer): Buffer | Promise<Buffer> {
    return signFeed(body, this.active.issuer.key, this.active.chainTail);
  }

  /**
   * When the authority wants `cert` replaced early (ARI pulls its window forward
   * to this instant): when it was revoked, or its issuer tainted. Null otherwise.
   */
  renewFrom(cert: CertificateRecord): Date | null {
    const tainted = this.rotation.taints.get(cert.issuerId)?.at ?? null;
    if (cert.revokedAt && tainted) return cert.revokedAt < tainted ? cert.revokedAt : tainted;
    return cert.revokedAt ?? tainted;
  }

  /**
   * Issues a workload certificate after checking the request against policy.
   * `bound`: the entry and attestation (or node agent) it is issued under, recorded with it in
   * one transaction that re-checks the entry (ca/store.ts CertificateBinding),
   * and what its audit record (cert.issue, or cert.renew when it renews) adds.
   * `completes`: the ACME order made valid in the same transaction (finalize).
   */
  async issue(
    req: LeafRequest,
    actor: string,
    now = new Date(),
    bound?: { binding: CertificateBinding; details: Record<string, unknown> },
    completes?: OrderCompletion,
  ): Promise<IssuedCertificate> {
    const leaf = checkLeafRequest(this.opts.policy, req, now);
    return this.issueApproved(leaf, actor, "workload", now, bound, completes);
  }

  /** Issues the CA's own HTTPS certificate; names come from the CA's configuration, never from a client. */
  async issueServerCertificate(req: ServerCertificateRequest, now = new Date()): Promise<IssuedCertificate> {
    const keyAlgorithm = checkKeyType(this.opts.policy, req);
    const dnsNames: string[] = [];
    const ipAddresses: string[] = [];
    for (const name of req.names) {
      if (/^[0-9.]+$|:/.test(name)) ipAddresses.push(normalizeIp(name));
      else dnsNames.push(normalizeDnsName(name));
    }
    const [notBefore, notAfter] = validityWindow(this.opts.policy, req.ttlMs, now);
    const approved: ApprovedLeaf = {
      spiffeId: `spiffe://${this.trustDomain}/stint/ca`,
      dnsNames,
      ipAddresses,
      keyAlgorithm,
      spki: req.spki,
      notBefore,
      notAfter,
    };
    return this.issueApproved(approved, "server", "server", now);
  }

  /**
   * Revokes a certificate this CA issued. ERR_NOT_FOUND for an unknown serial,
   * ERR_ALREADY_REVOKED when it already was; the store writes the audit record.
   */
  async revoke(serial: string, reason: number, actor: string, now = new Date()): Promise<void> {
    try {
      await this.opts.store.revokeCertificate(serial, reason, now, {
        at: now,
        actor,
        action: "cert.revoke",
        subject: serial,
        details: { reason: revocationReasonName(reason) },
      });
    } catch (err) {
      if (isStintError(err, "ERR_STORE_CONFLICT")) {
        throw new StintError("ERR_ALREADY_REVOKED", `certificate ${serial} is already revoked`);
      }
      throw err;
    }
    this.revoked?.inc({ reason: revocationReasonName(reason) });
    this.tell({ kind: "revoked", serial, reason: revocationReasonName(reason), actor });
    await this.refreshCrlAfterRevoking(serial);
  }

  /**
   * Revokes each certificate in turn (revoking all of an entry or an ID); one
   * revoked meanwhile by someone else is skipped. Returns the serials this call revoked.
   */
  async revokeEach(
    serials: readonly string[],
    reason: number,
    actor: string,
    now = new Date(),
  ): Promise<string[]> {
    const revoked: string[] = [];
    for (const serial of serials) {
      try {
        await this.revoke(serial, reason, actor, now);
        revoked.push(serial);
      } catch (err) {
        if (!isStintError(err, "ERR_ALREADY_REVOKED")) throw err;
      }
    }
    return revoked;
  }

  /**
   * Revokes every unexpired certificate bound to entry `entryId` (issued
   * under it through ACME or the agent API, and their renewals), page by
   * page, reason privilegeWithdrawn: what deleting an entry with "revoke"
   * does on the admin API and in the console. Returns the serials revoked.
   */
  async revokeEntryCertificates(entryId: string, actor: string, now = new Date()): Promise<string[]> {
    const revoked: string[] = [];
    let page = await this.opts.store.listCertificates({ entryId, unexpiredAt: now });
    while (page.length > 0) {
      const live = page.filter((c) => !c.revokedAt).map((c) => c.serial);
      revoked.push(...(await this.revokeEach(live, REVOCATION_REASONS.privilegeWithdrawn, actor, now)));
      const afterSerial = page[page.length - 1]!.serial;
      page = await this.opts.store.listCertificates({ entryId, unexpiredAt: now, afterSerial });
    }
    return revoked;
  }

  /**
   * Deletes an entry (`remove`) and revokes its certificates: first those
   * issued so far, then `remove`, then any issued in between. A failure
   * before the deletion leaves the entry in place, so the same request run
   * again finishes the job; the second pass has at most a few to do.
   */
  async removeEntryRevoking(
    entryId: string,
    actor: string,
    now: Date,
    remove: () => Promise<void>,
  ): Promise<string[]> {
    const revoked = await this.revokeEntryCertificates(entryId, actor, now);
    await remove();
    revoked.push(...(await this.revokeEntryCertificates(entryId, actor, now)));
    return revoked;
  }

  /**
   * Re-signs the revoked certificate's issuer's CRL, so it lists the serial
   * once revoke() returns. A failure is logged and retried by the publisher's
   * timer; it does not fail the revocation, which is already durable.
   */
  private async refreshCrlAfterRevoking(serial: string): Promise<void> {
    if (!this.crls.running) return;
    const issuerId = await this.opts.store.getCertificate(serial).then(
      (c) => c?.issuerId,
      () => undefined,
    );
    // Unknown issuer (the lookup failed): refresh them all rather than miss the revocation.
    const kept = this.crls.issuerIds();
    const ids = issuerId === undefined ? kept : kept.filter((id) => id === issuerId);
    await Promise.all(ids.map((id) => this.crls.refresh(id).catch(() => undefined)));
  }

  private async issueApproved(
    leaf: ApprovedLeaf,
    actor: string,
    profile: string,
    now: Date,
    bound?: { binding: CertificateBinding; details: Record<string, unknown> },
    completes?: OrderCompletion,
  ): Promise<IssuedCertificate> {
    const started = process.hrtime.bigint();
    // Held for the whole issuance: a rotation landing meanwhile must not mix two issuers' numbers.
    const active = this.active;
    const sequence = await active.issuer.sequences.take();
    // A file key signs at once (no promise turn); a token's failure (ERR_KEY_UNAVAILABLE) fails this
    // request before anything is recorded, and its sequence number stays spent, never reused.
    const signed = active.issuer.engine.issue({ ...leaf, sequence });
    const { der, serial } = signed instanceof Promise ? await signed : signed;
    const record: CertificateRecord = {
      serial: serialHex(serial),
      issuerId: active.issuer.record.id,
      sequence,
      spiffeId: leaf.spiffeId,
      dnsNames: leaf.dnsNames,
      ipAddresses: leaf.ipAddresses,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      der,
      revokedAt: null,
      revocationReason: null,
    };
    const binding = bound?.binding;
    await this.opts.store.insertCertificate(
      record,
      {
        at: now,
        actor,
        action: binding?.renews ? "cert.renew" : "cert.issue",
        subject: record.serial,
        details: {
          profile,
          issuer: record.issuerId,
          spiffeId: leaf.spiffeId,
          dnsNames: leaf.dnsNames,
          ipAddresses: leaf.ipAddresses,
          notAfter: leaf.notAfter.toISOString(),
          ...(binding && {
            entryId: binding.entryId,
            entryHash: binding.entryHash,
            ...(binding.attestationId && { attestationId: binding.attestationId }),
            ...(binding.renews && { renews: binding.renews }),
            ...(binding.requestedBy && { requestedBy: binding.requestedBy }),
          }),
          ...bound?.details,
        },
      },
      binding,
      completes,
    );
    this.issued?.inc({ profile });
    this.latency?.observe(Number(process.hrtime.bigint() - started) / 1e9, { profile });
    const method = bound?.details["method"];
    this.tell({
      kind: "issued",
      serial: record.serial,
      issuerId: record.issuerId,
      spiffeId: leaf.spiffeId,
      dnsNames: leaf.dnsNames,
      notAfter: leaf.notAfter,
      profile,
      actor,
      renews: binding?.renews ?? null,
      method: typeof method === "string" ? method : null,
    });
    return {
      der,
      serial: record.serial,
      sequence,
      issuerId: record.issuerId,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      chainPem: toPem("CERTIFICATE", der) + active.chainTailPem,
    };
  }
}
