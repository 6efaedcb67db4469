import {
  createHash,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  X509Certificate,
} from "node:crypto";
import { EventEmitter } from "node:events";
import { StintError } from "../../common/errors";
import type { Logger } from "../../common/logger";
import { pemDecodeAll } from "../../formats/pem";
import { buildCsr } from "../csr";
import type { AgentApiClient, SvidResult, WorkloadEntry } from "./ca-client";

/**
 * The node agent's workload SVIDs: entries parented to the agent, synced from
 * the CA; for each, a P-256 key made in memory (never written anywhere) and
 * the certificate the CA issued for it, renewed from the CA's renewAfter on.
 * A failed renewal keeps the held SVID, which is served until it expires.
 * Emits "changed" whenever what a workload would be sent changes (an SVID,
 * the entries, the X.509 roots or the JWT keys).
 */

export interface HeldSvid {
  entryId: string;
  spiffeId: string;
  /** DER, leaf first. */
  chain: Buffer[];
  chainPem: string;
  keyPem: string;
  /** Unencrypted PKCS#8 DER, as the Workload API sends it. */
  keyDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  renewAfter: Date;
}

/** Per workload entry, for metrics and /health. */
export interface WorkloadStats {
  entryId: string;
  spiffeId: string;
  renewals: number;
  failures: number;
  lastError: string | null;
}

export interface SvidCacheOptions {
  client: AgentApiClient;
  /** The roots the node agent trusts (PEM), kept fresh by its own bundle refresh. */
  roots: () => string;
  trustDomain: string;
  log: Logger;
  entrySyncMs?: number;
  now?: () => Date;
}

/** At most this many CSRs per POST, as the agent API allows. */
export const BATCH = 100;
const ENTRY_SYNC_MS = 5000;
const RETRY_BASE_MS = 1000;
const RETRY_CAP_MS = 30_000;

interface Pending {
  attempts: number;
  notBefore: number;
}

export class SvidCache extends EventEmitter {
  readonly entries = new Map<string, WorkloadEntry>();
  readonly held = new Map<string, HeldSvid>();
  readonly stats = new Map<string, WorkloadStats>();
  /** The trust domain's roots as DER, and the PEM they came from (to notice a change). */
  roots: { pem: string; der: Buffer[] } = { pem: "", der: [] };
  /** JWT signing keys from /bundle.json (`use: jwt-svid`), as a JWK set. */
  jwtKeys: { keys: Record<string, unknown>[] } = { keys: [] };
  /** Whether the entries have been fetched at least once: before that, "no match" may just mean "not yet". */
  synced = false;
  private readonly retry = new Map<string, Pending>();
  /** SHA-256 of intermediate chains already checked against the current roots. */
  private readonly trustedIssuers = new Set<string>();
  private lastSync = 0;
  private jwtKeysText = "[]";
  private readonly now: () => Date;

  constructor(private readonly opts: SvidCacheOptions) {
    super();
    this.setMaxListeners(0);
    this.now = opts.now ?? (() => new Date());
  }

  /** One pass: roots, entries and JWT keys when due, then every SVID that is missing or due. */
  async tick(): Promise<void> {
    let changed = this.refreshRoots();
    const now = this.now().getTime();
    if (now - this.lastSync >= (this.opts.entrySyncMs ?? ENTRY_SYNC_MS)) {
      try {
        changed = (await this.syncEntries()) || changed;
        changed = (await this.syncJwtKeys()) || changed;
        this.lastSync = now;
        this.synced = true;
      } catch (err) {
        // Not fatal: the entries and SVIDs held are served until they expire.
        this.opts.log.warn("could not sync workload entries; serving the ones held", {
          error: (err as Error).message,
        });
      }
    }
    if (changed) this.emit("changed");
    await this.issueDue();
  }

  /** When the earliest pending work is due (a renewal or a retry), for the loop's sleep. */
  nextDue(): number {
    let next = this.lastSync + (this.opts.entrySyncMs ?? ENTRY_SYNC_MS);
    for (const e of this.entries.values()) {
      const h = this.held.get(e.id);
      const r = this.retry.get(e.id);
      const due = Math.max(h ? h.renewAfter.getTime() : 0, r?.notBefore ?? 0);
      next = Math.min(next, due);
    }
    return next;
  }

