import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readCrl } from "../../formats/crl";
import { parsePemBlocks } from "../../formats/pem";
import { type AgentProcess, fingerprint, freePort, startAgent, waitFor } from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { mtlsGet, type Nginx, startNginx } from "../helpers/nginx";
import { tempDir } from "../helpers/openssl";

/**
 * nginx, as Debian ships it, checking client certificates against the CRLs
 * `stint agent` writes (ssl_crl crls.pem, ssl_client_certificate bundle.pem):
 * the agent's certificate is accepted; a revoked one is refused once the agent
 * has fetched the new CRL and reloaded nginx; a DNS-only certificate lego
 * obtained over http-01 is refused as a client; and the good certificate is
 * still accepted after the first CRLs' nextUpdate, because the agent fetched
 * fresh ones, while a server block left with the first CRLs refuses it.
 */

const TD = "nginx.example";
const CRL_VALIDITY_S = 20;
const dir = tempDir("stint-nginx-e2e-");
const dataDir = join(dir, "ca");
const outDir = join(dir, "out");
const staleDir = join(dir, "stale");

let ca: ServerProcess;
let agent: AgentProcess;
let nginx: Nginx;
let port = 0;
let stalePort = 0;
/** Where lego answers http-01 and the CA validates it (acme.http01.port, resolved to 127.0.0.1). */
let http01Port = 0;
let rootPem = "";
let good: { cert: string; key: string };
/** The CRLs the agent wrote first, and the earliest nextUpdate among them. */
let firstCrls: { pem: string; nextUpdate: number; intermediateNumber: bigint };

const crlsIn = (pem: string) => parsePemBlocks(pem).map((b) => readCrl(b.der));
const readOut = (name: string) => readFileSync(join(realpathSync(join(outDir, "..data")), name), "utf8");

function issue(name: string, dns: string[] = []): { cert: string; key: string; serial: string } {
  const out = join(dir, name);
  const r = stint(
    ["ca", "issue", "--spiffe-id", `spiffe://${TD}/${name}`, "--ttl", "30m", "--out", out, "--json"]
      .concat(dns.flatMap((d) => ["--dns", d]))
      .concat(["--data-dir", dataDir, "--trust-domain", TD, "--policy-dns-suffixes", "localhost,nginx.test"]),
  );
  if (r.code !== 0) throw new Error(r.stderr);
  return {
    cert: readFileSync(join(out, "cert.pem"), "utf8"),
    key: readFileSync(join(out, "key.pem"), "utf8"),
    serial: (JSON.parse(r.stdout) as { serial: string }).serial.toLowerCase(),
  };
}

/** Polls an asynchronous probe every 200 ms until it holds (nginx reloads in the background). */
async function poll(what: string, probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The reason nginx logged for the last refused client certificate, e.g. "23:certificate revoked". */
function lastRefusal(): string | undefined {
  const all = [...nginx.errorLog().matchAll(/client SSL certificate verify error: \((\d+:[^)]+)\)/g)];
  return all.at(-1)?.[1];
}

beforeAll(async () => {
  port = await freePort();
  stalePort = await freePort();
  const caPort = await freePort();
  http01Port = await freePort();
  ca = await startServer([
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--trust-domain",
    TD,
    "--listen",
    `127.0.0.1:${caPort}`,
    "--crl-validity",
    `${CRL_VALIDITY_S}s`,
    "--policy-dns-suffixes",
    "localhost,nginx.test",
    "--acme-http01-port",
    String(http01Port),
    "--acme-http01-resolve-to",
    "127.0.0.1",
  ]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");

  // nginx's own server certificate, for the name the clients verify.
  const server = issue("nginx", ["localhost"]);
  writeFileSync(join(dir, "server.pem"), server.cert);
  writeFileSync(join(dir, "server.key"), server.key, { mode: 0o600 });

  const token = stint([
    "token",
    "create",
    "--spiffe-id",
    `spiffe://${TD}/web`,
    "--cert-ttl",
    "30m",
    "--json",
    "--data-dir",
    dataDir,
    "--server",
    ca.url,
  ]);
  expect(token.code).toBe(0);
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, JSON.parse(token.stdout).token, { mode: 0o600 });

  // The reload command is known before nginx starts: the paths are the test's own.
  const prefix = join(dir, "nginx");
  const reload = `/usr/sbin/nginx -c ${join(prefix, "nginx.conf")} -p ${prefix} -s reload`;
  agent = startAgent([
    "--ca-url",
    ca.url,
    "--ca-fingerprint",
    fingerprint(dataDir),
    "--spiffe-id",
    `spiffe://${TD}/web`,
    "--join-token-file",
    tokenFile,
    "--state-dir",
    join(dir, "state"),
    "--out-dir",
    outDir,
    "--health-listen",
    "",
    "--exec",
    reload,
  ]);
  await waitFor("the agent's first set with crls.pem", () => {
    try {
      return readOut("crls.pem") !== "" && readOut("cert.pem") !== "";
    } catch {
      return false;
    }
  });
  good = { cert: readOut("cert.pem"), key: readOut("key.pem") };
  const crls = crlsIn(readOut("crls.pem"));
  const intermediate = crls.find((c) => c.nextUpdate!.getTime() - c.thisUpdate.getTime() < 3_600_000)!;
  firstCrls = {
    pem: readOut("crls.pem"),
    nextUpdate: Math.min(...crls.map((c) => c.nextUpdate!.getTime())),
    intermediateNumber: intermediate.number!,
  };

  // A second server block that keeps the first CRLs forever: the control for "fresh CRLs matter".
  mkdirSync(staleDir);
  writeFileSync(join(staleDir, "crls.pem"), firstCrls.pem);
  copyFileSync(join(outDir, "bundle.pem"), join(staleDir, "bundle.pem"));
  const common = { cert: join(dir, "server.pem"), key: join(dir, "server.key") };
  nginx = await startNginx(prefix, [
    { ...common, port, clientCa: join(outDir, "bundle.pem"), crl: join(outDir, "crls.pem") },
    {
      ...common,
      port: stalePort,
      clientCa: join(staleDir, "bundle.pem"),
      crl: join(staleDir, "crls.pem"),
    },
  ]);
}, 60_000);

