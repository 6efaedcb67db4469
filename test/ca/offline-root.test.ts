import "reflect-metadata";
import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import {
  generateKeyPair,
  issuerIdFromSki,
  type KeyAlgorithm,
  type KeyPair,
  loadPrivateKey,
} from "../../ca/keys";
import {
  createIntermediateRequest,
  describeIntermediate,
  signIntermediateRequest,
} from "../../ca/offline-root";
import { createCaCertificateRequest, createRootCertificate, randomSerial } from "../../ca/x509";
import { isStintError } from "../../common/errors";
import { openssl, pemFileDer, tempDir } from "../helpers/openssl";

// generateKeyPair stays real; one test makes it return the same key twice, to force a key file collision.
jest.mock("../../ca/keys", () => {
  const actual = jest.requireActual("../../ca/keys");
  return { ...actual, generateKeyPair: jest.fn(actual.generateKeyPair) };
});

const PASS = "correct horse battery staple";
const NOW = new Date("2030-06-01T12:00:00Z");
const HOUR = 3_600_000;
const DAY = 86_400_000;

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function dataDir(): string {
  const d = tempDir("stint-offline-");
  dirs.push(d);
  return d;
}

interface Root {
  keys: KeyPair;
  certDer: Buffer;
}

async function makeRoot(
  trustDomain = "example.org",
  alg: KeyAlgorithm = "ec-p256",
  days = 3650,
): Promise<Root> {
  const keys = await generateKeyPair(alg);
  const certDer = await createRootCertificate({
    keys,
    commonName: "Stint Root CA test",
    trustDomain,
    notBefore: new Date(NOW.getTime() - 2 * HOUR),
    notAfter: new Date(NOW.getTime() + days * DAY),
    serial: randomSerial(),
  });
  return { keys, certDer };
}

/** Expects a StintError with this code whose message matches. */
async function refused(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(isStintError(err)).toBe(true);
  expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
  expect((err as Error).message).not.toMatch(/\n/);
}

describe("the offline-root round trip", () => {
  let root: Root;
  beforeAll(async () => {
    root = await makeRoot();
  });

  test.each<KeyAlgorithm>(["ec-p256", "ec-p384", "ed25519", "rsa-2048"])(
    "a %s intermediate: CSR on the CA host, signed by the root, key kept",
    async (keyAlgorithm) => {
      const dir = dataDir();
      const req = await createIntermediateRequest({
        dataDir: dir,
        passphrase: null,
        keyAlgorithm,
        trustDomain: "example.org",
        now: NOW,
      });
      expect(req.keyPath).toBe(`keys/${req.id}.key.pem`);
      const certDer = await signIntermediateRequest({
        rootCertDer: root.certDer,
        rootKey: root.keys.privateKey,
        csrDer: req.csrDer,
        ttlDays: 30,
        now: NOW,
      });

      const cert = new X509Certificate(certDer);
      expect(cert.verify(root.keys.publicKey)).toBe(true);
      expect(cert.checkIssued(new X509Certificate(root.certDer))).toBe(true);
      const { key } = await loadPrivateKey(join(dir, req.keyPath), null);
      expect(cert.checkPrivateKey(key)).toBe(true);
      expect(describeIntermediate(certDer)).toMatchObject({
        id: req.id,
        subject: `CN=Stint Intermediate CA ${req.id}, O=example.org`,
        notBefore: new Date(NOW.getTime() - HOUR),
        notAfter: new Date(NOW.getTime() + 30 * DAY),
      });
      const parsed = new x509.X509Certificate(certDer);
      const bc = parsed.getExtension(x509.BasicConstraintsExtension)!;
      expect([bc.ca, bc.pathLength, bc.critical]).toEqual([true, 0, true]);
      expect(parsed.getExtension("2.5.29.30")?.critical).toBe(true); // name constraints
      expect(parsed.serialNumber).toMatch(/^[0-7][0-9a-f]{31}$/i);
    },
  );

  test("the CSR is one OpenSSL accepts, with the intermediate name of its own key", async () => {
    const dir = dataDir();
    const req = await createIntermediateRequest({
      dataDir: dir,
      passphrase: null,
      keyAlgorithm: "ec-p256",
      trustDomain: "example.org",
      now: NOW,
    });
    const path = join(dir, "req.der");
    writeFileSync(path, req.csrDer);
    const text = openssl(["req", "-inform", "DER", "-in", path, "-verify", "-noout", "-subject"]);
    expect(text.trim()).toBe(`subject=CN = Stint Intermediate CA ${req.id}, O = example.org`);
    const csrKey = new x509.Pkcs10CertificateRequest(req.csrDer).publicKey;
    const ski = await csrKey.getKeyIdentifier("SHA-1");
    expect(issuerIdFromSki(Buffer.from(ski))).toBe(req.id);
  });

  test("validity is cut to the root's, and DNS suffixes become name constraints", async () => {
    const shortRoot = await makeRoot("example.org", "ec-p256", 10);
    const req = await createIntermediateRequest({
      dataDir: dataDir(),
      passphrase: null,
      keyAlgorithm: "ec-p256",
      trustDomain: "example.org",
      now: NOW,
    });
    const certDer = await signIntermediateRequest({
      rootCertDer: shortRoot.certDer,
      rootKey: shortRoot.keys.privateKey,
      csrDer: req.csrDer,
      ttlDays: 365,
      now: NOW,
      permittedDnsSuffixes: [".svc.example.org"],
    });
    expect(describeIntermediate(certDer).notAfter).toEqual(new Date(NOW.getTime() + 10 * DAY));
    const path = join(dataDir(), "int.der");
    writeFileSync(path, certDer);
    expect(openssl(["x509", "-inform", "DER", "-in", path, "-noout", "-text"])).toMatch(
      /Permitted:\s+URI:example\.org\s+DNS:\.svc\.example\.org/,
    );
  });
});

