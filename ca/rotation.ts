import { type KeyObject, X509Certificate } from "node:crypto";
import { join } from "node:path";
import { StintError } from "../common/errors";
import { writeFileAtomic } from "../common/files";
import { toPem } from "../formats/pem";
import type { PublicationUrls } from "./crl";
import {
  buildIntermediate,
  buildRoot,
  INTERMEDIATE_CERT_FILE,
  intermediateKeyPath,
  issuerRecord,
  KEYS_DIR,
  type NewIssuer,
  type RevokedIntermediate,
  signRootCrl,
} from "./hierarchy";
import { advanceJwtKeys } from "./jwt-keys";
import type { CaKey } from "./key-backend";
import { CaKeyStore, pendingKeyMeta } from "./key-store";
import { fingerprintSha256, issuerIdFromSki, type KeyAlgorithm, subjectKeyIdentifier } from "./keys";
import type { AuditEvent, IssuerProgress, IssuerRecord, Store } from "./store";
import { createCrossCertificate, randomSerial } from "./x509";

/**
 * Issuer rotation (docs/architecture.md, "Rotation"): one function per
 * operator command. Each changes the store only (issuer states, metadata and
 * the audit log) and then bumps ISSUERS_GENERATION, which running servers poll
 * to reload their issuers (Authority.reload), so commands work beside a
 * running `stint ca serve` and across PostgreSQL replicas.
 */

/** Bumped after every rotation step; servers reload their issuers when it moves. */
export const ISSUERS_GENERATION = "issuers_generation";
/** The SPIFFE bundle's sequence number, bumped whenever the set of roots changes. */
export const BUNDLE_SEQUENCE = "bundle_sequence";

const taintKey = (id: string) => `issuer_taint:${id}`;
const revokedKey = (id: string) => `issuer_revoked:${id}`;
/** Where a root's cross-certificate is kept (ca/offline-rotation.ts stores imported ones there too). */
export const crossKey = (rootId: string) => `root_cross:${rootId}`;

export interface Taint {
  at: Date;
  /** When the server revokes the issuer by itself (null: only `stint ca revoke-issuer` does). */
  deadline: Date | null;
}

/** A root cross-signed by the root it replaces (root activation). */
export interface CrossCertificate {
  /** The old root that signed it. */
  by: string;
  der: Buffer;
}

/** What a server needs beyond the issuer rows: taints, revoked issuers and cross-certificates. */
export interface RotationState {
  taints: Map<string, Taint>;
  revoked: Map<string, Date>;
  cross: Map<string, CrossCertificate>;
}

export async function readRotationState(
  store: Store,
  issuers: readonly IssuerRecord[],
): Promise<RotationState> {
  const state: RotationState = { taints: new Map(), revoked: new Map(), cross: new Map() };
  for (const issuer of issuers) {
    const taint = await store.getMeta(taintKey(issuer.id));
    if (taint) {
      const t = JSON.parse(taint) as { at: string; deadline: string | null };
      state.taints.set(issuer.id, { at: new Date(t.at), deadline: t.deadline ? new Date(t.deadline) : null });
    }
    const revoked = await store.getMeta(revokedKey(issuer.id));
    if (revoked) state.revoked.set(issuer.id, new Date((JSON.parse(revoked) as { at: string }).at));
    const cross = await store.getMeta(crossKey(issuer.id));
    if (cross) {
      const c = JSON.parse(cross) as { by: string; der: string };
      state.cross.set(issuer.id, { by: c.by, der: Buffer.from(c.der, "base64") });
    }
  }
  return state;
}

export interface RotationContext {
  dataDir: string;
  store: Store;
  trustDomain: string;
  /** null in --insecure-no-passphrase development mode. */
  passphrase: string | null;
  keyAlgorithm: KeyAlgorithm;
  actor: string;
  now: Date;
  /** Where new intermediates point for their root's CRL and certificate; absent leaves both out. */
  publication?: PublicationUrls;
  /** Where CA keys are made and opened (keys.backend); absent: key files under dataDir, with `passphrase`. */
  keys?: CaKeyStore;
}

/** The context's key store: key files with its passphrase unless one was given. */
export function keyStoreOf(ctx: RotationContext): CaKeyStore {
  return ctx.keys ?? CaKeyStore.files(ctx.dataDir, ctx.passphrase);
}

