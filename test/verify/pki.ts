import { randomBytes, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openssl } from "../helpers/openssl";

/**
 * Certificates for the verifier's tests, made by OpenSSL (the independent
 * tool) with every extension spelled out per certificate, so each test can
 * break exactly one rule.
 */

export interface Made {
  name: string;
  keyPath: string;
  certPath: string;
  cert: X509Certificate;
  der: Buffer;
  pem: string;
  key: string;
  /** The sequence encoded in the Stint-layout serial (0 for a serial given explicitly). */
  sequence: number;
}

export const ROOT_EXT = [
  "basicConstraints = critical,CA:TRUE",
  "keyUsage = critical,keyCertSign,cRLSign",
  "subjectKeyIdentifier = hash",
];

/** An X509-SVID intermediate: pathlen 0, constrained to the trust domain. */
export const interExt = (extra: string[] = ["nameConstraints = critical,permitted;URI:example.org"]) => [
  "basicConstraints = critical,CA:TRUE,pathlen:0",
  "keyUsage = critical,keyCertSign,cRLSign",
  "subjectKeyIdentifier = hash",
  "authorityKeyIdentifier = keyid",
  ...extra,
];

export interface LeafExt {
  san?: string;
  basicConstraints?: string | null;
  keyUsage?: string | null;
  eku?: string | null;
  extra?: string[];
}

/** The leaf profile of docs/architecture.md, with any field replaced or dropped (null). */
export function leafExt(o: LeafExt = {}): string[] {
  const lines = [
    o.basicConstraints === null ? null : `basicConstraints = ${o.basicConstraints ?? "critical,CA:FALSE"}`,
    o.keyUsage === null ? null : `keyUsage = ${o.keyUsage ?? "critical,digitalSignature"}`,
    o.eku === null ? null : `extendedKeyUsage = ${o.eku ?? "serverAuth,clientAuth"}`,
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid",
    o.san === "" ? null : `subjectAltName = ${o.san ?? "URI:spiffe://example.org/ns/prod/sa/web"}`,
    ...(o.extra ?? []),
  ];
  return lines.filter((l): l is string => l !== null);
}

export class Pki {
  private sequence = 1;
  constructor(readonly dir: string) {}

  /** A certificate: self-signed when `issuer` is absent. */
  make(
    name: string,
    opts: { subject?: string; issuer?: Made; ext: string[]; days?: number; digest?: string; serial?: string },
  ): Made {
    const keyPath = join(this.dir, `${name}.key`);
    const certPath = join(this.dir, `${name}.pem`);
    const cnf = join(this.dir, `${name}.cnf`);
    writeFileSync(cnf, `[req]\ndistinguished_name = dn\n[dn]\n[ext]\n${opts.ext.join("\n")}\n`);
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", keyPath]);
    const subject = opts.subject ?? `/CN=${name}/O=example.org`;
    const sequence = opts.serial ? 0 : this.sequence++;
    // Stint's serial layout (docs/serial-numbers.md): 0x01, 8 random bytes, the 8-byte sequence.
    const serial =
      opts.serial ?? `0x01${randomBytes(8).toString("hex")}${sequence.toString(16).padStart(16, "0")}`;
    const common = ["-days", String(opts.days ?? 1), `-${opts.digest ?? "sha256"}`];
    if (!opts.issuer) {
      openssl([
        "req",
        "-x509",
        "-new",
        "-key",
        keyPath,
        "-subj",
        subject,
        "-set_serial",
        serial,
        ...common,
        "-config",
        cnf,
        "-extensions",
        "ext",
        "-out",
        certPath,
      ]);
    } else {
      const csr = join(this.dir, `${name}.csr`);
      openssl(["req", "-new", "-key", keyPath, "-subj", subject, "-config", cnf, "-out", csr]);
      openssl([
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        opts.issuer.certPath,
        "-CAkey",
        opts.issuer.keyPath,
        "-set_serial",
        serial,
        ...common,
        "-extfile",
        cnf,
        "-extensions",
        "ext",
        "-out",
        certPath,
      ]);
    }
    const pem = readFileSync(certPath, "utf8");
    const cert = new X509Certificate(pem);
    return {
      name,
      keyPath,
      certPath,
      cert,
      der: cert.raw,
      pem,
      key: readFileSync(keyPath, "utf8"),
      sequence,
    };
  }

  root(name: string, subject = `/CN=${name}/O=example.org`): Made {
    return this.make(name, { subject, ext: ROOT_EXT, days: 3650 });
  }

  inter(name: string, issuer: Made, extra?: string[]): Made {
    return this.make(name, { issuer, ext: interExt(extra), days: 30 });
  }

  leaf(name: string, issuer: Made, o: LeafExt = {}): Made {
    return this.make(name, { issuer, ext: leafExt(o), subject: "/O=example.org" });
  }
}

/** The first 8 bytes of a certificate's SKI in hex, as OpenSSL prints it. */
export function skiPrefix(m: Made): string {
  const text = openssl(["x509", "-noout", "-ext", "subjectKeyIdentifier", "-in", m.certPath]);
  const hex = /([0-9A-F]{2}(?::[0-9A-F]{2})+)/.exec(text)?.[1] ?? "";
  return hex.replace(/:/g, "").toLowerCase().slice(0, 16);
}