describe("createIntermediateRequest writes the key safely", () => {
  test("0600 in a 0700 directory, encrypted with the passphrase", async () => {
    const dir = dataDir();
    const req = await createIntermediateRequest({
      dataDir: dir,
      passphrase: PASS,
      keyAlgorithm: "ec-p256",
      trustDomain: "example.org",
      now: NOW,
    });
    const path = join(dir, req.keyPath);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "keys")).mode & 0o777).toBe(0o700);
    expect(readFileSync(path, "utf8")).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----\n/);
    await refused(loadPrivateKey(path, "wrong"), "ERR_KEY_PASSPHRASE", /wrong passphrase/);
    expect((await loadPrivateKey(path, PASS)).encrypted).toBe(true);
  });

  test("never overwrites an existing key file", async () => {
    const dir = dataDir();
    const keys = await generateKeyPair("ec-p256");
    const mocked = generateKeyPair as jest.MockedFunction<typeof generateKeyPair>;
    mocked.mockResolvedValueOnce(keys).mockResolvedValueOnce(keys);
    const opts = {
      dataDir: dir,
      passphrase: null,
      keyAlgorithm: "ec-p256" as const,
      trustDomain: "example.org",
      now: NOW,
    };
    const first = await createIntermediateRequest(opts);
    const path = join(dir, first.keyPath);
    writeFileSync(path, "operator's own bytes\n"); // stands for any key already there
    await refused(createIntermediateRequest(opts), "ERR_FILE", /already exists; refusing to overwrite/);
    expect(readFileSync(path, "utf8")).toBe("operator's own bytes\n");
  });

  test("a bad trust domain fails before anything is written", async () => {
    const dir = dataDir();
    await refused(
      createIntermediateRequest({
        dataDir: dir,
        passphrase: null,
        keyAlgorithm: "ec-p256",
        trustDomain: "Not A Domain",
        now: NOW,
      }),
      "ERR_CONFIG",
      /trust domain/,
    );
    expect(() => statSync(join(dir, "keys"))).toThrow();
  });
});

