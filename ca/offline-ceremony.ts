import { type KeyObject, X509Certificate } from "node:crypto";
import { join } from "node:path";
import { StintError } from "../common/errors";
import { ensureDir, writeFileAtomic, writeSecretFile } from "../common/files";
import { toPem } from "../formats/pem";
import { KeyUsage, readCertificate } from "../formats/x509";
import { CrlSigner } from "./crl";
import { buildRoot, keyPem } from "./hierarchy";
import { asCaKey, type SigningKey } from "./key-backend";
import type { CaKeyStore } from "./key-store";
import {
  fingerprintSha256,
  issuerIdFromSki,
  type KeyAlgorithm,
  keyAlgorithmOf,
  subjectKeyIdentifier,
} from "./keys";
import { checkRoot } from "./offline-root";
import type { RootCrlRequest } from "./root-crl-request";
import { caNameOf, createCrossCertificate, randomSerial } from "./x509";

/**
 * Root rotation with the roots kept offline (docs/architecture.md, "Offline
 * root rotation"): what runs on the offline host. `stint root init` makes the
 * next root, `stint root cross-sign` has the old root vouch for it, `stint
 * root sign-crl` signs a root's next CRL from the CA's request. No data
 * directory, store or network: files in, files out.
 */

/** CRLs start an hour early, as signRootCrl's do, so verifiers with slow clocks accept them at once. */
const BACKDATE_MS = 60 * 60 * 1000;
/** RFC 5280 CRLReason cACompromise: what a tainted, then revoked, intermediate is (as signRootCrl says). */
const CA_COMPROMISE = 2;

/** The subject common name buildRoot gives the root whose issuer id is `id`. */
const rootCommonName = (id: string) => `Stint Root CA ${id}`;

export interface RootFacts {
  id: string;
  trustDomain: string;
  publicKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  fingerprint: string;
}

/**
 * Checks that `der` is a root as buildRoot makes them: a self-signed CA
 * certificate allowed to sign certificates, named "Stint Root CA <id>" for
 * its own key, valid at `now`. `what` names the file in messages.
 */
export function checkRootCertificate(der: Uint8Array, now: Date, what: string): RootFacts {
  let cert: X509Certificate;
  let facts: ReturnType<typeof readCertificate>;
  try {
    cert = new X509Certificate(der);
    facts = readCertificate(der);
  } catch {
    throw new StintError("ERR_DER", `${what} is not a readable X.509 certificate`);
  }
  const publicKey = cert.publicKey;
  const id = issuerIdFromSki(subjectKeyIdentifier(publicKey));
  const name = caNameOf(der, "certificate");
  const selfSigned = facts.subject.equals(facts.issuer) && cert.verify(publicKey);
  if (!facts.ca || !selfSigned || ((facts.keyUsage ?? 0) & KeyUsage.keyCertSign) === 0) {
    throw new StintError(
      "ERR_CONFIG",
      `${what} (${cert.subject.replace(/\n/g, ", ")}) is not a self-signed root CA certificate; give the root.pem stint root init wrote`,
    );
  }
  if (name === null || name.commonName !== rootCommonName(id) || facts.subjectKeyId === null) {
    throw new StintError(
      "ERR_CONFIG",
      `${what} is not a Stint root (expected CN=${rootCommonName(id)}, O=<trust domain>); make roots with stint root init`,
    );
  }
  keyAlgorithmOf(publicKey); // ERR_POLICY_KEY for a key type Stint does not sign with
  if (now < facts.notBefore || now >= facts.notAfter) {
    throw new StintError(
      "ERR_CONFIG",
      `${what} is valid only from ${facts.notBefore.toISOString()} to ${facts.notAfter.toISOString()}; check this machine's clock`,
    );
  }
  return {
    id,
    trustDomain: name.trustDomain,
    publicKey,
    notBefore: facts.notBefore,
    notAfter: facts.notAfter,
    fingerprint: fingerprintSha256(der),
  };
}

export interface OfflineRootOptions {
  outDir: string;
  trustDomain: string;
  keyAlgorithm: KeyAlgorithm;
  ttlDays: number;
  /** null writes the key unencrypted (the `--insecure-no-passphrase` development mode). */
  passphrase: string | null;
  /** A PKCS#11 token's key store: the key is made inside it and no key file is written. Absent: a key file. */
  keyStore?: CaKeyStore;
  /** The CA's CRL origin (http://<crl.httpListen>): the root names <origin>/crl/<id>.crl as its CRL, as buildRoot does. */
  crlBaseUrl: string | null;
  now: Date;
}

export interface OfflineRoot {
  id: string;
  certDer: Buffer;
  certFile: string;
  /** The key file; null for a key made in a token. */
  keyFile: string | null;
  /** What --root-key takes later: the key file, or the key's `pkcs11:` URI. */
  keyRef: string;
  fingerprint: string;
  notAfter: Date;
}

/**
 * `stint root init`: a new root made by buildRoot itself (so the CA accepts it
 * like one it made), its key written 0600 into a 0700 directory, never over
 * an existing file, and its certificate beside it.
 */
