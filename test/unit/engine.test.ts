import "reflect-metadata";
import { createPrivateKey } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { parseCsr } from "../../ca/csr";
import { LeafEngine } from "../../ca/engine";
import { toPem } from "../../formats/pem";
import { decodeSerial } from "../../formats/serial";
import { type OpensslKeyType, openssl, opensslCsr, pemFileDer, tempDir } from "../helpers/openssl";

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An issuing CA made by OpenSSL, so the engine is checked against a certificate we did not write. */
function opensslCa(
  keyType: OpensslKeyType,
  name = `ca-${keyType}`,
): { certDer: Buffer; keyPem: string; certPath: string } {
  const { keyPath } = opensslCsr(dir, { keyType, name, sans: ["DNS:unused"] });
  const certPath = join(dir, `${name}.pem`);
  openssl([
    "req",
    "-x509",
    "-new",
    "-key",
    keyPath,
    "-subj",
    `/CN=OpenSSL ${keyType} CA/O=example.org`,
    "-days",
    "2",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    certPath,
  ]);
  return { certDer: pemFileDer(certPath), keyPem: readFileSync(keyPath, "utf8"), certPath };
}

const issuerTypes: OpensslKeyType[] = ["ec-p256", "ec-p384", "ed25519", "rsa-2048"];
const leafTypes: OpensslKeyType[] = ["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072"];

describe.each(issuerTypes)("LeafEngine with a %s issuer", (issuerType) => {
  const ca = opensslCa(issuerType);
  const engine = new LeafEngine({
    certDer: ca.certDer,
    privateKey: createPrivateKey(ca.keyPem),
    organization: "example.org",
  });

  it.each(leafTypes)(
    "issues for a %s key: OpenSSL verifies it, @peculiar/x509 reads every field",
    (leafType) => {
      const csr = parseCsr(
        opensslCsr(dir, { keyType: leafType, name: `leaf-${issuerType}-${leafType}`, sans: ["DNS:x"] }).der,
      );
      const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 30_000);
      const notAfter = new Date(notBefore.getTime() + 3_600_000);
      const { der, serial } = engine.issue({
        spki: csr.spki,
        keyAlgorithm: csr.keyAlgorithm!,
        spiffeId: "spiffe://example.org/ns/prod/sa/web",
        dnsNames: ["web.example.org"],
        ipAddresses: ["127.0.0.1", "::1"],
        notBefore,
        notAfter,
        sequence: 77,
      });
      const leafPath = join(dir, `leaf-${issuerType}-${leafType}.pem`);
      writeFileSync(leafPath, toPem("CERTIFICATE", der));
      expect(openssl(["verify", "-CAfile", ca.certPath, "-purpose", "sslclient", leafPath]).trim()).toBe(
        `${leafPath}: OK`,
      );
      expect(openssl(["verify", "-CAfile", ca.certPath, "-purpose", "sslserver", leafPath]).trim()).toBe(
        `${leafPath}: OK`,
      );

      const cert = new x509.X509Certificate(der);
      expect(Buffer.from(cert.serialNumber, "hex").equals(serial)).toBe(true);
      expect(decodeSerial(serial)?.sequence).toBe(77);
      expect(cert.notBefore.getTime()).toBe(notBefore.getTime());
      expect(cert.notAfter.getTime()).toBe(notAfter.getTime());
      expect(cert.subject).toBe("O=example.org");
      expect(Buffer.from(cert.publicKey.rawData).equals(csr.spki)).toBe(true);

      const bc = cert.getExtension(x509.BasicConstraintsExtension)!;
      expect([bc.ca, bc.critical]).toEqual([false, true]);
      const ku = cert.getExtension(x509.KeyUsagesExtension)!;
      const expectedUsage = leafType.startsWith("rsa")
        ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment
        : x509.KeyUsageFlags.digitalSignature;
      expect([ku.usages, ku.critical]).toEqual([expectedUsage, true]);
      expect(cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toEqual([
        "1.3.6.1.5.5.7.3.1",
        "1.3.6.1.5.5.7.3.2",
      ]);
      const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
      expect(san.names.toJSON()).toEqual([
        { type: "url", value: "spiffe://example.org/ns/prod/sa/web" },
        { type: "dns", value: "web.example.org" },
        { type: "ip", value: "127.0.0.1" },
        { type: "ip", value: "::1" },
      ]);
      const issuerCert = new x509.X509Certificate(ca.certDer);
      const issuerSki = issuerCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
      expect(cert.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(issuerSki);
      expect(cert.issuer).toBe(issuerCert.subject);
    },
  );
});

it("gives every certificate a distinct random part", () => {
  const ca = opensslCa("ec-p256");
  const engine = new LeafEngine({
    certDer: ca.certDer,
    privateKey: createPrivateKey(ca.keyPem),
    organization: "example.org",
  });
  const csr = parseCsr(opensslCsr(dir, { name: "many", sans: ["DNS:x"] }).der);
  const randoms = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    const { serial } = engine.issue({
      spki: csr.spki,
      keyAlgorithm: "ec-p256",
      spiffeId: "spiffe://example.org/a",
      dnsNames: [],
      ipAddresses: [],
      notBefore: new Date(),
      notAfter: new Date(Date.now() + 60_000),
      sequence: i,
    });
    randoms.add(decodeSerial(serial)!.random.toString("hex"));
  }
  expect(randoms.size).toBe(3000);
});