/** The intermediate new certificates come from: the newest active one. */
export function activeIntermediate(issuers: readonly IssuerRecord[]): IssuerRecord | undefined {
  return issuers
    .filter((i) => i.kind === "intermediate" && i.state === "active")
    .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0];
}

function findIssuer(issuers: readonly IssuerRecord[], id: string): IssuerRecord {
  const found = issuers.find((i) => i.id === id.toLowerCase());
  if (!found) {
    throw new StintError(
      "ERR_NOT_FOUND",
      `no issuer ${id.slice(0, 40)} in this CA; \`stint ca status\` lists them (known: ${issuers.map((i) => i.id).join(", ")})`,
    );
  }
  return found;
}

/** Whether an issuer's key is here: its file in the data directory, or in the configured token (an offline root's is neither). */
async function keyIsHere(ctx: RotationContext, issuer: IssuerRecord): Promise<boolean> {
  return keyStoreOf(ctx).has(issuer.keyPath);
}

/** Refuses when a step needs an issuer's key and it is not in the data directory. */
export async function requireKeyHere(ctx: RotationContext, issuer: IssuerRecord): Promise<string> {
  if (!issuer.keyPath || !(await keyIsHere(ctx, issuer))) {
    throw new StintError(
      "ERR_KEY_OFFLINE",
      `the key of ${issuer.kind} ${issuer.id} is not on this host; sign where it is (stint ca intermediate-csr, stint root sign, stint ca import-intermediate)`,
    );
  }
  return issuer.keyPath;
}

async function issuerKey(ctx: RotationContext, issuer: IssuerRecord): Promise<CaKey> {
  const keyPath = await requireKeyHere(ctx, issuer);
  return (await keyStoreOf(ctx).open(keyPath)).key;
}

export function event(
  ctx: RotationContext,
  action: string,
  subject: string,
  details: Record<string, unknown>,
): AuditEvent {
  return { at: ctx.now, actor: ctx.actor, action, subject, details };
}

export async function bump(store: Store, ...keys: string[]): Promise<void> {
  for (const key of keys) await store.incrementMeta(key);
}

/** Writes a new key file (0600, encrypted); a token key is stored already. */
async function writeNewKey(ctx: RotationContext, issuer: NewIssuer): Promise<void> {
  await keyStoreOf(ctx).save(issuer.keys, issuer.record.keyPath!);
}

export interface RotateResult {
  activated: IssuerRecord;
  retired: IssuerRecord | null;
}

/**
 * Makes a new intermediate active and retires the current one. The new one is
 * made here, signed by the current root (whose key must be here), unless
 * `importedDer` is given: an intermediate signed elsewhere (`stint root sign`)
 * whose key `stint ca intermediate-csr` left in keys/. The retired one keeps
 * its CRL and feed records until its last certificate expires.
 */
export async function rotateIntermediate(
  ctx: RotationContext,
  opts: { ttlDays: number; importedDer?: Buffer; permittedDnsSuffixes?: readonly string[] },
): Promise<RotateResult> {
  const issuers = await ctx.store.listIssuers();
  const current = activeIntermediate(issuers) ?? null;
  let next: IssuerRecord;
  if (opts.importedDer) {
    next = await importedIntermediate(ctx, issuers, opts.importedDer);
  } else {
    const root = signingRoot(issuers, current);
    const made = await buildIntermediate({
      keyStore: keyStoreOf(ctx),
      root,
      rootKey: await issuerKey(ctx, root),
      trustDomain: ctx.trustDomain,
      keyAlgorithm: ctx.keyAlgorithm,
      now: ctx.now,
      ttlDays: opts.ttlDays,
      permittedDnsSuffixes: opts.permittedDnsSuffixes,
      publication: ctx.publication,
    });
    await writeNewKey(ctx, made);
    next = made.record;
  }
  await activate(ctx, next, current, opts.importedDer ? "imported" : "created");
  return { activated: next, retired: current };
}

/** The root a routine rotation signs under: the current intermediate's, which must still be active. */
export function signingRoot(issuers: readonly IssuerRecord[], current: IssuerRecord | null): IssuerRecord {
  const root =
    (current && issuers.find((i) => i.id === current.parentId)) ??
    issuers.find((i) => i.kind === "root" && i.state === "active");
  if (root?.state !== "active") {
    throw new StintError(
      "ERR_NO_ACTIVE_ISSUER",
      "no active root to sign a new intermediate; see `stint ca status`",
    );
  }
  return root;
}

