import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** OpenSSL is the independent tool our certificates and CSRs are checked against. */
export function openssl(args: string[], input?: string): string {
  return execFileSync("openssl", args, { encoding: "utf8", input, stdio: ["pipe", "pipe", "pipe"] });
}

export function tempDir(prefix = "stint-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export type OpensslKeyType = "ec-p256" | "ec-p384" | "ed25519" | "rsa-2048" | "rsa-3072" | "rsa-4096";

const GENPKEY: Record<OpensslKeyType, string[]> = {
  "ec-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  "ec-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
  ed25519: ["-algorithm", "ED25519"],
  "rsa-2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
  "rsa-3072": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
  "rsa-4096": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
};

/** Makes a key and a CSR with OpenSSL; returns their paths and the CSR's DER. */
export function opensslCsr(
  dir: string,
  opts: { keyType?: OpensslKeyType; sans: string[]; extraExt?: string[]; name?: string },
): { keyPath: string; csrPath: string; der: Buffer } {
  const name = opts.name ?? "req";
  const keyPath = join(dir, `${name}.key`);
  const csrPath = join(dir, `${name}.csr`);
  openssl(["genpkey", ...GENPKEY[opts.keyType ?? "ec-p256"], "-out", keyPath]);
  const ext = [`subjectAltName=${opts.sans.join(",")}`, ...(opts.extraExt ?? [])].flatMap((e) => [
    "-addext",
    e,
  ]);
  openssl(["req", "-new", "-key", keyPath, "-subj", "/CN=workload", ...ext, "-out", csrPath]);
  return { keyPath, csrPath, der: pemFileDer(csrPath) };
}

/** DER of the first PEM block in a file. */
export function pemFileDer(path: string): Buffer {
  const body = /-----BEGIN [^-]+-----([\s\S]*?)-----END/.exec(readFileSync(path, "utf8"))?.[1] ?? "";
  return Buffer.from(body.replace(/\s/g, ""), "base64");
}

export function writeText(path: string, text: string): string {
  writeFileSync(path, text);
  return path;
}

export interface BootstrapPki {
  /** The bootstrap CA certificate (PEM file), as attest.x509pop.bundleFile takes it. */
  caPath: string;
  /** The client certificate (PEM file) and its key (PEM file), as an x509pop agent takes them. */
  leafPath: string;
  keyPath: string;
}

/**
 * An operator's existing PKI, made by OpenSSL: a bootstrap CA and one
 * client certificate under it with subject CN `cn`, for x509pop attestation.
 */
export function bootstrapPki(dir: string, name: string, cn: string): BootstrapPki {
  const p = (ext: string) => join(dir, `${name}.${ext}`);
  writeFileSync(
    p("cnf"),
    "[req]\ndistinguished_name = dn\n[dn]\n" +
      "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\nsubjectKeyIdentifier = hash\n" +
      "[leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n",
  );
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl(
    ["req", "-x509", "-new", ...ec, "-keyout", p("ca.key"), "-subj", `/CN=${name} bootstrap CA`].concat([
      "-days",
      "1",
      "-config",
      p("cnf"),
      "-extensions",
      "ca",
      "-out",
      p("ca.pem"),
    ]),
  );
  openssl([
    "req",
    "-new",
    ...ec,
    "-keyout",
    p("leaf.key"),
    "-subj",
    `/CN=${cn}`,
    "-config",
    p("cnf"),
    "-out",
    p("leaf.csr"),
  ]);
  openssl(
    [
      "x509",
      "-req",
      "-in",
      p("leaf.csr"),
      "-CA",
      p("ca.pem"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
    ].concat(["-days", "1", "-extfile", p("cnf"), "-extensions", "leaf", "-out", p("leaf.pem")]),
  );
  return { caPath: p("ca.pem"), leafPath: p("leaf.pem"), keyPath: p("leaf.key") };
}
