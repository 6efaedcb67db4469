import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { get as httpGet } from "node:http";
import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { join } from "node:path";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, pemFileDer, tempDir } from "../helpers/openssl";

/**
 * Issue 15: a root rotation with both roots kept offline, with real processes
 * and files. The CA's first root is moved off the data directory after `ca
 * init` (`ca init` has no offline-root mode); `old/` and `new/` stand in for
 * the offline host, holding only root certificates and keys. The CA host
 * imports the new root's certificate, its CRLs, its intermediate and the
 * cross-certificate, each checked; OpenSSL checks what comes out.
 */

const PASS = "offline rotation passphrase";
const top = tempDir("stint-offline-rotation-e2e-");
const caDir = join(top, "ca");
const oldDir = join(top, "old");
const newDir = join(top, "new");
const strayDir = join(top, "stray");
let httpPort = 0;
let server: ServerProcess | null = null;
afterAll(async () => {
  await server?.stop();
  rmSync(top, { recursive: true, force: true });
});

const caEnv = () => ({
  STINT_CA_PASSPHRASE: PASS,
  STINT_DATA_DIR: caDir,
  STINT_TRUST_DOMAIN: "example.org",
  STINT_CRL_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
});
const offlineEnv = { STINT_CA_PASSPHRASE: PASS };
const at = (...p: string[]) => join(top, ...p);

function ok(args: string[], env: Record<string, string> = caEnv()): string {
  const r = stint(args, env);
  expect({ args, ...r }).toMatchObject({ code: 0, stderr: "" });
  return r.stdout;
}

/** The command fails with exactly one line on stderr, nothing on stdout; returns the line. */
function fails(args: string[], code = 1, env: Record<string, string> = caEnv()): string {
  const r = stint(args, env);
  expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code, stdout: "" });
  const lines = r.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(r.stderr).not.toContain(PASS);
  return lines[0]!;
}

type Issuer = { id: string; kind: string; state: string; keyOnHost: boolean; parentId?: string };
const issuers = (): Issuer[] => JSON.parse(ok(["ca", "status", "--json"])).issuers;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const p = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
}

function fetchDer(path: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    httpGet(`http://127.0.0.1:${httpPort}${path}`, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    }).on("error", reject);
  });
}

const pemCrl = (der: Buffer) =>
  `-----BEGIN X509 CRL-----\n${der.toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END X509 CRL-----\n`;

/** openssl verify's verdict line(s), or its error, without throwing. */
function verify(args: string[]): string {
  try {
    return openssl(["verify", ...args]);
  } catch (err) {
    return `FAILED ${String((err as { stderr?: string }).stderr ?? err)}`;
  }
}

