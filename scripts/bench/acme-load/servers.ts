import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { accessSync, constants, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type Server } from "node:http";
import { get as httpsGet } from "node:https";
import { createServer as createNetServer } from "node:net";
import { delimiter, join, resolve } from "node:path";
import { ADMIN_PATHS, type AdminJoinToken } from "../../../acme/admin";
import { AdminClient } from "../../../cli/admin-client";
import { forgetChild, watchChild } from "./watchdog";

/**
 * The servers --compare runs the load against, started as a user would start
 * them: pebble from PATH with a generated config and TLS certificate, and
 * `stint ca serve` from dist/ with a fresh data directory. Also the two
 * helpers the load needs around them: join tokens made through Stint's admin
 * API, and an http-01 responder.
 */

export interface Started {
  name: string;
  pid: number;
  directoryUrl: string;
  /** PEM the server's TLS certificate chains to. */
  ca: string;
  /** The last lines the process wrote, for error messages. */
  tail: () => string;
  stop: () => Promise<void>;
}

export interface StartedStint extends Started {
  url: string;
  dataDir: string;
  trustDomain: string;
}

/** The file an executable name resolves to on PATH, or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A port that was free a moment ago (pebble's config needs one written down before it starts). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createNetServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolvePort(port));
    });
  });
}

const TAIL_LINES = 20;

/** Servers started and not yet exited, so an interrupted run leaves none behind. */
const live = new Set<ChildProcess>();

/** On SIGINT or SIGTERM: stop the servers this run started, then exit. */
export function stopServersOnSignal(): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      for (const child of live) child.kill("SIGTERM");
      process.exit(130);
    });
  }
}

/** Spawns `cmd`, keeps the last lines of its output, and resolves when `ready` matches a line. */
function launch(
  name: string,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
): Promise<{ child: ChildProcess; match: RegExpExecArray; tail: () => string }> {
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  watchChild(child.pid);
  child.once("exit", () => {
    live.delete(child);
    forgetChild(child.pid);
  });
  const lines: string[] = [];
  const tail = () => lines.join("\n");
  return new Promise((resolveStart, reject) => {
    let found = false;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${name} did not start within 60 s:\n${tail()}`));
    }, 60_000);
    const onData = (stream: NodeJS.ReadableStream) => {
      let partial = "";
      stream.on("data", (chunk: Buffer) => {
        const parts = (partial + chunk.toString("utf8")).split("\n");
        partial = parts.pop() ?? "";
        for (const line of parts) {
          lines.push(line);
          if (lines.length > TAIL_LINES) lines.shift();
          const m = found ? null : ready.exec(line);
          if (m) {
            found = true;
            clearTimeout(timer);
            resolveStart({ child, match: m, tail });
          }
        }
      });
    };
    onData(child.stdout!);
    onData(child.stderr!);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${name}: ${err.message}`));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      if (!found) reject(new Error(`${name} exited (${signal ?? code}) before it was ready:\n${tail()}`));
    });
  });
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise<void>((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done();
      const kill = setTimeout(() => child.kill("SIGKILL"), 30_000);
      child.once("exit", () => {
        clearTimeout(kill);
        done();
      });
      child.kill("SIGTERM");
    });
}

/** A self-signed TLS certificate for 127.0.0.1 and localhost, made by openssl (pebble ships none). */
function tlsCertificate(dir: string): { cert: string; key: string } {
  const cert = join(dir, "pebble-tls-cert.pem");
  const key = join(dir, "pebble-tls-key.pem");
  const r = spawnSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout",
      key,
      "-out",
      cert,
    ],
    { encoding: "utf8" },
  );
  if (r.error || r.status !== 0)
    throw new Error(
      `openssl could not make pebble's TLS certificate: ${r.error?.message ?? r.stderr.trim()}`,
    );
  return { cert, key };
}

/** Environment for pebble: validation always succeeds at once, and none of its hostile defaults skew the figures. */
export const PEBBLE_ENV = {
  PEBBLE_VA_ALWAYS_VALID: "1",
  PEBBLE_VA_NOSLEEP: "1",
  // By default pebble refuses 5% of good nonces and reuses half of valid authorizations.
  PEBBLE_WFE_NONCEREJECT: "0",
  PEBBLE_AUTHZREUSE: "0",
  // pebble 2.4 deadlocks on its own locks under this load (letsencrypt/pebble#554): here twice in
  // six short runs with its default two threads, once in about 100,000 certificates with one. One
  // thread is also what Stint's request handling gets.
  GOMAXPROCS: "1",
} as const;

export async function startPebble(pebblePath: string, dir: string): Promise<Started> {
  const tls = tlsCertificate(dir);
  const [port, managementPort] = [await freePort(), await freePort()];
  const config = join(dir, "pebble-config.json");
  writeFileSync(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${port}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: tls.cert,
        privateKey: tls.key,
        // Unused with PEBBLE_VA_ALWAYS_VALID, but the config requires them.
        httpPort: 5002,
        tlsPort: 5001,
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
      },
    }),
  );
  const { child, tail } = await launch(
    "pebble",
    pebblePath,
    ["-config", config],
    { PATH: process.env.PATH ?? "", ...PEBBLE_ENV },
    /ACME directory available at/,
  );
  const ca = readFileSync(tls.cert, "utf8");
  const directoryUrl = `https://127.0.0.1:${port}/dir`;
  await waitForHttps(directoryUrl, ca);
  return { name: "pebble", pid: child.pid!, directoryUrl, ca, tail, stop: stopper(child) };
}

