import { chmod, lstat, unlink } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { StintError } from "../../common/errors";
import type { Logger } from "../../common/logger";
import type { AgentApiClient } from "./ca-client";
import { Callers } from "./callers";
import { checkPeerCredentialsAvailable } from "./peercred";
import { services } from "./protos";
import { sdsHandlers } from "./sds";
import type { SvidCache } from "./svids";
import { type JwtVerifier, workloadApiHandlers } from "./workload-api";

/**
 * The Workload API socket: a Unix socket whose connections are accepted here,
 * so the kernel's peer credentials are read before any byte is parsed, then
 * handed to grpc-js (connection injection), which serves SpiffeWorkloadAPI and
 * Envoy SDS on them. The socket is world-connectable on purpose: access is
 * decided per call from who the kernel says the caller is, not from file modes.
 */

export interface WorkloadServerOptions {
  socketPath: string;
  cache: SvidCache;
  client: AgentApiClient;
  trustDomain: string;
  verifyJwt: JwtVerifier;
  log: Logger;
}

export interface WorkloadServer {
  close(): Promise<void>;
}

/** A socket file left by an agent that died is removed; any other file at the path is an error. */
async function clearStaleSocket(path: string): Promise<void> {
  try {
    const st = await lstat(path);
    if (!st.isSocket())
      throw new StintError("ERR_CONFIG", `${path} exists and is not a socket; refusing to replace it`);
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

export async function startWorkloadServer(opts: WorkloadServerOptions): Promise<WorkloadServer> {
  checkPeerCredentialsAvailable();
  const callers = new Callers();
  const svc = services();
  const grpcServer = new grpc.Server();
  grpcServer.addService(
    svc.workload,
    workloadApiHandlers({
      cache: opts.cache,
      callers,
      client: opts.client,
      trustDomain: opts.trustDomain,
      verifyJwt: opts.verifyJwt,
      log: opts.log,
    }),
  );
  grpcServer.addService(
    svc.sds,
    sdsHandlers({
      cache: opts.cache,
      callers,
      trustDomain: opts.trustDomain,
      encodeSecret: svc.encodeSecret,
      log: opts.log,
    }),
  );
  const injector = grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  await clearStaleSocket(opts.socketPath);
  const server: Server = createServer((socket) => {
    try {
      callers.accept(socket);
    } catch (err) {
      opts.log.warn("dropped a Workload API connection", { error: (err as Error).message });
      socket.destroy();
      return;
    }
    injector.injectConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(
        new StintError(
          "ERR_CONFIG",
          `cannot serve the Workload API on ${opts.socketPath}: ${err.code ?? err.message}`,
          {
            cause: err,
          },
        ),
      ),
    );
    server.listen(opts.socketPath, resolve);
  });
  await chmod(opts.socketPath, 0o777);
  opts.log.info("Workload API listening", { socket: opts.socketPath });
  return {
    close: async () => {
      injector.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      grpcServer.forceShutdown();
      await unlink(opts.socketPath).catch(() => undefined);
    },
  };
}
