import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { get } from "node:https";
import { join } from "node:path";
import * as tls from "node:tls";
import { type ServerProcess, STINT, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/** `stint ca serve` as a real process: first-run init, its endpoints over verified HTTPS, self-renewal, shutdown. */

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function fetch(url: string, ca: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { ca }, (res) => {
      let body = "";
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, type: String(res.headers["content-type"]), body }),
      );
    }).on("error", reject);
  });
}

/** Serial of the certificate the server presents on a new, verified TLS connection. */
function servedSerial(url: string, ca: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: hostname, port: Number(port), ca, servername: "localhost" }, () => {
      resolve(s.getPeerCertificate().serialNumber.toLowerCase());
      s.end();
    });
    s.on("error", reject);
  });
}

describe("a development CA started the way `npm start` does", () => {
  const dataDir = join(dir, "dev");
  let server: ServerProcess;
  let rootPem: string;

  beforeAll(async () => {
    server = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      dataDir,
      "--trust-domain",
      "dev.example",
    ]);
    rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  });
  afterAll(() => server.stop());

  it("created the CA on first run and warns that its keys are not encrypted", () => {
    const logs = server.logs().map((l) => JSON.parse(l));
    expect(logs.find((l) => l.msg === "created a new CA")).toMatchObject({
      trustDomain: "dev.example",
      encryptedAtRest: false,
    });
    expect(logs.find((l) => l.level === "warn")).toMatchObject({
      msg: "CA keys are stored WITHOUT encryption; use this only for development",
    });
  });

  it("serves health, both bundle formats and metrics over HTTPS that verifies against the root", async () => {
    const health = await fetch(`${server.url}/health`, rootPem);
    expect(health).toMatchObject({ status: 200, type: "application/json" });
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok", trustDomain: "dev.example" });

    const pem = await fetch(`${server.url}/bundle.pem`, rootPem);
    expect(pem).toMatchObject({ status: 200, type: "application/x-pem-file", body: rootPem });

    const bundle = JSON.parse((await fetch(`${server.url}/bundle.json`, rootPem)).body);
    // Sequence 2: the first start made the JWT-SVID signing keys (active and prepared) and published them.
    expect(bundle).toMatchObject({ spiffe_sequence: 2, spiffe_refresh_hint: 300 });
    expect(bundle.keys).toHaveLength(3);
    expect(bundle.keys[0]).toMatchObject({ kty: "EC", crv: "P-256", use: "x509-svid" });
    for (const k of bundle.keys.slice(1))
      expect(Object.keys(k).sort()).toEqual(["crv", "kid", "kty", "use", "x", "y"]);
    expect(bundle.keys.slice(1)).toMatchObject([
      { use: "jwt-svid", kty: "EC", crv: "P-256" },
      { use: "jwt-svid" },
    ]);
    const rootDer = Buffer.from(rootPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    expect(bundle.keys[0].x5c).toEqual([rootDer.toString("base64")]);

    const metrics = await fetch(`${server.url}/metrics`, rootPem);
    expect(metrics.type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(metrics.body).toMatch(/^stint_certificates_issued_total\{profile="server"\} [1-9]/m);
    expect(metrics.body).toMatch(/^stint_issuance_seconds_count\{profile="server"\} [1-9]/m);
    expect(metrics.body).toMatch(/^stint_http_requests_total\{route="\/health",code="200"\} 1$/m);
  });

  it("answers unknown paths and methods with problem documents", async () => {
    const missing = await fetch(`${server.url}/nope`, rootPem);
    expect(missing.status).toBe(404);
    expect(missing.type).toBe("application/problem+json");
    expect(JSON.parse(missing.body)).toEqual({
      type: "urn:ietf:params:acme:error:malformed",
      detail: "no resource at /nope",
      status: 404,
    });
  });

  it("stops cleanly on SIGTERM", async () => {
    expect(await server.stop()).toBe(0);
    expect(server.logs().map((l) => JSON.parse(l).msg)).toContain("stopped");
  });
});

