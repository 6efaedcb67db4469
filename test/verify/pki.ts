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
  /** OpenSSL adds both identifiers unless told "none". */
  aki?: string;
  ski?: string;
  extra?: string[];
}

/** The leaf profile of docs/architecture.md, with any field replaced or dropped (null). */
export function leafExt(o: LeafExt = {}): string[] {
  const lines = [
    o.basicConstraints === null ? null : `basicConstraints = ${o.basicConstraints ?? "critical,CA:FALSE"}`,
    o.keyUsage === null ? null : `keyUsage = ${o.keyUsage ?? "critical,digitalSignature"}`,
    o.eku === null ? null : `extendedKeyUsage = ${o.eku ?? "serverAuth,clientAuth"}`,
    `subjectKeyIdentifier = ${o.ski ?? "hash"}`,
    `authorityKeyIdentifier = ${o.aki ?? "keyid"}`,
    o.san === "" ? null : `subjectAltName = ${o.san ?? "URI:spiffe://example.org/ns/prod/sa/web"}`,
    ...(o.extra ?? []),
  ];
  return lines.filter((l): l is string => l !== null);
}

/**
 * `lines` with the extensions named in `changes` replaced ("critical,keyid"),
 * added when missing, or dropped (null). OpenSSL adds key identifiers unless
 * they are "none", so dropping one writes that.
 */
export function setExt(lines: readonly string[], changes: Record<string, string | null>): string[] {
  const out = [...lines];
  for (const [name, value] of Object.entries(changes)) {
    const at = out.findIndex((l) => l.startsWith(`${name} =`));
    const identifier = name === "subjectKeyIdentifier" || name === "authorityKeyIdentifier";
    const line = value === null ? (identifier ? `${name} = none` : null) : `${name} = ${value}`;
    if (at >= 0) {
      if (line === null) out.splice(at, 1);
      else out[at] = line;
    } else if (line !== null) out.push(line);
  }
  return out;
}

/** Key types the tests make, strong and weak. */
export type TestKey = "ec-p256" | "ec-p384" | "ec-p192" | "rsa-1024" | "rsa-2048" | "dsa-2048";

const GENPKEY: Record<Exclude<TestKey, "dsa-2048">, string[]> = {
  "ec-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  "ec-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
  "ec-p192": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-192"],
  "rsa-1024": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
  "rsa-2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
};

export interface MakeOptions {
  subject?: string;
  issuer?: Made;
  ext: string[];
  days?: number;
  digest?: string;
  serial?: string;
  /** The key to make (default P-256), or an existing certificate's key to reuse. */
  key?: TestKey | Made;
  /** OpenSSL -sigopt values for the issuer's signature (RSA-PSS parameters). */
  sigopts?: string[];
}

export class Pki {
  private sequence = 1;
  constructor(readonly dir: string) {}

  private keyFor(name: string, key: TestKey | Made = "ec-p256"): string {
    if (typeof key !== "string") return key.keyPath;
    const keyPath = join(this.dir, `${name}.key`);
    if (key === "dsa-2048") {
      const params = join(this.dir, `${name}.dsaparam`);
      openssl([
        "genpkey",
        "-genparam",
        "-algorithm",
        "DSA",
        "-pkeyopt",
        "pbits:2048",
        "-pkeyopt",
        "qbits:224",
        "-out",
        params,
      ]);
      openssl(["genpkey", "-paramfile", params, "-out", keyPath]);
    } else {
      openssl(["genpkey", ...GENPKEY[key], "-out", keyPath]);
    }
    return keyPath;
  }

  /** A certificate: self-signed when `issuer` is absent. */
  make(name: string, opts: MakeOptions): Made {
    const certPath = join(this.dir, `${name}.pem`);
    const cnf = join(this.dir, `${name}.cnf`);
    writeFileSync(cnf, `[req]\ndistinguished_name = dn\n[dn]\n[ext]\n${opts.ext.join("\n")}\n`);
    const keyPath = this.keyFor(name, opts.key);
    const subject = opts.subject ?? `/CN=${name}/O=example.org`;
    const sequence = opts.serial ? 0 : this.sequence++;
    // Stint's serial layout (docs/serial-numbers.md): 0x01, 8 random bytes, the 8-byte sequence.
    const serial =
      opts.serial ?? `0x01${randomBytes(8).toString("hex")}${sequence.toString(16).padStart(16, "0")}`;
    const common = [
      "-days",
      String(opts.days ?? 1),
      `-${opts.digest ?? "sha256"}`,
      ...(opts.sigopts ?? []).flatMap((o) => ["-sigopt", o]),
    ];
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

  root(name: string, subject = `/CN=${name}/O=example.org`, ext: string[] = ROOT_EXT): Made {
    return this.make(name, { subject, ext, days: 3650 });
  }

  inter(name: string, issuer: Made, extra?: string[]): Made {
    return this.make(name, { issuer, ext: interExt(extra), days: 30 });
  }

  leaf(name: string, issuer: Made, o: LeafExt = {}): Made {
    return this.make(name, { issuer, ext: leafExt(o), subject: "/O=example.org" });
  }

  /**
   * OpenSSL's verdict on `chain` (leaf first) under `roots`, strictly
   * (-x509_strict) and for the TLS purpose matching `usage`: "OK", or its
   * first error line ("error 34 at 0 depth lookup: unhandled critical extension").
   */
  opensslVerify(roots: Made[], chain: Made[], usage: "client" | "server" = "client"): string {
    const id = `verify-${this.sequence++}`;
    const rootsPath = join(this.dir, `${id}-roots.pem`);
    const untrusted = join(this.dir, `${id}-untrusted.pem`);
    writeFileSync(rootsPath, roots.map((r) => r.pem).join(""));
    writeFileSync(
      untrusted,
      chain
        .slice(1)
        .map((c) => c.pem)
        .join(""),
    );
    const args = ["verify", "-x509_strict", "-purpose", usage === "client" ? "sslclient" : "sslserver"];
    args.push(
      "-CAfile",
      rootsPath,
      ...(chain.length > 1 ? ["-untrusted", untrusted] : []),
      chain[0].certPath,
    );
    try {
      openssl(args);
      return "OK";
    } catch (err) {
      const out = `${(err as { stdout?: string }).stdout ?? ""}${(err as { stderr?: string }).stderr ?? ""}`;
      return /error \d+ at \d+ depth lookup: .*/.exec(out)?.[0] ?? out.trim().split("\n")[0];
    }
  }
}

/** The first 8 bytes of a certificate's SKI in hex, as OpenSSL prints it. */
export function skiPrefix(m: Made): string {
  const text = openssl(["x509", "-noout", "-ext", "subjectKeyIdentifier", "-in", m.certPath]);
  const hex = /([0-9A-F]{2}(?::[0-9A-F]{2})+)/.exec(text)?.[1] ?? "";
  return hex.replace(/:/g, "").toLowerCase().slice(0, 16);
}
