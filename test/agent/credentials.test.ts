import { spawnSync } from "node:child_process";
import { rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AtomicDir } from "../../agent/atomic-dir";
import { checkMatchingPair, credentialFiles } from "../../agent/credentials";
import { StintError } from "../../common/errors";
import { parsePemBlocks } from "../../formats/pem";
import { openssl, tempDir } from "../helpers/openssl";
import { type ChainKeyType, makeChain, makePairs, type TestChain } from "./fixtures/pki";

const labels = (pem: string): string[] => parsePemBlocks(pem).map((b) => b.label);

function error(fn: () => unknown): StintError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StintError);
    return err as StintError;
  }
  throw new Error("expected a StintError");
}

describe("credential files", () => {
  let dir: string;
  const chains = {} as Record<ChainKeyType, TestChain>;
  beforeAll(() => {
    dir = tempDir("stint-creds-");
    for (const t of ["ec-p256", "rsa-2048", "ed25519"] as const) chains[t] = makeChain(dir, t);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("writes cert.pem, key.pem and bundle.pem, with the key private", () => {
    const c = chains["ec-p256"];
    const files = credentialFiles({ chainPem: c.chainPem, keyPem: c.keyPem, bundlePem: c.bundlePem });
    expect(Object.keys(files).sort()).toEqual(["bundle.pem", "cert.pem", "key.pem"]);
    expect(files["cert.pem"]).toEqual({ data: c.leafPem + c.intermediatePem, mode: 0o644 });
    expect(files["key.pem"]).toEqual({ data: c.keyPem, mode: 0o600 });
    expect(files["bundle.pem"]).toEqual({ data: c.bundlePem, mode: 0o644 });
  });

  it.each(["ec-p256", "rsa-2048", "ed25519"] as const)(
    "writes combined.pem as the key, then leaf and intermediate (%s)",
    (t) => {
      const c = chains[t];
      const files = credentialFiles({ ...c, combined: true });
      const combined = String(files["combined.pem"].data);
      expect(files["combined.pem"].mode).toBe(0o600);
      expect(labels(combined)).toEqual(["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]);
      expect(combined).toBe(c.keyPem + c.leafPem + c.intermediatePem);
    },
  );

  /** OpenSSL, not our code, reads the PKCS#12 back: the key, the leaf (paired by localKeyID) and the intermediate. */
  it.each(["ec-p256", "rsa-2048", "ed25519"] as const)(
    "writes a cert.p12 that openssl pkcs12 opens (%s)",
    (t) => {
      const c = chains[t];
      const password = "correct horse ✓";
      const files = credentialFiles({ ...c, pkcs12: { password } });
      expect(files["cert.p12"].mode).toBe(0o600);
      const p12 = join(dir, `${t}.p12`);
      writeFileSync(p12, files["cert.p12"].data);
      const read = (...args: string[]) =>
        openssl(["pkcs12", "-in", p12, "-passin", `pass:${password}`, ...args]);

      const all = read("-nodes");
      expect(labels(all)).toEqual(["CERTIFICATE", "CERTIFICATE", "PRIVATE KEY"]);
      const keyPem = all.slice(all.indexOf("-----BEGIN PRIVATE KEY-----"));
      const leaf = read("-nokeys", "-clcerts");
      expect(labels(leaf)).toEqual(["CERTIFICATE"]);
      expect(leaf).toContain(c.leafPem.trim());
      expect(read("-nokeys", "-cacerts")).toContain(c.intermediatePem.trim());
      expect(checkMatchingPair(leaf, keyPem)).toBe(true);

      // The algorithms the module's comment claims (openssl prints -info on stderr).
      const info = spawnSync(
        "openssl",
        ["pkcs12", "-in", p12, "-passin", `pass:${password}`, "-info", "-noout"],
        {
          encoding: "utf8",
        },
      );
      expect(info.status).toBe(0);
      expect(info.stderr).toContain("MAC: sha256");
      expect(info.stderr).toContain(
        "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256",
      );

      const wrong = spawnSync("openssl", ["pkcs12", "-in", p12, "-passin", "pass:wrong", "-nodes"], {
        encoding: "utf8",
      });
      expect(wrong.status).not.toBe(0);
      expect(wrong.stderr).toContain("Mac verify error");
    },
  );

  it("publishes through AtomicDir with the modes the agent promises", async () => {
    const out = await AtomicDir.open(join(dir, "out"));
    await out.publish(credentialFiles({ ...chains["ec-p256"], combined: true, pkcs12: { password: "pw" } }));
    const modes = Object.fromEntries(
      ["bundle.pem", "cert.p12", "cert.pem", "combined.pem", "key.pem"].map((n) => [
        n,
        statSync(join(dir, "out", n)).mode & 0o777,
      ]),
    );
    expect(modes).toEqual({
      "bundle.pem": 0o644,
      "cert.p12": 0o600,
      "cert.pem": 0o644,
      "combined.pem": 0o600,
      "key.pem": 0o600,
    });
  });

  it("refuses a mismatched pair, a chain without certificates and an empty PKCS#12 password", () => {
    const [p, q] = [chains["ec-p256"], chains["rsa-2048"]];
    const mismatch = error(() => credentialFiles({ ...p, keyPem: q.keyPem }));
    expect([mismatch.code, mismatch.message]).toEqual([
      "ERR_KEY_CORRUPT",
      "the leaf certificate is not for this private key; refusing to write the set",
    ]);
    const noCert = error(() => credentialFiles({ ...p, chainPem: p.keyPem }));
    expect([noCert.code, noCert.message]).toEqual([
      "ERR_PEM",
      'certificate chain: no "CERTIFICATE" PEM block found',
    ]);
    const badKey = error(() =>
      credentialFiles({ ...p, keyPem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" }),
    );
    expect([badKey.code, badKey.message]).toEqual([
      "ERR_KEY_CORRUPT",
      "the private key does not parse as an unencrypted PEM key",
    ]);
    const empty = error(() => credentialFiles({ ...p, pkcs12: { password: "" } }));
    expect([empty.code, empty.message]).toEqual([
      "ERR_CONFIG",
      "the PKCS#12 password is empty; set a non-empty password",
    ]);
  });
});

describe("checkMatchingPair", () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir("stint-pair-");
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is true only for the leaf's own key, and false for input that does not parse", () => {
    const [a, b] = makePairs(dir, 2);
    const chain = makeChain(dir, "rsa-2048");
    expect(checkMatchingPair(a.cert, a.key)).toBe(true);
    expect(checkMatchingPair(a.cert, b.key)).toBe(false);
    expect(checkMatchingPair(chain.chainPem, chain.keyPem)).toBe(true);
    // The leaf decides, not any certificate in the chain.
    expect(checkMatchingPair(chain.intermediatePem + chain.leafPem, chain.keyPem)).toBe(false);
    expect(checkMatchingPair(chain.chainPem, a.key)).toBe(false);
    expect(checkMatchingPair("not a certificate", a.key)).toBe(false);
    expect(checkMatchingPair(a.cert, "not a key")).toBe(false);
  });
});