describe("ca serve on a data directory without a CA", () => {
  const serve = (dataDir: string, ...more: string[]) =>
    stint([
      "ca",
      "serve",
      "--insecure-no-passphrase",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
      ...more,
    ]);

  it("refuses in one line and creates nothing, whether the directory is missing or empty", () => {
    const missing = join(dir, "typo");
    const r = serve(missing);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual([
      `stint ca serve: no CA in ${missing}: run "stint ca init" first, or pass --init to create one here (check --data-dir if a CA should be there)`,
    ]);
    expect(existsSync(missing)).toBe(false);
    const empty = join(dir, "empty-dir");
    mkdirSync(empty);
    expect(serve(empty).code).toBe(1);
    expect(readdirSync(empty)).toEqual([]);
  });

  it("creates the CA with --init, and then serves it without", async () => {
    const dataDir = join(dir, "with-init");
    const first = await startServer(["--insecure-no-passphrase", "--data-dir", dataDir]);
    await first.stop();
    expect(first.logs().some((l) => l.includes('"msg":"created a new CA"'))).toBe(true);
    expect(existsSync(join(dataDir, "root.pem"))).toBe(true);
    // The CA now exists: a plain `ca serve` (no --init) serves it.
    const child = spawn(
      process.execPath,
      [STINT, "ca", "serve", "--insecure-no-passphrase", "--listen", "127.0.0.1:0", "--data-dir", dataDir],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let err = "";
    const listening = await new Promise<boolean>((resolve) => {
      child.stderr!.on("data", (d: Buffer) => {
        err += d.toString();
        if (err.includes('"msg":"listening"')) resolve(true);
      });
      child.once("exit", () => resolve(false));
    });
    child.kill("SIGTERM");
    expect([listening, err]).toEqual([true, expect.not.stringContaining("created a new CA")]);
  });
});

describe("a CA with an encrypted key", () => {
  const dataDir = join(dir, "prod");
  const passphrase = "a passphrase that must never be logged";
  const env = { STINT_CA_PASSPHRASE: passphrase, STINT_DATA_DIR: dataDir };

  beforeAll(() => {
    expect(stint(["ca", "init", "--trust-domain", "prod.example"], env).code).toBe(0);
  });

  it("renews its own server certificate before expiry without dropping connections", async () => {
    const server = await startServer(
      ["--server-cert-ttl", "3s", "--policy-min-ttl", "1s", "--policy-backdate", "0s"],
      env,
    );
    const root = readFileSync(join(dataDir, "root.pem"), "utf8");
    try {
      const serials = new Set<string>();
      // Connect repeatedly until three different certificates have been served; every handshake must verify.
      for (let i = 0; i < 200 && serials.size < 3; i++) {
        serials.add(await servedSerial(server.url, root));
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(serials.size).toBe(3);
      const renewals = server.logs().filter((l) => l.includes('"server certificate renewed"'));
      expect(renewals.length).toBeGreaterThanOrEqual(2);
      expect(server.logs().some((l) => l.includes('"level":"warn"'))).toBe(false);
    } finally {
      await server.stop();
    }
    const logs = server.logs().join("\n");
    expect(logs).not.toContain(passphrase);
    expect(logs).not.toContain("PRIVATE KEY");
    // Every server certificate is in the store and the audit log, like any other issuance.
    const status = JSON.parse(stint(["ca", "status", "--json"], env).stdout);
    expect(status.certificates.issued).toBeGreaterThanOrEqual(3);
    expect(status.audit.intact).toBe(true);
  });

  it("refuses to start with the wrong passphrase, in one line", () => {
    const r = stint(["ca", "serve", "--listen", "127.0.0.1:0"], { ...env, STINT_CA_PASSPHRASE: "wrong" });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(/^stint ca serve: wrong passphrase for /),
    ]);
  });

  it("refuses a trust domain that differs from the CA's", () => {
    const r = stint(["ca", "serve", "--listen", "127.0.0.1:0", "--trust-domain", "other.example"], env);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      'stint ca serve: trustDomain "other.example" differs from this CA\'s trust domain "prod.example"; remove the setting or use another --data-dir',
    );
  });

  it("refuses to create an unencrypted CA unless told to", () => {
    const r = stint(["ca", "serve", "--init", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "empty")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/CA keys need a passphrase/);
  });

  it("keeps the root fingerprint the same as ca init printed", () => {
    const pem = readFileSync(join(dataDir, "root.pem"), "utf8");
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    const status = JSON.parse(stint(["ca", "status", "--json"], env).stdout);
    const root = status.issuers.find((i: { kind: string }) => i.kind === "root");
    expect(root.fingerprint).toBe(`sha256:${createHash("sha256").update(der).digest("hex")}`);
  });
});
