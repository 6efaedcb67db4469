import { createPublicKey, type KeyObject } from "node:crypto";
import { join } from "node:path";
import { isStintError, StintError } from "../common/errors";
import { ensureDir, writeSecretFile } from "../common/files";
import { parseCsr } from "./csr";
import {
  checkTtl,
  DEFAULT_INTERMEDIATE_TTL_DAYS,
  intermediateCommonName,
  intermediateKeyPath,
  intermediateValidity,
  KEYS_DIR,
} from "./hierarchy";
import { asCaKey, type SigningKey } from "./key-backend";
import {
  encryptPrivateKeyPem,
  fingerprintSha256,
  generateKeyPair,
  issuerIdFromSki,
  type KeyAlgorithm,
  keyAlgorithmOf,
  plainPrivateKeyPem,
  subjectKeyIdentifier,
} from "./keys";
import {
  caNameOf,
  createCaCertificateRequest,
  createIntermediateCertificate,
  describeCertificate,
  parseCertificate,
  randomSerial,
} from "./x509";

/**
 * The offline-root path for a new intermediate (DESIGN.md, Rotation): the CA
 * host makes a key and a PKCS#10 request; the machine holding the root key
 * signs it; `stint ca import-intermediate` loads the result. The root key
 * never has to reach the CA host.
 */

/** What `stint root sign` gives an intermediate unless told otherwise: what `ca init` and `ca rotate` give. */
export const DEFAULT_SIGN_TTL_DAYS = DEFAULT_INTERMEDIATE_TTL_DAYS;

/** The issuer id Stint gives a CA key: the first 8 bytes of its SKI. */
function issuerIdOf(key: KeyObject): string {
  return issuerIdFromSki(subjectKeyIdentifier(key));
}

export interface IntermediateRequestOptions {
  dataDir: string;
  /** null writes the key unencrypted (the `--insecure-no-passphrase` development mode). */
  passphrase: string | null;
  keyAlgorithm: KeyAlgorithm;
  trustDomain: string;
  now: Date;
}

export interface IntermediateRequest {
  /** The future issuer id (first 8 bytes of the key's SKI). */
  id: string;
  csrDer: Buffer;
  /** Where the private key was written, relative to dataDir (`keys/<id>.key.pem`). */
  keyPath: string;
}

/**
 * Makes the key and the CSR of a new intermediate. The key is written (0600,
 * in the 0700 keys directory, never over an existing file) only after the CSR
 * is built, so a bad parameter writes nothing. Nothing is recorded in the
 * store: the intermediate becomes an issuer when its certificate is imported.
 */
export async function createIntermediateRequest(
  opts: IntermediateRequestOptions,
): Promise<IntermediateRequest> {
  const keys = await generateKeyPair(opts.keyAlgorithm);
  const id = issuerIdOf(keys.publicKey);
  const csrDer = await createCaCertificateRequest({
    keys,
    commonName: intermediateCommonName(id),
    trustDomain: opts.trustDomain,
  });
  const pem =
    opts.passphrase === null
      ? plainPrivateKeyPem(keys.privateKey)
      : await encryptPrivateKeyPem(keys.privateKey, opts.passphrase);
  const keyPath = intermediateKeyPath(id);
  await ensureDir(join(opts.dataDir, KEYS_DIR), 0o700);
  await writeSecretFile(join(opts.dataDir, keyPath), pem);
  return { id, csrDer, keyPath };
}

export interface SignIntermediateOptions {
  rootCertDer: Uint8Array;
  /** A key file's KeyObject, or a CaKey (a token key signs where it is). */
  rootKey: SigningKey;
  csrDer: Buffer;
  ttlDays: number;
  now: Date;
  /** dNSName name constraints for the intermediate; none leaves DNS SANs unconstrained. */
  permittedDnsSuffixes?: readonly string[];
  /**
   * Where the root's CRL is served (the CA's /crl/<root id>.crl), put in the
   * intermediate as its CRL distribution point; the root's key is not on the
   * CA host, so the caller says where. Absent leaves it out.
   */
  crlUrl?: string | null;
  /** Where the root's certificate is served (DER, the CA's /ca/<root id>.cer), as caIssuers. */
  caIssuersUrl?: string | null;
}

const badCsr = (why: string) => new StintError("ERR_BAD_CSR", why);

