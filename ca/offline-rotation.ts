import { X509Certificate } from "node:crypto";
import { StintError } from "../common/errors";
import { crlSignedBy, readCrl } from "../formats/crl";
import { readCertificate } from "../formats/x509";
import { crlNumberKey, decodeStoredCrl, encodeStoredCrl, rootCrlKey } from "./crl";
import { issuerRecord } from "./hierarchy";
import { fingerprintSha256 } from "./keys";
import { checkRootCertificate } from "./offline-ceremony";
import type { RootCrlRequest } from "./root-crl-request";
import {
  type ActivateRootResult,
  activate,
  BUNDLE_SEQUENCE,
  bump,
  checkActivateRoot,
  crossKey,
  event,
  ISSUERS_GENERATION,
  importedIntermediate,
  type RotationContext,
  readRotationState,
  requireKeyHere,
} from "./rotation";
import type { IssuerChange, RotationPlan } from "./rotation-plan";
import type { IssuerRecord } from "./store";
import { describeCertificate } from "./x509";

/**
 * Root rotation with the roots kept offline (docs/architecture.md, "Offline
 * root rotation"): the CA host's side. It never holds a root key: it imports
 * the next root's certificate (prepare), the cross-certificate and the new
 * intermediate signed on the offline host (activate), and each root CRL the
 * offline host signs from the CA's request (import-crl). Each import is
 * checked signature by signature before anything is written.
 */

/** Serials as CRLs and certificates print them can differ by a sign pad byte; compare without it. */
const bareSerial = (hex: string) => hex.toLowerCase().replace(/^(00)+(?=.)/, "");

/**
 * `stint ca root prepare --offline`: the next root, made by `stint root init`
 * on the offline host, joins the bundle as "prepared" with no key here
 * (keyPath null). Its first CRL comes from the offline host too (crl-request,
 * sign-crl, import-crl): nothing here can sign one.
 */
export async function prepareOfflineRoot(ctx: RotationContext, certDer: Buffer): Promise<IssuerRecord> {
  const issuers = await ctx.store.listIssuers();
  const pending = issuers.find((i) => i.kind === "root" && i.state === "prepared");
  if (pending) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `root ${pending.id} is already prepared; activate it (\`stint ca root activate\`) before preparing another`,
    );
  }
  const root = checkRootCertificate(certDer, ctx.now, "the root certificate");
  if (root.trustDomain !== ctx.trustDomain) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `the root certificate is for trust domain "${root.trustDomain}" but this CA is for "${ctx.trustDomain}"; run stint root init with --trust-domain ${ctx.trustDomain}`,
    );
  }
  if (issuers.some((i) => i.id === root.id)) {
    throw new StintError("ERR_ROTATION_STATE", `root ${root.id} is already in this CA`);
  }
  const record: IssuerRecord = {
    ...issuerRecord("root", root.id, null, certDer, "", ctx.now),
    keyPath: null,
    state: "prepared",
  };
  await ctx.store.putIssuer(
    record,
    event(ctx, "issuer.create", record.id, {
      kind: "root",
      state: "prepared",
      how: "imported",
      keyOnHost: false,
      subject: record.subject,
      notAfter: record.notAfter.toISOString(),
      fingerprint: root.fingerprint,
    }),
  );
  await bump(ctx.store, BUNDLE_SEQUENCE, ISSUERS_GENERATION);
  return record;
}

export interface OfflineActivation {
  /** The cross-certificate of the prepared root by the active intermediate's root (`stint root cross-sign`). */
  crossDer: Buffer;
  /** The new intermediate, signed by the prepared root (`stint ca intermediate-csr`, `stint root sign`). */
  intermediateDer: Buffer;
  bundleRefreshMs: number;
  force: boolean;
}

/** What activateOfflineRoot refuses, shared with its dry run; nothing is written. */
export async function checkActivateOfflineRoot(
  ctx: RotationContext,
  issuers: readonly IssuerRecord[],
  opts: OfflineActivation,
) {
  const { next, current, oldRoot } = await checkActivateRoot(ctx, issuers, { ...opts, keysElsewhere: true });
  checkCross(ctx, opts.crossDer, next, oldRoot);
  // importedIntermediate accepts only active roots: the prepared one counts as one here, and no other may have signed.
  const asActive = issuers.map((i) => (i.id === next.id ? { ...i, state: "active" as const } : i));
  const intermediate = await importedIntermediate(ctx, asActive, opts.intermediateDer);
  if (intermediate.parentId !== next.id) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `the intermediate is signed by root ${intermediate.parentId}, not by the prepared root ${next.id}; sign its CSR with stint root sign --root-cert <root ${next.id}'s certificate>`,
    );
  }
  return { next, current, oldRoot, intermediate };
}

