import type { IncomingHttpHeaders } from "node:http";
import { request } from "node:https";

export interface HttpsAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

/**
 * One HTTPS request to a test's CA on a fresh connection (no keep-alive
 * agent): `ca` to trust its server certificate, `client` a TLS client
 * credential, `json` a body sent as application/json, `body` any other body
 * with its `headers`.
 */
export function httpsCall(
  url: string | URL,
  opts: {
    method?: string;
    ca: string;
    client?: { cert: string | Buffer; key: string | Buffer } | null;
    json?: unknown;
    body?: string;
    headers?: Record<string, string>;
  },
): Promise<HttpsAnswer> {
  const body = opts.json === undefined ? opts.body : JSON.stringify(opts.json);
  const headers =
    opts.json === undefined ? (opts.headers ?? {}) : { "content-type": "application/json", ...opts.headers };
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: opts.method ?? "GET", ca: opts.ca, agent: false, ...(opts.client ?? {}), headers },
      (res) => {
        let text = "";
        res.on("data", (d) => {
          text += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}
