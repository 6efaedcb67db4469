import { rmSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { TLSSocket } from "node:tls";
import express from "express";
import { AtomicDir } from "../../agent/atomic-dir";
import {
  checkSocket,
  readCredentialSet,
  refusalStatus,
  requireSpiffeId,
  SpiffeIdentityError,
  spiffeServerIdentity,
  type TlsDir,
  tlsOptionsFromDir,
} from "../../verify/node";
import { createVerifier } from "../../verify/verifier";
import { stintError } from "../attest/helpers";
import { tempDir } from "../helpers/openssl";
import { type Made, Pki } from "./pki";

/** Real TLS on loopback: an https server fed by an agent-style directory, clients with OpenSSL-made SVIDs. */

const dir = tempDir("stint-verify-node-");
const pki = new Pki(dir);
const root = pki.root("root", "/CN=Test Root/O=example.org");
const inter = pki.inter("inter", root);
const id = (path: string) => `spiffe://example.org/${path}`;
const svid = (name: string, path: string) => pki.leaf(name, inter, { san: `URI:${id(path)}` });
const apiV1 = svid("api-v1", "ns/prod/sa/api");
const apiV2 = svid("api-v2", "ns/prod/sa/api-v2");
const web = svid("web", "ns/prod/sa/web");
const db = svid("db", "ns/prod/sa/db");
const devWeb = svid("dev-web", "ns/dev/sa/web");
const newRoot = pki.root("new-root", "/CN=New Root/O=example.org");
const newInter = pki.inter("new-inter", newRoot);
const rotated = pki.leaf("rotated", newInter, { san: `URI:${id("ns/prod/sa/rotated")}` });

const files = (leaf: Made, issuer: Made, bundle: string, key = leaf.key) => ({
  "cert.pem": { data: leaf.pem + issuer.pem, mode: 0o644 },
  "key.pem": { data: key, mode: 0o600 },
  "bundle.pem": { data: bundle, mode: 0o644 },
});

const serverVerifier = createVerifier({ bundle: root.pem, usage: "client", allow: [`${id("ns/prod")}/**`] });
/** What clients accept as the server. */
const serverIds = createVerifier({
  bundle: root.pem,
  usage: "server",
  allow: [id("ns/prod/sa/api"), id("ns/prod/sa/api-v2")],
});

interface Reply {
  status: number;
  body: Record<string, unknown>;
  serverSan: string;
}

function get(
  port: number,
  o: {
    client?: Made;
    issuer?: Made;
    path?: string;
    identity?: ReturnType<typeof spiffeServerIdentity>;
    options?: https.RequestOptions;
  } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port,
        path: o.path ?? "/",
        agent: false,
        ca: root.pem + newRoot.pem,
        ...(o.client ? { key: o.client.key, cert: o.client.pem + (o.issuer ?? inter).pem } : {}),
        checkServerIdentity: o.identity ?? spiffeServerIdentity(serverIds),
        ...o.options,
      },
      (res) => {
        const serverSan = (res.socket as TLSSocket).getPeerCertificate().subjectaltname ?? "";
        let text = "";
        res.on("data", (d: Buffer) => {
          text += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), serverSan }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

async function listen(server: https.Server | HttpServer): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as AddressInfo).port;
}

const close = (server: https.Server | HttpServer) =>
  new Promise<void>((r) => {
    server.closeAllConnections();
    server.close(() => r());
  });

async function until<T>(what: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await what();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

let out: AtomicDir;
let tlsDir: TlsDir;
let server: https.Server;
let port: number;
const reloads: string[] = [];
const errors: string[] = [];

beforeAll(async () => {
  out = await AtomicDir.open(join(dir, "out"));
  await out.publish(files(apiV1, inter, root.pem));
  tlsDir = await tlsOptionsFromDir(join(dir, "out"), {
    usage: "server",
    verifier: serverVerifier,
    pollInterval: 200,
    onReload: (v) => reloads.push(v),
    onError: (err) => errors.push(err.message),
  });
  server = https.createServer(tlsDir.options, (req, res) => {
    const r = checkSocket(req.socket as TLSSocket, serverVerifier);
    res.statusCode = r.ok ? 200 : refusalStatus(r.code);
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ spiffeId: r.spiffeId, code: r.code, reason: r.reason }));
  });
  tlsDir.attach(server);
  port = await listen(server);
});

afterAll(async () => {
  tlsDir.close();
  await close(server);
  rmSync(dir, { recursive: true, force: true });
});