/** The cross-certificate must carry the prepared root's name and key, signed by the old root, valid now. */
function checkCross(ctx: RotationContext, der: Buffer, next: IssuerRecord, oldRoot: IssuerRecord): void {
  let cross: X509Certificate;
  try {
    cross = new X509Certificate(der);
  } catch {
    throw new StintError("ERR_DER", "the cross-certificate is not a readable X.509 certificate");
  }
  const nextCert = new X509Certificate(next.certDer);
  const oldCert = new X509Certificate(oldRoot.certDer);
  const spki = (c: X509Certificate) => c.publicKey.export({ type: "spki", format: "der" });
  if (cross.subject !== nextCert.subject || !spki(cross).equals(spki(nextCert))) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `the cross-certificate is for ${cross.subject.replace(/\n/g, ", ")}, not for the prepared root ${next.id}; make it with stint root cross-sign --new-root-cert <root ${next.id}'s certificate>`,
    );
  }
  if (!cross.ca || !cross.checkIssued(oldCert) || !cross.verify(oldCert.publicKey)) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `the cross-certificate is not signed by root ${oldRoot.id}, the root of the active intermediate; make it with stint root cross-sign --root-cert <root ${oldRoot.id}'s certificate>`,
    );
  }
  const now = ctx.now.getTime();
  if (Date.parse(cross.validFrom) > now || Date.parse(cross.validTo) <= now) {
    throw new StintError(
      "ERR_ROTATION_STATE",
      `the cross-certificate is not valid now (${cross.validFrom} – ${cross.validTo})`,
    );
  }
}

/**
 * `stint ca root activate --cross-cert FILE --intermediate FILE`: activateRoot
 * with both signatures made offline. The prepared root becomes active with
 * the imported intermediate (whose key `stint ca intermediate-csr` left here)
 * and the imported cross-certificate; the current intermediate is retired.
 */
export async function activateOfflineRoot(
  ctx: RotationContext,
  opts: OfflineActivation,
): Promise<ActivateRootResult> {
  const issuers = await ctx.store.listIssuers();
  const { next, current, oldRoot, intermediate } = await checkActivateOfflineRoot(ctx, issuers, opts);
  await ctx.store.setMeta(
    crossKey(next.id),
    JSON.stringify({ by: oldRoot.id, der: opts.crossDer.toString("base64") }),
  );
  await ctx.store.setIssuerState(
    next.id,
    "active",
    event(ctx, "issuer.activate", next.id, {
      kind: "root",
      crossSignedBy: oldRoot.id,
      crossFingerprint: fingerprintSha256(opts.crossDer),
      how: "imported",
    }),
  );
  await activate(ctx, intermediate, current, "imported");
  return { root: { ...next, state: "active" }, intermediate, crossSignedBy: oldRoot.id };
}

/** The highest CRL number this CA has published for a root (0 when none). */
async function publishedCrlNumber(ctx: RotationContext, rootId: string): Promise<number> {
  const counter = Number((await ctx.store.getMeta(crlNumberKey(rootId))) ?? "0");
  const stored = await ctx.store.getMeta(rootCrlKey(rootId));
  return Math.max(counter, stored ? decodeStoredCrl(stored).number : 0);
}

/** Every intermediate under `root` that revoke-issuer revoked: what the root's CRL must list. */
async function revokedUnder(ctx: RotationContext, issuers: readonly IssuerRecord[], root: IssuerRecord) {
  const revoked = (await readRotationState(ctx.store, issuers)).revoked;
  return issuers
    .filter((i) => i.parentId === root.id && revoked.has(i.id))
    .map((i) => ({
      issuer: i.id,
      serial: describeCertificate(i.certDer).serialHex,
      revokedAt: revoked.get(i.id)!,
    }));
}

/** The root a CRL request is for: the one named, else the only root whose key is not here. */
async function offlineRoot(ctx: RotationContext, issuers: readonly IssuerRecord[], id: string | undefined) {
  const roots = issuers.filter((i) => i.kind === "root");
  if (id !== undefined) {
    const root = roots.find((r) => r.id === id.toLowerCase());
    if (!root) {
      throw new StintError(
        "ERR_NOT_FOUND",
        `no root ${id.slice(0, 40)} in this CA (roots: ${roots.map((r) => r.id).join(", ")})`,
      );
    }
    return root;
  }
  const offline: IssuerRecord[] = [];
  for (const r of roots.filter((r) => r.state !== "retired")) {
    const here = await requireKeyHere(ctx, r).then(
      () => true,
      () => false,
    );
    if (!here) offline.push(r);
  }
  if (offline.length !== 1) {
    throw new StintError(
      "ERR_USAGE",
      `name the root whose CRL to request (roots kept offline: ${offline.map((r) => r.id).join(", ") || "none"})`,
    );
  }
  return offline[0]!;
}

/**
 * `stint ca root crl-request`: what the root's next CRL must say (the next
 * number, every intermediate revoked under it). Reads the store only: the
 * number is taken when the signed CRL is imported, not here.
 */
