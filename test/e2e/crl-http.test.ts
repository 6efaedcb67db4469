import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { type AddressInfo, connect, createServer } from "node:net";
import { join } from "node:path";
import { toPem } from "../../formats/pem";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, pemFileDer, tempDir } from "../helpers/openssl";

/**
 * CRLs over plain HTTP (crl.httpListen) end to end: `stint ca init` and `ca
 * serve` with the listener on, leaves from `stint ca issue`, one revoked
 * through the admin API, then OpenSSL fetching every CRL of the chain itself
 * (`verify -crl_check_all -crl_download`, which speaks only http) from the
 * distribution points the certificates name. Then the intermediates made
 * later (`ca rotate`, `root sign`, root rotation) carry the same pointers.
 */

const dir = tempDir("stint-crl-http-e2e-");
const dataDir = join(dir, "ca");
const PASS = "crl over http passphrase";
let httpPort = 0;
let http = "";
const env = () => ({
  STINT_CA_PASSPHRASE: PASS,
  STINT_DATA_DIR: dataDir,
  STINT_TRUST_DOMAIN: "example.org",
  STINT_CRL_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
  // Short, so the test sees the plain listener drop a client that never finishes its headers.
  STINT_HTTP_HEADERS_TIMEOUT: "2s",
});

let server: ServerProcess;
let rootId: string;
let good: Leaf;
let bad: Leaf;

interface Leaf {
  certPath: string;
  serial: string;
}

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

function runOk(args: string[]): string {
  const r = stint(args, env());
  expect(r).toMatchObject({ code: 0, stderr: "" });
  return r.stdout;
}

function issue(name: string): Leaf {
  const out = join(dir, name);
  const r = runOk(["ca", "issue", "--spiffe-id", `spiffe://example.org/${name}`, "--out", out, "--json"]);
  return { certPath: join(out, "cert.pem"), serial: (JSON.parse(r) as { serial: string }).serial };
}

function issuers(): { id: string; kind: string; state: string }[] {
  return (
    JSON.parse(runOk(["ca", "status", "--json"])) as {
      issuers: { id: string; kind: string; state: string }[];
    }
  ).issuers;
}

/** The URIs of one extension of a PEM certificate file, as OpenSSL prints them. */
function uris(certPath: string, ext: "crlDistributionPoints" | "authorityInfoAccess"): string[] {
  const text = openssl(["x509", "-in", certPath, "-noout", "-ext", ext]);
  return [...text.matchAll(/URI:(\S+)/g)].map((m) => m[1]!);
}

/** OpenSSL downloading each certificate's CRL from its distribution point, for the whole chain. */
function verify(leaf: string, opts: { roots?: string; intermediate?: string; download?: boolean } = {}) {
  const r = spawnSync(
    "openssl",
    [
      "verify",
      "-crl_check_all",
      ...(opts.download === false ? [] : ["-crl_download"]),
      "-CAfile",
      opts.roots ?? join(dataDir, "root.pem"),
      "-untrusted",
      opts.intermediate ?? join(dataDir, "intermediate.pem"),
      leaf,
    ],
    { encoding: "utf8", timeout: 30_000 },
  );
  return { ok: r.status === 0 && r.stdout.trim() === `${leaf}: OK`, output: r.stdout + r.stderr };
}

