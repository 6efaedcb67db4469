import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import * as tls from "node:tls";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * CRLs end to end with real processes: `stint ca serve`, leaves from `stint ca
 * issue`, a revocation through the admin API, the CRL fetched over HTTPS from
 * the distribution point the leaf names, then OpenSSL (verify, s_server) and
 * Node's tls module refusing the revoked certificate and accepting the other.
 */

const dir = tempDir("stint-crl-e2e-");
const dataDir = join(dir, "ca");
const PASS = "crl test passphrase";
let port = 0;
/** The same listen address for the server and `ca issue`, so both derive the same CRL URL. */
const env = () => ({
  STINT_CA_PASSPHRASE: PASS,
  STINT_DATA_DIR: dataDir,
  STINT_TRUST_DOMAIN: "example.org",
  STINT_POLICY_DNS_SUFFIXES: "localhost",
  STINT_LISTEN: `127.0.0.1:${port}`,
});

interface Identity {
  key: string;
  cert: string;
  keyPath: string;
  certPath: string;
  serial: string;
}

let server: ServerProcess;
let rootPem: string;
let serverId: Identity;
let good: Identity;
let bad: Identity;
let cdpUrl: string;
let crlPath: string;
let chainPath: string;

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

let issued = 0;

/** A certificate for spiffe://example.org/<name>, each in its own --out directory (ca issue never replaces files). */
function issue(name: string, dns: string[] = []): Identity {
  const out = join(dir, `${name}-${++issued}`);
  const args = ["ca", "issue", "--spiffe-id", `spiffe://example.org/${name}`, "--out", out, "--json"];
  const r = stint([...args, ...dns.flatMap((d) => ["--dns", d])], env());
  expect(r).toMatchObject({ code: 0, stderr: "" });
  return {
    key: readFileSync(join(out, "key.pem"), "utf8"),
    cert: readFileSync(join(out, "cert.pem"), "utf8"),
    keyPath: join(out, "key.pem"),
    certPath: join(out, "cert.pem"),
    serial: (JSON.parse(r.stdout) as { serial: string }).serial,
  };
}

function get(url: string): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: rootPem, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

/** Downloads the CRL from the leaf's distribution point and writes it as PEM for OpenSSL and Node. */
async function fetchCrl(name: string): Promise<string> {
  const res = await get(cdpUrl);
  expect(res.status).toBe(200);
  const derPath = join(dir, `${name}.der`);
  const pemPath = join(dir, `${name}.pem`);
  writeFileSync(derPath, res.body);
  openssl(["crl", "-inform", "DER", "-in", derPath, "-out", pemPath]);
  return pemPath;
}

