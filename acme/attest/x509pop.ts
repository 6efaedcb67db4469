import { createHash, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isStintError, StintError } from "../../common/errors";
import { fileError } from "../../common/files";
import { algorithmForKey, fromB64u, verifyJwsSignature } from "../../formats/jose";
import { pemDecodeAll } from "../../formats/pem";
import {
  type CertificateFacts,
  extensionName,
  KeyUsage,
  OID,
  readCertificate,
  unhandledCritical,
} from "../../formats/x509";
import { X509POP_PREFIX, x509PopMessage } from "../../formats/x509pop";
import {
  type Attestation,
  type AttestationContext,
  type Attestor,
  evidenceMembers,
  grantedSelectors,
} from "./attestor";

/**
 * x509pop: proof of possession of a key whose certificate chains to a
 * configured bootstrap CA. Evidence:
 *   {"chain": ["<base64 DER>", ...leaf first, optional intermediates],
 *    "signature": "<base64url>"}
 * The signature is made by the leaf key over the UTF-8 bytes of
 * "stint-x509pop:" + challenge token + "." + account key thumbprint: the
 * challenge token makes it fresh and the thumbprint ties it to this ACME
 * account, so a captured proof cannot be replayed for another challenge or by
 * another account. (Both are base64url, so the "." cannot be ambiguous.)
 * Signature encoding follows JWS: ECDSA as r||s (IEEE P1363), ES256 on P-256
 * and ES384 on P-384; Ed25519; RSA (≥ 2048 bits) PKCS#1 v1.5 with SHA-256.
 *
 * Path validation is our own and strict (STYLE habit 8): each link's
 * signature and names, validity of every certificate at `now`, issuers CA
 * with keyCertSign and path length honoured, the leaf an end entity, and any
 * critical extension we do not process (nameConstraints above all) refused
 * rather than ignored.
 */

export interface X509PopConfig {
  /** The bootstrap CAs; a chain must end at (or just under) one of them. */
  bundle: X509Certificate[];
}

const MAX_CHAIN = 4;
const MAX_CERT_BASE64 = 16 * 1024;

export async function loadX509PopConfig(opts: { bundleFile: string }): Promise<X509PopConfig> {
  let text: string;
  try {
    text = await readFile(opts.bundleFile, "utf8");
  } catch (err) {
    throw fileError(err, opts.bundleFile, "read the x509pop bootstrap CA bundle");
  }
  try {
    const bundle = pemDecodeAll(text, "CERTIFICATE", `x509pop bootstrap CA bundle ${opts.bundleFile}`).map(
      (d) => new X509Certificate(d),
    );
    checkBundle(bundle);
    return { bundle };
  } catch (err) {
    if (isStintError(err, "ERR_CONFIG")) throw err;
    const why = isStintError(err) ? err.message : "a certificate in it cannot be parsed";
    throw new StintError("ERR_CONFIG", `x509pop attestor: ${opts.bundleFile}: ${why}`);
  }
}

function checkBundle(bundle: readonly X509Certificate[]): void {
  if (bundle.length === 0) {
    throw new StintError("ERR_CONFIG", "x509pop attestor: the bootstrap CA bundle is empty");
  }
  bundle.forEach((cert, i) => {
    const f = certFacts(cert, `bootstrap CA ${i + 1}`, "ERR_CONFIG");
    const problem = f.ca ? (issuerProblem(f) ?? criticalProblem(f)) : "is not a CA certificate";
    if (problem) {
      throw new StintError("ERR_CONFIG", `x509pop attestor: bootstrap CA ${i + 1} (${f.name}) ${problem}`);
    }
  });
}

export class X509PopAttestor implements Attestor {
  readonly name = "x509pop";
  private readonly bundle: CertFacts[];

  constructor(config: X509PopConfig) {
    checkBundle(config.bundle);
    this.bundle = config.bundle.map((c, i) => certFacts(c, `bootstrap CA ${i + 1}`, "ERR_CONFIG"));
  }

