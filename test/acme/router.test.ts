import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { parseTarget, Router } from "../../acme/router";
import { StintError } from "../../common/errors";
import { createLogger } from "../../common/logger";

/** The router is the request boundary: whatever routing or a handler throws becomes a problem document. */

const SECRET = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----";

let server: Server;
let base: string;
const lines: string[] = [];

beforeAll(async () => {
  const log = createLogger({ component: "test", stream: { write: (l: string) => lines.push(l) } });
  const router = new Router(log)
    .on("GET", "/sync", () => {
      throw new TypeError("a bug in a handler");
    })
    .on("GET", "/async", async () => {
      await Promise.resolve();
      throw new Error("a rejected handler");
    })
    .on("GET", "/secret", () => {
      throw { privateKey: SECRET };
    })
    .on("GET", "/typed", () => {
      throw new StintError("ERR_RATE_LIMITED", "slow down");
    })
    .on("GET", "/half", async (_req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      // Flushed, so the client has the headers before the failure.
      await new Promise<void>((r) => res.write("partial", () => r()));
      throw new Error("failed after the headers went out");
    })
    .on("GET", "/ok/:id", (_req, res, _url, params) => {
      res.end(params.id);
    });
  server = createServer(router.handle);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));
beforeEach(() => {
  lines.length = 0;
});

function fetch(path: string): Promise<{ status: number; body: string; complete: boolean }> {
  return new Promise((resolve, reject) => {
    request(`${base}${path}`, { agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete }));
      res.on("error", () => resolve({ status: res.statusCode ?? 0, body, complete: false }));
    })
      .on("error", reject)
      .end();
  });
}

describe("the router's boundary", () => {
  it.each(["/sync", "/async"])(
    "turns an exception in %s into serverInternal, logged once under its id",
    async (path) => {
      const res = await fetch(path);
      expect(res.status).toBe(500);
      const problem = JSON.parse(res.body);
      expect(problem).toMatchObject({ type: "urn:ietf:params:acme:error:serverInternal", status: 500 });
      const id = /under id ([0-9a-f]{12})$/.exec(problem.detail)?.[1];
      expect(id).toBeDefined();
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0]!)).toMatchObject({
        level: "error",
        msg: "request failed",
        errorId: id,
        method: "GET",
        route: path,
      });
      // Still serving.
      expect(await fetch("/ok/abc")).toMatchObject({ status: 200, body: "abc" });
    },
  );

  it("never logs key material thrown with an error", async () => {
    expect((await fetch("/secret")).status).toBe(500);
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain("PRIVATE KEY");
  });

  it("maps typed errors to their problem without logging them", async () => {
    const res = await fetch("/typed");
    expect(res.status).toBe(429);
    expect(JSON.parse(res.body)).toMatchObject({ type: "urn:ietf:params:acme:error:rateLimited" });
    expect(lines).toEqual([]);
  });

  it("drops the connection when a handler fails after its headers went out", async () => {
    const res = await fetch("/half");
    expect(res.status).toBe(200);
    expect(res.complete).toBe(false);
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(["request failed after its response started"]);
    expect(await fetch("/ok/x")).toMatchObject({ status: 200, body: "x" });
  });

  it("decodes parameters and refuses targets it cannot route safely", async () => {
    expect(await fetch("/ok/a%20b")).toMatchObject({ status: 200, body: "a b" });
    const bad = await fetch("/ok/%zz");
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).type).toBe("urn:ietf:params:acme:error:malformed");
    expect(lines).toEqual([]);
  });
});

describe("parseTarget", () => {
  it.each([
    ["/acme/directory", "/acme/directory", ""],
    ["/feed?since=12&wait=1", "/feed", "?since=12&wait=1"],
    ["//", "//", ""],
    // Looks scheme-relative, but is a path with an empty first segment: never a host.
    ["//evil.example/x", "//evil.example/x", ""],
    ["/a%2Fb", "/a%2Fb", ""],
    ["/acme/acct/x..y", "/acme/acct/x..y", ""],
  ])("accepts the origin-form %s", (target, pathname, search) => {
    const url = parseTarget(target);
    expect([url.host, url.pathname, url.search]).toEqual(["stint.invalid", pathname, search]);
  });

  it.each([
    ["//%zz", "characters or %-escapes"],
    ["/a/%", "characters or %-escapes"],
    ["/a?b=%g0", "characters or %-escapes"],
    ["/a/../b", ". or .."],
    ["/a/%2E%2e/b", ". or .."],
    ["/a/./b", ". or .."],
    ["/a\\b", "characters or %-escapes"],
    ["/a#frag", "characters or %-escapes"],
    ["/\u00e9", "characters or %-escapes"],
    ["https://ca.example/acme/directory", "origin-form"],
    ["ca.example:443", "origin-form"],
    ["*", "origin-form"],
    ["", "origin-form"],
  ])("refuses %j", (target, why) => {
    expect(() => parseTarget(target)).toThrow(expect.objectContaining({ code: "ERR_MALFORMED" }));
    expect(() => parseTarget(target)).toThrow(why);
  });
});