/** Checks an intermediate signed elsewhere: by one of our active roots, for a key we hold, not known yet. */
export async function importedIntermediate(
  ctx: RotationContext,
  issuers: readonly IssuerRecord[],
  certDer: Buffer,
): Promise<IssuerRecord> {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certDer);
  } catch {
    throw new StintError("ERR_DER", "the intermediate to import is not a readable X.509 certificate");
  }
  if (!cert.ca)
    throw new StintError("ERR_ROTATION_STATE", "the certificate to import is not a CA certificate");
  const id = issuerIdFromSki(subjectKeyIdentifier(cert.publicKey));
  if (issuers.some((i) => i.id === id)) {
    throw new StintError("ERR_ROTATION_STATE", `intermediate ${id} is already in this CA`);
  }
  const root = issuers.find(
    (i) => i.kind === "root" && i.state === "active" && cert.checkIssued(new X509Certificate(i.certDer)),
  );
  if (!root || !cert.verify(new X509Certificate(root.certDer).publicKey)) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      "the certificate to import is not signed by an active root of this CA; sign the CSR with `stint root sign` and that root's key",
    );
  }
  const now = ctx.now.getTime();
  if (Date.parse(cert.validTo) <= now || Date.parse(cert.validFrom) > now) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `the certificate to import is not valid now (${cert.validFrom} – ${cert.validTo})`,
    );
  }
  // `ca intermediate-csr` left the key in keys/, or (keys.backend pkcs11) in the token, its URI in the store.
  const keyPath = (await ctx.store.getMeta(pendingKeyMeta(id))) ?? intermediateKeyPath(id);
  const keys = keyStoreOf(ctx);
  if (!(await keys.has(keyPath))) {
    throw new StintError(
      "ERR_FILE",
      `no key for intermediate ${id} in ${join(ctx.dataDir, KEYS_DIR)}; import it on the host where \`stint ca intermediate-csr\` made its request`,
    );
  }
  const key = (await keys.open(keyPath)).key;
  const publicDer = (k: KeyObject) => k.export({ type: "spki", format: "der" });
  if (!publicDer(key.publicKey).equals(publicDer(cert.publicKey))) {
    throw new StintError(
      "ERR_KEY_MISMATCH",
      `the key in ${keyPath} does not match the certificate to import`,
    );
  }
  return issuerRecord("intermediate", id, root.id, certDer, keyPath, ctx.now);
}

/** Records `next` as active, then retires `current`: for a moment both are active, never neither. */
export async function activate(
  ctx: RotationContext,
  next: IssuerRecord,
  current: IssuerRecord | null,
  how: "created" | "imported",
): Promise<void> {
  await ctx.store.putIssuer(
    next,
    event(ctx, "issuer.create", next.id, {
      kind: next.kind,
      parent: next.parentId,
      how,
      replaces: current?.id ?? null,
      subject: next.subject,
      notAfter: next.notAfter.toISOString(),
      fingerprint: fingerprintSha256(next.certDer),
    }),
  );
  if (current) {
    await ctx.store.setIssuerState(
      current.id,
      "retired",
      event(ctx, "issuer.retire", current.id, { kind: current.kind, replacedBy: next.id }),
    );
  }
  await writeFileAtomic(join(ctx.dataDir, INTERMEDIATE_CERT_FILE), toPem("CERTIFICATE", next.certDer), 0o644);
  // The JWT-SVID keys rotate with the intermediate: the prepared one, published since the last step, signs now.
  const { store, dataDir, passphrase, now } = ctx;
  await advanceJwtKeys({ store, dataDir, passphrase, now, keys: keyStoreOf(ctx) });
  await bump(ctx.store, ISSUERS_GENERATION);
}

/**
 * Marks an intermediate as suspected compromised: ARI windows of all its
 * certificates move to now (Authority.renewFrom), so agents renew onto the
 * active issuer at their next poll. A deadline makes the server revoke it then.
 */
