import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { chmodSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  encryptPrivateKeyPem,
  fingerprintSha256,
  generateKeyPair,
  KEY_ALGORITHMS,
  keyAlgorithmOf,
  loadPrivateKey,
  parseKeyAlgorithm,
  plainPrivateKeyPem,
  resolvePassphrase,
  subjectKeyIdentifier,
} from "../../ca/keys";
import { keyIdentifier } from "../../ca/spki";
import { StintError } from "../../common/errors";
import { toPem } from "../../formats/pem";
import { openssl, tempDir } from "../helpers/openssl";

const dir = tempDir("stint-keys-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SECRET = "hunter2-Secret-XYZ";
/** Few iterations keep the many-key tests fast; the default is checked once below. */
const FAST = { iterations: 1000 };

/** Runs `fn`, insists it throws a StintError, and checks the passphrase is nowhere in it. */
async function failure(fn: () => Promise<unknown>): Promise<StintError> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(StintError);
  const err = caught as StintError;
  expect(err.message).not.toContain(SECRET);
  expect(String(err.stack)).not.toContain(SECRET);
  expect(JSON.stringify(err)).not.toContain(SECRET);
  if (err.cause instanceof Error) expect(err.cause.message).not.toContain(SECRET);
  return err;
}

function write(name: string, data: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, data);
  return path;
}

describe("key algorithms", () => {
  test("parseKeyAlgorithm accepts the six names and lists them on error", () => {
    for (const a of KEY_ALGORITHMS) expect(parseKeyAlgorithm(a)).toBe(a);
    expect(parseKeyAlgorithm(" EC-P256 ")).toBe("ec-p256");
    expect(() => parseKeyAlgorithm("dsa")).toThrow(
      expect.objectContaining({
        code: "ERR_CONFIG",
        message:
          'unknown key algorithm "dsa"; use one of: ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072, rsa-4096',
      }),
    );
  });

  test.each(KEY_ALGORITHMS)("generateKeyPair(%s) round-trips through keyAlgorithmOf", async (alg) => {
    const { privateKey, publicKey } = await generateKeyPair(alg);
    expect(keyAlgorithmOf(publicKey)).toBe(alg);
    expect(keyAlgorithmOf(privateKey)).toBe(alg);
  });

  test("keyAlgorithmOf refuses curves and sizes Stint does not use", () => {
    const k1 = createPublicKey(
      openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"]),
    );
    expect(() => keyAlgorithmOf(k1)).toThrow(
      expect.objectContaining({
        code: "ERR_POLICY_KEY",
        message: expect.stringContaining("EC key on curve secp256k1"),
      }),
    );
    const rsa1024 = createPublicKey(
      openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]),
    );
    expect(() => keyAlgorithmOf(rsa1024)).toThrow(
      expect.objectContaining({ code: "ERR_POLICY_KEY", message: expect.stringContaining("RSA-1024 key") }),
    );
  });
});

describe("identifiers", () => {
  test("fingerprintSha256 matches openssl's", async () => {
    const pem = openssl([
      "req",
      "-x509",
      "-newkey",
      "ed25519",
      "-nodes",
      "-keyout",
      "/dev/null",
      "-subj",
      "/CN=x",
    ]);
    const der = new X509Certificate(pem).raw;
    const theirs = openssl(["x509", "-noout", "-fingerprint", "-sha256"], pem).split("=")[1].trim();
    expect(fingerprintSha256(der)).toBe("sha256:" + theirs.replace(/:/g, "").toLowerCase());
  });

  test.each(["ec-p256", "ed25519", "rsa-2048"] as const)(
    "subjectKeyIdentifier(%s) equals openssl's hash",
    async (alg) => {
      const { privateKey, publicKey } = await generateKeyPair(alg);
      const keyPath = write(`ski-${alg}.pem`, plainPrivateKeyPem(privateKey));
      // OpenSSL's default subjectKeyIdentifier=hash is RFC 5280 method 1.
      const cert = openssl([
        "req",
        "-x509",
        "-key",
        keyPath,
        "-subj",
        "/CN=x",
        "-addext",
        "subjectKeyIdentifier=hash",
      ]);
      const text = openssl(["x509", "-noout", "-ext", "subjectKeyIdentifier"], cert);
      const theirs = text.split("\n")[1].trim().replace(/:/g, "").toLowerCase();
      expect(subjectKeyIdentifier(publicKey).toString("hex")).toBe(theirs);
      expect(subjectKeyIdentifier(privateKey)).toEqual(
        keyIdentifier(publicKey.export({ type: "spki", format: "der" })),
      );
    },
  );
});