describe("an https server on tlsOptionsFromDir with checkSocket", () => {
  it("asks for client certificates but lets the verifier decide", () => {
    expect(tlsDir.options).toMatchObject({ requestCert: true, rejectUnauthorized: false });
  });

  it("answers 200 with the SPIFFE ID of a good client, and the client checked the server's ID", async () => {
    const r = await get(port, { client: web });
    expect(r).toEqual({
      status: 200,
      body: { spiffeId: id("ns/prod/sa/web"), code: "ok", reason: `allowed by rule ${id("ns/prod")}/**` },
      serverSan: `URI:${id("ns/prod/sa/api")}`,
    });
  });

  it("answers 403 to a valid client whose ID is not allowed", async () => {
    expect(await get(port, { client: devWeb })).toMatchObject({
      status: 403,
      body: {
        spiffeId: id("ns/dev/sa/web"),
        code: "unauthorized",
        reason: `SPIFFE ID ${id("ns/dev/sa/web")} is not authorized here: no allow rule matches it`,
      },
    });
  });

  it("answers 401 without a client certificate, and to a client from another CA", async () => {
    expect(await get(port)).toMatchObject({
      status: 401,
      body: { spiffeId: null, code: "no-certificate", reason: "the peer presented no certificate" },
    });
    expect(await get(port, { client: rotated, issuer: newInter })).toMatchObject({
      status: 401,
      body: { code: "untrusted" },
    });
  });

  it("the client refuses a server whose SPIFFE ID it does not allow", async () => {
    const onlyDb = createVerifier({ bundle: root.pem, usage: "server", allow: [id("ns/prod/sa/db")] });
    const err = await get(port, { client: web, identity: spiffeServerIdentity(onlyDb) }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SpiffeIdentityError);
    expect(err).toMatchObject({
      code: "ERR_SPIFFE_UNAUTHORIZED",
      message: `server identity refused: SPIFFE ID ${id("ns/prod/sa/api")} is not authorized here: no allow rule matches it`,
    });
    expect(() => spiffeServerIdentity(serverVerifier)).toThrow(
      stintError("ERR_CONFIG", /needs a verifier with usage "server"/),
    );
  });

  it("picks up a newly published set without a restart: new server certificate, new trust bundle", async () => {
    const before = tlsDir.version;
    await out.publish(files(apiV2, inter, root.pem + newRoot.pem));
    const r = await until(
      () => get(port, { client: rotated, issuer: newInter }),
      (v) => v.serverSan === `URI:${id("ns/prod/sa/api-v2")}` && v.status === 200,
    );
    expect(r).toMatchObject({ status: 200, body: { spiffeId: id("ns/prod/sa/rotated") } });
    expect(tlsDir.version).not.toBe(before);
    expect(reloads).toContain(tlsDir.version);
    expect((tlsDir.options.cert as Buffer).toString()).toBe(apiV2.pem + inter.pem);
  });

  it("keeps the current set when a published one is unusable", async () => {
    const good = tlsDir.version;
    await out.publish(files(apiV1, inter, root.pem, web.key));
    expect(await tlsDir.reload()).toBe(false);
    expect(tlsDir.version).toBe(good);
    expect(errors.at(-1)).toMatch(/key\.pem does not belong to cert\.pem$/);
    expect((await get(port, { client: web })).serverSan).toBe(`URI:${id("ns/prod/sa/api-v2")}`);
    await expect(readCredentialSet(join(dir, "out"))).rejects.toEqual(
      stintError("ERR_FILE", /does not belong/),
    );
  });

  it("still sees the client's intermediates on a client's second connection (no session resumption)", async () => {
    const agent = new https.Agent({ keepAlive: false });
    try {
      for (let i = 0; i < 3; i++) {
        expect(await get(port, { client: web, options: { agent } })).toMatchObject({ status: 200 });
      }
    } finally {
      agent.destroy();
    }
  });

  it("accepts a resumed session (which carries no chain) while the leaf's path is cached, and explains otherwise", async () => {
    const v = createVerifier({ bundle: root.pem, usage: "client", allow: { trustDomain: "example.org" } });
    const own = https.createServer(
      {
        key: apiV2.key,
        cert: apiV2.pem + inter.pem,
        ca: root.pem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const r = checkSocket(req.socket as TLSSocket, v);
        res.statusCode = r.ok ? 200 : refusalStatus(r.code);
        res.end(JSON.stringify({ ...r, resumed: (req.socket as TLSSocket).isSessionReused() }));
      },
    );
    const ownPort = await listen(own);
    const agent = new https.Agent({ keepAlive: false });
    try {
      expect(await get(ownPort, { client: web, options: { agent } })).toMatchObject({
        status: 200,
        body: { resumed: false },
      });
      expect(await get(ownPort, { client: web, options: { agent } })).toMatchObject({
        status: 200,
        body: { resumed: true },
      });
      v.clearCache();
      expect(await get(ownPort, { client: web, options: { agent } })).toMatchObject({
        status: 401,
        body: {
          resumed: true,
          code: "untrusted",
          reason: expect.stringMatching(
            /\(the TLS session was resumed, so the peer's intermediate certificates are not available; disable session tickets on this server, as tlsOptionsFromDir does\)$/,
          ),
        },
      });
    } finally {
      agent.destroy();
      await close(own);
    }
  });

  it("reads the full peer chain only for a leaf it has not validated before", async () => {
    const v = createVerifier({ bundle: root.pem, usage: "client", allow: { trustDomain: "example.org" } });
    const sockets = new Set<unknown>();
    const own = https.createServer({ ...tlsDir.options }, (req, res) => {
      sockets.add(req.socket);
      const r = checkSocket(req.socket as TLSSocket, v);
      res.statusCode = r.ok ? 200 : refusalStatus(r.code);
      res.end(JSON.stringify(r));
    });
    const ownPort = await listen(own);
    const spy = jest.spyOn(TLSSocket.prototype, "getPeerCertificate");
    const chainReads = () =>
      spy.mock.calls.filter((args, i) => args[0] === true && sockets.has(spy.mock.contexts[i])).length;
    try {
      expect((await get(ownPort, { client: web })).status).toBe(200);
      expect(chainReads()).toBe(1);
      expect((await get(ownPort, { client: web })).status).toBe(200);
      expect((await get(ownPort, { client: web })).status).toBe(200);
      expect(chainReads()).toBe(1);
      expect((await get(ownPort, { client: db })).status).toBe(200);
      expect(chainReads()).toBe(2);
      // db's intermediate was verified with web's chain: only db's own signature is new.
      expect(v.stats()).toMatchObject({ misses: 2, signatureChecks: 3 });
    } finally {
      spy.mockRestore();
      await close(own);
    }
  });

  it("refuses a directory the agent has not published to", async () => {
    await expect(tlsOptionsFromDir(dir, { usage: "server" })).rejects.toEqual(
      stintError(
        "ERR_FILE",
        `nothing is published in ${dir} yet (no ..data link); start the agent and wait for its first certificate`,
      ),
    );
  });
});

describe("client options from the agent's directory", () => {
  it("present the client's SVID and check the server's SPIFFE ID", async () => {
    const clientOut = await AtomicDir.open(join(dir, "client-out"));
    await clientOut.publish(files(web, inter, root.pem));
    const client = await tlsOptionsFromDir(join(dir, "client-out"), { usage: "client", verifier: serverIds });
    try {
      expect(client.options.checkServerIdentity).toBeInstanceOf(Function);
      const r = await get(port, { options: client.options });
      expect(r).toMatchObject({ status: 200, body: { spiffeId: id("ns/prod/sa/web") } });
    } finally {
      client.close();
    }
  });
});

describe("requireSpiffeId in a real express app", () => {
  let app: https.Server;
  let appPort: number;
  beforeAll(async () => {
    const e = express();
    e.get("/whoami", requireSpiffeId(serverVerifier, id("ns/prod/sa/web")), (req, res) => {
      res.json({ spiffeId: req.spiffeId });
    });
    e.get("/any", requireSpiffeId(serverVerifier), (req, res) => {
      res.json({ spiffeId: req.spiffeId });
    });
    app = https.createServer(tlsDir.options, e);
    tlsDir.attach(app);
    appPort = await listen(app);
  });
  afterAll(() => close(app));

  it("lets an allowed client through and sets req.spiffeId", async () => {
    expect(await get(appPort, { client: web, path: "/whoami" })).toMatchObject({
      status: 200,
      body: { spiffeId: id("ns/prod/sa/web") },
    });
    expect(await get(appPort, { client: db, path: "/any" })).toMatchObject({
      status: 200,
      body: { spiffeId: id("ns/prod/sa/db") },
    });
  });

  it("answers 403 when the route's rules refuse a client the verifier accepts", async () => {
    expect(await get(appPort, { client: db, path: "/whoami" })).toEqual({
      status: 403,
      body: {
        error: "unauthorized",
        reason: `SPIFFE ID ${id("ns/prod/sa/db")} is not authorized here: no allow rule matches it`,
      },
      serverSan: expect.any(String),
    });
    expect(await get(appPort, { client: devWeb, path: "/any" })).toMatchObject({
      status: 403,
      body: { error: "unauthorized" },
    });
  });

  it("answers 401 without a client certificate, and on a connection that is not TLS", async () => {
    expect(await get(appPort, { path: "/whoami" })).toMatchObject({
      status: 401,
      body: { error: "no-certificate", reason: "the peer presented no certificate" },
    });
    const plain = createHttpServer((req, res) =>
      requireSpiffeId(serverVerifier)(req, res, () => res.end("{}")),
    );
    const plainPort = await listen(plain);
    try {
      const res = await fetch(`http://127.0.0.1:${plainPort}/`);
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({
        error: "no-certificate",
        reason: "this endpoint requires mutual TLS, and the connection is not TLS",
      });
    } finally {
      await close(plain);
    }
  });

  it("answers 503 while the revocation feed is stale", () => {
    expect(refusalStatus("revocation-unavailable")).toBe(503);
  });
});
