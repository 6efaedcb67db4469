import { readFileSync, rmSync } from "node:fs";
import { get } from "node:https";
import * as net from "node:net";
import { join } from "node:path";
import * as tls from "node:tls";
import { freePort } from "../helpers/agent";
import { type ServerProcess, startServer } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * What node's HTTP parser refuses before any handler runs (broken framing,
 * headers too large, a request that never arrives in full) is answered with
 * a problem document like every other refusal, on the HTTPS and the plain
 * CRL listener alike; found by the hostile-input drill, where these were
 * bare status lines. A client still sending headers that are too large gets
 * the answer, not a reset.
 */

const dir = tempDir("stint-parser-errors-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Answer {
  status: number | null;
  contentType: string | undefined;
  body: string;
}

/** Writes `bytes` on a new connection (TLS unless `plain`) and reads until the server closes it. */
function raw(url: string, bytes: string, opts: { ca?: string; plain?: boolean } = {}): Promise<Answer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = opts.plain
      ? net.connect({ host: hostname, port: Number(port) }, () => s.write(Buffer.from(bytes, "latin1")))
      : tls.connect({ host: hostname, port: Number(port), ca: opts.ca, servername: "localhost" }, () =>
          s.write(Buffer.from(bytes, "latin1")),
        );
    // A safety net only: the server's own timeouts (1 s here) close every request first.
    const guard = setTimeout(() => {
      s.destroy();
      reject(new Error(`the server kept the connection open: ${JSON.stringify(bytes.slice(0, 60))}`));
    }, 20_000);
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", () => {}); // judged by what was read
    s.on("close", () => {
      clearTimeout(guard);
      const text = Buffer.concat(chunks).toString("latin1");
      const head = text.slice(0, Math.max(0, text.indexOf("\r\n\r\n")));
      resolve({
        status: /^HTTP\/1\.1 (\d{3})/.test(text) ? Number(text.slice(9, 12)) : null,
        contentType: /\r\ncontent-type: ([^\r]+)/i.exec(head)?.[1],
        body: text.slice(head.length + 4),
      });
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

const HOST = "Host: localhost\r\n";
const pad = (kib: number) =>
  Array.from({ length: kib }, (_, i) => `X-Pad-${i}: ${"a".repeat(1000)}\r\n`).join("");

const CASES: ReadonlyArray<readonly [string, string, number, RegExp]> = [
  ["headers over node's 16 KiB", `GET /health HTTP/1.1\r\n${HOST}${pad(20)}\r\n`, 431, /headers are larger/],
  [
    "two Content-Lengths",
    `POST /acme/new-account HTTP/1.1\r\n${HOST}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
    400,
    /not valid HTTP\/1\.1/,
  ],
  [
    "a chunk size that is not hex",
    `POST /admin/entries HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n`,
    400,
    /not valid HTTP\/1\.1/,
  ],
  ["bytes that are not HTTP", "\x16\x03\x01\x00\x05garbage\r\n\r\n", 400, /not valid HTTP\/1\.1/],
  ["an unknown HTTP version", `GET /acme/directory HTTP/9.9\r\n${HOST}\r\n`, 400, /not valid HTTP\/1\.1/],
  ["headers never finished", `GET /health HTTP/1.1\r\n${HOST}X-Slow: `, 408, /did not arrive in time/],
];

const expectProblem = (a: Answer, status: number, detail: RegExp) => {
  expect(a.status).toBe(status);
  expect(a.contentType).toBe("application/problem+json");
  expect(JSON.parse(a.body)).toEqual({
    type: "urn:ietf:params:acme:error:malformed",
    detail: expect.stringMatching(detail),
    status,
  });
};

describe("a CA whose parser refuses requests", () => {
  const dataDir = join(dir, "ca");
  let server: ServerProcess;
  let rootPem: string;
  let crlUrl: string;

  beforeAll(async () => {
    const crlPort = await freePort();
    crlUrl = `http://127.0.0.1:${crlPort}`;
    server = await startServer(
      ["--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", "parser.example"].concat([
        "--crl-http-listen",
        `127.0.0.1:${crlPort}`,
      ]),
      { STINT_HTTP_HEADERS_TIMEOUT: "1s", STINT_HTTP_BODY_TIMEOUT: "1s" },
    );
    rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  });
  afterAll(() => server.stop());

  it.each(CASES)(
    "%s: a problem document, and /health still answers",
    async (_name, bytes, status, detail) => {
      expectProblem(await raw(server.url, bytes, { ca: rootPem }), status, detail);
      expect(await health(server.url, rootPem)).toBe(200);
    },
  );

  // Not the bad chunk: that listener refuses a POST (405) before reading its body, so that answer comes first.
  const crlCases = CASES.filter(([name]) => !name.includes("chunk"));
  it.each(crlCases)(
    "%s on the plain CRL listener: the same problem document",
    async (_name, bytes, status, detail) => {
      expectProblem(await raw(crlUrl, bytes, { plain: true }), status, detail);
    },
  );

  it("answers a client still sending 4 MiB of headers, every time, rather than resetting it", async () => {
    // Closed at once (node's way), the unread megabytes make the kernel reset the connection,
    // and the reset discards the 431 before the client reads it: 0 of 10 arrived that way.
    const big = `GET /health HTTP/1.1\r\n${HOST}${pad(4000)}\r\n`;
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => raw(server.url, big, { ca: rootPem })),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(431));
  });

  it("logged no error for any of them", () => {
    expect(server.logs().filter((l) => JSON.parse(l).level === "error")).toEqual([]);
  });
});