  async attest(evidence: unknown, ctx: AttestationContext): Promise<Attestation> {
    const e = evidenceMembers(evidence, this.name, ["chain", "signature"]);
    const chain = parseChain(e.chain);
    const signature = fromB64uMalformed(e.signature, "x509pop evidence signature");
    const leaf = chain[0];
    // A certificate is public: its fingerprint names the node in refusals as well as on success.
    const reference = `x509pop:sha256:${createHash("sha256").update(leaf.der).digest("hex")}`;
    ctx.reference?.(reference);

    if (leaf.ca) {
      refuse(
        `the leaf certificate (${leaf.name}) is a CA certificate; x509pop needs an end-entity certificate`,
      );
    }
    if (leaf.keyUsage !== null && !(leaf.keyUsage & KU_DIGITAL_SIGNATURE)) {
      refuse(`the leaf certificate (${leaf.name}) key usage does not include digitalSignature`);
    }
    if (leaf.eku !== null && !leaf.eku.some((oid) => oid === EKU_CLIENT_AUTH || oid === EKU_ANY)) {
      refuse(`the leaf certificate (${leaf.name}) extended key usage does not include clientAuth`);
    }

    const anchor = this.validatePath(chain, ctx.now);

    const alg = algorithmForKey(leaf.cert.publicKey);
    if (!alg) {
      refuse(
        "the leaf certificate key type cannot make an x509pop proof (use EC P-256/P-384, Ed25519 or RSA ≥ 2048)",
      );
    }
    const message = x509PopMessage(ctx.token, ctx.accountThumbprint);
    if (!verifyJwsSignature(alg, leaf.cert.publicKey, message, signature)) {
      refuse(
        `proof-of-possession signature does not verify: it must be the leaf key's signature over ` +
          `"${X509POP_PREFIX}<challenge token>.<account key thumbprint>" for this challenge and account`,
      );
    }

    const fingerprint = createHash("sha256").update(anchor.der).digest("hex");
    const selectors = [
      ...leaf.cns.map((cn) => `x509pop:subject:cn:${cn}`),
      ...leaf.dns.map((name) => `x509pop:san:dns:${name.toLowerCase()}`),
      ...leaf.uris.map((uri) => `x509pop:san:uri:${uri}`),
      `x509pop:ca:fingerprint:${fingerprint}`,
    ];
    return { selectors: grantedSelectors(this.name, selectors), reusable: true, evidence: reference };
  }

  /** Validates chain[0] → … → a bootstrap CA; returns the anchor. */
  private validatePath(chain: CertFacts[], now: Date): CertFacts {
    let path = chain;
    // A client may include the bootstrap CA itself at the end (as x5c often does).
    let anchor =
      path.length > 1 ? this.bundle.find((b) => b.der.equals(path[path.length - 1].der)) : undefined;
    if (anchor) path = path.slice(0, -1);
    for (const f of path) {
      const problem = criticalProblem(f);
      if (problem) refuse(`${f.role} certificate (${f.name}) ${problem}`);
    }
    for (let i = 1; i < path.length; i++) {
      const issuer = path[i];
      const problem = issuer.ca ? issuerProblem(issuer, i - 1) : "is not a CA certificate";
      if (problem) refuse(`${issuer.role} certificate (${issuer.name}) ${problem}`);
      if (!issued(issuer, path[i - 1])) {
        refuse(
          `certificate chain is broken: ${issuer.role} (${issuer.name}) did not issue ${path[i - 1].role} (${path[i - 1].name})`,
        );
      }
    }
    const last = path[path.length - 1];
    anchor ??= this.bundle.find((b) => issued(b, last));
    // Also when the client named the anchor itself: naming a bootstrap CA proves nothing.
    if (!anchor || !issued(anchor, last)) {
      refuse(
        `certificate does not chain to a configured bootstrap CA (${last.role} issuer: ${last.issuerName})`,
      );
    }
    const anchorProblem = issuerProblem(anchor, path.length - 1);
    if (anchorProblem) refuse(`the bootstrap CA (${anchor.name}) ${anchorProblem}`);
    for (const f of [...path, anchor]) {
      const role = f === anchor ? "bootstrap CA" : f.role;
      if (now.getTime() > f.notAfter.getTime()) {
        refuse(`certificate expired at ${f.notAfter.toISOString()} (${role}, ${f.name})`);
      }
      if (now.getTime() < f.notBefore.getTime()) {
        refuse(`certificate is not valid before ${f.notBefore.toISOString()} (${role}, ${f.name})`);
      }
    }
    return anchor;
  }
}