export interface StintStartOptions {
  dir: string;
  trustDomain: string;
  /** For http-01: the responder's port, and the DNS suffix the names are under. */
  http01?: { port: number; dnsSuffix: string };
  /** Another build's dist/cli/main.js (an A/B against an older commit); default this build's. */
  main?: string;
  /** More `ca serve` flags. */
  args?: string[];
}

/** This build's CLI entry point, or `main` when given. */
export const stintMain = (main?: string): string => main ?? resolve(__dirname, "../../../cli/main.js");

/** `stint ca serve` from this build, on a free port, with rate limits off. */
export async function startStint(opts: StintStartOptions): Promise<StartedStint> {
  const main = stintMain(opts.main);
  const dataDir = join(opts.dir, "stint");
  const args = [
    main,
    "ca",
    "serve",
    "--init",
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--listen",
    "127.0.0.1:0",
    "--trust-domain",
    opts.trustDomain,
    "--acme-rate-limit-per-address",
    "0",
    "--acme-rate-limit-per-account",
    "0",
    ...(opts.http01
      ? [
          "--policy-dns-suffixes",
          opts.http01.dnsSuffix,
          "--acme-http01-port",
          String(opts.http01.port),
          "--acme-http01-resolve-to",
          "127.0.0.1",
        ]
      : []),
    ...(opts.args ?? []),
  ];
  const { child, match, tail } = await launch(
    "stint ca serve",
    process.execPath,
    args,
    { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp" },
    /"msg":"listening".*"url":"([^"]+)"/,
  );
  const url = match[1];
  return {
    name: "stint",
    pid: child.pid!,
    url,
    directoryUrl: `${url}/acme/directory`,
    ca: readFileSync(join(dataDir, "root.pem"), "utf8"),
    dataDir,
    trustDomain: opts.trustDomain,
    tail,
    stop: stopper(child),
  };
}

/** Resolves once `url` answers 200; pebble logs "available" a moment before it accepts. */
async function waitForHttps(url: string, ca: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const status = await new Promise<number>((done) => {
      const req = httpsGet(url, { ca }, (res) => {
        res.resume();
        done(res.statusCode ?? 0);
      });
      req.on("error", () => done(0));
    });
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`${url} did not answer 200 within 20 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The trust domain a running Stint CA reports on /health. */
export function stintTrustDomain(origin: string, ca: string | undefined): Promise<string> {
  return new Promise((resolveTd, reject) => {
    const req = httpsGet(`${origin}/health`, ca ? { ca } : {}, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        try {
          const td = JSON.parse(Buffer.concat(chunks).toString("utf8")).trustDomain;
          if (typeof td !== "string") throw new Error("no trustDomain");
          resolveTd(td);
        } catch {
          reject(new Error(`${origin}/health did not name a trust domain: is this a Stint CA?`));
        }
      });
    });
    req.on("error", (err) => reject(new Error(`cannot reach ${origin}/health: ${err.message}`)));
  });
}

/**
 * One join token per SPIFFE ID, made through the admin API exactly as
 * `stint token create --json` makes them (same client, same request), a few
 * at a time; spawning the CLI 2,000 times would take minutes.
 */
export async function mintJoinTokens(
  dataDir: string,
  origin: string,
  spiffeIds: string[],
  log: (line: string) => void,
): Promise<string[]> {
  const admin = await AdminClient.fromFlags({ "data-dir": dataDir, server: origin });
  const tokens: string[] = new Array(spiffeIds.length);
  let next = 0;
  const PARALLEL = 8;
  log(`stint: making ${spiffeIds.length} join tokens through ${origin}${ADMIN_PATHS.joinTokens}`);
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < spiffeIds.length) {
        const i = next++;
        const made = await admin.post<AdminJoinToken>(ADMIN_PATHS.joinTokens, {
          spiffeId: spiffeIds[i],
          ttl: "2h",
        });
        tokens[i] = made.token;
      }
    }),
  );
  return tokens;
}

/** An http-01 responder: serves key authorizations from `tokens` (token → key authorization). */
export async function startHttp01(
  tokens: Map<string, string>,
  port: number,
): Promise<{ server: Server; port: number }> {
  const server = createHttpServer((req, res) => {
    const token = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? "")?.[1];
    const body = token ? tokens.get(token) : undefined;
    if (body === undefined) res.writeHead(404).end();
    else res.writeHead(200, { "content-type": "text/plain" }).end(body);
  });
  await new Promise<void>((done, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen for http-01 on port ${port} (${err.code ?? err.message})`)),
    );
    server.listen(port, "127.0.0.1", done);
  });
  return { server, port: (server.address() as { port: number }).port };
}
