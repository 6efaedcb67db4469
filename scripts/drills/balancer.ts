import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

/**
 * A TCP load balancer in front of CA replicas, as one would run them: one
 * address, connections handed out in turn, a replica that refuses the
 * connection skipped. It passes bytes through (TLS ends at the replicas), so
 * each replica still sees its own clients' handshakes and nonces.
 */
export interface Balancer {
  port: number;
  /** Connections sent to each backend port. */
  forwarded: Map<number, number>;
  close(): Promise<void>;
}

export async function startBalancer(backends: () => number[]): Promise<Balancer> {
  const forwarded = new Map<number, number>();
  const open = new Set<Socket>();
  let turn = 0;
  const server: Server = createServer((client) => {
    open.add(client);
    client.once("close", () => open.delete(client));
    client.on("error", () => client.destroy());
    client.pause();
    const ports = backends();
    const first = turn++;
    const attempt = (i: number) => {
      if (i >= ports.length) {
        client.destroy();
        return;
      }
      const port = ports[(first + i) % ports.length];
      const upstream = tcpConnect({ host: "127.0.0.1", port });
      let connected = false;
      upstream.once("connect", () => {
        connected = true;
        forwarded.set(port, (forwarded.get(port) ?? 0) + 1);
        open.add(upstream);
        upstream.once("close", () => open.delete(upstream));
        upstream.on("error", () => client.destroy());
        upstream.on("close", () => client.destroy());
        client.on("close", () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
      upstream.once("error", () => {
        // Not connected: that replica is down, try the next. Errors after connecting end the client (above).
        if (connected) return;
        upstream.destroy();
        attempt(i + 1);
      });
    };
    attempt(0);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    forwarded,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