afterAll(async () => {
  await nginx?.stop();
  await agent?.stop();
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it("the agent writes the intermediate's and the root's CRL, both checked by OpenSSL against the bundle", () => {
  const crls = crlsIn(firstCrls.pem);
  expect(crls).toHaveLength(2);
  const chainFile = join(dir, "chain-and-crls.pem");
  writeFileSync(chainFile, rootPem + readFileSync(join(dataDir, "intermediate.pem"), "utf8"));
  const leaf = join(dir, "good.pem");
  writeFileSync(leaf, good.cert);
  const crlFile = join(dir, "first-crls.pem");
  writeFileSync(crlFile, firstCrls.pem);
  const r = spawnSync(
    "openssl",
    ["verify", "-crl_check_all", "-CAfile", chainFile, "-CRLfile", crlFile, leaf],
    { encoding: "utf8" },
  );
  expect(r.stdout.trim()).toBe(`${leaf}: OK`);
});

it("(a) nginx accepts the agent's certificate as a client", async () => {
  const res = await mtlsGet(port, good, rootPem);
  expect(res).toEqual({ status: 200, body: expect.stringMatching(/^verified [0-9A-F]+\n$/) });
});

it("(b) refuses a revoked workload certificate once the agent has the new CRL and reloaded nginx", async () => {
  const bad = issue("bad");
  expect((await mtlsGet(port, bad, rootPem)).status).toBe(200);
  const revoked = stint(["cert", "revoke", bad.serial, "--reason", "keyCompromise", "--server", ca.url], {
    STINT_DATA_DIR: dataDir,
  });
  expect(revoked).toMatchObject({ code: 0, stderr: "" });
  // The agent fetches at 40-60% of the CRL's remaining validity (at most ~12 s here), then runs the hook.
  await waitFor(
    "the revoked serial in the agent's crls.pem",
    () => crlsIn(readOut("crls.pem")).some((c) => c.revoked.includes(bad.serial)),
    CRL_VALIDITY_S * 1000,
  );
  await poll("nginx to refuse the revoked certificate after the reload", async () => {
    return (await mtlsGet(port, bad, rootPem)).status === 400;
  });
  expect(lastRefusal()).toBe("23:certificate revoked");
  expect((await mtlsGet(port, good, rootPem)).status).toBe(200);
});

it("(c) refuses a DNS-only certificate lego obtained over http-01: it is a server certificate", async () => {
  const legoDir = join(dir, "lego");
  const r = spawnSync(
    "lego",
    [
      "--server",
      `${ca.url}/acme/directory`,
      "--accept-tos",
      "--email",
      "ops@nginx.test",
      "--domains",
      "lego.nginx.test",
      "--http",
      "--http.port",
      `127.0.0.1:${http01Port}`,
      "--key-type",
      "ec256",
      "--path",
      legoDir,
      "run",
    ],
    {
      encoding: "utf8",
      timeout: 60_000,
      env: { PATH: process.env.PATH ?? "", HOME: dir, LEGO_CA_CERTIFICATES: join(dataDir, "root.pem") },
    },
  );
  expect({ code: r.status, stderr: r.status === 0 ? "" : r.stderr }).toEqual({ code: 0, stderr: "" });
  const cert = readFileSync(join(legoDir, "certificates", "lego.nginx.test.crt"), "utf8");
  const key = readFileSync(join(legoDir, "certificates", "lego.nginx.test.key"), "utf8");
  const leaf = new X509Certificate(cert);
  expect(leaf.subjectAltName).toBe("DNS:lego.nginx.test");
  // serverAuth alone (ca/engine.ts): no SPIFFE ID was attested, so it is no client identity.
  expect(leaf.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]);
  const res = await mtlsGet(port, { cert, key }, rootPem);
  expect(res.status).toBe(400);
  // OpenSSL 3 words X509_V_ERR_INVALID_PURPOSE "unsuitable", 1.1 "unsupported".
  expect(lastRefusal()).toMatch(/^26:\w+ certificate purpose$/);
});

it("(d) still accepts the good certificate after the first CRLs' nextUpdate, where stale CRLs refuse it", async () => {
  await waitFor("the first CRLs' nextUpdate to pass", () => Date.now() > firstCrls.nextUpdate + 1000, 40_000);
  const now = crlsIn(readOut("crls.pem"));
  expect(now.every((c) => c.nextUpdate!.getTime() > Date.now())).toBe(true);
  expect(now.some((c) => c.number! > firstCrls.intermediateNumber)).toBe(true);
  expect((await mtlsGet(port, good, rootPem)).status).toBe(200);
  // The control: nginx holding the first CRLs now refuses everyone, the good certificate included.
  expect((await mtlsGet(stalePort, good, rootPem)).status).toBe(400);
  expect(lastRefusal()).toBe("12:CRL has expired");
});
