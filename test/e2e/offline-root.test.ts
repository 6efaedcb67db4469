import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { snapshot, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * The offline-root path with real processes: `stint ca intermediate-csr` on
 * the CA host, `stint root sign` in a separate directory holding only the
 * root certificate and key (no data directory, no store), checked by OpenSSL.
 */

const PASS = "correct horse battery staple";
const top = tempDir("stint-offline-e2e-");
afterAll(() => rmSync(top, { recursive: true, force: true }));

const caDir = join(top, "ca");
const offline = join(top, "offline");
const caEnv = { STINT_CA_PASSPHRASE: PASS, STINT_DATA_DIR: caDir, STINT_TRUST_DOMAIN: "example.org" };
const reqPath = join(top, "req.pem");
const intPath = join(offline, "int.pem");

/** stderr is exactly one line starting with the command's prefix; returns it. */
function oneErrorLine(stderr: string, command: string): string {
  const lines = stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^stint ${command}: `));
  return lines[0];
}

const signArgs = (over: Record<string, string> = {}) => {
  const flags: Record<string, string> = {
    "--root-cert": join(offline, "root.pem"),
    "--root-key": join(offline, "root.key.pem"),
    "--csr": join(offline, "req.pem"),
    "--out": intPath,
    ...over,
  };
  return ["root", "sign", ...Object.entries(flags).flat()];
};

let csrId: string;

beforeAll(() => {
  expect(stint(["ca", "init"], caEnv)).toMatchObject({ code: 0, stderr: "" });
  mkdirSync(offline, { mode: 0o700 });
});

describe("stint ca intermediate-csr", () => {
  it("writes a CSR OpenSSL verifies and an encrypted 0600 key in the data directory", () => {
    const keysBefore = readdirSync(join(caDir, "keys"));
    const r = stint(["ca", "intermediate-csr", "--out", reqPath, "--json"], caEnv);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    const out = JSON.parse(r.stdout);
    csrId = out.id;
    expect(out).toEqual({
      id: expect.stringMatching(/^[0-9a-f]{16}$/),
      keyPath: join(caDir, "keys", `${out.id}.key.pem`),
      csrFile: reqPath,
    });
    expect(readdirSync(join(caDir, "keys")).sort()).toEqual([...keysBefore, `${out.id}.key.pem`].sort());
    expect(statSync(out.keyPath).mode & 0o777).toBe(0o600);
    expect(readFileSync(out.keyPath, "utf8")).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    // openssl exits non-zero (and execFileSync throws) when the self-signature does not verify.
    openssl(["req", "-verify", "-in", reqPath, "-noout"]);
    expect(openssl(["req", "-in", reqPath, "-noout", "-subject"]).trim()).toBe(
      `subject=CN = Stint Intermediate CA ${out.id}, O = example.org`,
    );
  });

  it("prints the next steps in its help", () => {
    const r = stint(["ca", "intermediate-csr", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/stint root sign --root-cert root\.pem --root-key root\.key\.pem --csr FILE/);
    expect(r.stdout).toMatch(/stint ca import-intermediate int\.pem/);
  });

  it("refuses a wrong passphrase or an existing --out with one line, writing nothing", () => {
    const before = snapshot(top);
    const wrong = stint(["ca", "intermediate-csr", "--out", join(top, "new.pem")], {
      ...caEnv,
      STINT_CA_PASSPHRASE: "not it",
    });
    expect(wrong.code).toBe(1);
    expect(oneErrorLine(wrong.stderr, "ca intermediate-csr")).toMatch(/wrong passphrase for /);
    const exists = stint(["ca", "intermediate-csr", "--out", reqPath], caEnv);
    expect(exists.code).toBe(1);
    expect(oneErrorLine(exists.stderr, "ca intermediate-csr")).toMatch(
      /req\.pem already exists; refusing to overwrite it/,
    );
    const nopass = stint(["ca", "intermediate-csr", "--out", join(top, "new.pem")], {
      STINT_DATA_DIR: caDir,
    });
    expect(nopass.code).toBe(1);
    expect(oneErrorLine(nopass.stderr, "ca intermediate-csr")).toMatch(/CA keys need a passphrase/);
    // The store's files (WAL, shm) may be touched by opening it; keys, certificates and outputs may not.
    const unchanged = (s: Record<string, string>) =>
      Object.fromEntries(Object.entries(s).filter(([p]) => !/stint\.db/.test(p)));
    expect(unchanged(snapshot(top))).toEqual(unchanged(before));
  });
});

describe("stint root sign, on a machine with only the root", () => {
  beforeAll(() => {
    copyFileSync(join(caDir, "root.pem"), join(offline, "root.pem"));
    copyFileSync(join(caDir, "keys", "root.key.pem"), join(offline, "root.key.pem"));
    copyFileSync(reqPath, join(offline, "req.pem"));
  });

  it("refuses bad input with one line and exit 1 or 2, writing no output file", () => {
    writeFileSync(join(offline, "garbage.pem"), "this is not a CSR\n");
    const before = snapshot(offline);
    const cases: { args: string[]; env?: Record<string, string>; code: number; message: RegExp }[] = [
      {
        args: signArgs({ "--csr": join(offline, "garbage.pem") }),
        code: 1,
        message:
          /garbage\.pem holds no certificate request .*; give the file stint ca intermediate-csr wrote as --csr$/,
      },
      {
        args: signArgs(),
        env: { STINT_CA_PASSPHRASE: "not it" },
        code: 1,
        message: /^stint root sign: wrong passphrase for .*root\.key\.pem$/,
      },
      {
        args: signArgs(),
        env: {},
        code: 1,
        message:
          /root\.key\.pem is encrypted and no passphrase was given; set STINT_CA_PASSPHRASE or use --passphrase-file$/,
      },
      {
        args: signArgs({ "--csr": join(offline, "missing.pem") }),
        code: 1,
        message: /cannot read the certificate request: .*missing\.pem .*does not exist$/,
      },
      {
        args: signArgs({ "--root-key": join(offline, "missing.key.pem") }),
        code: 1,
        message: /root key file .*missing\.key\.pem does not exist; check --root-key$/,
      },
      {
        args: signArgs({ "--root-cert": join(offline, "req.pem") }),
        code: 1,
        message:
          /holds no certificate \(no "CERTIFICATE" PEM block\); give the CA's root\.pem as --root-cert$/,
      },
      {
        args: ["root", "sign", "--root-cert", join(offline, "root.pem"), "--out", intPath],
        code: 2,
        message: /--root-key FILE is required \(see stint root sign --help\)$/,
      },
      { args: signArgs({ "--ttl-days": "soon" }), code: 2, message: /--ttl-days must be a whole number/ },
    ];
    for (const c of cases) {
      const r = stint(c.args, c.env ?? { STINT_CA_PASSPHRASE: PASS });
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: c.code, stdout: "" });
      expect(oneErrorLine(r.stderr, "root sign")).toMatch(c.message);
      expect(r.stderr).not.toContain(PASS);
      expect(existsSync(intPath)).toBe(false);
    }
    expect(snapshot(offline)).toEqual(before);
    rmSync(join(offline, "garbage.pem"));
  });

  it("signs an intermediate OpenSSL verifies under the root: CA:TRUE, pathlen:0", () => {
    const r = stint([...signArgs(), "--json"], { STINT_CA_PASSPHRASE: PASS });
    expect(r).toMatchObject({ code: 0, stderr: "" });
    const out = JSON.parse(r.stdout);
    const fingerprint = openssl(["x509", "-in", intPath, "-noout", "-fingerprint", "-sha256"])
      .trim()
      .replace(/^.*=/, "")
      .replace(/:/g, "")
      .toLowerCase();
    expect(out).toMatchObject({
      id: csrId,
      subject: `CN=Stint Intermediate CA ${csrId}, O=example.org`,
      fingerprint: `sha256:${fingerprint}`,
      certFile: intPath,
    });
    expect(new Date(out.notAfter).getTime() - Date.now()).toBeGreaterThan(364 * 86_400_000);
    expect(openssl(["verify", "-CAfile", join(offline, "root.pem"), intPath]).trim()).toMatch(/: OK$/);
    const text = openssl(["x509", "-in", intPath, "-noout", "-text"]);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/X509v3 Name Constraints: critical\s+Permitted:\s+URI:example\.org/);
    // The certificate is for the key the CA host kept, so importing it there will work.
    const keyOnCa = join(caDir, "keys", `${csrId}.key.pem`);
    const pubOfKey = openssl(["pkey", "-in", keyOnCa, "-passin", `pass:${PASS}`, "-pubout"]);
    expect(openssl(["x509", "-in", intPath, "-noout", "-pubkey"])).toBe(pubOfKey);
    // Nothing but the output appeared on the offline machine.
    expect(readdirSync(offline).sort()).toEqual(["int.pem", "req.pem", "root.key.pem", "root.pem"]);
  });

  it("never overwrites an existing certificate file", () => {
    const before = readFileSync(intPath, "utf8");
    const r = stint(signArgs(), { STINT_CA_PASSPHRASE: PASS });
    expect(r.code).toBe(1);
    expect(oneErrorLine(r.stderr, "root sign")).toMatch(/int\.pem already exists; refusing to overwrite it/);
    expect(readFileSync(intPath, "utf8")).toBe(before);
  });

  it("refuses a CSR from a CA of another trust domain", () => {
    const otherDir = join(top, "other");
    const env = { STINT_CA_PASSPHRASE: PASS, STINT_DATA_DIR: otherDir, STINT_TRUST_DOMAIN: "other.org" };
    expect(stint(["ca", "init"], env).code).toBe(0);
    const otherReq = join(offline, "other-req.pem");
    expect(stint(["ca", "intermediate-csr", "--out", otherReq], env).code).toBe(0);
    const out = join(offline, "other-int.pem");
    const r = stint(signArgs({ "--csr": otherReq, "--out": out }), { STINT_CA_PASSPHRASE: PASS });
    expect(r.code).toBe(1);
    expect(oneErrorLine(r.stderr, "root sign")).toBe(
      'stint root sign: CSR is for trust domain "other.org" but this root is for "example.org"; sign it with that trust domain\'s root',
    );
    expect(existsSync(out)).toBe(false);
  });

  it("has help that names the next step", () => {
    const r = stint(["root", "sign", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^usage: stint root sign --root-cert FILE --root-key FILE --csr FILE --out FILE/,
    );
    expect(r.stdout).toMatch(/stint ca import-intermediate FILE/);
  });
});

describe("stint ca import-intermediate, back on the CA host", () => {
  it("refuses garbage and a certificate from another CA, changing nothing", () => {
    const before = stint(["ca", "status", "--json"], caEnv);
    const garbage = join(top, "garbage-int.pem");
    writeFileSync(garbage, "not a certificate\n");
    const r = stint(["ca", "import-intermediate", garbage], caEnv);
    expect(r.code).toBe(1);
    oneErrorLine(r.stderr, "ca import-intermediate");
    // The other CA's root signs for other.org: not one of this CA's roots.
    const foreign = stint(
      ["ca", "import-intermediate", join(caDir, "..", "other", "intermediate.pem")],
      caEnv,
    );
    expect(foreign.code).toBe(1);
    expect(oneErrorLine(foreign.stderr, "ca import-intermediate")).toMatch(
      /not signed by an active root of this CA/,
    );
    expect(stint(["ca", "status", "--json"], caEnv).stdout).toBe(before.stdout);
  });

  it("activates the intermediate signed offline and retires the one before", () => {
    const before = JSON.parse(stint(["ca", "status", "--json"], caEnv).stdout).issuers;
    const previous = before.find(
      (i: { kind: string; state: string }) => i.kind === "intermediate" && i.state === "active",
    );
    const r = stint(["ca", "import-intermediate", intPath, "--json"], caEnv);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(JSON.parse(r.stdout)).toMatchObject({
      activated: { id: csrId, kind: "intermediate", state: "active" },
      retired: { id: previous.id },
    });
    // Certificates now come from it, and OpenSSL chains them to the root that never left the offline machine.
    const out = join(top, "issued");
    expect(
      stint(["ca", "issue", "--spiffe-id", "spiffe://example.org/svc/a", "--out", out], caEnv).code,
    ).toBe(0);
    expect(openssl(["x509", "-in", join(out, "cert.pem"), "-noout", "-issuer"])).toContain(csrId);
    expect(
      openssl([
        "verify",
        "-CAfile",
        join(offline, "root.pem"),
        "-untrusted",
        join(out, "cert.pem"),
        join(out, "cert.pem"),
      ]),
    ).toMatch(/: OK$/m);
    // The same certificate cannot be imported twice.
    const again = stint(["ca", "import-intermediate", intPath], caEnv);
    expect(oneErrorLine(again.stderr, "ca import-intermediate")).toMatch(/already in this CA/);
  });
});