describe("extended key usage by kind of certificate", () => {
  const ca = opensslCa("ec-p256", "ca-eku");
  const csr = parseCsr(opensslCsr(dir, { name: "eku", sans: ["DNS:x"] }).der);
  const issueWith = (dnsOnlyClientAuth: boolean | undefined, spiffeId: string | null, name: string) => {
    const engine = new LeafEngine({
      certDer: ca.certDer,
      privateKey: createPrivateKey(ca.keyPem),
      organization: "example.org",
      dnsOnlyClientAuth,
    });
    const { der } = engine.issue({
      spki: csr.spki,
      keyAlgorithm: "ec-p256",
      spiffeId,
      dnsNames: ["web.example.org"],
      ipAddresses: [],
      notBefore: new Date(Date.now() - 1000),
      notAfter: new Date(Date.now() + 60_000),
      sequence: 1,
    });
    const path = join(dir, `${name}.pem`);
    writeFileSync(path, toPem("CERTIFICATE", der));
    const usages = new x509.X509Certificate(der).getExtension(x509.ExtendedKeyUsageExtension)!.usages;
    return { path, usages };
  };
  const verifyAs = (purpose: string, path: string) => {
    try {
      return openssl(["verify", "-CAfile", ca.certPath, "-purpose", purpose, path]).trim();
    } catch (err) {
      return String((err as Error).message);
    }
  };

  it("gives a DNS-only certificate serverAuth alone, so OpenSSL refuses it as a client", () => {
    const { path, usages } = issueWith(undefined, null, "dns-only");
    expect(usages).toEqual(["1.3.6.1.5.5.7.3.1"]);
    expect(verifyAs("sslserver", path)).toBe(`${path}: OK`);
    expect(verifyAs("sslclient", path)).toMatch(/unsuitable certificate purpose/);
  });

  it("adds clientAuth to DNS-only certificates only when policy says so", () => {
    const { path, usages } = issueWith(true, null, "dns-only-client");
    expect(usages).toEqual(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    expect(verifyAs("sslclient", path)).toBe(`${path}: OK`);
  });

  it("always gives an X509-SVID both usages", () => {
    expect(issueWith(false, "spiffe://example.org/web", "svid").usages).toEqual([
      "1.3.6.1.5.5.7.3.1",
      "1.3.6.1.5.5.7.3.2",
    ]);
  });
});