export async function taintIssuer(
  ctx: RotationContext,
  id: string,
  deadline: Date | null,
): Promise<IssuerRecord> {
  const issuer = checkTaint(ctx, await ctx.store.listIssuers(), id, deadline);
  await ctx.store.setMeta(
    taintKey(issuer.id),
    JSON.stringify({ at: ctx.now.toISOString(), deadline: deadline?.toISOString() ?? null }),
  );
  await ctx.store.setIssuerState(
    issuer.id,
    "tainted",
    event(ctx, "issuer.taint", issuer.id, { revokeAt: deadline?.toISOString() ?? null }),
  );
  await bump(ctx.store, ISSUERS_GENERATION);
  return issuer;
}

/** What taintIssuer refuses, shared with its dry run (ca/rotation-plan.ts). */
export function checkTaint(
  ctx: RotationContext,
  issuers: readonly IssuerRecord[],
  id: string,
  deadline: Date | null,
): IssuerRecord {
  const issuer = findIssuer(issuers, id);
  if (issuer.kind !== "intermediate") {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `${issuer.id} is a root; taint applies to intermediates (rotate the root instead)`,
    );
  }
  if (issuer.id === activeIntermediate(issuers)?.id) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `${issuer.id} is the active intermediate; run \`stint ca rotate\` first so its certificates have an issuer to move to, then taint it`,
    );
  }
  if (issuer.state === "tainted")
    throw new StintError("ERR_ROTATION_STATE", `${issuer.id} is already tainted`);
  if (deadline && deadline.getTime() <= ctx.now.getTime()) {
    throw new StintError("ERR_USAGE", "the revocation deadline must be in the future");
  }
  return issuer;
}

export interface RevokeIssuerResult {
  issuer: IssuerRecord;
  progress: IssuerProgress;
  /** False when the root's key is not here, so only the feed (not the root's CRL) lists the issuer. */
  rootCrlSigned: boolean;
}

/**
 * Puts a tainted or retired intermediate in the revocation feed and, where its
 * root's key is, in the root's CRL: verifiers then reject everything it signed.
 * Refuses while certificates from it have not been replaced, unless forced (the
 * operator's deadline).
 */
export async function revokeIssuer(
  ctx: RotationContext,
  id: string,
  opts: { force: boolean },
): Promise<RevokeIssuerResult> {
  const issuers = await ctx.store.listIssuers();
  const { issuer, progress } = await checkRevokeIssuer(ctx, issuers, id, opts);
  await ctx.store.setMeta(revokedKey(issuer.id), JSON.stringify({ at: ctx.now.toISOString() }));
  await ctx.store.appendAudit(
    event(ctx, "issuer.revoke", issuer.id, {
      live: progress.live,
      unreplaced: progress.unreplaced,
      forced: opts.force,
    }),
  );
  const rootCrlSigned = await resignRootCrl(ctx, issuers, issuer.parentId);
  await bump(ctx.store, ISSUERS_GENERATION);
  return { issuer, progress, rootCrlSigned };
}

/** What revokeIssuer refuses, shared with its dry run; returns the issuer and how many certificates it cuts off. */
export async function checkRevokeIssuer(
  ctx: RotationContext,
  issuers: readonly IssuerRecord[],
  id: string,
  opts: { force: boolean },
): Promise<{ issuer: IssuerRecord; progress: IssuerProgress }> {
  const issuer = findIssuer(issuers, id);
  if (issuer.kind !== "intermediate") {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `${issuer.id} is a root; retire it with \`stint ca root retire\``,
    );
  }
  if (issuer.state === "active" || issuer.state === "prepared") {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `${issuer.id} is ${issuer.state}; rotate away from it and taint it (\`stint ca taint ${issuer.id}\`) before revoking it`,
    );
  }
  if (await ctx.store.getMeta(revokedKey(issuer.id))) {
    throw new StintError("ERR_ALREADY_REVOKED", `issuer ${issuer.id} is already revoked`);
  }
  const progress = await ctx.store.issuerProgress(issuer.id, ctx.now);
  if (progress.unreplaced > 0 && !opts.force) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `${progress.unreplaced} of ${progress.live} live certificates from ${issuer.id} have not been replaced yet; ` +
        "wait for agents to renew (stint_issuer_unreplaced_certificates on /metrics) or pass --force to cut them off now",
    );
  }
  return { issuer, progress };
}