describe("private keys at rest", () => {
  test("the default encryption is PBES2, 600000 iterations, readable by Node and OpenSSL", async () => {
    const { privateKey } = await generateKeyPair("ec-p256");
    const pem = await encryptPrivateKeyPem(privateKey, SECRET);
    expect(pem).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----\n/);
    const path = write("default.pem", pem);
    const info = openssl(["asn1parse", "-in", path]);
    expect(info).toContain("PBES2");
    expect(info).toContain("hmacWithSHA256");
    expect(info).toContain("aes-256-cbc");
    expect(info).toMatch(/INTEGER\s+:0927C0/); // 600000
    const viaNode = createPrivateKey({ key: pem, passphrase: SECRET });
    expect(viaNode.equals(privateKey)).toBe(true);
    const viaOpenssl = openssl(["pkey", "-in", path, "-passin", `pass:${SECRET}`]);
    expect(createPrivateKey(viaOpenssl).equals(privateKey)).toBe(true);
  });

  test("an empty passphrase is refused", async () => {
    const { privateKey } = await generateKeyPair("ed25519");
    await expect(encryptPrivateKeyPem(privateKey, "")).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: "the CA key passphrase is empty",
    });
  });

  describe("loadPrivateKey", () => {
    let encPath: string;
    let original: Buffer;
    beforeAll(async () => {
      const { privateKey } = await generateKeyPair("ec-p256");
      encPath = write("ca.key.pem", await encryptPrivateKeyPem(privateKey, SECRET, FAST));
      original = readFileSync(encPath);
    });
    afterEach(() => expect(readFileSync(encPath)).toEqual(original));

    test.each(KEY_ALGORITHMS)("the right passphrase loads a %s key", async (alg) => {
      const { privateKey } = await generateKeyPair(alg);
      const path = write(`right-${alg}.pem`, await encryptPrivateKeyPem(privateKey, SECRET, FAST));
      const loaded = await loadPrivateKey(path, SECRET);
      expect(loaded.encrypted).toBe(true);
      expect(loaded.key.equals(privateKey)).toBe(true);
    });

    test("a wrong passphrase", async () => {
      const err = await failure(() => loadPrivateKey(encPath, "not-the-passphrase"));
      expect(err.code).toBe("ERR_KEY_PASSPHRASE");
      expect(err.message).toBe(`wrong passphrase for ${encPath}`);
    });

    test("wrong passphrases that pass the CBC padding check are still wrong passphrases", async () => {
      // About 1 in 256 wrong passphrases decrypts to valid padding, and Node then says "unsupported", not "bad decrypt".
      const nodeCodes = new Map<string, string[]>();
      for (let i = 0; i < 4000; i++) {
        const pass = `wrong-${i}`;
        try {
          createPrivateKey({ key: original, passphrase: pass });
        } catch (err) {
          const code = (err as { code: string }).code;
          nodeCodes.set(code, [...(nodeCodes.get(code) ?? []), pass]);
        }
      }
      expect(nodeCodes.get("ERR_OSSL_BAD_DECRYPT")?.length).toBeGreaterThan(3500);
      const lucky = nodeCodes.get("ERR_OSSL_UNSUPPORTED") ?? [];
      expect(lucky.length).toBeGreaterThan(0);
      for (const pass of lucky) {
        const err = await failure(() => loadPrivateKey(encPath, pass));
        expect({ code: err.code, message: err.message }).toEqual({
          code: "ERR_KEY_PASSPHRASE",
          message: `wrong passphrase for ${encPath}`,
        });
      }
    });

    test("no passphrase for an encrypted key", async () => {
      const err = await failure(() => loadPrivateKey(encPath, null));
      expect(err.code).toBe("ERR_KEY_PASSPHRASE");
      expect(err.message).toBe(
        `${encPath} is encrypted and no passphrase was given; set STINT_CA_PASSPHRASE or use --passphrase-file`,
      );
    });

    const corruptMessage = (p: string) =>
      `${p} is not a readable private key (damaged or not PEM); restore it from backup`;

    /** PEM text of `original` with DER bytes [from, from+len) XORed with 0x5a. */
    const damageDer = (from: number, len: number) => {
      const b64 = original.toString("latin1").replace(/-----[A-Z ]+-----|\s/g, "");
      const bytes = Buffer.from(b64, "base64");
      const at = from < 0 ? bytes.length + from : from;
      for (let i = at; i < at + len; i++) bytes[i] ^= 0x5a;
      return toPem("ENCRYPTED PRIVATE KEY", bytes);
    };
    const certificatePem = () =>
      openssl(["req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", "/dev/null", "-subj", "/CN=x"]);

    test.each([
      ["truncated in half", (t: string) => t.slice(0, t.length / 2)],
      [
        "truncated but re-armoured",
        (t: string) => `${t.slice(0, 200)}\n-----END ENCRYPTED PRIVATE KEY-----\n`,
      ],
      ["its structure garbled", (t: string) => t.slice(0, 150) + "AAAAAAAA" + t.slice(158)],
      ["a broken length byte", () => damageDer(1, 1)],
      ["its cipher parameters garbled", () => damageDer(82, 2)],
      ["not base64", (t: string) => t.replace(/\n(.)/, "\n*")],
      ["empty", () => ""],
      ["a certificate", certificatePem],
      ["plain text", () => "hello, I am not a key\n"],
      ["binary", () => "\u0000\u0001\u0002\u00ff"],
      [
        "an unencrypted key, truncated",
        () => openssl(["genpkey", "-algorithm", "ED25519"]).replace(/\n(.{20}).*\n/, "\n$1\n"),
      ],
    ])("%s → ERR_KEY_CORRUPT, with or without a passphrase", async (name, damage) => {
      const path = write(`bad-${name.replace(/\W/g, "-")}.pem`, damage(original.toString("latin1")));
      for (const pass of [SECRET, null]) {
        const err = await failure(() => loadPrivateKey(path, pass));
        expect({ code: err.code, message: err.message }).toEqual({
          code: "ERR_KEY_CORRUPT",
          message: corruptMessage(path),
        });
      }
    });

    // Damage inside the ciphertext shows only on decryption: without a passphrase the file still reads as encrypted.
    test.each([
      ["the middle of the ciphertext", () => damageDer(-64, 8)],
      ["the last cipher block", () => damageDer(-3, 1)],
    ])("damage in %s → ERR_KEY_CORRUPT given the right passphrase", async (name, damage) => {
      const path = write(`bad-${name.replace(/\W/g, "-")}.pem`, damage());
      const err = await failure(() => loadPrivateKey(path, SECRET));
      expect({ code: err.code, message: err.message }).toEqual({
        code: "ERR_KEY_CORRUPT",
        message: corruptMessage(path),
      });
      expect((await failure(() => loadPrivateKey(path, null))).code).toBe("ERR_KEY_PASSPHRASE");
    });

    test("a missing file → ERR_FILE", async () => {
      const path = join(dir, "nope.pem");
      const err = await failure(() => loadPrivateKey(path, SECRET));
      expect(err.code).toBe("ERR_FILE");
      expect(err.message).toBe(
        `private key file ${path} does not exist; check --data-dir or restore it from backup`,
      );
    });

    test("an unreadable file → ERR_FILE", async () => {
      if (process.getuid?.() === 0) return; // root reads anything
      const path = write("unreadable.pem", original);
      chmodSync(path, 0o000);
      const err = await failure(() => loadPrivateKey(path, SECRET));
      expect(err.code).toBe("ERR_FILE");
      expect(err.message).toContain(`permission denied on ${path}`);
    });

    test("an unencrypted key loads with or without a passphrase and says so", async () => {
      const { privateKey } = await generateKeyPair("ed25519");
      const path = write("plain.pem", plainPrivateKeyPem(privateKey));
      for (const pass of [SECRET, null]) {
        const loaded = await loadPrivateKey(path, pass);
        expect(loaded.encrypted).toBe(false);
        expect(loaded.key.equals(privateKey)).toBe(true);
      }
    });

    test("legacy OpenSSL-encrypted PEM (Proc-Type) is read, and its failures mapped", async () => {
      const path = join(dir, "legacy.pem");
      openssl(["genrsa", "-traditional", "-aes256", "-passout", `pass:${SECRET}`, "-out", path, "2048"]);
      expect(readFileSync(path, "utf8")).toContain("Proc-Type: 4,ENCRYPTED");
      expect((await loadPrivateKey(path, SECRET)).encrypted).toBe(true);
      expect((await failure(() => loadPrivateKey(path, "wrong"))).message).toBe(
        `wrong passphrase for ${path}`,
      );
      expect((await failure(() => loadPrivateKey(path, null))).code).toBe("ERR_KEY_PASSPHRASE");
    });
  });
});

