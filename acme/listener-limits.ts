import type { Server as HttpServer, ServerOptions } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { type TLSSocket, Server as TlsServer } from "node:tls";
import type { Logger } from "../common/logger";
import type { Registry } from "../common/metrics";
import { answerParserErrors } from "./parser-errors";

/**
 * Limits that keep slow, idle or numerous connections from holding the CA's
 * listeners: a client must finish the TLS handshake, its headers and its
 * whole request within fixed times, may idle between keep-alive requests for
 * a while only, and may hold a bounded number of connections per address.
 * Every listener applies the same limits through `limitedServerOptions` (at
 * creation) and `applyListenerLimits` (after).
 */

export interface ListenerLimits {
  /** From TCP accept to a finished TLS handshake (TLS listeners only). */
  handshakeTimeoutMs: number;
  /** From the start of a request to the end of its headers; 408 after. */
  headersTimeoutMs: number;
  /** From the start of a request to the end of its body; 408 after. */
  bodyTimeoutMs: number;
  /** Idle time allowed between keep-alive requests. */
  keepAliveTimeoutMs: number;
  /** Open connections one remote address may hold; 0 turns the cap off. */
  maxConnectionsPerAddress: number;
}

/** The configuration defaults (cli/ca-config.ts), for servers started without settings. */
export const DEFAULT_LIMITS: ListenerLimits = {
  handshakeTimeoutMs: 10_000,
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  maxConnectionsPerAddress: 256,
};

/**
 * Options node only reads when a server is created: its header and request
 * timers are enforced by a sweep every `connectionsCheckingInterval` (30 s by
 * default), so the sweep must run often enough for the limits to mean anything.
 */
export function limitedServerOptions(limits: ListenerLimits): ServerOptions {
  // Node refuses headersTimeout > requestTimeout; the headers are part of the request.
  const headersTimeout = Math.min(limits.headersTimeoutMs, limits.bodyTimeoutMs);
  return {
    headersTimeout,
    requestTimeout: limits.bodyTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(5_000, Math.max(100, Math.floor(headersTimeout / 4))),
    requireHostHeader: true,
  };
}

export interface LimitsContext {
  log: Logger;
  metrics: Registry;
  /** Label for metrics and logs: "https", "crl-http". */
  listener: string;
}

/**
 * Adds the limits node has no option for: an absolute handshake deadline
 * (tls `handshakeTimeout` only measures inactivity, so a client trickling one
 * byte at a time would never hit it) and the per-address connection cap.
 * Call before `listen`, on a server created with `limitedServerOptions`.
 */
export function applyListenerLimits(server: HttpServer, limits: ListenerLimits, ctx: LimitsContext): void {
  const closed = ctx.metrics.counter(
    "stint_http_connections_refused_total",
    "Connections the CA closed because of a listener limit, by listener and reason.",
    ["listener", "reason"],
  );
  // Timeouts node enforces itself; set here too so a server created without the options still gets them.
  const options = limitedServerOptions(limits);
  server.headersTimeout = options.headersTimeout!;
  server.requestTimeout = options.requestTimeout!;
  server.keepAliveTimeout = options.keepAliveTimeout!;
  // What node's parser refuses (including the 408 of these timeouts) gets a problem document too.
  answerParserErrors(server);

  const perAddress = new Map<string, number>();
  const warned = new Set<string>();
  // Raw sockets still in the TLS handshake, by remote address and port (what the TLS socket reports too).
  const handshaking = new Map<string, NodeJS.Timeout>();
  const tls = server instanceof TlsServer;

  server.on("connection", (socket: Socket) => {
    const address = socket.remoteAddress;
    if (address === undefined) {
      // Already gone before node could read its peer; nothing to count.
      socket.destroy();
      return;
    }
    const max = limits.maxConnectionsPerAddress;
    const open = perAddress.get(address) ?? 0;
    if (max > 0 && open >= max) {
      closed.inc({ listener: ctx.listener, reason: "per_address_limit" });
      if (!warned.has(address)) {
        warned.add(address);
        ctx.log.warn("closing connections over the per-address limit", {
          listener: ctx.listener,
          address,
          limit: max,
        });
      }
      socket.destroy();
      return;
    }
    perAddress.set(address, open + 1);

    const key = `${address}:${socket.remotePort}`;
    if (tls) {
      const timer = setTimeout(() => {
        handshaking.delete(key);
        closed.inc({ listener: ctx.listener, reason: "handshake_timeout" });
        socket.destroy();
      }, limits.handshakeTimeoutMs);
      timer.unref();
      handshaking.set(key, timer);
    }
    socket.once("close", () => {
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left > 0) perAddress.set(address, left);
      else perAddress.delete(address);
      if (left < max) warned.delete(address);
      const timer = handshaking.get(key);
      if (timer) {
        clearTimeout(timer);
        handshaking.delete(key);
      }
    });
  });

  if (tls) {
    server.on("secureConnection", (socket: TLSSocket) => {
      const key = `${socket.remoteAddress}:${socket.remotePort}`;
      const timer = handshaking.get(key);
      if (timer) {
        clearTimeout(timer);
        handshaking.delete(key);
      }
    });
  }

  // Without a listener an 'error' once listening (EMFILE while accepting, say) would end the process;
  // errors from listen() itself are left to the caller that awaits it.
  server.on("error", (err) => {
    if (server.listening) ctx.log.error("listener error", { listener: ctx.listener, error: err });
  });
}

/**
 * Stops accepting, closes idle connections, and gives requests in progress
 * `bodyTimeoutMs` to finish before closing every connection left. Node stops
 * its timeout sweep on close(), so without the deadline one stalled client
 * would hold the shutdown forever.
 */
export function closeListener(server: HttpServer, limits: ListenerLimits): Promise<void> {
  return new Promise<void>((resolve) => {
    const deadline = setTimeout(() => server.closeAllConnections(), limits.bodyTimeoutMs);
    deadline.unref();
    server.close(() => {
      clearTimeout(deadline);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** Starts listening and resolves with the bound address as URL authority text (host:port, IPv6 in brackets). */
export async function listenOn(server: HttpServer, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const bound = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return `${bound}:${address.port}`;
}
