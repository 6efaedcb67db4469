import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { request } from "node:https";
import { join } from "node:path";
import { bundlePem } from "../ca/bundle";
import { openStore } from "../ca/store/open";
import { type ErrorCode, StintError } from "../common/errors";
import { parsePemBlocks } from "../formats/pem";
import { readSavedCa } from "./bootstrap";
import type { CaConfig } from "./ca-config";
import type { Options } from "./command";
import { caFlagOptions, caHelp, loadConfigFromFlags } from "./context";

/**
 * The client side of the admin API (acme/admin.ts), shared by `stint entry`,
 * `token`, `cert` and `audit`: where the server is, what to trust, and the
 * admin credential to present. Server problems become one-line StintErrors.
 */

/** The admin credential's files inside the data directory (written by `ca init` and `ca admin-cert`). */
export const ADMIN_DIR = "admin";
export function adminFiles(dir: string) {
  return { dir, cert: join(dir, "cert.pem"), key: join(dir, "key.pem"), bundle: join(dir, "bundle.pem") };
}

const ADMIN_FLAGS = {
  server: { type: "string" },
  "admin-dir": { type: "string" },
  "ca-file": { type: "string" },
} as const;

const ADMIN_FLAGS_HELP =
  "  --server URL               the CA's HTTPS address (default: saved by `stint ca bootstrap`, else\n" +
  "                             from listen, e.g. https://127.0.0.1:8443)\n" +
  "  --admin-dir DIR            admin credential (cert.pem, key.pem) (default <dataDir>/admin)\n" +
  "  --ca-file FILE             roots to trust for the server, e.g. <admin-dir>/bundle.pem when the\n" +
  "                             store is not at hand (default: the root `stint ca bootstrap` saved,\n" +
  "                             else the roots in the CA's store)";

/** Flags of an admin command: its own, the admin connection flags, and the CA settings (dataDir, listen, store). */
export const adminFlagOptions = (own: Options): Options => caFlagOptions({ ...ADMIN_FLAGS, ...own });

export function adminHelp(usage: string, about: string, ownFlags: string): string {
  return caHelp(
    usage,
    `${about}\nTalks to a running \`stint ca serve\` over HTTPS with the admin client certificate.`,
    ownFlags ? `${ownFlags}\n${ADMIN_FLAGS_HELP}` : ADMIN_FLAGS_HELP,
  );
}

type FlagValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

const REQUEST_TIMEOUT_MS = 30_000;
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

export class AdminClient {
  private constructor(
    readonly origin: string,
    private readonly tls: { ca: string; cert: string; key: string },
  ) {}

  static async fromFlags(values: FlagValues): Promise<AdminClient> {
    const cfg = loadConfigFromFlags(values);
    // A CA saved by `stint ca bootstrap` comes before the CA host's own defaults; flags before both.
    const saved = await readSavedCa();
    const origin = values.server
      ? serverOrigin(values.server as string)
      : (saved?.caUrl ?? originFromListen(cfg.listen));
    const dir = (values["admin-dir"] as string | undefined) ?? join(cfg.dataDir, ADMIN_DIR);
    const { cert, key } = await readCredential(dir);
    const ca = values["ca-file"]
      ? await readText(values["ca-file"] as string, "CA file")
      : (saved?.rootPem ?? (await storeRoots(cfg)));
    return new AdminClient(origin, { ca, cert, key });
  }

  get<T>(path: string, query: Record<string, string | undefined> = {}): Promise<T> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, v);
    const qs = q.toString();
    return this.send<T>("GET", qs ? `${path}?${qs}` : path);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.send<T>("POST", path, JSON.stringify(body));
  }

  delete<T>(path: string): Promise<T> {
    return this.send<T>("DELETE", path);
  }

  private send<T>(method: string, path: string, body?: string): Promise<T> {
    const url = new URL(path, this.origin);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          ...this.tls,
          agent: false,
          timeout: REQUEST_TIMEOUT_MS,
          headers: {
            accept: "application/json",
            ...(body === undefined
              ? {}
              : { "content-type": "application/json", "content-length": Buffer.byteLength(body) }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy(
                new StintError(
                  "ERR_CONNECTION",
                  `the CA's answer is larger than ${MAX_RESPONSE_BYTES} bytes`,
                ),
              );
              return;
            }
            chunks.push(chunk);
          });
          res.on("end", () => {
            try {
              resolve(answer<T>(res.statusCode ?? 0, Buffer.concat(chunks).toString("utf8"), url));
            } catch (err) {
              reject(err);
            }
          });
          res.on("error", (err) => reject(this.networkError(err)));
        },
      );
      req.on("timeout", () =>
        req.destroy(
          new StintError(
            "ERR_CONNECTION",
            `the CA at ${this.origin} did not answer within ${REQUEST_TIMEOUT_MS / 1000}s`,
          ),
        ),
      );
      req.on("error", (err) => reject(this.networkError(err)));
      req.end(body);
    });
  }

  private networkError(err: unknown): StintError {
    if (err instanceof StintError) return err;
    const code = String((err as NodeJS.ErrnoException).code ?? "");
    const host = new URL(this.origin).hostname;
    if (code === "ECONNREFUSED") {
      return new StintError(
        "ERR_CONNECTION",
        `cannot reach the CA at ${this.origin}; is \`stint ca serve\` running?`,
      );
    }
    if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
      return new StintError(
        "ERR_CONNECTION",
        `the CA's HTTPS certificate does not name ${host}; use --server with one of its serverNames`,
      );
    }
    if (/CERT|SIGNATURE|ISSUER/.test(code)) {
      return new StintError(
        "ERR_CONNECTION",
        `the server at ${this.origin} is not this CA: its certificate does not verify against the trusted roots (${code}); check --server and --ca-file`,
      );
    }
    const why = code || (err instanceof Error ? err.message : String(err));
    return new StintError(
      "ERR_CONNECTION",
      `cannot reach the CA at ${this.origin} (${why}); is \`stint ca serve\` running there?`,
    );
  }
}

