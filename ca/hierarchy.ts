import { type KeyObject, randomBytes } from "node:crypto";
import { readdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { StintError } from "../common/errors";
import { ensureDir, fileError, writeFileAtomic } from "../common/files";
import { toPem } from "../formats/pem";
import {
  CrlSigner,
  crlNumberKey,
  crlUrl,
  encodeStoredCrl,
  intermediateLinks,
  NO_PUBLICATION,
  type PublicationUrls,
  rootCrlKey,
} from "./crl";
import type { CaKey, SigningKey } from "./key-backend";
import { CaKeyStore } from "./key-store";
import {
  encryptPrivateKeyPem,
  fingerprintSha256,
  issuerIdFromSki,
  type KeyAlgorithm,
  plainPrivateKeyPem,
  subjectKeyIdentifier,
} from "./keys";
import type { IssuerRecord, Store } from "./store";
import {
  createIntermediateCertificate,
  createRootCertificate,
  describeCertificate,
  randomSerial,
} from "./x509";

/** Creating a CA's key hierarchy (a root and its first intermediate) in a data directory. */

export const KEYS_DIR = "keys";
export const ROOT_KEY_FILE = "keys/root.key.pem";
export const ROOT_CERT_FILE = "root.pem";
export const INTERMEDIATE_CERT_FILE = "intermediate.pem";

export const DEFAULT_ROOT_TTL_DAYS = 3650;
export const DEFAULT_INTERMEDIATE_TTL_DAYS = 365;
/** CA certificates start an hour early so verifiers with slow clocks accept them at once. */
const BACKDATE_MS = 60 * 60 * 1000;
const DAY_MS = 86_400_000;

export interface InitHierarchyOptions {
  dataDir: string;
  store: Store;
  trustDomain: string;
  keyAlgorithm: KeyAlgorithm;
  /** null writes unencrypted keys (the `--insecure-no-passphrase` development mode). */
  passphrase: string | null;
  now: Date;
  rootTtlDays?: number;
  intermediateTtlDays?: number;
  /** dNSName name constraints for the intermediate; none leaves DNS SANs unconstrained. */
  permittedDnsSuffixes?: readonly string[];
  /** Where the intermediate points for its root's CRL and certificate; none leaves both out. */
  publication?: PublicationUrls;
  /** Where the keys are made (keys.backend); absent: key files under dataDir, with `passphrase`. */
  keys?: CaKeyStore;
}

export interface InitHierarchyResult {
  root: IssuerRecord;
  intermediate: IssuerRecord;
  /** "sha256:<hex>" of the root certificate, what agents pass as --ca-fingerprint. */
  rootFingerprint: string;
}

/** The key file of an intermediate, relative to the data directory. */
export function intermediateKeyPath(issuerId: string): string {
  return `${KEYS_DIR}/${issuerId}.key.pem`;
}

/** CA files already in the data directory (the store's own file does not count). */
async function existingCaFiles(dataDir: string): Promise<string[]> {
  const list = async (dir: string): Promise<string[]> => {
    try {
      return await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw fileError(err, dir, "list directory");
    }
  };
  const top = (await list(dataDir)).filter((e) => e === ROOT_CERT_FILE || e === INTERMEDIATE_CERT_FILE);
  const keys = (await list(join(dataDir, KEYS_DIR))).map((e) => `${KEYS_DIR}/${e}`);
  return [...keys, ...top].map((e) => join(dataDir, e));
}

/** A lifetime in whole days, 1 to 36500; ERR_CONFIG otherwise. */
export function checkTtl(name: string, days: number): void {
  if (!Number.isInteger(days) || days < 1 || days > 36500) {
    throw new StintError(
      "ERR_CONFIG",
      `${name} must be a whole number of days between 1 and 36500 (got ${days})`,
    );
  }
}

/** The store record of a CA certificate just made or imported, state "active". */
export function issuerRecord(
  kind: IssuerRecord["kind"],
  id: string,
  parentId: string | null,
  certDer: Buffer,
  keyPath: string,
  now: Date,
): IssuerRecord {
  const d = describeCertificate(certDer);
  return {
    id,
    kind,
    parentId,
    state: "active",
    subject: d.subject,
    certDer,
    keyPath,
    notBefore: d.notBefore,
    notAfter: d.notAfter,
    createdAt: now,
  };
}

/** The PEM a CA key is written as: encrypted, unless passphrase is null (development mode). */
export async function keyPem(
  keys: { privateKey: KeyObject | null },
  passphrase: string | null,
): Promise<string> {
  if (!keys.privateKey) throw new StintError("ERR_CONFIG", "a key kept in a token has no PEM to write");
  return passphrase === null
    ? plainPrivateKeyPem(keys.privateKey)
    : encryptPrivateKeyPem(keys.privateKey, passphrase);
}

/**
 * Creates a root and an intermediate, writes their keys (0600, in a 0700
 * directory) and certificates, and records both issuers. Refuses with
 * ERR_ALREADY_INITIALIZED, changing nothing, if any CA material is there.
 */
export async function initHierarchy(opts: InitHierarchyOptions): Promise<InitHierarchyResult> {
  const rootTtlDays = opts.rootTtlDays ?? DEFAULT_ROOT_TTL_DAYS;
  const intermediateTtlDays = opts.intermediateTtlDays ?? DEFAULT_INTERMEDIATE_TTL_DAYS;
  checkTtl("rootTtlDays", rootTtlDays);
  checkTtl("intermediateTtlDays", intermediateTtlDays);
  if (intermediateTtlDays > rootTtlDays) {
    throw new StintError("ERR_CONFIG", "the intermediate's lifetime cannot exceed the root's");
  }

  const issuers = await opts.store.listIssuers();
  const files = await existingCaFiles(opts.dataDir);
  if (issuers.length > 0 || files.length > 0) {
    const what =
      issuers.length > 0 ? `its store already records ${issuers.length} issuer(s)` : `it holds ${files[0]}`;
    throw new StintError(
      "ERR_ALREADY_INITIALIZED",
      `${opts.dataDir} already holds a CA (${what}); use a new --data-dir, or rotate instead of re-initialising`,
    );
  }

  // Build everything in memory first (a token stores its keys as it makes them), so a bad parameter fails before anything is written.
  const keys = opts.keys ?? CaKeyStore.files(opts.dataDir, opts.passphrase);
  const { record: root, keys: rootKey } = await buildRoot({
    keyStore: keys,
    trustDomain: opts.trustDomain,
    keyAlgorithm: opts.keyAlgorithm,
    now: opts.now,
    ttlDays: rootTtlDays,
    keyPath: () => ROOT_KEY_FILE,
    publication: opts.publication,
  });
  const { record: intermediate, keys: intKey } = await buildIntermediate({
    keyStore: keys,
    root,
    rootKey,
    trustDomain: opts.trustDomain,
    keyAlgorithm: opts.keyAlgorithm,
    now: opts.now,
    ttlDays: intermediateTtlDays,
    permittedDnsSuffixes: opts.permittedDnsSuffixes,
    publication: opts.publication,
  });
  const rootDer = root.certDer;
  const intDer = intermediate.certDer;

  // Keys go to disk before the store records point at them; on failure, undo our own files only.
  const written: string[] = [];
  const write = async (rel: string, data: string) => {
    const path = join(opts.dataDir, rel);
    await writeFileAtomic(path, data, 0o644, { overwrite: false });
    written.push(path);
  };
  const saveKey = async (key: CaKey, ref: string) => {
    const saved = await keys.save(key, ref);
    if (saved.written) written.push(saved.written);
  };
  let recorded = false;
  try {
    await ensureDir(join(opts.dataDir, KEYS_DIR), 0o700);
    await saveKey(rootKey, root.keyPath!);
    await saveKey(intKey, intermediate.keyPath!);
    await write(ROOT_CERT_FILE, toPem("CERTIFICATE", rootDer));
    await write(INTERMEDIATE_CERT_FILE, toPem("CERTIFICATE", intDer));
    const audit = (r: IssuerRecord) => ({
      at: opts.now,
      actor: "cli",
      action: "issuer.create",
      subject: r.id,
      details: {
        kind: r.kind,
        subject: r.subject,
        keyAlgorithm: opts.keyAlgorithm,
        notAfter: r.notAfter.toISOString(),
        fingerprint: fingerprintSha256(r.certDer),
        keyEncrypted: opts.passphrase !== null || keys.backend !== "file",
        keyBackend: keys.backend,
      },
    });
    await opts.store.putIssuer(root, audit(root));
    recorded = true;
    await opts.store.putIssuer(intermediate, audit(intermediate));
    // The root's own CRL, while its key is at hand: empty, valid as long as the root (see ca/crl.ts rootCrlKey).
    await signRootCrl(opts.store, root, rootKey, [], opts.now);
  } catch (err) {
    if (!recorded) await Promise.all(written.map((p) => unlink(p).catch(() => undefined)));
    throw err;
  }
  return { root, intermediate, rootFingerprint: fingerprintSha256(rootDer) };
}

/**
 * A CA certificate made in memory, not yet written or recorded; its
 * record's keyPath says where the key goes (CaKeyStore.save) or is (a token).
 */
export interface NewIssuer {
  record: IssuerRecord;
  /** Both halves of the new key: privateKey is null for a key made in a token. */
  keys: CaKey;
}

/** Makes file keys in memory only (generate needs neither a data directory nor a passphrase). */
const MEMORY = CaKeyStore.files("", null);

/** A token key's label: its issuer id is known only once the key exists, so a random tag tells keys apart. */
const tokenLabel = (kind: IssuerRecord["kind"]) => `stint-${kind}-${randomBytes(4).toString("hex")}`;

/** The recorded reference of a new key: the token's URI, or its file under the data directory. */
const keyRef = (key: CaKey, fileRef: string) => (key.backend === "file" ? fileRef : key.ref);

/**
 * A new self-signed root, state "active" (root rotation records it as
 * "prepared"). It names its own CRL where `publication` says CRLs are served.
 */
export async function buildRoot(p: {
  /** Where the key is made; absent: in memory, as a file key for the caller to write. */
  keyStore?: CaKeyStore;
  trustDomain: string;
  keyAlgorithm: KeyAlgorithm;
  now: Date;
  ttlDays: number;
  /** Where its key file goes, relative to the data directory (file keys). */
  keyPath: (id: string) => string;
  publication?: PublicationUrls;
}): Promise<NewIssuer> {
  checkTtl("rootTtlDays", p.ttlDays);
  const key = await (p.keyStore ?? MEMORY).generate(p.keyAlgorithm, tokenLabel("root"));
  const id = issuerIdFromSki(subjectKeyIdentifier(key.publicKey));
  const certDer = await createRootCertificate({
    keys: key,
    commonName: `Stint Root CA ${id}`,
    trustDomain: p.trustDomain,
    notBefore: new Date(p.now.getTime() - BACKDATE_MS),
    notAfter: new Date(p.now.getTime() + p.ttlDays * DAY_MS),
    serial: randomSerial(),
    crlUrl: p.publication?.crlBaseUrl ? crlUrl(p.publication.crlBaseUrl, id) : null,
  });
  return { record: issuerRecord("root", id, null, certDer, keyRef(key, p.keyPath(id)), p.now), keys: key };
}

/**
 * A new intermediate signed by `root`, state "active". Its lifetime is cut
 * to the root's, so a rotation late in a root's life still works. It names
 * the root's CRL (and certificate) where `publication` says they are served.
 */
export async function buildIntermediate(p: {
  /** Where the key is made; absent: in memory, as a file key for the caller to write. */
  keyStore?: CaKeyStore;
  root: IssuerRecord;
  rootKey: SigningKey;
  trustDomain: string;
  keyAlgorithm: KeyAlgorithm;
  now: Date;
  ttlDays: number;
  permittedDnsSuffixes?: readonly string[];
  publication?: PublicationUrls;
}): Promise<NewIssuer> {
  checkTtl("intermediateTtlDays", p.ttlDays);
  const key = await (p.keyStore ?? MEMORY).generate(p.keyAlgorithm, tokenLabel("intermediate"));
  const id = issuerIdFromSki(subjectKeyIdentifier(key.publicKey));
  const certDer = await createIntermediateCertificate({
    issuer: { certDer: p.root.certDer, privateKey: p.rootKey },
    subjectPublicKey: key.publicKey,
    commonName: intermediateCommonName(id),
    trustDomain: p.trustDomain,
    ...intermediateValidity(p.root, p.now, p.ttlDays),
    serial: randomSerial(),
    pathLength: 0,
    permittedDnsSuffixes: p.permittedDnsSuffixes,
    ...intermediateLinks(p.publication ?? NO_PUBLICATION, p.root.id),
  });
  const ref = keyRef(key, intermediateKeyPath(id));
  return { record: issuerRecord("intermediate", id, p.root.id, certDer, ref, p.now), keys: key };
}

/** The subject common name of the intermediate whose issuer id is `id`. */
export const intermediateCommonName = (id: string): string => `Stint Intermediate CA ${id}`;

/**
 * An intermediate's validity: backdated like every CA certificate and cut to
 * its root's, so a rotation or offline signature late in a root's life works.
 */
export function intermediateValidity(
  root: { notBefore: Date; notAfter: Date },
  now: Date,
  ttlDays: number,
): { notBefore: Date; notAfter: Date } {
  return {
    notBefore: new Date(Math.max(now.getTime() - BACKDATE_MS, root.notBefore.getTime())),
    notAfter: new Date(Math.min(now.getTime() + ttlDays * DAY_MS, root.notAfter.getTime())),
  };
}

/** An intermediate revoked by its root: what the root's CRL lists. */
export interface RevokedIntermediate {
  certDer: Buffer;
  revokedAt: Date;
}

/**
 * Signs a root's CRL where its key is (ca init, root rotation, revoke-issuer)
 * and keeps it in the store's metadata, where servers read it: valid as long as
 * the root, since nothing re-signs it online.
 */
export async function signRootCrl(
  store: Store,
  root: IssuerRecord,
  rootKey: SigningKey,
  revoked: readonly RevokedIntermediate[],
  now: Date,
): Promise<void> {
  const crl = {
    number: await store.incrementMeta(crlNumberKey(root.id)),
    thisUpdate: new Date(now.getTime() - BACKDATE_MS),
    nextUpdate: root.notAfter,
  };
  const der = await new CrlSigner({ certDer: root.certDer, privateKey: rootKey }).sign({
    ...crl,
    revoked: revoked.map((r) => ({
      serial: describeCertificate(r.certDer).serialHex,
      revokedAt: r.revokedAt,
      reason: CA_COMPROMISE,
    })),
  });
  await store.setMeta(rootCrlKey(root.id), encodeStoredCrl({ der, ...crl }));
}

/** RFC 5280 CRLReason cACompromise: what a tainted, then revoked, intermediate is. */
const CA_COMPROMISE = 2;