export async function createOfflineRoot(opts: OfflineRootOptions): Promise<OfflineRoot> {
  const made = await buildRoot({
    keyStore: opts.keyStore,
    trustDomain: opts.trustDomain,
    keyAlgorithm: opts.keyAlgorithm,
    now: opts.now,
    ttlDays: opts.ttlDays,
    keyPath: (id) => `root-${id}.key.pem`,
    publication: { crlBaseUrl: opts.crlBaseUrl, caIssuersBaseUrl: null },
  });
  const { id, certDer } = made.record;
  const certFile = join(opts.outDir, `root-${id}.pem`);
  await ensureDir(opts.outDir, 0o700);
  let keyFile: string | null = null;
  if (made.keys.backend === "file") {
    keyFile = join(opts.outDir, made.record.keyPath!);
    await writeSecretFile(keyFile, await keyPem(made.keys, opts.passphrase));
  }
  await writeFileAtomic(certFile, toPem("CERTIFICATE", certDer), 0o644, { overwrite: false });
  return {
    id,
    certDer,
    certFile,
    keyFile,
    keyRef: keyFile ?? made.keys.ref,
    fingerprint: fingerprintSha256(certDer),
    notAfter: made.record.notAfter,
  };
}

/**
 * `stint root cross-sign`: the new root's name and key, signed by the old
 * root, so chains through it reach verifiers that trust only the old root.
 * Both must be Stint roots of one trust domain, valid now, and different.
 */
export async function crossSignRoot(p: {
  oldCertDer: Buffer;
  oldKey: SigningKey;
  newCertDer: Buffer;
  now: Date;
}): Promise<{ der: Buffer; oldId: string; newId: string }> {
  const old = checkRoot(p.oldCertDer, p.oldKey, p.now);
  const oldId = issuerIdFromSki(subjectKeyIdentifier(asCaKey(p.oldKey).publicKey));
  const next = checkRootCertificate(p.newCertDer, p.now, "the new root certificate");
  if (next.id === oldId) {
    throw new StintError(
      "ERR_CONFIG",
      "--new-root-cert is the same root as --root-cert; give the root stint root init made",
    );
  }
  if (next.trustDomain !== old.trustDomain) {
    throw new StintError(
      "ERR_CONFIG",
      `the new root is for trust domain "${next.trustDomain}" but the old one for "${old.trustDomain}"`,
    );
  }
  const der = await createCrossCertificate({
    issuer: { certDer: p.oldCertDer, privateKey: p.oldKey },
    subjectCertDer: p.newCertDer,
    serial: randomSerial(),
  });
  return { der, oldId, newId: next.id };
}

export interface SignedCrl {
  der: Buffer;
  number: number;
  thisUpdate: Date;
  nextUpdate: Date;
}

/**
 * `stint root sign-crl`: the root's CRL exactly as the CA asked for it (number
 * and revoked intermediates), valid until `nextUpdate` (default: the root's
 * own expiry, as signRootCrl signs them, since nothing re-signs it online).
 */
export async function signRequestedCrl(p: {
  rootCertDer: Buffer;
  rootKey: SigningKey;
  request: RootCrlRequest;
  now: Date;
  nextUpdate?: Date;
}): Promise<SignedCrl> {
  const root = checkRoot(p.rootCertDer, p.rootKey, p.now);
  const id = issuerIdFromSki(subjectKeyIdentifier(asCaKey(p.rootKey).publicKey));
  const r = p.request;
  if (r.root !== id) {
    throw new StintError(
      "ERR_CONFIG",
      `the request is for root ${r.root} but --root-cert is root ${id}; give that root's certificate and key`,
    );
  }
  if (r.rootFingerprint !== fingerprintSha256(p.rootCertDer)) {
    throw new StintError(
      "ERR_CONFIG",
      `the request names root ${id} with fingerprint ${r.rootFingerprint}, not --root-cert's ${fingerprintSha256(p.rootCertDer)}; give the certificate the CA holds for that root`,
    );
  }
  if (r.trustDomain !== root.trustDomain) {
    throw new StintError(
      "ERR_CONFIG",
      `the request is for trust domain "${r.trustDomain}" but the root is for "${root.trustDomain}"`,
    );
  }
  const thisUpdate = new Date(p.now.getTime() - BACKDATE_MS);
  const nextUpdate = p.nextUpdate ?? root.notAfter;
  if (nextUpdate <= p.now || nextUpdate > root.notAfter) {
    throw new StintError(
      "ERR_CONFIG",
      `the CRL's next update ${nextUpdate.toISOString()} must be in the future and no later than the root's expiry ${root.notAfter.toISOString()}`,
    );
  }
  const der = await new CrlSigner({ certDer: p.rootCertDer, privateKey: p.rootKey }).sign({
    number: r.number,
    thisUpdate,
    nextUpdate,
    revoked: r.revoked.map((e) => ({ serial: e.serial, revokedAt: e.revokedAt, reason: CA_COMPROMISE })),
  });
  return { der, number: r.number, thisUpdate, nextUpdate };
}