describe("resolvePassphrase", () => {
  test("from the environment", async () => {
    expect(await resolvePassphrase({ env: { STINT_CA_PASSPHRASE: "s3cret" } })).toBe("s3cret");
  });

  test("from a file, trimming one trailing newline only", async () => {
    expect(await resolvePassphrase({ env: {}, passphraseFile: write("p1", "s3cret\n") })).toBe("s3cret");
    expect(await resolvePassphrase({ env: {}, passphraseFile: write("p2", "s3cret\r\n") })).toBe("s3cret");
    expect(await resolvePassphrase({ env: {}, passphraseFile: write("p3", " s3cret \n\n") })).toBe(
      " s3cret \n",
    );
  });

  test("none given → null", async () => {
    expect(await resolvePassphrase({ env: {} })).toBeNull();
  });

  test("empty, both, or an unreadable file are errors", async () => {
    await expect(resolvePassphrase({ env: { STINT_CA_PASSPHRASE: "" } })).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: "STINT_CA_PASSPHRASE is set but empty",
    });
    const empty = write("p-empty", "\n");
    await expect(resolvePassphrase({ env: {}, passphraseFile: empty })).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: `the passphrase file ${empty} is empty`,
    });
    await expect(
      resolvePassphrase({ env: { STINT_CA_PASSPHRASE: "x" }, passphraseFile: empty }),
    ).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: "both STINT_CA_PASSPHRASE and --passphrase-file are set; use only one",
    });
    const missing = join(dir, "no-such-passphrase");
    await expect(resolvePassphrase({ env: {}, passphraseFile: missing })).rejects.toMatchObject({
      code: "ERR_FILE",
      message: `cannot read the passphrase file: ${missing} (or its directory) does not exist`,
    });
  });
});