/** The root certificate's trust domain, after checking it is a usable self-issued CA certificate matching `rootKey`. */
export function checkRoot(rootCertDer: Uint8Array, rootKey: SigningKey, now: Date) {
  let root: ReturnType<typeof parseCertificate>;
  let name: ReturnType<typeof caNameOf>;
  try {
    root = parseCertificate(rootCertDer);
    name = caNameOf(rootCertDer, "certificate");
  } catch (err) {
    throw new StintError("ERR_CONFIG", "the root certificate is not a parseable X.509 certificate", {
      cause: err,
    });
  }
  const d = describeCertificate(rootCertDer);
  if (!d.isCa || d.subject !== d.issuer || name === null) {
    throw new StintError(
      "ERR_CONFIG",
      `the root certificate (${d.subject}) is not a Stint root CA certificate; give the CA's root.pem`,
    );
  }
  if (now < d.notBefore || now >= d.notAfter) {
    throw new StintError(
      "ERR_CONFIG",
      `the root certificate is valid only from ${d.notBefore.toISOString()} to ${d.notAfter.toISOString()}; check this machine's clock or rotate the root`,
    );
  }
  const rootSpki = Buffer.from(root.publicKey.rawData);
  const keySpki = asCaKey(rootKey).publicKey.export({ type: "spki", format: "der" });
  if (!rootSpki.equals(keySpki)) {
    throw new StintError(
      "ERR_CONFIG",
      "the root key does not match the root certificate; give the key file of that root",
    );
  }
  return { trustDomain: name.trustDomain, notBefore: d.notBefore, notAfter: d.notAfter };
}

/** The public key of a request made by `createIntermediateRequest`, refusing anything else. */
function checkRequest(csrDer: Buffer, trustDomain: string): KeyObject {
  const csr = parseCsr(csrDer); // strict DER, and the signature must verify with the key it carries
  const key = createPublicKey({ key: csr.spki, format: "der", type: "spki" });
  try {
    keyAlgorithmOf(key);
  } catch (err) {
    if (isStintError(err, "ERR_POLICY_KEY")) throw badCsr(`CSR carries an ${err.message}`);
    throw err;
  }
  const id = issuerIdOf(key);
  const name = caNameOf(csrDer, "request");
  const expected = `CN=${intermediateCommonName(id)}, O=<trust domain>`;
  if (name === null || name.commonName !== intermediateCommonName(id)) {
    throw badCsr(
      `CSR subject is not a Stint intermediate name (expected ${expected}); make the request with stint ca intermediate-csr`,
    );
  }
  if (name.trustDomain !== trustDomain) {
    throw badCsr(
      `CSR is for trust domain "${name.trustDomain}" but this root is for "${trustDomain}"; sign it with that trust domain's root`,
    );
  }
  return key;
}

/**
 * Signs an intermediate CSR with a root (prepare, check, sign): the request
 * must verify, carry a key type Stint uses and name a Stint intermediate of
 * the root's trust domain. Everything in the certificate except the subject
 * key comes from Stint's profile (CA:TRUE pathlen:0, URI name constraint for
 * the trust domain), never from the request. The lifetime is cut to the
 * root's, as `buildIntermediate` does for rotations on the CA host.
 */
export async function signIntermediateRequest(opts: SignIntermediateOptions): Promise<Buffer> {
  checkTtl("ttlDays", opts.ttlDays);
  const root = checkRoot(opts.rootCertDer, opts.rootKey, opts.now);
  const subjectPublicKey = checkRequest(opts.csrDer, root.trustDomain);
  const id = issuerIdOf(subjectPublicKey);
  return createIntermediateCertificate({
    issuer: { certDer: opts.rootCertDer, privateKey: opts.rootKey },
    subjectPublicKey,
    commonName: intermediateCommonName(id),
    trustDomain: root.trustDomain,
    ...intermediateValidity(root, opts.now, opts.ttlDays),
    serial: randomSerial(),
    pathLength: 0,
    permittedDnsSuffixes: opts.permittedDnsSuffixes,
    crlUrl: opts.crlUrl,
    caIssuersUrl: opts.caIssuersUrl,
  });
}

export interface IntermediateSummary {
  id: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  fingerprint: string;
}

/** What an operator checks before carrying a signed intermediate back to the CA host. */
export function describeIntermediate(certDer: Uint8Array): IntermediateSummary {
  const d = describeCertificate(certDer);
  const spki = Buffer.from(parseCertificate(certDer).publicKey.rawData);
  const id = issuerIdOf(createPublicKey({ key: spki, format: "der", type: "spki" }));
  return {
    id,
    subject: d.subject,
    notBefore: d.notBefore,
    notAfter: d.notAfter,
    fingerprint: fingerprintSha256(certDer),
  };
}
