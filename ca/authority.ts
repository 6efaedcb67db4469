import type { KeyObject } from "node:crypto";
import { join } from "node:path";
import { isStintError, StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import type { Registry } from "../common/metrics";
import { signFeed } from "../formats/feed";
import { toPem } from "../formats/pem";
import { serialHex } from "../formats/serial";
import { CrlPublisher, CrlSigner, type CurrentCrl, crlUrl, decodeStoredCrl, rootCrlKey } from "./crl";
import { LeafEngine } from "./engine";
import { loadPrivateKey } from "./keys";
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
import { revocationReasonName } from "./revocation";
import { SequenceAllocator } from "./sequence";
import type { KeyAlgorithm } from "./spki";
import type { CertificateRecord, IssuerRecord, Store } from "./store";

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

export interface ServerCertificateRequest {
  spki: Buffer;
  keyAlgorithm: KeyAlgorithm | null;
  keyDescription: string;
  /** DNS names and IP addresses for the CA's own HTTPS endpoint (from config, not from a client). */
  names: readonly string[];
  ttlMs: number;
}

interface ActiveIssuer {
  record: IssuerRecord;
  engine: LeafEngine;
  sequences: SequenceAllocator;
  /** PEM of the intermediates served after each leaf. */
  chainTailPem: string;
  crlSigner: CrlSigner;
  /** Signs the revocation feed (like CRLs: the intermediate has cRLSign); never leaves this class. */
  key: KeyObject;
}

export class Authority {
  /** True when the active issuer's key was stored without encryption (development only). */
  readonly insecureKey: boolean;
  private readonly issued?: ReturnType<Registry["counter"]>;
  private readonly latency?: ReturnType<Registry["histogram"]>;
  private readonly revoked?: ReturnType<Registry["counter"]>;
  /** CRLs of the issuers whose key is here: the active one (retired ones later). */
  private readonly crls: CrlPublisher;
  /** Roots' CRLs, signed offline (ca init) and kept in the store. */
  private readonly rootCrls = new Map<string, CurrentCrl>();

  private constructor(
    private readonly opts: AuthorityOptions,
    private readonly active: ActiveIssuer,
    private readonly issuers: IssuerRecord[],
    insecureKey: boolean,
  ) {
    this.insecureKey = insecureKey;
    this.crls = new CrlPublisher({
      store: opts.store,
      validityMs: opts.crlValidityMs ?? DEFAULT_CRL_VALIDITY_MS,
      backdateMs: opts.policy.backdateMs,
    });
    this.crls.add(active.record.id, active.crlSigner);
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
    const issuers = await opts.store.listIssuers();
    if (issuers.length === 0) {
      throw new StintError("ERR_NOT_INITIALIZED", `no CA in ${opts.dataDir}; run "stint ca init" first`);
    }
    const record = issuers.find((i) => i.kind === "intermediate" && i.state === "active");
    if (!record)
      throw new StintError("ERR_NO_ACTIVE_ISSUER", 'no active intermediate; see "stint ca status"');
    if (!record.keyPath) {
      throw new StintError(
        "ERR_NO_ACTIVE_ISSUER",
        `the key of active intermediate ${record.id} is not on this host`,
      );
    }
    const { key, encrypted } = await loadPrivateKey(join(opts.dataDir, record.keyPath), opts.passphrase);
    const active = {
      record,
      engine: new LeafEngine({
        certDer: record.certDer,
        privateKey: key,
        organization: opts.policy.trustDomain,
        crlUrl: opts.crlBaseUrl ? crlUrl(opts.crlBaseUrl, record.id) : null,
      }),
      sequences: new SequenceAllocator(opts.store, record.id, opts.sequenceBlock ?? 1000),
      chainTailPem: toPem("CERTIFICATE", record.certDer),
      crlSigner: new CrlSigner({ certDer: record.certDer, privateKey: key }),
      key,
    };
    return new Authority(opts, active, issuers, !encrypted);
  }

  get trustDomain(): string {
    return this.opts.policy.trustDomain;
  }

  get policy(): IssuancePolicy {
    return this.opts.policy;
  }

  get activeIssuer(): IssuerRecord {
    return this.active.record;
  }

  /** Roots verifiers should trust: every root not retired. */
  trustedRoots(): IssuerRecord[] {
    return this.issuers.filter((i) => i.kind === "root" && i.state !== "retired");
  }

  /**
   * Starts keeping CRLs (the server does; one-shot commands never sign one):
   * signs each issuer's first CRL now, then re-signs after every revocation
   * made here and at half-life, when revocations by other processes show up.
   */
  async startCrls(log?: Logger): Promise<void> {
    for (const root of this.trustedRoots()) {
      const stored = await this.opts.store.getMeta(rootCrlKey(root.id));
      if (stored) this.rootCrls.set(root.id, decodeStoredCrl(stored));
      else
        log?.warn("no CRL for this root: Node verifiers with the crl option will refuse its chains", {
          root: root.id,
        });
    }
    return this.crls.start(log);
  }

  stopCrls(): void {
    this.crls.stop();
  }

  /** The current CRL of an issuer whose key is here once startCrls() has made it, or a root's CRL signed where its key is; else null. */
  crl(issuerId: string): CurrentCrl | null {
    return this.crls.current(issuerId) ?? this.rootCrls.get(issuerId) ?? null;
  }

  /** The signed envelope of a revocation feed body (docs/feed.md), by the active intermediate. */
  signFeed(body: Buffer): Buffer {
    return signFeed(body, this.active.key, [this.active.record.certDer]);
  }

  /**
   * When the authority wants `cert` replaced early (ARI pulls its window forward
   * to this instant): when it was revoked, or its issuer tainted. Null otherwise.
   */
  renewFrom(cert: CertificateRecord): Date | null {
    return cert.revokedAt;
  }

  /** Issues a workload certificate after checking the request against policy. */
  async issue(req: LeafRequest, actor: string, now = new Date()): Promise<IssuedCertificate> {
    return this.issueApproved(checkLeafRequest(this.opts.policy, req, now), actor, "workload", now);
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
    await this.refreshCrlAfterRevoking(serial);
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
  ): Promise<IssuedCertificate> {
    const started = process.hrtime.bigint();
    const sequence = await this.active.sequences.take();
    const { der, serial } = this.active.engine.issue({ ...leaf, sequence });
    const record: CertificateRecord = {
      serial: serialHex(serial),
      issuerId: this.active.record.id,
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
    await this.opts.store.insertCertificate(record, {
      at: now,
      actor,
      action: "cert.issue",
      subject: record.serial,
      details: {
        profile,
        issuer: record.issuerId,
        spiffeId: leaf.spiffeId,
        dnsNames: leaf.dnsNames,
        ipAddresses: leaf.ipAddresses,
        notAfter: leaf.notAfter.toISOString(),
      },
    });
    this.issued?.inc({ profile });
    this.latency?.observe(Number(process.hrtime.bigint() - started) / 1e9, { profile });
    return {
      der,
      serial: record.serial,
      sequence,
      issuerId: record.issuerId,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      chainPem: toPem("CERTIFICATE", der) + this.active.chainTailPem,
    };
  }
}