/** Re-signs a root's CRL with every revoked intermediate under it, if its key is here. */
async function resignRootCrl(
  ctx: RotationContext,
  issuers: readonly IssuerRecord[],
  rootId: string | null,
): Promise<boolean> {
  const root = issuers.find((i) => i.id === rootId);
  if (!root || !(await keyIsHere(ctx, root))) return false;
  const state = await readRotationState(ctx.store, issuers);
  const revoked: RevokedIntermediate[] = issuers
    .filter((i) => i.parentId === root.id && state.revoked.has(i.id))
    .map((i) => ({ certDer: i.certDer, revokedAt: state.revoked.get(i.id)! }));
  await signRootCrl(ctx.store, root, await issuerKey(ctx, root), revoked, ctx.now);
  return true;
}

/** `keys/root-<id>.key.pem`: roots after the first (whose key is keys/root.key.pem). */
export const nextRootKeyPath = (id: string) => `${KEYS_DIR}/root-${id}.key.pem`;

/**
 * Root rotation, step 1: a new root, "prepared": published in the bundle
 * (sequence bumped) so verifiers trust it before it signs anything.
 */
export async function prepareRoot(ctx: RotationContext, opts: { ttlDays: number }): Promise<IssuerRecord> {
  const issuers = await ctx.store.listIssuers();
  const pending = issuers.find((i) => i.kind === "root" && i.state === "prepared");
  if (pending) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `root ${pending.id} is already prepared; activate it (\`stint ca root activate\`) before preparing another`,
    );
  }
  const made = await buildRoot({
    keyStore: keyStoreOf(ctx),
    trustDomain: ctx.trustDomain,
    keyAlgorithm: ctx.keyAlgorithm,
    now: ctx.now,
    ttlDays: opts.ttlDays,
    keyPath: nextRootKeyPath,
    publication: ctx.publication,
  });
  const record: IssuerRecord = { ...made.record, state: "prepared" };
  await writeNewKey(ctx, made);
  await ctx.store.putIssuer(
    record,
    event(ctx, "issuer.create", record.id, {
      kind: "root",
      state: "prepared",
      subject: record.subject,
      notAfter: record.notAfter.toISOString(),
      fingerprint: fingerprintSha256(record.certDer),
    }),
  );
  await signRootCrl(ctx.store, record, made.keys, [], ctx.now);
  await bump(ctx.store, BUNDLE_SEQUENCE, ISSUERS_GENERATION);
  return record;
}

export interface ActivateRootResult {
  root: IssuerRecord;
  intermediate: IssuerRecord;
  /** The old root the cross-certificate chains to. */
  crossSignedBy: string;
}

/**
 * Root rotation, step 2: the prepared root becomes active with a new
 * intermediate under it, and the current root cross-signs it, so chains
 * served from now on (leaf, intermediate, cross-certificate) validate for
 * verifiers that trust either root. Refuses until verifiers have had one
 * bundle refresh to learn the new root, unless forced.
 */
export async function activateRoot(
  ctx: RotationContext,
  opts: {
    intermediateTtlDays: number;
    bundleRefreshMs: number;
    force: boolean;
    permittedDnsSuffixes?: readonly string[];
  },
): Promise<ActivateRootResult> {
  const { next, current, oldRoot } = await checkActivateRoot(ctx, await ctx.store.listIssuers(), opts);
  const nextKey = await issuerKey(ctx, next);
  const crossDer = await createCrossCertificate({
    issuer: { certDer: oldRoot.certDer, privateKey: await issuerKey(ctx, oldRoot) },
    subjectCertDer: next.certDer,
    serial: randomSerial(),
  });
  const made = await buildIntermediate({
    keyStore: keyStoreOf(ctx),
    root: next,
    rootKey: nextKey,
    trustDomain: ctx.trustDomain,
    keyAlgorithm: ctx.keyAlgorithm,
    now: ctx.now,
    ttlDays: opts.intermediateTtlDays,
    permittedDnsSuffixes: opts.permittedDnsSuffixes,
    publication: ctx.publication,
  });
  await writeNewKey(ctx, made);
  await ctx.store.setMeta(
    crossKey(next.id),
    JSON.stringify({ by: oldRoot.id, der: crossDer.toString("base64") }),
  );
  await ctx.store.setIssuerState(
    next.id,
    "active",
    event(ctx, "issuer.activate", next.id, {
      kind: "root",
      crossSignedBy: oldRoot.id,
      crossFingerprint: fingerprintSha256(crossDer),
    }),
  );
  await activate(ctx, made.record, current, "created");
  return { root: { ...next, state: "active" }, intermediate: made.record, crossSignedBy: oldRoot.id };
}