describe("signIntermediateRequest refuses", () => {
  let root: Root;
  let csrDer: Buffer;
  const sign = (over: Partial<Parameters<typeof signIntermediateRequest>[0]>) =>
    signIntermediateRequest({
      rootCertDer: root.certDer,
      rootKey: root.keys.privateKey,
      csrDer,
      ttlDays: 30,
      now: NOW,
      ...over,
    });

  beforeAll(async () => {
    root = await makeRoot();
    ({ csrDer } = await createIntermediateRequest({
      dataDir: dataDir(),
      passphrase: null,
      keyAlgorithm: "ec-p256",
      trustDomain: "example.org",
      now: NOW,
    }));
  });

  test("a tampered CSR (its signature no longer verifies)", async () => {
    // Same length, so the DER still parses: only the signature can notice.
    const at = csrDer.indexOf(Buffer.from("example.org"));
    expect(at).toBeGreaterThan(0);
    const tampered = Buffer.from(csrDer);
    tampered.write("example.com", at, "ascii");
    await refused(sign({ csrDer: tampered }), "ERR_BAD_CSR", /signature does not verify/);
  });

  test("bytes that are not a CSR", async () => {
    await refused(sign({ csrDer: Buffer.from("not a csr") }), "ERR_BAD_CSR", /CSR is not valid DER/);
  });

  test("a CSR for another trust domain", async () => {
    const other = await createIntermediateRequest({
      dataDir: dataDir(),
      passphrase: null,
      keyAlgorithm: "ec-p256",
      trustDomain: "other.org",
      now: NOW,
    });
    await refused(
      sign({ csrDer: other.csrDer }),
      "ERR_BAD_CSR",
      /^CSR is for trust domain "other\.org" but this root is for "example\.org"; sign it with that trust domain's root$/,
    );
  });

  test("a CSR whose subject is not a Stint intermediate name", async () => {
    const dir = dataDir();
    openssl([
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      join(dir, "k.pem"),
    ]);
    openssl([
      "req",
      "-new",
      "-key",
      join(dir, "k.pem"),
      "-subj",
      "/CN=workload/O=example.org",
      "-out",
      join(dir, "r.pem"),
    ]);
    await refused(
      sign({ csrDer: pemFileDer(join(dir, "r.pem")) }),
      "ERR_BAD_CSR",
      /^CSR subject is not a Stint intermediate name \(expected CN=Stint Intermediate CA [0-9a-f]{16}, O=<trust domain>\); make the request with stint ca intermediate-csr$/,
    );
  });

  test("a CSR naming an intermediate id that is not its own key's", async () => {
    const keys = await generateKeyPair("ec-p256");
    const csr = await createCaCertificateRequest({
      keys,
      commonName: "Stint Intermediate CA 0123456789abcdef",
      trustDomain: "example.org",
    });
    await refused(sign({ csrDer: csr }), "ERR_BAD_CSR", /not a Stint intermediate name/);
  });

  test("a CSR with a key type Stint does not use", async () => {
    const dir = dataDir();
    openssl([
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-521",
      "-nodes",
      "-keyout",
      join(dir, "k.pem"),
      "-subj",
      "/CN=Stint Intermediate CA 0000000000000000/O=example.org",
      "-out",
      join(dir, "r.pem"),
    ]);
    await refused(
      sign({ csrDer: pemFileDer(join(dir, "r.pem")) }),
      "ERR_BAD_CSR",
      /^CSR carries an unsupported key \(EC key on curve secp521r1\); supported: /,
    );
  });

  test("a root key that does not match the root certificate", async () => {
    const stranger = await generateKeyPair("ec-p256");
    await refused(
      sign({ rootKey: stranger.privateKey }),
      "ERR_CONFIG",
      /^the root key does not match the root certificate; give the key file of that root$/,
    );
  });

  test("a 'root' that is not a self-issued CA certificate", async () => {
    const intermediate = await sign({});
    const dir = dataDir();
    const again = await createIntermediateRequest({
      dataDir: dir,
      passphrase: null,
      keyAlgorithm: "ec-p256",
      trustDomain: "example.org",
      now: NOW,
    });
    await refused(
      sign({ rootCertDer: intermediate, csrDer: again.csrDer }),
      "ERR_CONFIG",
      /is not a Stint root CA certificate/,
    );
  });

  test("an expired root, and lifetimes out of range", async () => {
    await refused(sign({ now: new Date(NOW.getTime() + 3651 * DAY) }), "ERR_CONFIG", /valid only from/);
    await refused(sign({ ttlDays: 0 }), "ERR_CONFIG", /ttlDays must be a whole number/);
    await refused(sign({ ttlDays: 1.5 }), "ERR_CONFIG", /ttlDays must be a whole number/);
  });
});