export async function rootCrlRequest(ctx: RotationContext, id: string | undefined): Promise<RootCrlRequest> {
  const issuers = await ctx.store.listIssuers();
  const root = await offlineRoot(ctx, issuers, id);
  return {
    trustDomain: ctx.trustDomain,
    root: root.id,
    rootFingerprint: fingerprintSha256(root.certDer),
    number: (await publishedCrlNumber(ctx, root.id)) + 1,
    revoked: await revokedUnder(ctx, issuers, root),
    createdAt: ctx.now,
  };
}

export interface ImportedCrl {
  root: IssuerRecord;
  number: number;
  revoked: number;
  nextUpdate: Date;
}

const refused = (why: string) => new StintError("ERR_ROTATION_STATE", `the CRL is refused: ${why}`);

/**
 * `stint ca import-crl`: a root CRL signed offline replaces the published one
 * when it is signed by a root of this CA, is current, has a higher number
 * than any published for that root, and lists every intermediate revoked
 * under it. Stored where signRootCrl stores CRLs, so /crl/<root id>.crl
 * serves it once servers reload (ISSUERS_GENERATION).
 */
export async function importRootCrl(ctx: RotationContext, der: Buffer): Promise<ImportedCrl> {
  const crl = readCrl(der); // ERR_DER for anything that is not a CRL
  const issuers = await ctx.store.listIssuers();
  const named = issuers.filter(
    (i) => i.kind === "root" && readCertificate(i.certDer).subject.equals(crl.issuer),
  );
  const root = named.find((r) => crlSignedBy(crl, new X509Certificate(r.certDer).publicKey));
  if (!root) {
    throw refused(
      named.length === 0
        ? "its issuer is not a root of this CA"
        : `it names root ${named[0]!.id} as issuer but that root's key did not sign it`,
    );
  }
  const now = ctx.now.getTime();
  if (
    crl.nextUpdate === null ||
    crl.nextUpdate.getTime() <= now ||
    crl.thisUpdate.getTime() > now + 300_000
  ) {
    throw refused(
      `it is not current (thisUpdate ${crl.thisUpdate.toISOString()}, nextUpdate ${crl.nextUpdate?.toISOString() ?? "absent"})`,
    );
  }
  const published = await publishedCrlNumber(ctx, root.id);
  if (
    crl.number === null ||
    crl.number <= BigInt(published) ||
    crl.number > BigInt(Number.MAX_SAFE_INTEGER)
  ) {
    throw refused(
      `its number ${crl.number ?? "(absent)"} is not greater than ${published}, the last published for root ${root.id}; make a new request with stint ca root crl-request ${root.id}`,
    );
  }
  const listed = new Set(crl.revoked.map(bareSerial));
  for (const r of await revokedUnder(ctx, issuers, root)) {
    if (!listed.has(bareSerial(r.serial))) {
      throw refused(
        `it does not list intermediate ${r.issuer} (serial ${r.serial}), revoked under root ${root.id}; make a new request with stint ca root crl-request ${root.id}`,
      );
    }
  }
  const number = Number(crl.number);
  const nextUpdate = crl.nextUpdate;
  await ctx.store.setMeta(
    rootCrlKey(root.id),
    encodeStoredCrl({ der: crl.der, number, thisUpdate: crl.thisUpdate, nextUpdate }),
  );
  await ctx.store.setMeta(crlNumberKey(root.id), String(number));
  await ctx.store.appendAudit(
    event(ctx, "issuer.crl", root.id, {
      kind: "root",
      how: "imported",
      number,
      revoked: crl.revoked.length,
      nextUpdate: nextUpdate.toISOString(),
      fingerprint: fingerprintSha256(crl.der),
    }),
  );
  // Servers re-read root CRLs when they reload their issuers.
  await bump(ctx.store, ISSUERS_GENERATION);
  return { root, number, revoked: crl.revoked.length, nextUpdate };
}

/** activateOfflineRoot's dry run: the same checks, then what it would change. */
export async function planActivateOfflineRoot(
  ctx: RotationContext,
  opts: OfflineActivation,
): Promise<RotationPlan> {
  const issuers = await ctx.store.listIssuers();
  const { next, current, oldRoot, intermediate } = await checkActivateOfflineRoot(ctx, issuers, opts);
  const retiring: IssuerChange[] = [];
  if (current) {
    const { live, unreplaced } = await ctx.store.issuerProgress(current.id, ctx.now);
    retiring.push({
      id: current.id,
      kind: current.kind,
      from: current.state,
      to: "retired",
      live,
      unreplaced,
    });
  }
  return {
    step: "ca root activate",
    issuers: [
      { id: next.id, kind: "root", from: next.state, to: "active", live: 0, unreplaced: 0 },
      { id: intermediate.id, kind: "intermediate", from: "new", to: "active", live: 0, unreplaced: 0 },
      ...retiring,
    ],
    effects: [
      `the imported intermediate ${intermediate.id} is signed by root ${next.id}`,
      `the imported cross-certificate of root ${next.id} by root ${oldRoot.id} rides in chains until \`stint ca root retire\``,
    ],
  };
}