function refuse(message: string): never {
  throw new StintError("ERR_ATTESTATION", message);
}

function issued(issuer: CertFacts, child: CertFacts): boolean {
  return child.cert.checkIssued(issuer.cert) && child.cert.verify(issuer.cert.publicKey);
}

/** Why `f` may not issue a chain with `below` intermediates under it, or null. */
function issuerProblem(f: CertFacts, below = 0): string | null {
  if (f.keyUsage !== null && !(f.keyUsage & KU_KEY_CERT_SIGN)) {
    return "key usage does not include keyCertSign";
  }
  if (f.pathLen !== null && below > f.pathLen) {
    return `path length constraint ${f.pathLen} does not allow ${below} intermediate(s) below it`;
  }
  return null;
}

function criticalProblem(f: CertFacts): string | null {
  if (f.unhandledCritical.length === 0) return null;
  const names = f.unhandledCritical.map(extensionName);
  return `has critical extension(s) x509pop does not process: ${names.join(", ")}`;
}

function fromB64uMalformed(text: unknown, what: string): Buffer {
  try {
    const bytes = fromB64u(text, what);
    if (bytes.length === 0) throw new StintError("ERR_MALFORMED", `${what} is empty`);
    return bytes;
  } catch (err) {
    throw isStintError(err, "ERR_JOSE") ? new StintError("ERR_MALFORMED", err.message) : err;
  }
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function parseChain(value: unknown): CertFacts[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_CHAIN) {
    throw new StintError(
      "ERR_MALFORMED",
      `x509pop evidence chain must be a list of 1 to ${MAX_CHAIN} base64 DER certificates, leaf first`,
    );
  }
  return value.map((item: unknown, i) => {
    const what = `x509pop evidence chain[${i}]`;
    if (
      typeof item !== "string" ||
      item.length > MAX_CERT_BASE64 ||
      item.length % 4 !== 0 ||
      !BASE64.test(item)
    ) {
      throw new StintError("ERR_MALFORMED", `${what} is not base64 (standard alphabet, padded, as in x5c)`);
    }
    const bytes = Buffer.from(item, "base64");
    if (bytes.toString("base64") !== item) {
      throw new StintError("ERR_MALFORMED", `${what} is not canonical base64`);
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(bytes);
    } catch {
      throw new StintError("ERR_MALFORMED", `${what} is not a DER X.509 certificate`);
    }
    return certFacts(cert, i === 0 ? "leaf" : `intermediate ${i}`, "ERR_MALFORMED");
  });
}

// ---------- what validation needs from a certificate (read by formats/x509.ts) ----------

const KU_DIGITAL_SIGNATURE = KeyUsage.digitalSignature;
const KU_KEY_CERT_SIGN = KeyUsage.keyCertSign;
const EKU_CLIENT_AUTH = OID.clientAuth;
const EKU_ANY = OID.anyExtendedKeyUsage;
/** nameConstraints is read but not enforced here, so a critical one is refused rather than ignored. */
const HANDLED: ReadonlySet<string> = new Set([
  OID.keyUsage,
  OID.subjectAltName,
  OID.basicConstraints,
  OID.extKeyUsage,
]);

interface CertFacts extends CertificateFacts {
  cert: X509Certificate;
  role: string;
  /** Subject for messages, e.g. "CN=leaf, O=example". */
  name: string;
  issuerName: string;
  unhandledCritical: string[];
}

function certFacts(cert: X509Certificate, role: string, code: "ERR_MALFORMED" | "ERR_CONFIG"): CertFacts {
  let facts: CertificateFacts;
  try {
    facts = readCertificate(cert.raw);
  } catch (err) {
    // Anything our reader trips on (bad DER, a CN that is not UTF-8) is the certificate's fault.
    const why = isStintError(err, "ERR_DER") ? err.message : "cannot be read";
    throw new StintError(code, `${role} certificate: ${why}`);
  }
  return {
    ...facts,
    cert,
    role,
    name: textOf(cert.subject),
    issuerName: textOf(cert.issuer),
    unhandledCritical: unhandledCritical(facts, HANDLED),
  };
}

const textOf = (name: string) => name.split("\n").join(", ");