  /** The SVIDs held for these entries that have not expired, in the entries' order. */
  svidsFor(entries: readonly WorkloadEntry[]): HeldSvid[] {
    const now = this.now().getTime();
    const out: HeldSvid[] = [];
    for (const e of entries) {
      const h = this.held.get(e.id);
      if (h && h.notAfter.getTime() > now) out.push(h);
    }
    return out;
  }

  private refreshRoots(): boolean {
    const pem = this.opts.roots();
    if (pem === this.roots.pem) return false;
    this.roots = { pem, der: pemDecodeAll(pem, "CERTIFICATE", "trusted roots") };
    this.trustedIssuers.clear();
    return true;
  }

  private async syncEntries(): Promise<boolean> {
    const { entries } = await this.opts.client.entries();
    let changed = false;
    const seen = new Set<string>();
    for (const e of entries) {
      seen.add(e.id);
      const before = this.entries.get(e.id);
      if (before && JSON.stringify(before) === JSON.stringify(e)) continue;
      changed = true;
      // A new SPIFFE ID for the same entry cannot keep the old certificate.
      if (before && before.spiffeId !== e.spiffeId) this.held.delete(e.id);
      this.entries.set(e.id, e);
      if (!this.stats.has(e.id))
        this.stats.set(e.id, {
          entryId: e.id,
          spiffeId: e.spiffeId,
          renewals: 0,
          failures: 0,
          lastError: null,
        });
      else this.stats.get(e.id)!.spiffeId = e.spiffeId;
    }
    for (const id of [...this.entries.keys()]) {
      if (seen.has(id)) continue;
      changed = true;
      this.entries.delete(id);
      this.held.delete(id);
      this.stats.delete(id);
      this.retry.delete(id);
    }
    return changed;
  }

  private async syncJwtKeys(): Promise<boolean> {
    const doc = (await this.opts.client.bundleJson()) as { keys?: Record<string, unknown>[] };
    const keys = (Array.isArray(doc?.keys) ? doc.keys : []).filter((k) => k?.use === "jwt-svid");
    const text = JSON.stringify(keys);
    if (text === this.jwtKeysText) return false;
    this.jwtKeysText = text;
    this.jwtKeys = { keys };
    return true;
  }

  private async issueDue(): Promise<void> {
    const now = this.now().getTime();
    const due: WorkloadEntry[] = [];
    for (const e of this.entries.values()) {
      const h = this.held.get(e.id);
      const r = this.retry.get(e.id);
      if (r && r.notBefore > now) continue;
      if (!h || h.renewAfter.getTime() <= now) due.push(e);
    }
    for (let i = 0; i < due.length; i += BATCH) await this.issueBatch(due.slice(i, i + BATCH));
  }

  private async issueBatch(batch: WorkloadEntry[]): Promise<void> {
    const keys = new Map<string, KeyObject>();
    const requests = batch.map((e) => {
      const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
      keys.set(e.id, key);
      const csr = buildCsr({ key, spiffeId: e.spiffeId, dnsNames: [...(e.dnsNames ?? [])] });
      return { entryId: e.id, csr: csr.toString("base64url") };
    });
    let results: SvidResult[];
    try {
      results = await this.opts.client.x509Svids(requests);
    } catch (err) {
      for (const e of batch) this.failed(e, (err as Error).message);
      this.opts.log.warn("could not get workload SVIDs; serving the ones held", {
        error: (err as Error).message,
        entries: batch.length,
      });
      return;
    }
    let changed = false;
    const answered = new Set<string>();
    for (const r of results) {
      const entry = this.entries.get(r.entryId);
      const key = keys.get(r.entryId);
      if (!entry || !key || answered.has(r.entryId)) continue;
      answered.add(r.entryId);
      if ("error" in r) {
        this.failed(entry, r.error?.detail ?? r.error?.type ?? "refused");
        continue;
      }
      try {
        this.accept(entry, key, r);
        changed = true;
      } catch (err) {
        this.failed(entry, (err as Error).message);
      }
    }
    for (const e of batch) if (!answered.has(e.id)) this.failed(e, "the CA did not answer for this entry");
    if (changed) this.emit("changed");
  }

