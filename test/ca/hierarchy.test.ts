import { X509Certificate } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { initHierarchy } from "../../ca/hierarchy";
import { fingerprintSha256, type KeyAlgorithm, loadPrivateKey } from "../../ca/keys";
import type { Store } from "../../ca/store";
import { openStore } from "../../ca/store/open";
import { describeCertificate } from "../../ca/x509";
import { pemDecode } from "../../formats/pem";
import { openssl, tempDir } from "../helpers/openssl";

const PASS = "correct horse battery staple";
/** Real time (whole seconds, as certificates hold it), so OpenSSL-made leaves fall inside the CA's validity. */
const NOW = new Date(Math.floor(Date.now() / 1000) * 1000);
const DAY = 86_400_000;

const dirs: string[] = [];
const stores: Store[] = [];
afterAll(async () => {
  for (const s of stores) await s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function freshDataDir(): Promise<{ dataDir: string; store: Store }> {
  const dataDir = tempDir("stint-hier-");
  dirs.push(dataDir);
  const store = await openStore(dataDir, { create: true });
  stores.push(store);
  return { dataDir, store };
}

/** Every file under dir with its mode and bytes, to prove nothing changed. */
function snapshot(dir: string): Record<string, { mode: number; bytes: string }> {
  const out: Record<string, { mode: number; bytes: string }> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (!e.name.startsWith("stint.db"))
        out[p] = { mode: statSync(p).mode, bytes: readFileSync(p, "base64") };
    }
  };
  walk(dir);
  return out;
}

