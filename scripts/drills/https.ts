import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { type Agent, request as httpsRequest } from "node:https";
import { performance } from "node:perf_hooks";
import * as tls from "node:tls";

/**
 * The drills' HTTPS client: one request, its status, headers, body and how
 * long it took, with the roots and (optionally) client certificate given.
 * No retries and no interpretation: drills judge what came back.
 */

export interface Reply {
  /** 0 when no HTTP response came (refused, reset, timed out). */
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  ms: number;
  /** Why there was no response, when status is 0. */
  error?: string;
}

export interface RequestOptions {
  method?: string;
  headers?: OutgoingHttpHeaders;
  body?: string | Buffer;
  ca: string;
  cert?: string;
  key?: string;
  /** A keep-alive agent; by default each request has its own connection. */
  agent?: Agent;
  timeoutMs?: number;
}

export function request(url: string, opts: RequestOptions): Promise<Reply> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: Omit<Reply, "ms">) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...r, ms: performance.now() - t0 });
    };
    const req = httpsRequest(
      url,
      {
        method: opts.method ?? "GET",
        headers: opts.headers,
        ca: opts.ca,
        ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
        agent: opts.agent ?? false,
        servername: "localhost",
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on("error", (err) =>
          finish({ status: 0, headers: {}, body: Buffer.alloc(0), error: err.message }),
        );
      },
    );
    const timer = setTimeout(() => req.destroy(new Error("no answer in time")), opts.timeoutMs ?? 30_000);
    req.on("error", (err) => finish({ status: 0, headers: {}, body: Buffer.alloc(0), error: err.message }));
    req.end(opts.body);
  });
}

export interface Problem {
  type: string;
  detail: string;
  status: number;
}

/**
 * The RFC 7807 problem document of a reply, or null when it is not one: the
 * media type application/problem+json, a JSON object with a string `type`
 * and `detail`, and a `status` equal to the HTTP status.
 */
export function problemOf(reply: Pick<Reply, "status" | "headers" | "body">): Problem | null {
  const type = String(reply.headers["content-type"] ?? "");
  if (!type.startsWith("application/problem+json")) return null;
  let doc: unknown;
  try {
    doc = JSON.parse(reply.body.toString("utf8"));
  } catch {
    return null;
  }
  if (typeof doc !== "object" || doc === null) return null;
  const p = doc as Record<string, unknown>;
  if (typeof p.type !== "string" || typeof p.detail !== "string" || p.status !== reply.status) return null;
  return { type: p.type, detail: p.detail, status: p.status };
}

/** GET /health on a fresh connection: the status (0 when unreachable) and how long it took. */
export async function health(url: string, ca: string, timeoutMs = 10_000): Promise<Reply> {
  return request(`${url}/health`, { ca, timeoutMs });
}

/**
 * Raw bytes over one verified TLS connection, read until the server closes
 * it (or `timeoutMs`): for requests an HTTP client will not send.
 */
export function rawExchange(
  url: string,
  ca: string,
  bytes: Buffer,
  timeoutMs = 20_000,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer; closedByServer: boolean }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let timedOut = false;
    const s = tls.connect({ host: hostname, port: Number(port), ca, servername: "localhost" }, () =>
      s.write(bytes),
    );
    const guard = setTimeout(() => {
      timedOut = true;
      s.destroy();
    }, timeoutMs);
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", () => {}); // a reset is one way of closing; judged by what was read
    s.on("close", () => {
      clearTimeout(guard);
      resolve({ ...parseResponse(Buffer.concat(chunks)), closedByServer: !timedOut });
    });
  });
}

/** Status, headers and body of the first HTTP/1.x response in `raw` (status 0 when there is none). */
export function parseResponse(raw: Buffer): { status: number; headers: IncomingHttpHeaders; body: Buffer } {
  const text = raw.toString("latin1");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  if (!m) return { status: 0, headers: {}, body: Buffer.alloc(0) };
  const end = text.indexOf("\r\n\r\n");
  const headers: IncomingHttpHeaders = {};
  for (const line of text
    .slice(0, end < 0 ? text.length : end)
    .split("\r\n")
    .slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  let body = end < 0 ? Buffer.alloc(0) : raw.subarray(end + 4);
  const length = Number(headers["content-length"]);
  if (Number.isInteger(length) && length < body.length) body = body.subarray(0, length);
  return { status: Number(m[1]), headers, body };
}
