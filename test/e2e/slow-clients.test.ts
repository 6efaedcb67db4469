import { readFileSync, rmSync } from "node:fs";
import { get } from "node:https";
import * as net from "node:net";
import { join } from "node:path";
import * as tls from "node:tls";
import { type ServerProcess, startServer } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * Connections that stall in the TLS hello, the headers or the body, or idle
 * between keep-alive requests, are closed by a real `stint ca serve`; one
 * address cannot hold more than its share; good clients are served meanwhile.
 * Everything is counted (connections closed, requests answered, the refusal
 * metric); timers appear only as generous safety nets.
 */

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Far above the 1 s limits under test: reaching it means the server never closed the connection. */
const SAFETY_NET_MS = 20_000;

function endpoint(url: string): { host: string; port: number } {
  const { hostname, port } = new URL(url);
  return { host: hostname, port: Number(port) };
}

/** Resolves once the server has closed `socket`, with what it sent; rejects if the safety net is reached first. */
function closedByServer(socket: net.Socket, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept a connection open: ${what}`));
    }, SAFETY_NET_MS);
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("error", () => {}); // a reset is a close too
    socket.on("close", () => {
      clearTimeout(guard);
      resolve(Buffer.concat(chunks).toString("latin1"));
    });
  });
}

function rawTcp(url: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(endpoint(url), () => resolve(s));
    s.once("error", reject);
  });
}

function verifiedTls(url: string, ca: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ ...endpoint(url), ca, servername: "localhost" }, () => resolve(s));
    s.once("error", reject);
  });
}

function health(url: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(`${url}/health`, { ca, servername: "localhost", agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    }).on("error", reject);
  });
}

/** The refusal counter's values by reason, read from /metrics. */
function refusals(url: string, ca: string): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    get(`${url}/metrics`, { ca, servername: "localhost", agent: false }, (res) => {
      let body = "";
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () => {
        const counts: Record<string, number> = {};
        const series = /^stint_http_connections_refused_total\{listener="https",reason="(\w+)"\} (\d+)$/gm;
        for (const m of body.matchAll(series)) counts[m[1]!] = Number(m[2]);
        resolve(counts);
      });
    }).on("error", reject);
  });
}

/** A TLS record header announcing a 512-byte ClientHello, then only part of it. */
const HALF_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);

/** Writes one byte every `everyMs` until the server closes the socket: never idle, never finished. */
function trickle(socket: net.Socket, bytes: Buffer, everyMs: number): void {
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed) return;
    socket.write(bytes.subarray(i % bytes.length, (i % bytes.length) + 1));
    i++;
  }, everyMs);
  socket.once("close", () => clearInterval(timer));
}

describe("a CA with 1 s listener timeouts", () => {
  const dataDir = join(dir, "timeouts");
  let server: ServerProcess;
  let rootPem: string;

  beforeAll(async () => {
    server = await startServer(
      ["--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", "slow.example"],
      {
        STINT_HTTP_HANDSHAKE_TIMEOUT: "1s",
        STINT_HTTP_HEADERS_TIMEOUT: "1s",
        STINT_HTTP_BODY_TIMEOUT: "1s",
        STINT_HTTP_KEEP_ALIVE_TIMEOUT: "1s",
      },
    );
    rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  });
  afterAll(() => server.stop());

  it("closes connections stalled anywhere while good clients are served", async () => {
    const url = server.url;
    const stalled: Array<Promise<string>> = [];
    const hold = async (what: string, open: () => Promise<net.Socket>) => {
      const socket = await open();
      stalled.push(closedByServer(socket, what));
    };
    const EACH = 4;
    for (let i = 0; i < EACH; i++) {
      // In the TLS hello: silent, half a ClientHello, and a byte at a time (never idle for the tls module's own timer).
      await hold("silent TCP", () => rawTcp(url));
      await hold("half a ClientHello", async () => {
        const s = await rawTcp(url);
        s.write(HALF_HELLO);
        return s;
      });
      await hold("a ClientHello trickled", async () => {
        const s = await rawTcp(url);
        trickle(s, HALF_HELLO, 200);
        return s;
      });
      // After the handshake: no request, half the headers, headers trickled, half a body, idle keep-alive.
      await hold("no request", () => verifiedTls(url, rootPem));
      await hold("half the headers", async () => {
        const s = await verifiedTls(url, rootPem);
        s.write("GET /health HTTP/1.1\r\nHost: localhost\r\n");
        return s;
      });
      await hold("headers trickled", async () => {
        const s = await verifiedTls(url, rootPem);
        trickle(s, Buffer.from(`GET /health HTTP/1.1\r\nX-Slow: ${"a".repeat(1000)}`), 200);
        return s;
      });
      await hold("half a body", async () => {
        const s = await verifiedTls(url, rootPem);
        s.write(
          "POST /acme/new-account HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/jose+json\r\n" +
            'Content-Length: 100\r\n\r\n{"protected":',
        );
        return s;
      });
      await hold("idle keep-alive", async () => {
        const s = await verifiedTls(url, rootPem);
        s.write("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
        return s;
      });
    }

    // Good clients, while all of the above are held open.
    const answered: number[] = [];
    for (let i = 0; i < 5; i++) answered.push(await health(url, rootPem));
    expect(answered).toEqual([200, 200, 200, 200, 200]);

    const replies = await Promise.all(stalled);
    expect(replies).toHaveLength(8 * EACH);
    // The keep-alive connections got their answer before being closed; the others got no 2xx.
    const ok = replies.filter((r) => r.startsWith("HTTP/1.1 200"));
    expect(ok).toHaveLength(EACH);
    expect(await health(url, rootPem)).toBe(200);
    expect(await refusals(url, rootPem)).toEqual({ handshake_timeout: 3 * EACH });
    expect(server.child.exitCode).toBeNull();
    expect(server.logs().filter((l) => JSON.parse(l).level === "error")).toEqual([]);
  });

  it("stops on SIGTERM while a client holds a request open", async () => {
    // Node stops enforcing its request timeout once the server closes; the CA must not wait for this client forever.
    const s = await verifiedTls(server.url, rootPem);
    s.on("error", () => {});
    s.write("POST /acme/new-order HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{");
    const closed = closedByServer(s, "a request held across shutdown");
    expect(await server.stop()).toBe(0);
    await closed;
  });
});

describe("a CA with a cap of 4 connections per address", () => {
  const dataDir = join(dir, "cap");
  let server: ServerProcess;
  let rootPem: string;

  beforeAll(async () => {
    server = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      dataDir,
      "--trust-domain",
      "cap.example",
      "--http-max-connections-per-address",
      "4",
    ]);
    rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  });
  const held: tls.TLSSocket[] = [];
  afterAll(() => {
    for (const s of held) s.destroy();
    return server.stop();
  });

  it("closes connections over the cap at once and serves again below it", async () => {
    const url = server.url;
    for (let i = 0; i < 4; i++) held.push(await verifiedTls(url, rootPem));

    // Over the cap: closed before any handshake finishes (the timeouts here are the 10 s defaults).
    let handshakes = 0;
    const refused = await Promise.all(
      [1, 2, 3].map(() => {
        const s = tls.connect({ ...endpoint(url), ca: rootPem, servername: "localhost" }, () => handshakes++);
        return closedByServer(s, "a connection over the cap");
      }),
    );
    expect(refused).toEqual(["", "", ""]);
    expect(handshakes).toBe(0);
    await expect(health(url, rootPem)).rejects.toThrow();

    // Two slots freed (one for the client, one for the previous client's connection the server may still be
    // closing). Ended rather than destroyed: 'close' comes after the server's FIN, so the server let go of them.
    for (const freed of held.splice(0, 2)) {
      await new Promise<void>((resolve) => {
        freed.once("close", () => resolve());
        freed.end();
      });
    }
    expect(await health(url, rootPem)).toBe(200);
    expect(await refusals(url, rootPem)).toEqual({ per_address_limit: 4 });
    expect(server.child.exitCode).toBeNull();
  });
});