describe.each<KeyAlgorithm>(["ec-p256", "ed25519", "rsa-2048"])("initHierarchy with %s", (keyAlgorithm) => {
  let dataDir: string;
  let store: Store;
  let result: Awaited<ReturnType<typeof initHierarchy>>;

  beforeAll(async () => {
    ({ dataDir, store } = await freshDataDir());
    result = await initHierarchy({
      dataDir,
      store,
      trustDomain: "example.org",
      keyAlgorithm,
      passphrase: PASS,
      now: NOW,
    });
  });

  test("openssl verifies the intermediate against the root", () => {
    const out = openssl(["verify", "-CAfile", join(dataDir, "root.pem"), join(dataDir, "intermediate.pem")]);
    expect(out.trim()).toBe(`${join(dataDir, "intermediate.pem")}: OK`);
  });

  test("the intermediate carries pathlen:0, CA key usage, SKI/AKI and the URI name constraint", () => {
    const text = openssl(["x509", "-noout", "-text", "-in", join(dataDir, "intermediate.pem")]);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/X509v3 Key Usage: critical\n\s+Digital Signature, Certificate Sign, CRL Sign/);
    expect(text).toMatch(/X509v3 Name Constraints: critical\n\s+Permitted:\n\s+URI:example.org\n/);
    expect(text).not.toContain("DNS:");
    const rootText = openssl(["x509", "-noout", "-text", "-in", join(dataDir, "root.pem")]);
    const ski = /Subject Key Identifier: \n\s+([0-9A-F:]+)/.exec(rootText)?.[1];
    // Issuer ids are the first 8 bytes of the SKI.
    expect(ski!.replace(/:/g, "").toLowerCase().slice(0, 16)).toBe(result.root.id);
    expect(text).toContain(`X509v3 Authority Key Identifier: \n                ${ski}`);
    expect(rootText).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:TRUE\n/);
    expect(rootText).toMatch(/X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
    expect(rootText).not.toContain("Name Constraints");
  });

  test("the name constraint admits SPIFFE IDs of the trust domain only; DNS SANs stay free", () => {
    const leaf = (name: string, san: string) => {
      const key = join(dataDir, `${name}.key`);
      const csr = openssl([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-subj",
        `/CN=${name}`,
      ]);
      const ext = join(dataDir, `${name}.ext`);
      writeFileSync(ext, `subjectAltName=${san}\nbasicConstraints=critical,CA:FALSE\n`);
      const out = join(dataDir, `${name}.pem`);
      openssl(
        [
          "x509",
          "-req",
          "-CA",
          join(dataDir, "intermediate.pem"),
          "-CAkey",
          join(dataDir, result.intermediate.keyPath!),
          "-passin",
          `pass:${PASS}`,
          "-days",
          "1",
          "-extfile",
          ext,
          "-out",
          out,
        ],
        csr,
      );
      try {
        return openssl([
          "verify",
          "-CAfile",
          join(dataDir, "root.pem"),
          "-untrusted",
          join(dataDir, "intermediate.pem"),
          out,
        ]).trim();
      } catch (err) {
        return (
          String((err as { stdout?: string; stderr?: string }).stderr) +
          String((err as { stdout?: string }).stdout)
        );
      } finally {
        for (const f of [key, ext, out]) rmSync(f);
      }
    };
    expect(leaf("good", "URI:spiffe://example.org/ns/web, DNS:web.internal")).toMatch(/good.pem: OK$/);
    expect(leaf("other", "URI:spiffe://other.org/ns/web")).toContain("permitted subtree violation");
    expect(leaf("sub", "URI:spiffe://evil.example.org/ns/web")).toContain("permitted subtree violation");
  });

  test("signature algorithm follows the key", () => {
    const text = openssl(["x509", "-noout", "-text", "-in", join(dataDir, "intermediate.pem")]);
    const expected = {
      "ec-p256": "ecdsa-with-SHA256",
      ed25519: "ED25519",
      "rsa-2048": "sha256WithRSAEncryption",
    };
    expect(text).toContain(`Signature Algorithm: ${expected[keyAlgorithm as keyof typeof expected]}`);
  });

  test("validity, serials and names are as asked", () => {
    const root = describeCertificate(result.root.certDer);
    const int = describeCertificate(result.intermediate.certDer);
    expect(root.notBefore).toEqual(new Date(NOW.getTime() - 3600_000));
    expect(root.notAfter).toEqual(new Date(NOW.getTime() + 3650 * DAY));
    expect(int.notAfter).toEqual(new Date(NOW.getTime() + 365 * DAY));
    expect(root.serialHex).toMatch(/^[0-7][0-9a-f]{31}$/);
    expect(int.serialHex).toMatch(/^[0-7][0-9a-f]{31}$/);
    expect(root.subject).toBe(`CN=Stint Root CA ${result.root.id}, O=example.org`);
    expect(int.subject).toBe(`CN=Stint Intermediate CA ${result.intermediate.id}, O=example.org`);
    expect(int.issuer).toBe(root.subject);
    expect(root.isCa && int.isCa).toBe(true);
  });

  test("keys are 0600 in a 0700 directory, encrypted, and load with the passphrase", async () => {
    expect(statSync(join(dataDir, "keys")).mode & 0o777).toBe(0o700);
    for (const rec of [result.root, result.intermediate]) {
      const path = join(dataDir, rec.keyPath!);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(readFileSync(path, "utf8")).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----\n/);
      const { key, encrypted } = await loadPrivateKey(path, PASS);
      expect(encrypted).toBe(true);
      // The key matches the certificate's public key.
      expect(new X509Certificate(rec.certDer).checkPrivateKey(key)).toBe(true);
    }
    expect(result.root.keyPath).toBe("keys/root.key.pem");
    expect(result.intermediate.keyPath).toBe(`keys/${result.intermediate.id}.key.pem`);
    for (const f of ["root.pem", "intermediate.pem"])
      expect(statSync(join(dataDir, f)).mode & 0o777).toBe(0o644);
    expect(readdirSync(join(dataDir, "keys")).sort()).toEqual([
      `${result.intermediate.id}.key.pem`,
      "root.key.pem",
    ]);
  });

  test("the store records both issuers with audit events", async () => {
    const issuers = await store.listIssuers();
    expect(issuers.map((i) => [i.kind, i.id, i.parentId, i.state]).sort()).toEqual([
      ["intermediate", result.intermediate.id, result.root.id, "active"],
      ["root", result.root.id, null, "active"],
    ]);
    const rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
    expect(pemDecode(rootPem, "CERTIFICATE", "root.pem")).toEqual(result.root.certDer);
    expect(result.rootFingerprint).toBe(fingerprintSha256(result.root.certDer));
    const audit = await store.listAudit(0, 10);
    expect(audit.map((a) => [a.action, a.actor, a.subject])).toEqual([
      ["issuer.create", "cli", result.root.id],
      ["issuer.create", "cli", result.intermediate.id],
    ]);
    expect(JSON.stringify(audit)).not.toContain(PASS);
  });

  test("a second init refuses and changes nothing", async () => {
    const before = snapshot(dataDir);
    await expect(
      initHierarchy({ dataDir, store, trustDomain: "example.org", keyAlgorithm, passphrase: PASS, now: NOW }),
    ).rejects.toMatchObject({
      code: "ERR_ALREADY_INITIALIZED",
      message: `${dataDir} already holds a CA (its store already records 2 issuer(s)); use a new --data-dir, or rotate instead of re-initialising`,
    });
    expect(snapshot(dataDir)).toEqual(before);
    expect((await store.listIssuers()).length).toBe(2);
  });
});