  /** What the CA sent must be for our key and the entry's ID and chain to a trusted root, or it is not used. */
  private accept(
    entry: WorkloadEntry,
    key: KeyObject,
    r: { spiffeId: string; certificateChain: string; renewAfter: string },
  ): void {
    const chain = pemDecodeAll(r.certificateChain, "CERTIFICATE", "workload SVID");
    const certs = chain.map((d) => new X509Certificate(d));
    const leaf = certs[0];
    if (!leaf.publicKey.equals(createPublicKey(key)))
      throw new StintError("ERR_BAD_CSR", "the CA returned a certificate for another key");
    const uris = leaf.subjectAltName?.match(/URI:[^,\s]+/g) ?? [];
    if (uris.length !== 1 || uris[0] !== `URI:${entry.spiffeId}`)
      throw new StintError("ERR_POLICY_SPIFFE", `the CA returned an SVID that is not for ${entry.spiffeId}`);
    if (certs.length < 2 || !leaf.verify(certs[1].publicKey))
      throw new StintError("ERR_UNAUTHORIZED", "the CA returned a chain whose links do not verify");
    this.checkIssuers(chain.slice(1), certs.slice(1));
    const keyPem = key.export({ type: "pkcs8", format: "pem" }) as string;
    const notBefore = new Date(leaf.validFrom);
    const notAfter = new Date(leaf.validTo);
    let renewAfter = new Date(r.renewAfter);
    // Without a usable hint, renew at half the lifetime: still far from the 10 % health margin.
    if (Number.isNaN(renewAfter.getTime()) || renewAfter >= notAfter)
      renewAfter = new Date((notBefore.getTime() + notAfter.getTime()) / 2);
    // "Renew now" for a certificate just issued (its issuer is being rotated away) is not followed
    // at once: a tenth of the lifetime later at the earliest, or the agent and CA would spin.
    const earliest = this.now().getTime() + Math.max(1000, (notAfter.getTime() - notBefore.getTime()) / 10);
    if (renewAfter.getTime() < earliest) renewAfter = new Date(Math.min(earliest, notAfter.getTime()));
    const renewed = this.held.has(entry.id);
    this.held.set(entry.id, {
      entryId: entry.id,
      spiffeId: entry.spiffeId,
      chain,
      chainPem: r.certificateChain,
      keyPem,
      keyDer: key.export({ type: "pkcs8", format: "der" }) as Buffer,
      notBefore,
      notAfter,
      renewAfter,
    });
    this.retry.delete(entry.id);
    const s = this.stats.get(entry.id);
    if (s) {
      s.renewals++;
      s.lastError = null;
    }
    this.opts.log.info(renewed ? "workload SVID renewed" : "workload SVID issued", {
      spiffeId: entry.spiffeId,
      serial: leaf.serialNumber.toLowerCase(),
      notAfter: notAfter.toISOString(),
    });
  }

  /**
   * The intermediates above a leaf must chain to a trusted root. Every SVID of
   * a batch comes with the same ones, so a chain verified once is remembered
   * until the roots change: per SVID only the leaf's own signature is checked.
   */
  private checkIssuers(ders: Buffer[], certs: X509Certificate[]): void {
    const key = createHash("sha256").update(Buffer.concat(ders)).digest("hex");
    if (this.trustedIssuers.has(key)) return;
    for (let i = 0; i + 1 < certs.length; i++)
      if (!certs[i].verify(certs[i + 1].publicKey))
        throw new StintError("ERR_UNAUTHORIZED", "the CA returned a chain whose links do not verify");
    const top = certs[certs.length - 1];
    const roots = this.roots.der.map((d) => new X509Certificate(d));
    if (!roots.some((root) => top.checkIssued(root) && top.verify(root.publicKey)))
      throw new StintError(
        "ERR_UNAUTHORIZED",
        "the CA returned a chain that does not lead to a trusted root",
      );
    if (this.trustedIssuers.size > 64) this.trustedIssuers.clear();
    this.trustedIssuers.add(key);
  }

  private failed(entry: WorkloadEntry, why: string): void {
    const r = this.retry.get(entry.id) ?? { attempts: 0, notBefore: 0 };
    r.attempts++;
    // Full jitter, so a CA coming back is not met by every entry at once.
    const cap = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** Math.min(r.attempts - 1, 10));
    r.notBefore = this.now().getTime() + Math.random() * cap;
    this.retry.set(entry.id, r);
    const s = this.stats.get(entry.id);
    if (s) {
      s.failures++;
      s.lastError = why;
    }
  }
}