/** What activateRoot refuses, shared with its dry run: the roots involved and the intermediate it retires. */
export async function checkActivateRoot(
  ctx: RotationContext,
  issuers: readonly IssuerRecord[],
  /** keysElsewhere: the cross-certificate and the intermediate were signed offline (ca/offline-rotation.ts). */
  opts: { bundleRefreshMs: number; force: boolean; keysElsewhere?: boolean },
): Promise<{ next: IssuerRecord; current: IssuerRecord | null; oldRoot: IssuerRecord }> {
  const next = issuers.find((i) => i.kind === "root" && i.state === "prepared");
  if (!next)
    throw new StintError("ERR_ROTATION_STATE", "no prepared root; run `stint ca root prepare` first");
  const current = activeIntermediate(issuers) ?? null;
  const oldRoot = signingRoot(issuers, current);
  const safeAt = next.createdAt.getTime() + opts.bundleRefreshMs;
  if (safeAt > ctx.now.getTime() && !opts.force) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `verifiers refetch the bundle every ${Math.round(opts.bundleRefreshMs / 1000)} s; activate after ${new Date(safeAt).toISOString()}, when all of them trust root ${next.id} (or pass --force)`,
    );
  }
  if (opts.keysElsewhere) return { next, current, oldRoot };
  if (!next.keyPath) {
    throw new StintError(
      "ERR_KEY_OFFLINE",
      `root ${next.id} was prepared offline: activate it with --cross-cert FILE (stint root cross-sign) and --intermediate FILE (stint ca intermediate-csr, then stint root sign with root ${next.id})`,
    );
  }
  await requireKeyHere(ctx, next);
  await requireKeyHere(ctx, oldRoot);
  return { next, current, oldRoot };
}

/**
 * Root rotation, step 3: the old root leaves the bundle (sequence bumped) and
 * chains stop carrying its cross-certificate. Refuses while the old root is
 * still the active intermediate's, or while live certificates of (unrevoked)
 * intermediates under it have not been replaced: nothing in use may chain to it.
 */
export async function retireRoot(
  ctx: RotationContext,
  opts: { id?: string; force: boolean },
): Promise<IssuerRecord> {
  const root = await checkRetireRoot(ctx, await ctx.store.listIssuers(), opts);
  await ctx.store.setIssuerState(root.id, "retired", event(ctx, "issuer.retire", root.id, { kind: "root" }));
  await bump(ctx.store, BUNDLE_SEQUENCE, ISSUERS_GENERATION);
  return root;
}

/** What retireRoot refuses, shared with its dry run: the root it would retire. */
export async function checkRetireRoot(
  ctx: RotationContext,
  issuers: readonly IssuerRecord[],
  opts: { id?: string; force: boolean },
): Promise<IssuerRecord> {
  const current = activeIntermediate(issuers);
  const root = opts.id
    ? findIssuer(issuers, opts.id)
    : issuers.find((i) => i.kind === "root" && i.state === "active" && i.id !== current?.parentId);
  if (!root)
    throw new StintError(
      "ERR_ROTATION_STATE",
      "no root to retire: only the active intermediate's root is active",
    );
  if (root.kind !== "root")
    throw new StintError("ERR_ROTATION_STATE", `${root.id} is an intermediate; use \`stint ca rotate\``);
  if (root.state === "retired")
    throw new StintError("ERR_ROTATION_STATE", `root ${root.id} is already retired`);
  if (root.id === current?.parentId) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `root ${root.id} signs the active intermediate; prepare and activate its successor first`,
    );
  }
  if (!opts.force) {
    // Revoked intermediates' certificates are dead already; replaced ones are on their way out.
    const revoked = (await readRotationState(ctx.store, issuers)).revoked;
    for (const child of issuers.filter((i) => i.parentId === root.id && !revoked.has(i.id))) {
      const { unreplaced, lastNotAfter } = await ctx.store.issuerProgress(child.id, ctx.now);
      if (unreplaced > 0) {
        throw new StintError(
          "ERR_ROTATION_STATE",
          `${unreplaced} live certificates from ${child.id} still chain to root ${root.id} and have not been replaced; ` +
            `wait for their renewal (stint_issuer_unreplaced_certificates on /metrics; the last expires at ${lastNotAfter!.toISOString()}) or pass --force`,
        );
      }
    }
  }
  return root;
}