/** The JSON of a 2xx answer; a problem document becomes one line naming the server's detail. */
function answer<T>(status: number, text: string, url: URL): T {
  let json: unknown;
  try {
    json = text === "" ? {} : JSON.parse(text);
  } catch {
    throw new StintError(
      "ERR_CONNECTION",
      `the server answered ${url.pathname} with ${status} and no JSON; is it a Stint CA?`,
    );
  }
  if (status >= 200 && status < 300) return json as T;
  const detail = (json as { detail?: unknown }).detail;
  const type = String((json as { type?: unknown }).type ?? "").replace(/^urn:ietf:params:acme:error:/, "");
  throw new StintError(
    problemCode(status, type),
    typeof detail === "string" ? detail : `the CA answered ${url.pathname} with HTTP ${status}`,
  );
}

function problemCode(status: number, type: string): ErrorCode {
  if (type === "alreadyRevoked") return "ERR_ALREADY_REVOKED";
  if (status === 401 || status === 403) return "ERR_UNAUTHORIZED";
  if (status === 404) return "ERR_NOT_FOUND";
  if (status === 409) return "ERR_STORE_CONFLICT";
  return "ERR_MALFORMED";
}

function serverOrigin(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new StintError("ERR_USAGE", `--server "${text}" is not a URL; e.g. https://127.0.0.1:8443`);
  }
  if (url.protocol !== "https:")
    throw new StintError("ERR_USAGE", `--server must be an https:// URL (got ${text})`);
  return url.origin;
}

/** The server's address from its `listen` setting; a wildcard address is reached on loopback. */
export function originFromListen(listen: string): string {
  const at = listen.lastIndexOf(":");
  const host = listen.slice(0, at).replace(/^\[|\]$/g, "");
  const port = listen.slice(at + 1);
  if (port === "0") {
    throw new StintError(
      "ERR_USAGE",
      `listen ${listen} picks a free port; give the server's address with --server`,
    );
  }
  const reach = host === "" || host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `https://${reach.includes(":") ? `[${reach}]` : reach}:${port}`;
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StintError("ERR_FILE", `cannot read ${what} ${path} (${code ?? String(err)})`);
  }
}

/** The admin certificate and key; refuses locally, with the fix, when they are missing or expired. */
async function readCredential(dir: string, now = new Date()): Promise<{ cert: string; key: string }> {
  const files = adminFiles(dir);
  let cert: string;
  let key: string;
  try {
    [cert, key] = await Promise.all([readFile(files.cert, "utf8"), readFile(files.key, "utf8")]);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StintError(
      "ERR_FILE",
      code === "ENOENT"
        ? `no admin credential in ${dir} (cert.pem and key.pem); run \`stint ca admin-cert\` on the CA host`
        : `cannot read the admin credential in ${dir} (${code ?? String(err)})`,
    );
  }
  const leaf = parsePemBlocks(cert).find((b) => b.label === "CERTIFICATE");
  if (!leaf)
    throw new StintError("ERR_PEM", `${files.cert} holds no certificate; run \`stint ca admin-cert\``);
  let notAfter: Date;
  try {
    notAfter = new Date(new X509Certificate(leaf.der).validTo);
  } catch {
    throw new StintError(
      "ERR_PEM",
      `${files.cert} is not a readable certificate; run \`stint ca admin-cert\``,
    );
  }
  if (notAfter <= now) {
    throw new StintError(
      "ERR_UNAUTHORIZED",
      `admin certificate expired; run \`stint ca admin-cert\` (it expired at ${notAfter.toISOString()})`,
    );
  }
  return { cert, key };
}

/** The roots verifiers trust, read from the store as /bundle.pem serves them (no passphrase needed). */
async function storeRoots(cfg: CaConfig): Promise<string> {
  const store = await openStore(cfg.dataDir, { url: cfg["store.url"] });
  try {
    const pem = bundlePem(await store.listIssuers());
    if (pem === "") throw new StintError("ERR_NOT_INITIALIZED", `the store in ${cfg.dataDir} holds no root`);
    return pem;
  } finally {
    await store.close();
  }
}

/** A concrete path from a pattern with one `:param` segment, e.g. /admin/entries/:id. */
export function pathWith(pattern: string, value: string): string {
  return pattern.replace(/:[a-z]+/, encodeURIComponent(value));
}

/** Columns padded to their widest cell; the last column is not padded. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  return rows
    .map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  "))
    .join("\n");
}