beforeAll(async () => {
  port = await freePort();
  // startServer passes --listen 127.0.0.1:0 first; this later flag wins.
  server = await startServer(["--listen", `127.0.0.1:${port}`], env());
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  chainPath = join(dir, "chain.pem");
  writeFileSync(chainPath, rootPem + readFileSync(join(dataDir, "intermediate.pem"), "utf8"));
  serverId = issue("server", ["localhost"]);
  good = issue("good");
  bad = issue("bad");
  const revoked = stint(
    ["cert", "revoke", bad.serial, "--reason", "keyCompromise", "--server", server.url],
    env(),
  );
  expect(revoked).toMatchObject({ code: 0, stderr: "" });
  const ext = openssl(["x509", "-in", bad.certPath, "-noout", "-ext", "crlDistributionPoints"]);
  cdpUrl = /URI:(\S+)/.exec(ext)?.[1] ?? "";
  crlPath = await fetchCrl("crl");
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it("leaves name the CRL on the CA's origin, served as DER and PEM, cacheable until nextUpdate", async () => {
  expect(cdpUrl).toMatch(new RegExp(`^${server.url}/crl/[0-9a-f]{16}\\.crl$`));
  const der = await get(cdpUrl);
  expect(der.headers["content-type"]).toBe("application/pkix-crl");
  const maxAge = Number(/max-age=(\d+)/.exec(String(der.headers["cache-control"]))?.[1]);
  expect(maxAge).toBeGreaterThan(3500);
  expect(maxAge).toBeLessThanOrEqual(3600);

  const pem = await get(cdpUrl.replace(/\.crl$/, ".pem"));
  expect(pem.status).toBe(200);
  expect(pem.body.toString()).toMatch(/^-----BEGIN X509 CRL-----\n/);
  expect(readFileSync(crlPath, "utf8")).toBe(pem.body.toString());

  const text = openssl(["crl", "-in", crlPath, "-noout", "-text"]);
  expect(text).toContain(`Serial Number: ${bad.serial.toUpperCase()}`);
  expect(text).toContain("Key Compromise");
  expect(text).not.toContain(good.serial.toUpperCase());
  // The CRL's signature verifies against the chain.
  const r = spawnSync("openssl", ["crl", "-in", crlPath, "-noout", "-CAfile", chainPath], {
    encoding: "utf8",
  });
  expect(r.stderr + r.stdout).toBe("verify OK\n");

  for (const path of ["/crl/0000000000000000.crl", "/crl/nonsense", "/crl/"]) {
    const missing = await get(`${server.url}${path}`);
    expect(missing.status).toBe(404);
    expect(missing.headers["content-type"]).toBe("application/problem+json");
  }
});

it("openssl verify -crl_check refuses the revoked leaf and accepts the other", () => {
  const verify = (leaf: string) =>
    spawnSync(
      "openssl",
      ["verify", "-crl_check", "-CRLfile", crlPath, "-CAfile", join(dataDir, "root.pem")].concat([
        "-untrusted",
        join(dataDir, "intermediate.pem"),
        leaf,
      ]),
      { encoding: "utf8" },
    );
  const refused = verify(bad.certPath);
  expect(refused.status).not.toBe(0);
  expect(refused.stdout + refused.stderr).toContain("certificate revoked");
  const accepted = verify(good.certPath);
  expect(accepted.stdout.trim()).toBe(`${good.certPath}: OK`);
});

/** `openssl s_server` requiring a client certificate checked against the CRL; resolves once it accepts. */
function opensslServer(listenPort: number, output: string[]): Promise<ChildProcess> {
  const child = spawn("openssl", [
    "s_server",
    "-accept",
    `127.0.0.1:${listenPort}`,
    "-cert",
    serverId.certPath,
    "-cert_chain",
    serverId.certPath,
    "-key",
    serverId.keyPath,
    "-CAfile",
    chainPath,
    "-Verify",
    "1",
    "-verify_return_error",
    "-crl_check",
    "-CRL",
    crlPath,
    "-rev",
  ]);
  child.stderr.on("data", (d: Buffer) => output.push(d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      output.push(d.toString());
      if (d.toString().includes("ACCEPT")) resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`openssl s_server exited ${code}: ${output.join("")}`)));
  });
}

/** Connects with a client certificate, writes a line, and reports the reply or how it failed. */
function tlsClient(listenPort: number, who: Identity): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect(
      {
        host: "127.0.0.1",
        port: listenPort,
        servername: "localhost",
        key: who.key,
        cert: who.cert,
        ca: rootPem,
      },
      () => socket.write("stint\n"),
    );
    let reply = "";
    socket.on("data", (d) => {
      reply += d;
      if (reply.includes("\n")) socket.end();
    });
    socket.on("end", () => resolve(`reply:${reply.trim()}`));
    socket.on("error", (err: NodeJS.ErrnoException) => resolve(`error:${err.code ?? err.message}`));
    setTimeout(() => resolve("timeout"), 10_000).unref();
  });
}

it("openssl s_server with -crl_check refuses a client presenting the revoked certificate", async () => {
  const sPort = await freePort();
  const output: string[] = [];
  const child = await opensslServer(sPort, output);
  try {
    expect(await tlsClient(sPort, good)).toBe("reply:tnits"); // -rev echoes the line reversed
    // s_server sends the certificate_revoked alert (RFC 8446 6.2).
    expect(await tlsClient(sPort, bad)).toBe("error:ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED");
    await new Promise((r) => setTimeout(r, 200));
    expect(output.join("")).toContain("certificate revoked");
  } finally {
    child.kill();
  }
});

/**
 * Node's `crl` option turns on CRL checks for the whole chain (OpenSSL's
 * CRL_CHECK_ALL), so a Node verifier needs the root's CRL covering the
 * intermediate too. `ca init` signs it while the root key is at hand, and the
 * server publishes it beside the intermediate's, at /crl/<root id>.crl.
 */
