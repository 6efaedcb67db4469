import { Agent, request } from "node:https";
import { StintError } from "../../common/errors";

/**
 * The CA's agent API (docs/acme.md "Node agents"), authenticated by the node
 * agent's own X.509-SVID as the TLS client certificate: the CA serves only
 * the entries parented to that ID and signs only for them.
 */

export interface WorkloadEntry {
  id: string;
  spiffeId: string;
  selectors: string[];
  ttlSeconds: number | null;
  dnsNames: string[];
}

export type SvidResult =
  | { entryId: string; spiffeId: string; certificateChain: string; notAfter: string; renewAfter: string }
  | { entryId: string; error: { type?: string; detail?: string } };

export interface JwtSvid {
  token: string;
  spiffeId: string;
  expiresAt: string;
}

/** The node agent's current credentials and trust, read fresh for every request (they rotate). */
export interface AgentCredentials {
  chainPem: string;
  keyPem: string;
  rootsPem: string;
}

const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;
const TIMEOUT_MS = 15_000;

export class AgentApiClient {
  private pool: { key: string; agent: Agent } | null = null;

  constructor(
    private readonly caUrl: string,
    private readonly credentials: () => Promise<AgentCredentials | null>,
  ) {}

  async entries(): Promise<{ entries: WorkloadEntry[]; revision: string }> {
    const body = (await this.call("GET", "/agent/v1/entries")) as { entries?: unknown; revision?: unknown };
    if (!Array.isArray(body.entries)) throw malformed("entries");
    return { entries: body.entries as WorkloadEntry[], revision: String(body.revision ?? "") };
  }

  async x509Svids(requests: { entryId: string; csr: string }[]): Promise<SvidResult[]> {
    const body = (await this.call("POST", "/agent/v1/x509-svids", { requests })) as { svids?: unknown };
    if (!Array.isArray(body.svids)) throw malformed("x509-svids");
    return body.svids as SvidResult[];
  }

  async jwtSvid(entryId: string, audience: string[]): Promise<JwtSvid> {
    const body = (await this.call("POST", "/agent/v1/jwt-svids", { entryId, audience })) as Partial<JwtSvid>;
    if (typeof body.token !== "string" || typeof body.expiresAt !== "string") throw malformed("jwt-svids");
    return body as JwtSvid;
  }

  /** The SPIFFE bundle document (JWT keys among them); no client certificate needed. */
  async bundleJson(): Promise<unknown> {
    return this.call("GET", "/bundle.json");
  }

  close(): void {
    this.pool?.agent.destroy();
    this.pool = null;
  }

  private async call(method: string, path: string, json?: unknown): Promise<unknown> {
    const creds = await this.credentials();
    if (creds === null)
      throw new StintError("ERR_CONNECTION", "the node agent holds no certificate of its own yet");
    const key = creds.chainPem + creds.rootsPem;
    if (this.pool?.key !== key) {
      this.pool?.agent.destroy();
      this.pool = {
        key,
        agent: new Agent({ keepAlive: true, cert: creds.chainPem, key: creds.keyPem, ca: creds.rootsPem }),
      };
    }
    const url = new URL(path, this.caUrl);
    const payload = json === undefined ? undefined : Buffer.from(JSON.stringify(json));
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          agent: this.pool!.agent,
          timeout: TIMEOUT_MS,
          headers: payload ? { "content-type": "application/json", "content-length": payload.length } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_RESPONSE_BYTES) req.destroy(new Error(`${path} answered more than 8 MiB`));
            else chunks.push(c);
          });
          res.on("error", reject);
          res.on("end", () => {
            let body: unknown;
            try {
              body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
            } catch {
              reject(malformed(path, res.statusCode));
              return;
            }
            if (res.statusCode === 200) resolve(body);
            else reject(problemError(path, res.statusCode ?? 0, body as { type?: string; detail?: string }));
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
      req.on("error", (err) =>
        reject(
          new StintError("ERR_CONNECTION", `${method} ${url.origin}${path}: ${err.message}`, { cause: err }),
        ),
      );
      req.end(payload);
    });
  }
}

const malformed = (what: string, status?: number) =>
  new StintError(
    "ERR_MALFORMED",
    `the CA's ${what} answer${status ? ` (HTTP ${status})` : ""} is not what the agent API promises`,
  );

/** Problem documents become typed errors: unauthorized (the agent's own certificate), rejectedIdentifier (not our entry). */
function problemError(path: string, status: number, p: { type?: string; detail?: string }): StintError {
  const type = String(p?.type ?? "").replace("urn:ietf:params:acme:error:", "");
  const message = `the CA refused ${path} (HTTP ${status}${type ? `, ${type}` : ""})${p?.detail ? `: ${p.detail}` : ""}`;
  switch (type) {
    case "unauthorized":
      return new StintError("ERR_UNAUTHORIZED", message);
    case "rejectedIdentifier":
      return new StintError("ERR_REJECTED_IDENTIFIER", message);
    case "badCSR":
      return new StintError("ERR_BAD_CSR", message);
    default:
      return new StintError(status >= 500 ? "ERR_CONNECTION" : "ERR_MALFORMED", message);
  }
}