function get(
  url: string,
  method = "GET",
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith("https:") ? httpsRequest : httpRequest;
    const rootPem = readFileSync(join(dataDir, "root.pem"));
    const req = send(url, { method, ca: rootPem, agent: false }, (res) => {
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

/** How many CRLs the plain-HTTP listener has served, from the server's /metrics. */
async function crlsServed(): Promise<number> {
  const text = (await get(`${server.url}/metrics`)).body.toString();
  const m = /^stint_crl_http_requests_total\{route="\/crl",code="200"\} (\d+)$/m.exec(text);
  return Number(m?.[1] ?? 0);
}

/** Writes raw bytes to the plain-HTTP listener; resolves with the status line, or "closed" if none came. */
function raw(bytes: string, giveUpMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(httpPort, "127.0.0.1", () => socket.write(bytes));
    let got = "";
    const status = () => /^HTTP\/1\.1 \d{3}/.exec(got)?.[0];
    socket.on("data", (d) => {
      got += d.toString("latin1");
      if (status()) socket.destroy();
    });
    socket.on("close", () => resolve(got === "gave up" ? got : (status() ?? "closed")));
    socket.on("error", () => undefined); // "close" follows
    setTimeout(() => {
      got = "gave up";
      socket.destroy();
    }, giveUpMs).unref();
  });
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Waits until the running server has taken up a rotation step and issues from `issuerId`. */
async function serving(issuerId: string): Promise<void> {
  await until(`the server to issue from ${issuerId}`, async () => {
    const health = JSON.parse((await get(`${server.url}/health`)).body.toString()) as {
      activeIssuer: string;
    };
    return health.activeIssuer === issuerId;
  });
}

beforeAll(async () => {
  httpPort = await freePort();
  http = `http://127.0.0.1:${httpPort}`;
  // `ca init` itself must know where CRLs will be: the intermediate it makes names the root's.
  runOk(["ca", "init"]);
  server = await startServer([], env());
  rootId = issuers().find((i) => i.kind === "root")!.id;
  good = issue("good");
  bad = issue("bad");
  const revoked = stint(
    ["cert", "revoke", bad.serial, "--reason", "keyCompromise", "--server", server.url],
    env(),
  );
  expect(revoked).toMatchObject({ code: 0, stderr: "" });
}, 120_000);

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it("refuses crl.httpListen with port 0 before creating anything: certificates must name the port", () => {
  const other = join(dir, "port0");
  const r = stint(["ca", "init"], { ...env(), STINT_DATA_DIR: other, STINT_CRL_HTTP_LISTEN: "127.0.0.1:0" });
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toBe(
    'stint ca init: crl.httpListen "127.0.0.1:0" needs a fixed port: certificates name it as their CRL distribution point',
  );
  expect(existsSync(other)).toBe(false);
});

it("every certificate names its issuer's CRL on the plain-HTTP listener; the intermediate also the root certificate", () => {
  const intermediateId = issuers().find((i) => i.kind === "intermediate" && i.state === "active")!.id;
  expect(uris(good.certPath, "crlDistributionPoints")).toEqual([`${http}/crl/${intermediateId}.crl`]);
  const intermediate = join(dataDir, "intermediate.pem");
  expect(uris(intermediate, "crlDistributionPoints")).toEqual([`${http}/crl/${rootId}.crl`]);
  expect(openssl(["x509", "-in", intermediate, "-noout", "-ext", "authorityInfoAccess"])).toContain(
    `CA Issuers - URI:${http}/ca/${rootId}.cer`,
  );
  // OpenSSL's full-chain check wants a CRL for the trust anchor too, and looks only where it points.
  expect(uris(join(dataDir, "root.pem"), "crlDistributionPoints")).toEqual([`${http}/crl/${rootId}.crl`]);
});

it("openssl verify -crl_check_all -crl_download accepts the good leaf and refuses the revoked one", async () => {
  // Without downloading, OpenSSL has no CRL and refuses even the good leaf: what follows used the downloads.
  expect(verify(good.certPath, { download: false }).output).toContain("unable to get certificate CRL");

  const before = await crlsServed();
  const accepted = verify(good.certPath);
  expect(accepted).toMatchObject({ ok: true });
  // The intermediate's CRL for the leaf, the root's for the intermediate and for the root itself.
  expect((await crlsServed()) - before).toBe(3);

  const refused = verify(bad.certPath);
  expect(refused.ok).toBe(false);
  expect(refused.output).toContain("certificate revoked");
});

it("serves the root certificate (DER), the bundle and CRLs (DER and PEM), for GET and HEAD", async () => {
  const cer = await get(`${http}/ca/${rootId}.cer`);
  expect(cer.status).toBe(200);
  expect(cer.headers["content-type"]).toBe("application/pkix-cert");
  expect(cer.body.equals(pemFileDer(join(dataDir, "root.pem")))).toBe(true);

  const bundle = await get(`${http}/bundle.pem`);
  expect(bundle.status).toBe(200);
  expect(bundle.body.toString()).toBe((await get(`${server.url}/bundle.pem`)).body.toString());

  const crl = await get(`${http}/crl/${rootId}.crl`);
  expect(crl).toMatchObject({ status: 200, headers: { "content-type": "application/pkix-crl" } });
  expect(crl.body.equals((await get(`${server.url}/crl/${rootId}.crl`)).body)).toBe(true);
  // Valid as long as the root, yet re-signed by revoke-issuer: caches keep it an hour at most.
  const maxAge = Number(/max-age=(\d+)/.exec(String(crl.headers["cache-control"]))?.[1]);
  expect(maxAge).toBeGreaterThan(3500);
  expect(maxAge).toBeLessThanOrEqual(3600);
  const pem = await get(`${http}/crl/${rootId}.pem`);
  expect(pem.body.toString()).toMatch(/^-----BEGIN X509 CRL-----\n/);

  const head = await get(`${http}/crl/${rootId}.crl`, "HEAD");
  expect(head.status).toBe(200);
  expect(head.headers["content-length"]).toBe(String(crl.body.length));
  expect(head.body.length).toBe(0);
});

it("refuses every other path, method, body and request target, and keeps serving", async () => {
  for (const path of [
    "/",
    "/acme/directory",
    "/admin/entries",
    "/health",
    "/crl/",
    "/crl/zz.crl",
    "/ca/nope.cer",
  ]) {
    expect([path, (await get(`${http}${path}`)).status]).toEqual([path, 404]);
  }
  for (const method of ["POST", "PUT", "DELETE"]) {
    const r = await get(`${http}/crl/${rootId}.crl`, method);
    expect([method, r.status, r.headers.allow]).toEqual([method, 405, "GET, HEAD"]);
  }
  const host = `Host: 127.0.0.1:${httpPort}\r\n`;
  const cases: [string, string][] = [
    [`GET /bundle.pem HTTP/1.1\r\n${host}Content-Length: 5\r\n\r\nhello`, "HTTP/1.1 400"],
    [`GET /bundle.pem HTTP/1.1\r\n${host}Transfer-Encoding: chunked\r\n\r\n5\r\nhel`, "HTTP/1.1 400"],
    [`GET ${http}/bundle.pem HTTP/1.1\r\n${host}\r\n`, "HTTP/1.1 400"],
    [`OPTIONS * HTTP/1.1\r\n${host}\r\n`, "HTTP/1.1 400"],
    [`GET /%zz HTTP/1.1\r\n${host}\r\n`, "HTTP/1.1 404"],
    [`GET //crl/../bundle.pem HTTP/1.1\r\n${host}\r\n`, "HTTP/1.1 404"],
    [`GET /bundle.pem HTTP/1.1\r\n\r\n`, "HTTP/1.1 400"],
  ];
  for (const [request, status] of cases) {
    expect([request, await raw(request)]).toEqual([request, status]);
    expect((await get(`${http}/crl/${rootId}.crl`)).status).toBe(200);
  }
  // CONNECT (authority-form) is not served: the connection is closed.
  expect(await raw(`CONNECT 127.0.0.1:1 HTTP/1.1\r\n${host}\r\n`)).toBe("closed");
  expect((await get(`${http}/crl/${rootId}.crl`)).status).toBe(200);
});

it("drops a client that never finishes its headers, like the HTTPS listener (http.headersTimeout)", async () => {
  // Safety net only: the server answers 408 after about 2 s; 30 s would mean it never did.
  expect(await raw(`GET /bundle.pem HTTP/1.1\r\nHost: 127.0.0.1:${httpPort}\r\nX-Slow: `, 30_000)).toBe(
    "HTTP/1.1 408",
  );
  expect((await get(`${http}/crl/${rootId}.crl`)).status).toBe(200);
});

it("ca rotate gives the new intermediate the same pointers, and its leaves verify", async () => {
  const out = JSON.parse(runOk(["ca", "rotate", "--json"])) as { activated: { id: string } };
  const intermediate = join(dataDir, "intermediate.pem");
  expect(uris(intermediate, "crlDistributionPoints")).toEqual([`${http}/crl/${rootId}.crl`]);
  expect(uris(intermediate, "authorityInfoAccess")).toEqual([`${http}/ca/${rootId}.cer`]);
  await serving(out.activated.id);
  const leaf = issue("after-rotate");
  expect(uris(leaf.certPath, "crlDistributionPoints")).toEqual([`${http}/crl/${out.activated.id}.crl`]);
  expect(verify(leaf.certPath)).toMatchObject({ ok: true });
});

it("root sign --crl-url --ca-issuers-url: an intermediate signed offline carries them", async () => {
  const req = join(dir, "req.pem");
  const signed = join(dir, "offline-int.pem");
  const csr = JSON.parse(runOk(["ca", "intermediate-csr", "--out", req, "--json"])) as { id: string };
  const sign = (extra: string[]) =>
    stint(
      [
        "root",
        "sign",
        "--root-cert",
        join(dataDir, "root.pem"),
        "--root-key",
        join(dataDir, "keys", "root.key.pem"),
        "--csr",
        req,
        "--out",
        signed,
        ...extra,
      ],
      { STINT_CA_PASSPHRASE: PASS },
    );
  const bad = sign(["--crl-url", "ftp://ca.example.com/root.crl"]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/^stint root sign: --crl-url must be an http:\/\/ URL/);
  expect(existsSync(signed)).toBe(false);

  const crlUrl = `${http}/crl/${rootId}.crl`;
  const caIssuers = `${http}/ca/${rootId}.cer`;
  expect(sign(["--crl-url", crlUrl, "--ca-issuers-url", caIssuers])).toMatchObject({ code: 0, stderr: "" });
  expect(uris(signed, "crlDistributionPoints")).toEqual([crlUrl]);
  expect(uris(signed, "authorityInfoAccess")).toEqual([caIssuers]);

  runOk(["ca", "import-intermediate", signed]);
  await serving(csr.id);
  const leaf = issue("offline");
  expect(verify(leaf.certPath, { intermediate: signed })).toMatchObject({ ok: true });
});

it("root rotation: the new root names its own CRL, its intermediate the new root's", async () => {
  const prepared = JSON.parse(runOk(["ca", "root", "prepare", "--json"])) as { prepared: { id: string } };
  const newRoot = prepared.prepared.id;
  runOk(["ca", "root", "activate", "--force"]);
  const active = issuers().find((i) => i.kind === "intermediate" && i.state === "active")!.id;
  await serving(active);

  const intermediate = join(dataDir, "intermediate.pem");
  expect(uris(intermediate, "crlDistributionPoints")).toEqual([`${http}/crl/${newRoot}.crl`]);
  expect(uris(intermediate, "authorityInfoAccess")).toEqual([`${http}/ca/${newRoot}.cer`]);
  const newRootPem = join(dir, "new-root.pem");
  writeFileSync(newRootPem, await get(`${http}/ca/${newRoot}.cer`).then((r) => toPem("CERTIFICATE", r.body)));
  expect(uris(newRootPem, "crlDistributionPoints")).toEqual([`${http}/crl/${newRoot}.crl`]);

  const leaf = issue("new-root");
  expect(verify(leaf.certPath, { roots: newRootPem })).toMatchObject({ ok: true });
});