async function rootCrl(): Promise<string> {
  const rootId = /\/crl\/([0-9a-f]+)\.crl$/.exec(cdpUrl)![1];
  const ids = JSON.parse(stint(["ca", "status", "--json"], env()).stdout) as {
    issuers: { id: string; kind: string }[];
  };
  const root = ids.issuers.find((i) => i.kind === "root")!.id;
  expect(root).not.toBe(rootId);
  const res = await get(cdpUrl.replace(`${rootId}.crl`, `${root}.pem`));
  expect(res.status).toBe(200);
  // Signed by the root itself, as OpenSSL confirms.
  const path = join(dir, "root-crl.pem");
  writeFileSync(path, res.body);
  expect(
    spawnSync("openssl", ["crl", "-in", path, "-noout", "-CAfile", join(dataDir, "root.pem")], {
      encoding: "utf8",
    }).stderr,
  ).toMatch(/verify OK/);
  return res.body.toString();
}

it("a Node tls server with the CRL refuses the revoked client certificate and accepts the other", async () => {
  const crls = [readFileSync(crlPath, "utf8"), await rootCrl()];
  const run = async (rejectUnauthorized: boolean, crl: string[], who: Identity) => {
    const seen: string[] = [];
    const srv = tls.createServer(
      { key: serverId.key, cert: serverId.cert, ca: rootPem, crl, requestCert: true, rejectUnauthorized },
      (s) => {
        seen.push(s.authorized ? "authorized" : String(s.authorizationError));
        s.end("ok\n");
      },
    );
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    try {
      const outcome = await tlsClient((srv.address() as AddressInfo).port, who);
      return { outcome, seen };
    } finally {
      srv.close();
    }
  };
  expect(await run(true, crls, good)).toEqual({ outcome: "reply:ok", seen: ["authorized"] });
  const refused = await run(true, crls, bad);
  expect(refused.seen).toEqual([]);
  expect(refused.outcome).not.toBe("reply:ok");
  // Why it was refused: the same handshake, not rejected, reports the revocation.
  expect((await run(false, crls, bad)).seen).toEqual(["CERT_REVOKED"]);
  // Without the root's CRL Node cannot check the intermediate and refuses everyone.
  expect((await run(false, crls.slice(0, 1), good)).seen).toEqual(["UNABLE_TO_GET_CRL"]);
});

it("stint ca revoke works beside the running server, which lists it from its next CRL on", async () => {
  const a = issue("batch");
  const b = issue("batch");
  const r = stint(
    ["ca", "revoke", "--spiffe-id", "spiffe://example.org/batch", "--reason", "superseded", "--json"],
    env(),
  );
  expect(r).toMatchObject({ code: 0, stderr: "" });
  const rows = JSON.parse(r.stdout) as { serial: string; reason: string }[];
  expect(rows.map((x) => x.serial).sort()).toEqual([a.serial, b.serial].sort());
  expect(rows.every((x) => x.reason === "superseded")).toBe(true);

  const again = stint(
    ["ca", "revoke", "--spiffe-id", "spiffe://example.org/batch", "--reason", "superseded"],
    env(),
  );
  expect(again.code).toBe(1);
  expect(again.stderr.trim()).toBe(
    "stint ca revoke: no unexpired, unrevoked certificate has SPIFFE ID spiffe://example.org/batch",
  );
  const twice = stint(
    ["ca", "revoke", "--serial", bad.serial.toUpperCase(), "--reason", "keyCompromise"],
    env(),
  );
  expect(twice).toMatchObject({ code: 1 });
  expect(twice.stderr.trim()).toBe(`stint ca revoke: certificate ${bad.serial} is already revoked`);
  expect(stint(["ca", "revoke", "--serial", good.serial], env())).toMatchObject({ code: 2 });
  expect(stint(["ca", "revoke", "--serial", "zz", "--reason", "superseded"], env()).code).toBe(2);

  // The server has not re-read the store yet; its next CRL (here, after a revocation through it) lists both.
  const before = openssl(["crl", "-in", await fetchCrl("before"), "-noout", "-text"]);
  expect(before).not.toContain(a.serial.toUpperCase());
  const c = issue("later");
  expect(stint(["cert", "revoke", c.serial, "--server", server.url], env()).code).toBe(0);
  const after = openssl(["crl", "-in", await fetchCrl("after"), "-noout", "-text"]);
  for (const s of [a.serial, b.serial, c.serial, bad.serial]) expect(after).toContain(s.toUpperCase());
  expect(after).not.toContain(good.serial.toUpperCase());

  const text = stint(["ca", "revoke", "--serial", good.serial, "--reason", "cessationOfOperation"], env());
  expect(text.code).toBe(0);
  expect(text.stdout).toContain(`Revoked ${good.serial} (spiffe://example.org/good, valid until `);
  expect(text.stdout).toContain("`stint cert revoke` acts at once");
});
