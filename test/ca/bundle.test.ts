import { createPublicKey, X509Certificate } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { bundlePem, spiffeBundle } from "../../ca/bundle";
import { generateKeyPair, issuerIdFromSki, type KeyAlgorithm, subjectKeyIdentifier } from "../../ca/keys";
import type { IssuerRecord, IssuerState } from "../../ca/store";
import { createRootCertificate, describeCertificate, randomSerial } from "../../ca/x509";
import { pemDecodeAll } from "../../formats/pem";
import { openssl, tempDir } from "../helpers/openssl";

const NOW = new Date("2030-01-01T00:00:00Z");

async function root(alg: KeyAlgorithm, state: IssuerState, daysAgo: number): Promise<IssuerRecord> {
  const keys = await generateKeyPair(alg);
  const id = issuerIdFromSki(subjectKeyIdentifier(keys.publicKey));
  const notBefore = new Date(NOW.getTime() - daysAgo * 86_400_000);
  const certDer = await createRootCertificate({
    keys,
    commonName: `Test Root ${alg}`,
    trustDomain: "example.org",
    notBefore,
    notAfter: new Date(notBefore.getTime() + 3650 * 86_400_000),
    serial: randomSerial(),
  });
  const d = describeCertificate(certDer);
  return {
    id,
    kind: "root",
    parentId: null,
    state,
    subject: d.subject,
    certDer,
    keyPath: "keys/root.key.pem",
    notBefore,
    notAfter: d.notAfter,
    createdAt: notBefore,
  };
}

let roots: Record<string, IssuerRecord>;
beforeAll(async () => {
  roots = {
    ec: await root("ec-p256", "active", 10),
    ed: await root("ed25519", "prepared", 1),
    rsa: await root("rsa-2048", "tainted", 20),
    p384: await root("ec-p384", "retired", 30),
  };
});

const intermediateLike = (r: IssuerRecord): IssuerRecord => ({
  ...r,
  id: "0000000000000000",
  kind: "intermediate",
});

describe("bundlePem", () => {
  test("holds every root but retired ones, oldest first, and parses back", () => {
    const pem = bundlePem([roots.ec, roots.ed, roots.p384, roots.rsa, intermediateLike(roots.ec)]);
    const ders = pemDecodeAll(pem, "CERTIFICATE", "bundle");
    expect(ders).toEqual([roots.rsa.certDer, roots.ec.certDer, roots.ed.certDer]);
    // OpenSSL reads the concatenation too.
    const dir = tempDir("stint-bundle-");
    const path = join(dir, "bundle.pem");
    writeFileSync(path, pem);
    const p7 = openssl(["crl2pkcs7", "-nocrl", "-certfile", path]);
    rmSync(dir, { recursive: true });
    const text = openssl(["pkcs7", "-print_certs", "-noout"], p7);
    expect(text.match(/subject=/g)).toHaveLength(3);
  });

  test("no roots → empty string", () => {
    expect(bundlePem([])).toBe("");
    expect(bundlePem([roots.p384])).toBe("");
  });
});

describe("spiffeBundle", () => {
  test("is a JWK set of x509-svid keys whose x5c is the root and whose parameters match its key", () => {
    const bundle = spiffeBundle([roots.ec, roots.ed, roots.rsa, roots.p384], {
      sequence: 7,
      refreshHintSeconds: 300,
    });
    expect(bundle.spiffe_sequence).toBe(7);
    expect(bundle.spiffe_refresh_hint).toBe(300);
    expect(bundle.keys).toHaveLength(3);
    const [rsa, ec, ed] = bundle.keys;

    expect(Object.keys(ec).sort()).toEqual(["crv", "kty", "use", "x", "x5c", "y"]);
    expect(ec).toMatchObject({ kty: "EC", crv: "P-256", use: "x509-svid" });
    expect(Object.keys(ed).sort()).toEqual(["crv", "kty", "use", "x", "x5c"]);
    expect(ed).toMatchObject({ kty: "OKP", crv: "Ed25519", use: "x509-svid" });
    expect(Object.keys(rsa).sort()).toEqual(["e", "kty", "n", "use", "x5c"]);
    expect(rsa).toMatchObject({ kty: "RSA", e: "AQAB", use: "x509-svid" });

    for (const [key, rec] of [
      [rsa, roots.rsa],
      [ec, roots.ec],
      [ed, roots.ed],
    ] as const) {
      expect(key.x5c).toHaveLength(1);
      const der = Buffer.from(key.x5c[0], "base64");
      expect(der).toEqual(rec.certDer);
      // x5c is standard base64 (RFC 7517 4.7), the JWK members base64url.
      expect(key.x5c[0]).toMatch(/^[A-Za-z0-9+/]+=*$/);
      const fromJwk = createPublicKey({ key: { ...key }, format: "jwk" });
      expect(fromJwk.equals(new X509Certificate(der).publicKey)).toBe(true);
    }
    // Round-trips as JSON with exactly the spec's top-level members.
    expect(Object.keys(JSON.parse(JSON.stringify(bundle))).sort()).toEqual([
      "keys",
      "spiffe_refresh_hint",
      "spiffe_sequence",
    ]);
  });

  test("bad sequence or refresh hint → ERR_CONFIG", () => {
    expect(() => spiffeBundle([], { sequence: -1, refreshHintSeconds: 300 })).toThrow(
      expect.objectContaining({
        code: "ERR_CONFIG",
        message: "bundle sequence must be a non-negative integer (got -1)",
      }),
    );
    expect(() => spiffeBundle([], { sequence: 1, refreshHintSeconds: 0.5 })).toThrow(
      expect.objectContaining({
        code: "ERR_CONFIG",
        message: "bundle refresh hint must be a positive whole number of seconds",
      }),
    );
  });
});
