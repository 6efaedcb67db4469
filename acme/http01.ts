import { request } from "node:http";
import { StintError } from "../common/errors";

/**
 * The http-01 validation request (RFC 8555 8.3): GET
 * http://<domain>/.well-known/acme-challenge/<token> and compare the body with
 * the key authorization. The port and the address connected to are settings
 * (acme.http01.port, acme.http01.resolveTo) so tests and local setups can
 * answer without owning port 80 or DNS, as pebble's challenge server allows.
 * Redirects are not followed: internal workloads answer directly.
 */

/** A key authorization is ~87 characters; anything much longer is not one. */
const MAX_RESPONSE_BYTES = 4096;

export interface Http01Target {
  domain: string;
  token: string;
  /** Connect here instead of resolving the domain; null resolves it. */
  resolveTo: string | null;
  port: number;
  timeoutMs: number;
}

export function fetchKeyAuthorization(t: Http01Target): Promise<string> {
  const where = `http://${t.domain}${t.port === 80 ? "" : `:${t.port}`}/.well-known/acme-challenge/${t.token}`;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: t.resolveTo ?? t.domain,
        port: t.port,
        path: `/.well-known/acme-challenge/${t.token}`,
        headers: { host: t.domain, "user-agent": "stint-ca http-01 validator" },
        timeout: t.timeoutMs,
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(
            new StintError("ERR_INCORRECT_RESPONSE", `${where} answered HTTP ${res.statusCode}, not 200`),
          );
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy();
            reject(
              new StintError(
                "ERR_INCORRECT_RESPONSE",
                `${where} answered more than ${MAX_RESPONSE_BYTES} bytes`,
              ),
            );
            return;
          }
          chunks.push(chunk);
        });
        res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        res.on("error", (err) => reject(connectionError(where, err)));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${t.timeoutMs} ms`)));
    req.on("error", (err) => reject(connectionError(where, err)));
    req.end();
  });
}

function connectionError(where: string, err: Error): StintError {
  return new StintError("ERR_CONNECTION", `could not fetch ${where}: ${err.message}`);
}