/** Every file under dir, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)],
  );
}

let oldId: string;
let newId: string;
let newCert: string;
let newKey: string;
let int1Id: string;
const oldCert = join(oldDir, "root.pem");
const oldKey = join(oldDir, "root.key.pem");

const signCrl = (request: string, out: string, cert = newCert, key = newKey) =>
  ok(
    ["root", "sign-crl", "--root-cert", cert, "--root-key", key, "--request", request, "--out", out],
    offlineEnv,
  );

beforeAll(async () => {
  httpPort = await freePort();
  oldId = JSON.parse(ok(["ca", "init", "--json"])).rootId;
  // The first root goes offline: its key leaves the data directory.
  mkdirSync(oldDir, { mode: 0o700 });
  renameSync(join(caDir, "keys", "root.key.pem"), oldKey);
  writeFileSync(oldCert, readFileSync(join(caDir, "root.pem")));
});

describe("stint root init, on the offline host", () => {
  it("refuses bad input with one line, writing nothing", () => {
    const base = ["root", "init", "--out-dir", newDir];
    expect(fails([...base], 2, offlineEnv)).toMatch(/--trust-domain TD is required/);
    expect(fails([...base, "--trust-domain", "Not A Domain"], 2, offlineEnv)).toMatch(
      /^stint root init: --trust-domain: /,
    );
    expect(
      fails([...base, "--trust-domain", "example.org", "--key-algorithm", "dsa"], 2, offlineEnv),
    ).toMatch(/unknown key algorithm "dsa"/);
    expect(fails([...base, "--trust-domain", "example.org"], 1, {})).toMatch(/a root key needs a passphrase/);
    expect(() => statSync(newDir)).toThrow();
  });

  it("makes a root as the CA would: encrypted 0600 key, CA:TRUE certificate naming its CRL", () => {
    const out = JSON.parse(
      ok(
        [
          "root",
          "init",
          "--out-dir",
          newDir,
          "--trust-domain",
          "example.org",
          "--crl-base-url",
          `http://127.0.0.1:${httpPort}`,
          "--json",
        ],
        offlineEnv,
      ),
    );
    newId = out.id;
    newCert = out.certFile;
    newKey = out.keyFile;
    expect(out).toMatchObject({
      certFile: join(newDir, `root-${newId}.pem`),
      keyFile: join(newDir, `root-${newId}.key.pem`),
    });
    expect(statSync(newDir).mode & 0o777).toBe(0o700);
    expect(statSync(newKey).mode & 0o777).toBe(0o600);
    expect(readFileSync(newKey, "utf8")).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    const text = openssl(["x509", "-in", newCert, "-noout", "-text"]);
    expect(text).toContain(`Subject: CN = Stint Root CA ${newId}, O = example.org`);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(text).toContain(`URI:http://127.0.0.1:${httpPort}/crl/${newId}.crl`);
    expect(verify(["-CAfile", newCert, newCert])).toMatch(/: OK$/m);
    // A stray root of the same trust domain, never given to the CA: the wrong root in the checks below.
    ok(["root", "init", "--out-dir", strayDir, "--trust-domain", "example.org"], offlineEnv);
    ok(["root", "init", "--out-dir", join(top, "other-td"), "--trust-domain", "other.org"], offlineEnv);
  });
});

describe("stint ca root prepare --offline", () => {
  it("refuses what is not a new root of this trust domain, changing nothing", () => {
    const before = issuers();
    writeFileSync(at("garbage.pem"), "not a certificate\n");
    const prepare = (file: string) => ["ca", "root", "prepare", "--offline", "--root-cert", file];
    expect(fails(prepare(at("garbage.pem")))).toMatch(/garbage\.pem holds no root certificate/);
    expect(fails(prepare(join(caDir, "intermediate.pem")))).toMatch(
      /is not a self-signed root CA certificate/,
    );
    const otherTd = filesUnder(join(top, "other-td")).find((f) => !f.endsWith(".key.pem"))!;
    expect(fails(prepare(otherTd))).toMatch(
      /is for trust domain "other\.org" but this CA is for "example\.org"/,
    );
    expect(fails(prepare(oldCert))).toBe(`stint ca root prepare: root ${oldId} is already in this CA`);
    expect(fails(["ca", "root", "prepare", "--root-cert", newCert], 2)).toMatch(
      /--root-cert FILE goes with --offline/,
    );
    expect(issuers()).toEqual(before);
  });

  it("imports only the certificate: the root is prepared, in the bundle, with no key on the host", () => {
    const out = JSON.parse(ok(["ca", "root", "prepare", "--offline", "--root-cert", newCert, "--json"]));
    expect(out).toMatchObject({ prepared: { id: newId, kind: "root", state: "prepared" }, keyOnHost: false });
    expect(issuers().find((i) => i.id === newId)).toMatchObject({ state: "prepared", keyOnHost: false });
    // Its first CRL comes from the offline host too.
    const request = at("crl-request-1.json");
    // Both roots are offline now, so the request names the one it is for.
    expect(fails(["ca", "root", "crl-request", "--out", request], 2)).toBe(
      `stint ca root crl-request: name the root whose CRL to request (roots kept offline: ${[oldId, newId].join(", ")})`,
    );
    expect(ok(["ca", "root", "crl-request", newId, "--out", request])).toContain(`root ${newId}: number 1`);
    expect(JSON.parse(readFileSync(request, "utf8"))).toMatchObject({ root: newId, number: 1, revoked: [] });
    expect(fails(["ca", "root", "crl-request", newId, "--out", request])).toMatch(
      /already exists; refusing to overwrite/,
    );
    signCrl(request, at("new-1.crl"));
    expect(ok(["ca", "import-crl", at("new-1.crl"), "--json"])).toContain('"number": 1');
    // OpenSSL accepts the CRL as signed by the new root.
    expect(openssl(["crl", "-in", at("new-1.crl"), "-CAfile", newCert, "-noout"]).trim()).toBe("");
  });
});

describe("activation with both signatures made offline", () => {
  const intPem = at("int1.pem");
  const crossPem = at("cross.pem");

  beforeAll(() => {
    const csr = JSON.parse(ok(["ca", "intermediate-csr", "--out", at("int1.csr"), "--json"]));
    int1Id = csr.id;
    const sign = (cert: string, key: string, out: string) =>
      ok(
        [
          "root",
          "sign",
          "--root-cert",
          cert,
          "--root-key",
          key,
          "--csr",
          at("int1.csr"),
          "--out",
          out,
          "--crl-url",
          `http://127.0.0.1:${httpPort}/crl/${newId}.crl`,
        ],
        offlineEnv,
      );
    sign(newCert, newKey, intPem);
    sign(oldCert, oldKey, at("int1-by-old.pem"));
    ok(
      [
        "root",
        "cross-sign",
        "--root-cert",
        oldCert,
        "--root-key",
        oldKey,
        "--new-root-cert",
        newCert,
        "--out",
        crossPem,
      ],
      offlineEnv,
    );
  });

  it("cross-sign refuses the same root twice and a wrong passphrase, writing nothing", () => {
    const args = (over: string[]) => [
      "root",
      "cross-sign",
      "--root-cert",
      oldCert,
      "--root-key",
      oldKey,
      "--out",
      at("cross-bad.pem"),
      ...over,
    ];
    expect(fails(args(["--new-root-cert", oldCert]), 1, offlineEnv)).toMatch(
      /--new-root-cert is the same root as --root-cert/,
    );
    expect(fails(args(["--new-root-cert", newCert]), 1, { STINT_CA_PASSPHRASE: "not it" })).toMatch(
      /wrong passphrase for .*root\.key\.pem$/,
    );
    expect(fails(args([]), 2, offlineEnv)).toMatch(/--new-root-cert FILE is required/);
    expect(() => statSync(at("cross-bad.pem"))).toThrow();
    const text = openssl(["x509", "-in", crossPem, "-noout", "-text"]);
    expect(text).toContain(`Subject: CN = Stint Root CA ${newId}, O = example.org`);
    expect(text).toContain(`Issuer: CN = Stint Root CA ${oldId}, O = example.org`);
  });

  it("refuses a cross-certificate for another root, an intermediate of another root and garbage, changing nothing", () => {
    const before = issuers();
    const strayCert = filesUnder(strayDir).find((f) => !f.endsWith(".key.pem"))!;
    const strayKey = filesUnder(strayDir).find((f) => f.endsWith(".key.pem"))!;
    ok(
      [
        "root",
        "cross-sign",
        "--root-cert",
        oldCert,
        "--root-key",
        oldKey,
        "--new-root-cert",
        strayCert,
        "--out",
        at("stray-cross.pem"),
      ],
      offlineEnv,
    );
    // The new root "cross-signed" by a root that is not the active intermediate's.
    ok(
      [
        "root",
        "cross-sign",
        "--root-cert",
        strayCert,
        "--root-key",
        strayKey,
        "--new-root-cert",
        newCert,
        "--out",
        at("by-stray.pem"),
      ],
      offlineEnv,
    );
    writeFileSync(at("garbage.pem"), "not a certificate\n");
    const activate = (cross: string, int: string) => [
      "ca",
      "root",
      "activate",
      "--force",
      "--cross-cert",
      cross,
      "--intermediate",
      int,
    ];
    expect(fails(activate(at("stray-cross.pem"), intPem))).toMatch(
      new RegExp(
        `the cross-certificate is for CN=Stint Root CA [0-9a-f]{16}, O=example.org, not for the prepared root ${newId}`,
      ),
    );
    expect(fails(activate(at("by-stray.pem"), intPem))).toMatch(
      new RegExp(`the cross-certificate is not signed by root ${oldId}, the root of the active intermediate`),
    );
    expect(fails(activate(crossPem, at("int1-by-old.pem")))).toMatch(
      new RegExp(`the intermediate is signed by root ${oldId}, not by the prepared root ${newId}`),
    );
    expect(fails(activate(at("garbage.pem"), intPem))).toMatch(/garbage\.pem holds no cross-certificate/);
    expect(fails(["ca", "root", "activate", "--force", "--cross-cert", crossPem], 2)).toMatch(
      /--cross-cert FILE and --intermediate FILE go together/,
    );
    // Without the imports, the step says what it needs.
    expect(fails(["ca", "root", "activate", "--force"])).toMatch(
      new RegExp(`root ${newId} was prepared offline: activate it with --cross-cert FILE`),
    );
    expect(issuers()).toEqual(before);
  });

  it("activates the new root with the imported intermediate and cross-certificate", () => {
    const dry = ok([
      "ca",
      "root",
      "activate",
      "--force",
      "--cross-cert",
      crossPem,
      "--intermediate",
      intPem,
      "--dry-run",
    ]);
    expect(dry).toContain(`intermediate ${int1Id}: new -> active`);
    const out = JSON.parse(
      ok(["ca", "root", "activate", "--force", "--cross-cert", crossPem, "--intermediate", intPem, "--json"]),
    );
    expect(out).toMatchObject({
      root: { id: newId, state: "active" },
      intermediate: { id: int1Id, state: "active" },
      crossSignedBy: oldId,
    });
    ok(["ca", "admin-cert"]);
  });

  it("issues leaves OpenSSL verifies with only the old root trusted, and with only the new one", () => {
    const dir = at("leaf-a");
    ok(["ca", "issue", "--spiffe-id", "spiffe://example.org/svc/a", "--out", dir]);
    const chain = join(dir, "cert.pem");
    // leaf, intermediate, cross-certificate: the cross-certificate leads to the old root.
    expect(readFileSync(chain, "utf8").match(/BEGIN CERTIFICATE/g)).toHaveLength(3);
    expect(verify(["-CAfile", oldCert, "-untrusted", chain, chain])).toMatch(/: OK$/m);
    expect(verify(["-CAfile", newCert, "-untrusted", chain, chain])).toMatch(/: OK$/m);
    // Without the cross-certificate, the old root alone cannot reach the new intermediate.
    expect(verify(["-CAfile", oldCert, "-untrusted", intPem, chain])).toMatch(/^FAILED/);
  });

  it("retires the old root with no root key on the host", () => {
    expect(JSON.parse(ok(["ca", "root", "retire", "--json"]))).toMatchObject({ retired: { id: oldId } });
    const chain = join(at("leaf-b"), "cert.pem");
    ok(["ca", "issue", "--spiffe-id", "spiffe://example.org/svc/b", "--out", at("leaf-b")]);
    expect(readFileSync(chain, "utf8").match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(verify(["-CAfile", newCert, "-untrusted", chain, chain])).toMatch(/: OK$/m);
  });
});

describe("revoking an intermediate under the offline root", () => {
  const request = at("crl-request-2.json");
  let int1Serial: string;

  beforeAll(async () => {
    // A second intermediate under the new root, so the first can be revoked.
    const csr = JSON.parse(ok(["ca", "intermediate-csr", "--out", at("int2.csr"), "--json"]));
    ok(
      [
        "root",
        "sign",
        "--root-cert",
        newCert,
        "--root-key",
        newKey,
        "--csr",
        at("int2.csr"),
        "--out",
        at("int2.pem"),
      ],
      offlineEnv,
    );
    ok(["ca", "import-intermediate", at("int2.pem")]);
    expect(csr.id).not.toBe(int1Id);
    int1Serial = openssl(["x509", "-in", at("int1.pem"), "-noout", "-serial"])
      .trim()
      .replace(/^serial=/, "")
      .toLowerCase();
    server = await startServer([], caEnv());
  });

  it("revoke-issuer says exactly the next step (in --json too), and crl-request asks for the CRL listing it", () => {
    const out = JSON.parse(ok(["ca", "revoke-issuer", int1Id, "--force", "--json"]));
    expect(out).toMatchObject({
      revoked: int1Id,
      rootCrlSigned: false,
      nextStep:
        `root ${newId}'s key is not on this host, so its CRL does not list this yet. Next: ` +
        `stint ca root crl-request ${newId} --out crl-request-${newId}.json; on the offline host, ` +
        `stint root sign-crl --root-cert <root ${newId}'s certificate> --root-key <its key> --request crl-request-${newId}.json --out root-${newId}.crl; ` +
        `back here, stint ca import-crl root-${newId}.crl`,
    });
    ok(["ca", "root", "crl-request", newId, "--out", request]);
    expect(JSON.parse(readFileSync(request, "utf8"))).toMatchObject({
      root: newId,
      number: 2,
      revoked: [{ issuer: int1Id, serial: int1Serial }],
    });
  });

  it("import-crl refuses a wrong root's CRL, a stale number, a missing intermediate and garbage, storing nothing", () => {
    const req = JSON.parse(readFileSync(request, "utf8"));
    const variant = (name: string, over: Record<string, unknown>) => {
      writeFileSync(at(`${name}.json`), JSON.stringify({ ...req, ...over }));
      return at(`${name}.json`);
    };
    signCrl(variant("missing", { revoked: [] }), at("missing.crl"));
    signCrl(variant("stale", { number: 1 }), at("stale.crl"));
    const strayCert = filesUnder(strayDir).find((f) => !f.endsWith(".key.pem"))!;
    const strayKey = filesUnder(strayDir).find((f) => f.endsWith(".key.pem"))!;
    const strayId = /root-([0-9a-f]{16})\.pem$/.exec(strayCert)![1];
    const strayFp = `sha256:${openssl(["x509", "-in", strayCert, "-noout", "-fingerprint", "-sha256"]).trim().replace(/^.*=/, "").replace(/:/g, "").toLowerCase()}`;
    signCrl(
      variant("stray", { root: strayId, rootFingerprint: strayFp }),
      at("stray.crl"),
      strayCert,
      strayKey,
    );
    writeFileSync(at("garbage.crl"), "not a CRL\n");

    expect(fails(["ca", "import-crl", at("stray.crl")])).toBe(
      "stint ca import-crl: the CRL is refused: its issuer is not a root of this CA",
    );
    expect(fails(["ca", "import-crl", at("stale.crl")])).toMatch(
      new RegExp(`its number 1 is not greater than 1, the last published for root ${newId}`),
    );
    expect(fails(["ca", "import-crl", at("missing.crl")])).toMatch(
      new RegExp(
        `it does not list intermediate ${int1Id} \\(serial ${int1Serial}\\), revoked under root ${newId}`,
      ),
    );
    expect(fails(["ca", "import-crl", at("garbage.crl")])).toMatch(/garbage\.crl holds no CRL/);
    // sign-crl itself refuses a request for another root than the key it is given.
    expect(
      fails(
        [
          "root",
          "sign-crl",
          "--root-cert",
          newCert,
          "--root-key",
          newKey,
          "--request",
          at("stray.json"),
          "--out",
          at("x.crl"),
        ],
        1,
        offlineEnv,
      ),
    ).toMatch(new RegExp(`the request is for root ${strayId} but --root-cert is root ${newId}`));
  });

  it("publishes the CRL signed offline: OpenSSL verifies it and refuses leaves under the revoked intermediate", async () => {
    signCrl(request, at("new-2.crl"));
    expect(openssl(["crl", "-in", at("new-2.crl"), "-CAfile", newCert, "-noout"]).trim()).toBe("");
    expect(openssl(["crl", "-in", at("new-2.crl"), "-noout", "-text"]).toLowerCase()).toContain(
      `serial number: ${int1Serial}`,
    );
    // Nothing the refused imports carried was stored: number 2 is still free.
    expect(JSON.parse(ok(["ca", "import-crl", at("new-2.crl"), "--json"]))).toMatchObject({
      root: newId,
      number: 2,
      revoked: 1,
    });
    expect(fails(["ca", "import-crl", at("new-2.crl")])).toMatch(/its number 2 is not greater than 2/);

    // The running server takes it up and serves it as the root's CRL.
    const want = pemFileDer(at("new-2.crl"));
    const deadline = Date.now() + 20_000;
    let served = await fetchDer(`/crl/${newId}.crl`);
    while (!served.body.equals(want) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      served = await fetchDer(`/crl/${newId}.crl`);
    }
    expect(served).toEqual({ status: 200, body: want });
    const int1Crl = await fetchDer(`/crl/${int1Id}.crl`);
    expect(int1Crl.status).toBe(200);

    const leaf = join(at("leaf-a"), "cert.pem");
    const check = (rootCrl: string) => {
      writeFileSync(at("crls.pem"), readFileSync(rootCrl, "utf8") + pemCrl(int1Crl.body));
      return verify([
        "-crl_check_all",
        "-CAfile",
        newCert,
        "-CRLfile",
        at("crls.pem"),
        "-untrusted",
        at("int1.pem"),
        leaf,
      ]);
    };
    // With the root's first (empty) CRL the leaf passes; with the one signed offline it is refused.
    expect(check(at("new-1.crl"))).toMatch(/: OK$/m);
    expect(check(at("new-2.crl"))).toMatch(/certificate revoked/);
    expect(verify(["-crl_check", "-CAfile", newCert, "-CRLfile", at("new-2.crl"), at("int1.pem")])).toMatch(
      /certificate revoked/,
    );
  });

  it("never had a root key in the CA's data directory", () => {
    const secrets = [oldKey, newKey].map((f) => readFileSync(f));
    for (const f of filesUnder(caDir)) {
      const bytes = readFileSync(f);
      for (const s of secrets) expect(bytes.includes(s)).toBe(false);
    }
    expect(readdirSync(join(caDir, "keys")).filter((f) => f.startsWith("root"))).toEqual([]);
    expect(issuers().find((i) => i.id === newId)).toMatchObject({ state: "active", keyOnHost: false });
  });
});
