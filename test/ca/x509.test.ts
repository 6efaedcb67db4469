import { X509Certificate } from "node:crypto";
import { generateKeyPair, type KeyAlgorithm } from "../../ca/keys";
import {
  createIntermediateCertificate,
  createRootCertificate,
  describeCertificate,
  nameConstraintsValue,
  randomSerial,
} from "../../ca/x509";
import { toPem } from "../../formats/pem";
import { openssl } from "../helpers/openssl";

const T0 = new Date("2030-01-01T00:00:00Z");
const T1 = new Date("2031-01-01T00:00:00Z");

async function rootOf(alg: KeyAlgorithm) {
  const keys = await generateKeyPair(alg);
  const certDer = await createRootCertificate({
    keys,
    commonName: "R",
    trustDomain: "example.org",
    notBefore: T0,
    notAfter: T1,
    serial: Buffer.from("0102", "hex"),
  });
  return { keys, certDer };
}

describe("createRootCertificate", () => {
  test("uses exactly the validity and serial it is given", async () => {
    const { certDer } = await rootOf("ec-p384");
    const d = describeCertificate(certDer);
    expect(d).toMatchObject({
      subject: "CN=R, O=example.org",
      issuer: "CN=R, O=example.org",
      serialHex: "0102",
      notBefore: T0,
      notAfter: T1,
      isCa: true,
      sans: { uris: [], dns: [], ips: [] },
    });
    expect(openssl(["x509", "-noout", "-text"], toPem("CERTIFICATE", certDer))).toContain(
      "ecdsa-with-SHA384",
    );
  });

  test.each([
    [Buffer.alloc(0), "empty"],
    [Buffer.from([0]), "zero"],
    [Buffer.from([0x80, 1]), "negative"],
    [Buffer.from([0, 1]), "leading zero"],
    [Buffer.alloc(21, 1), "too long"],
  ])("refuses serial %s (%s) rather than let the library pick one", async (serial) => {
    const keys = await generateKeyPair("ed25519");
    await expect(
      createRootCertificate({
        keys,
        commonName: "R",
        trustDomain: "example.org",
        notBefore: T0,
        notAfter: T1,
        serial,
      }),
    ).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: "certificate serial must be 1-20 octets, positive, without a leading zero",
    });
  });

  test("refuses an empty validity window", async () => {
    const keys = await generateKeyPair("ed25519");
    await expect(
      createRootCertificate({
        keys,
        commonName: "R",
        trustDomain: "example.org",
        notBefore: T1,
        notAfter: T1,
        serial: randomSerial(),
      }),
    ).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: `certificate notAfter ${T1.toISOString()} is not after notBefore`,
    });
  });
});

describe("createIntermediateCertificate", () => {
  test("RSA-3072 root signs an Ed25519 intermediate that OpenSSL accepts", async () => {
    const root = await rootOf("rsa-3072");
    const sub = await generateKeyPair("ed25519");
    const der = await createIntermediateCertificate({
      issuer: { certDer: root.certDer, privateKey: root.keys.privateKey },
      subjectPublicKey: sub.publicKey,
      commonName: "I",
      trustDomain: "example.org",
      notBefore: T0,
      notAfter: T1,
      serial: randomSerial(),
      pathLength: 0,
    });
    expect(new X509Certificate(der).verify(new X509Certificate(root.certDer).publicKey)).toBe(true);
    expect(new X509Certificate(der).checkIssued(new X509Certificate(root.certDer))).toBe(true);
    expect(openssl(["x509", "-noout", "-text"], toPem("CERTIFICATE", der))).toContain(
      "sha256WithRSAEncryption",
    );
  });

  test("refuses validity outside the issuer's", async () => {
    const root = await rootOf("ec-p256");
    const sub = await generateKeyPair("ec-p256");
    await expect(
      createIntermediateCertificate({
        issuer: { certDer: root.certDer, privateKey: root.keys.privateKey },
        subjectPublicKey: sub.publicKey,
        commonName: "I",
        trustDomain: "example.org",
        notBefore: T0,
        notAfter: new Date(T1.getTime() + 1000),
        serial: randomSerial(),
        pathLength: 0,
      }),
    ).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: "the intermediate's validity must lie within its issuer's",
    });
  });
});

test("nameConstraintsValue is the DER OpenSSL writes for the same constraint", () => {
  const ours = nameConstraintsValue("example.org", ["svc.local"]).toString("hex");
  const cert = openssl([
    "req",
    "-x509",
    "-newkey",
    "ed25519",
    "-nodes",
    "-keyout",
    "/dev/null",
    "-subj",
    "/CN=x",
    "-addext",
    "nameConstraints=critical,permitted;URI:example.org,permitted;DNS:svc.local",
  ]);
  const der = new X509Certificate(cert).raw.toString("hex");
  expect(der).toContain(ours);
});

test("randomSerial is 16 octets, positive, never with a leading zero", () => {
  expect(randomSerial(() => Buffer.alloc(16, 0xff))[0]).toBe(0x7f);
  expect(randomSerial(() => Buffer.alloc(16, 0))[0]).toBe(0x01);
  expect(randomSerial(() => Buffer.alloc(16, 0x80))[0]).toBe(0x01);
  expect(randomSerial()).toHaveLength(16);
});

test("describeCertificate reads SANs of a certificate we did not write", () => {
  const pem = openssl([
    "req",
    "-x509",
    "-newkey",
    "ed25519",
    "-nodes",
    "-keyout",
    "/dev/null",
    "-subj",
    "/CN=leaf",
    "-addext",
    "subjectAltName=URI:spiffe://example.org/a,DNS:a.example.org,IP:10.0.0.1,IP:fd00::1",
  ]);
  const d = describeCertificate(new X509Certificate(pem).raw);
  expect(d.sans).toEqual({
    uris: ["spiffe://example.org/a"],
    dns: ["a.example.org"],
    ips: ["10.0.0.1", "fd00::1"],
  });
  expect(d.subject).toBe("CN=leaf");
  expect(d.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
});

test("describeCertificate on garbage → ERR_DER", () => {
  expect(() => describeCertificate(Buffer.from("nope"))).toThrow(
    expect.objectContaining({ code: "ERR_DER", message: "not a parseable X.509 certificate" }),
  );
});
