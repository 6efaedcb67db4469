import { createHash, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isStintError, StintError } from "../../common/errors";
import { fileError } from "../../common/files";
import * as der from "../../formats/der";
import { algorithmForKey, fromB64u, verifyJwsSignature } from "../../formats/jose";
import { pemDecodeAll } from "../../formats/pem";
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
    return { selectors: grantedSelectors(this.name, selectors), reusable: true };
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
  const names = f.unhandledCritical.map((oid) =>
    EXTENSION_NAMES[oid] ? `${EXTENSION_NAMES[oid]} (${oid})` : oid,
  );
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

// ---------- what validation needs from a certificate, read from its DER ----------

const KU_DIGITAL_SIGNATURE = 0x8000; // bit 0, first byte's high bit
const KU_KEY_CERT_SIGN = 0x0400; // bit 5
const EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const EKU_ANY = "2.5.29.37.0";
const OID = { cn: "2.5.4.3", keyUsage: "2.5.29.15", san: "2.5.29.17", bc: "2.5.29.19", eku: "2.5.29.37" };
const HANDLED = new Set([OID.keyUsage, OID.san, OID.bc, OID.eku]);
const EXTENSION_NAMES: Record<string, string> = {
  "2.5.29.30": "nameConstraints",
  "2.5.29.32": "certificatePolicies",
  "2.5.29.36": "policyConstraints",
  "2.5.29.54": "inhibitAnyPolicy",
};

interface CertFacts {
  cert: X509Certificate;
  der: Buffer;
  role: string;
  /** Subject for messages, e.g. "CN=leaf, O=example". */
  name: string;
  issuerName: string;
  notBefore: Date;
  notAfter: Date;
  ca: boolean;
  pathLen: number | null;
  /** The first 16 key usage bits, bit 0 highest; null without the extension. */
  keyUsage: number | null;
  eku: string[] | null;
  cns: string[];
  dns: string[];
  uris: string[];
  unhandledCritical: string[];
}

function certFacts(cert: X509Certificate, role: string, code: "ERR_MALFORMED" | "ERR_CONFIG"): CertFacts {
  try {
    return readFacts(cert, role);
  } catch (err) {
    // Anything our reader trips on (bad DER, a CN that is not UTF-8) is the certificate's fault.
    const why = isStintError(err, "ERR_DER") ? err.message : "cannot be read";
    throw new StintError(code, `${role} certificate: ${why}`);
  }
}

const textOf = (name: string) => name.split("\n").join(", ");

function readFacts(cert: X509Certificate, role: string): CertFacts {
  const raw = cert.raw;
  const tbs = der.children(raw, der.expectTlv(raw, 0, der.Tag.SEQUENCE, "Certificate"))[0];
  const fields = der.children(raw, tbs);
  const v = fields[0]?.tag === der.contextTag(0, true) ? 1 : 0;
  const [validity, subject] = [fields[v + 3], fields[v + 4]];
  if (!validity || !subject) throw new StintError("ERR_DER", "DER: TBSCertificate is truncated");
  const [notBefore, notAfter] = der.children(raw, validity).map((t) => der.decodeTime(raw, t));
  const f: CertFacts = {
    cert,
    der: Buffer.from(raw),
    role,
    name: textOf(cert.subject),
    issuerName: textOf(cert.issuer),
    notBefore,
    notAfter,
    ca: false,
    pathLen: null,
    keyUsage: null,
    eku: null,
    cns: commonNames(raw, subject),
    dns: [],
    uris: [],
    unhandledCritical: [],
  };
  const extensions = fields.find((t) => t.tag === der.contextTag(3, true));
  const seen = new Set<string>();
  for (const ext of extensions ? der.children(raw, der.children(raw, extensions)[0]) : []) {
    const parts = der.children(raw, ext);
    const oid = der.decodeOid(der.contents(raw, parts[0]));
    if (seen.has(oid)) throw new StintError("ERR_DER", `DER: extension ${oid} appears twice`);
    seen.add(oid);
    const critical = parts.length === 3 && parts[1].tag === der.Tag.BOOLEAN && raw[parts[1].valueStart] !== 0;
    const value = der.contents(raw, parts[parts.length - 1]);
    if (critical && !HANDLED.has(oid)) f.unhandledCritical.push(oid);
    if (oid === OID.bc) readBasicConstraints(value, f);
    else if (oid === OID.keyUsage) {
      const bits = der.contents(value, der.expectTlv(value, 0, der.Tag.BIT_STRING, "keyUsage"));
      f.keyUsage = ((bits[1] ?? 0) << 8) | (bits[2] ?? 0);
    } else if (oid === OID.eku) {
      const list = der.expectTlv(value, 0, der.Tag.SEQUENCE, "extKeyUsage");
      f.eku = der.children(value, list).map((t) => der.decodeOid(der.contents(value, t)));
    } else if (oid === OID.san) {
      for (const n of der.children(value, der.expectTlv(value, 0, der.Tag.SEQUENCE, "subjectAltName"))) {
        if (n.tag === der.contextTag(2, false)) f.dns.push(der.contents(value, n).toString("latin1"));
        if (n.tag === der.contextTag(6, false)) f.uris.push(der.contents(value, n).toString("latin1"));
      }
    }
  }
  return f;
}

function readBasicConstraints(value: Buffer, f: CertFacts): void {
  for (const t of der.children(value, der.expectTlv(value, 0, der.Tag.SEQUENCE, "basicConstraints"))) {
    if (t.tag === der.Tag.BOOLEAN) f.ca = value[t.valueStart] !== 0;
    if (t.tag === der.Tag.INTEGER) {
      const n = der.contents(value, t);
      f.pathLen = n.length <= 4 ? n.readUIntBE(0, n.length) : Number.MAX_SAFE_INTEGER;
    }
  }
}

/** The subject's CN values in the string types certificates use; other types give no selector. */
function commonNames(raw: Buffer, subject: der.Tlv): string[] {
  const out: string[] = [];
  for (const rdn of der.children(raw, subject)) {
    for (const atv of der.children(raw, rdn)) {
      const [type, value] = der.children(raw, atv);
      if (!value || der.decodeOid(der.contents(raw, type)) !== OID.cn) continue;
      const bytes = der.contents(raw, value);
      if (value.tag === der.Tag.UTF8_STRING) {
        out.push(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
      } else if (value.tag === der.Tag.PRINTABLE_STRING || value.tag === der.Tag.IA5_STRING) {
        out.push(bytes.toString("latin1"));
      }
    }
  }
  return out;
}