describe("initHierarchy refusals and options", () => {
  test("a stray key file in an otherwise empty data dir is refused, untouched", async () => {
    const { dataDir, store } = await freshDataDir();
    mkdirSync(join(dataDir, "keys"));
    writeFileSync(join(dataDir, "keys", "root.key.pem"), "old key");
    const before = snapshot(dataDir);
    await expect(
      initHierarchy({
        dataDir,
        store,
        trustDomain: "example.org",
        keyAlgorithm: "ec-p256",
        passphrase: PASS,
        now: NOW,
      }),
    ).rejects.toMatchObject({
      code: "ERR_ALREADY_INITIALIZED",
      message: `${dataDir} already holds a CA (it holds ${join(dataDir, "keys/root.key.pem")}); use a new --data-dir, or rotate instead of re-initialising`,
    });
    expect(snapshot(dataDir)).toEqual(before);
    expect(await store.listIssuers()).toEqual([]);
  });

  test("insecure mode writes plain keys; DNS suffixes become name constraints; TTLs apply", async () => {
    const { dataDir, store } = await freshDataDir();
    const r = await initHierarchy({
      dataDir,
      store,
      trustDomain: "prod.example.org",
      keyAlgorithm: "ec-p384",
      passphrase: null,
      now: NOW,
      rootTtlDays: 30,
      intermediateTtlDays: 7,
      permittedDnsSuffixes: ["svc.cluster.local", ".example.com"],
    });
    const keyPem = readFileSync(join(dataDir, r.intermediate.keyPath!), "utf8");
    expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect((await loadPrivateKey(join(dataDir, r.intermediate.keyPath!), null)).encrypted).toBe(false);
    const text = openssl(["x509", "-noout", "-text", "-in", join(dataDir, "intermediate.pem")]);
    expect(text).toMatch(
      /Permitted:\n\s+URI:prod.example.org\n\s+DNS:svc.cluster.local\n\s+DNS:.example.com\n/,
    );
    expect(text).toContain("ecdsa-with-SHA384");
    expect(r.intermediate.notAfter).toEqual(new Date(NOW.getTime() + 7 * DAY));
    expect(r.root.notAfter).toEqual(new Date(NOW.getTime() + 30 * DAY));
  });

  test.each([
    [
      { trustDomain: "Example.org" },
      "ERR_CONFIG",
      'trust domain "Example.org" may contain only a-z, 0-9, ".", "-" and "_"',
    ],
    [{ intermediateTtlDays: 4000 }, "ERR_CONFIG", "the intermediate's lifetime cannot exceed the root's"],
    [
      { rootTtlDays: 0 },
      "ERR_CONFIG",
      "rootTtlDays must be a whole number of days between 1 and 36500 (got 0)",
    ],
    [
      { permittedDnsSuffixes: ["*.bad"] },
      "ERR_CONFIG",
      'permitted DNS suffix "*.bad" is not a lowercase DNS name',
    ],
  ])("bad options %j → %s, nothing written", async (overrides, code, message) => {
    const { dataDir, store } = await freshDataDir();
    const before = snapshot(dataDir);
    await expect(
      initHierarchy({
        dataDir,
        store,
        trustDomain: "example.org",
        keyAlgorithm: "ec-p256",
        passphrase: PASS,
        now: NOW,
        ...overrides,
      }),
    ).rejects.toMatchObject({ code, message });
    expect(snapshot(dataDir)).toEqual(before);
    expect(readdirSync(dataDir).filter((f) => !f.startsWith("stint.db"))).toEqual([]);
    expect(await store.listIssuers()).toEqual([]);
  });
});
