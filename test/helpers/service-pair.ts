import { createServer as createHttpsServer, request as httpsRequest } from "node:https";
import type { TLSSocket } from "node:tls";
import { checkSocket, type TlsDir, tlsOptionsFromDir } from "../../verify/node";
import { openVerifier } from "../../verify/open";
import { currentFiles } from "./agent";

/**
 * Two services built on verify/ that keep talking while a test rotates the
 * CA under them: "web" serves on its agent's files and admits only the "api"
 * ID; "api" calls it on its own agent's files, checking web's ID, on a fresh
 * connection (a full mTLS handshake) about every 20 ms. Each side's verifier
 * follows the CA's feed and each re-reads its agent's files every 200 ms, as
 * a service would. Rotation tests assert that `traffic.failures` stays empty.
 */

export interface ServicePairOptions {
  caUrl: string;
  web: { outDir: string; spiffeId: string };
  api: { outDir: string; spiffeId: string };
}

export interface ServicePair {
  traffic: { ok: number; failures: string[] };
  /** web's port on 127.0.0.1 */
  port: number;
  /** web's and api's credentials, switched when their agents publish new files */
  server: TlsDir;
  client: TlsDir;
  stop(): Promise<void>;
}

export async function startServicePair(opts: ServicePairOptions): Promise<ServicePair> {
  const bundle = (outDir: string) => currentFiles(outDir).bundle.toString();
  const serverVerifier = await openVerifier({
    bundle: bundle(opts.web.outDir),
    usage: "client",
    allow: { spiffeId: opts.api.spiffeId },
    feedUrl: opts.caUrl,
  });
  const clientVerifier = await openVerifier({
    bundle: bundle(opts.api.outDir),
    usage: "server",
    allow: { spiffeId: opts.web.spiffeId },
    feedUrl: opts.caUrl,
  });
  const server = await tlsOptionsFromDir(opts.web.outDir, {
    usage: "server",
    verifier: serverVerifier,
    pollInterval: 200,
  });
  const client = await tlsOptionsFromDir(opts.api.outDir, {
    usage: "client",
    verifier: clientVerifier,
    pollInterval: 200,
  });
  const https = createHttpsServer(server.options, (req, res) => {
    const result = checkSocket(req.socket as TLSSocket, serverVerifier);
    res.writeHead(result.ok ? 200 : 403).end(result.ok ? "ok" : `${result.code}: ${result.reason}`);
  });
  server.attach(https);
  await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
  const port = (https.address() as { port: number }).port;

  const traffic = { ok: 0, failures: [] as string[] };
  let running = true;
  const loop = (async () => {
    let last = Date.now();
    while (running) {
      // A test's synchronous CLI call (spawnSync) can hold this event loop for seconds, and then the
      // first handshake after it would run before the 200 ms poll caught up with files an agent wrote
      // meanwhile; with 20 s certificates, the one held may have expired. A service's own loop is not
      // held so: look at the files first, as its poll would have.
      if (Date.now() - last > 200) await Promise.all([server.reload(), client.reload()]);
      last = Date.now();
      await mtlsCall(port, client).then(
        ({ status, body }) =>
          status === 200 ? traffic.ok++ : traffic.failures.push(`HTTP ${status} ${body}`),
        (err: Error) => traffic.failures.push(err.message),
      );
      await new Promise((r) => setTimeout(r, 20));
    }
  })();

  return {
    traffic,
    port,
    server,
    client,
    stop: async () => {
      running = false;
      await loop;
      https.close();
      server.close();
      client.close();
      serverVerifier.close();
      clientVerifier.close();
    },
  };
}

/** One request on a fresh connection (a full mTLS handshake every time); resolves with the HTTP status and body. */
export function mtlsCall(port: number, client: TlsDir): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { ...client.options, host: "127.0.0.1", port, path: "/", agent: false, timeout: 10_000 },
      (res) => {
        let body = "";
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("request timed out")));
    req.on("error", reject);
    req.end();
  });
}
