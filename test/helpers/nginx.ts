import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";

/**
 * Debian's nginx (nginx-light), started by a test on loopback as the
 * independent mTLS server that checks client certificates against CRLs
 * (OpenSSL underneath, with CRL_CHECK | CRL_CHECK_ALL, as `ssl_crl` sets).
 * Everything it writes stays in the test's directory; it runs in the
 * foreground (`daemon off`) as the test's child, so the test can always stop it.
 */

export const NGINX = "/usr/sbin/nginx";

/** One mTLS server block: client certificates required, checked against `clientCa` and `crl` (when set). */
export interface MtlsServer {
  port: number;
  cert: string;
  key: string;
  clientCa: string;
  /** CRLs to check every certificate of a client's chain against; none checked when absent. */
  crl?: string;
  /**
   * ssl_verify_depth, 3 unless set: during a root rotation a client already on the new intermediate
   * presents leaf, intermediate and cross-certificate, which a server trusting the old root must follow.
   */
  verifyDepth?: number;
}

export interface Nginx {
  conf: string;
  prefix: string;
  /** The argv that makes the running nginx reload its configuration (and so its certificates and CRLs). */
  reloadArgv: string[];
  /** The error log so far (level info: it names why each client certificate was refused). */
  errorLog(): string;
  /** How many times nginx has started its workers: once at start and once per reload. */
  workerGenerations(): number;
  /**
   * Whether every worker but the newest has exited. Until then an old worker
   * may still accept connections with the configuration (and CRLs) it loaded.
   */
  onlyNewestWorker(): boolean;
  stop(): Promise<void>;
}

function config(prefix: string, servers: readonly MtlsServer[]): string {
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((t) => `  ${t}_temp_path ${join(prefix, "tmp", t)};`)
    .join("\n");
  const blocks = servers.map(
    (s) => `
  server {
    listen 127.0.0.1:${s.port} ssl;
    ssl_certificate ${s.cert};
    ssl_certificate_key ${s.key};
    ssl_verify_client on;
    ssl_client_certificate ${s.clientCa};
${s.crl ? `    ssl_crl ${s.crl};\n` : ""}    ssl_verify_depth ${s.verifyDepth ?? 3};
    # Every request does a full handshake, so every one is checked against the CRLs loaded now.
    ssl_session_tickets off;
    ssl_session_cache off;
    location / {
      return 200 "verified $ssl_client_serial\\n";
    }
  }`,
  );
  return `daemon off;
master_process on;
worker_processes 1;
pid ${join(prefix, "nginx.pid")};
error_log ${join(prefix, "error.log")} info;
events { worker_connections 64; }
http {
  access_log off;
${temp}
${blocks.join("\n")}
}
`;
}

/** Writes the configuration, checks it with `nginx -t`, starts nginx, and waits for its pid file. */
export async function startNginx(prefix: string, servers: readonly MtlsServer[]): Promise<Nginx> {
  mkdirSync(join(prefix, "tmp"), { recursive: true });
  const conf = join(prefix, "nginx.conf");
  writeFileSync(conf, config(prefix, servers));
  const base = ["-c", conf, "-p", prefix];
  // -t reports a bad file (a missing crls.pem, say) in one line instead of a silent exit.
  execFileSync(NGINX, [...base, "-t", "-q"], { stdio: ["ignore", "pipe", "pipe"] });
  const child: ChildProcess = spawn(NGINX, base, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const pidFile = join(prefix, "nginx.pid");
  const errorLog = () =>
    existsSync(join(prefix, "error.log")) ? readFileSync(join(prefix, "error.log"), "utf8") : "";
  for (let i = 0; !existsSync(pidFile) || !/start worker process/.test(errorLog()); i++) {
    if (child.exitCode !== null || i > 100) throw new Error(`nginx did not start: ${stderr}${errorLog()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    conf,
    prefix,
    reloadArgv: [NGINX, ...base, "-s", "reload"],
    errorLog,
    workerGenerations: () => errorLog().match(/start worker processes/g)?.length ?? 0,
    onlyNewestWorker: () => {
      const log = errorLog();
      const started = [...log.matchAll(/start worker process (\d+)/g)].map((m) => m[1]);
      const exited = new Set([...log.matchAll(/worker process (\d+) exited/g)].map((m) => m[1]));
      return started.slice(0, -1).every((pid) => exited.has(pid));
    },
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

export interface ClientResult {
  status: number;
  body: string;
}

/** One HTTPS request with a client certificate, on a fresh connection, verifying nginx as `servername`. */
export function mtlsGet(
  port: number,
  client: { cert: string; key: string },
  ca: string,
  servername = "localhost",
): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: "/",
        servername,
        ca,
        cert: client.cert,
        key: client.key,
        agent: false,
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => {
          body += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error("nginx did not answer within 10 s")));
    req.on("error", reject);
    req.end();
  });
}
