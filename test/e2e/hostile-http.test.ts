import { readFileSync, rmSync } from "node:fs";
import { get } from "node:https";
import { join } from "node:path";
import * as tls from "node:tls";
import { type ServerProcess, startServer } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * Hostile request lines, sent byte for byte over verified TLS to a real
 * `stint ca serve`: each must get a 4xx or a closed connection, and the CA
 * must still answer /health afterwards. The first case ended the process
 * before issue 18 (an uncaught "Invalid URL" from the router).
 */

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What came back for one raw request: the status line's code (null when the server just closed) and the body. */
interface Reply {
  status: number | null;
  body: string;
}

/** Writes `bytes` on a fresh TLS connection and reads until the server closes it. */
function raw(url: string, ca: string, bytes: string): Promise<Reply> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = tls.connect({ host: hostname, port: Number(port), ca, servername: "localhost" }, () => {
      s.write(Buffer.from(bytes, "latin1"));
    });
    // A safety net only: the server's own timeouts (2 s here) must close every stalled request first.
    const guard = setTimeout(() => {
      s.destroy();
      reject(new Error(`the server kept the connection open: ${JSON.stringify(bytes.slice(0, 80))}`));
    }, 20_000);
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", () => {}); // a reset is one way of closing; judged by what was read
    s.on("close", () => {
      clearTimeout(guard);
      const text = Buffer.concat(chunks).toString("latin1");
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : null, body: text.slice(text.indexOf("\r\n\r\n") + 4) });
    });
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

const HEADERS = "Host: localhost\r\nConnection: close\r\n";
const getReq = (target: string) => `GET ${target} HTTP/1.1\r\n${HEADERS}\r\n`;
const post = (target: string, headers: string, body: string) =>
  `POST ${target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/jose+json\r\n${headers}\r\n${body}`;
const withHost = (host: string) => `GET /acme/directory HTTP/1.1\r\n${host}Connection: close\r\n\r\n`;

const CASES: ReadonlyArray<readonly [string, string]> = [
  ["the crash of issue 18: GET //%zz", getReq("//%zz")],
  ["a bad %-escape at the root", getReq("/%zz")],
  ["a truncated %-escape in an ACME id", getReq("/acme/order/%")],
  ["a bad %-escape in an admin path", getReq("/admin/entries/%zz")],
  ["a bad %-escape in the query", getReq("/acme/directory?x=%zz")],
  ["an empty first segment: //", getReq("//")],
  ["a scheme-relative target naming a host", getReq("//127.0.0.1/admin/entries")],
  [".. segments that would reach /health", getReq("/acme/../health")],
  [".. segments out of the admin API", getReq("/admin/../../etc/passwd")],
  ["%-encoded .. segments", getReq("/acme/%2e%2e/admin/entries")],
  ["a . segment", getReq("/acme/./directory")],
  ["backslashes", getReq("/acme\\..\\health")],
  ["an absolute-form target", getReq("https://127.0.0.1/acme/directory")],
  ["an absolute-form target with a broken host", getReq("https://[::1/admin/entries")],
  ["an authority-form CONNECT", "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n"],
  ["an asterisk-form OPTIONS", `OPTIONS * HTTP/1.1\r\n${HEADERS}\r\n`],
  ["a NUL in the path", getReq("/acme/\0directory")],
  ["control bytes in an admin path", getReq("/admin/entries\x01\x7f")],
  ["a NUL in a header value", `GET /acme/directory HTTP/1.1\r\n${HEADERS}X-Evil: a\0b\r\n\r\n`],
  ["a 64 kB ACME path", getReq(`/acme/${"a".repeat(65536)}`)],
  ["a 64 kB admin path", getReq(`/admin/entries/${"%41".repeat(21846)}`)],
  ["no Host on HTTP/1.1", withHost("")],
  ["a Host with a space", withHost("Host: local host\r\n")],
  ["a Host with a path", withHost("Host: localhost/admin\r\n")],
  ["a Host with a broken IPv6 literal", withHost("Host: [::1\r\n")],
  ["two Host headers", withHost("Host: localhost\r\nHost: evil.example\r\n")],
  [
    "two different Content-Lengths",
    post("/acme/new-account", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
  ],
  [
    "two equal Content-Lengths",
    post("/admin/entries", "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
  ],
  [
    "Content-Length and chunked together",
    post("/acme/new-order", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
  ],
  ["a negative Content-Length", post("/acme/new-account", "Content-Length: -1\r\n", "")],
  [
    "a chunked ACME body that never ends",
    post("/acme/new-account", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n"),
  ],
  [
    "a chunked admin body that never ends",
    post("/admin/entries", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n"),
  ],
  [
    "a chunk size that is not hex",
    post("/acme/new-account", "Transfer-Encoding: chunked\r\n", "zz\r\nhi\r\n0\r\n\r\n"),
  ],
  ["a request line that is not HTTP", "\x16\x03\x01\x00\x05garbage\r\n\r\n"],
  ["an HTTP/2 preface over HTTP/1.1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
  ["an unknown HTTP version", "GET /acme/directory HTTP/9.9\r\nHost: localhost\r\n\r\n"],
];

describe("a CA sent hostile request lines", () => {
  const dataDir = join(dir, "ca");
  let server: ServerProcess;
  let rootPem: string;

  beforeAll(async () => {
    server = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      dataDir,
      "--trust-domain",
      "hostile.example",
      // Short, so requests that never finish are cut off quickly; the defaults are 10 s and 30 s.
      "--http-headers-timeout",
      "2s",
      "--http-body-timeout",
      "2s",
    ]);
    rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  });
  afterAll(() => server.stop());

  it("answers a well-formed raw request, so the refusals below are not the helper's doing", async () => {
    const reply = await raw(server.url, rootPem, getReq("/acme/directory"));
    expect(reply.status).toBe(200);
  });

  it.each(CASES)("%s: gets a 4xx or a closed connection, and /health still answers", async (_name, bytes) => {
    const reply = await raw(server.url, rootPem, bytes);
    if (reply.status !== null) {
      expect(reply.status).toBeGreaterThanOrEqual(400);
      expect(reply.status).toBeLessThan(500);
    }
    expect(server.child.exitCode).toBeNull();
    expect(await health(server.url, rootPem)).toBe(200);
  });

  it("refuses bad targets with a malformed problem document", async () => {
    const reply = await raw(server.url, rootPem, getReq("//%zz"));
    expect(reply.status).toBe(400);
    const dots = await raw(server.url, rootPem, getReq("/acme/../health"));
    expect(JSON.parse(dots.body)).toEqual({
      type: "urn:ietf:params:acme:error:malformed",
      detail: "the request target has . or .. segments",
      status: 400,
    });
  });

  it("logged no internal error and no uncaught exception for any of them", () => {
    const logs = server.logs().map((l) => JSON.parse(l));
    expect(logs.filter((l) => l.level === "error")).toEqual([]);
  });
});
