import * as net from "node:net";
import * as tls from "node:tls";

/**
 * A crowd of idle and slowloris connections held against one listener:
 * each stalls at one stage (TCP, the TLS hello, the headers, the body, idle
 * keep-alive), and each one the server closes is opened again, so the crowd
 * keeps its size for as long as it runs. Connections come from several
 * loopback addresses (127.0.0.2, …), as many clients would.
 */

export const SLOW_KINDS = [
  "silent TCP",
  "half a ClientHello",
  "a ClientHello trickled",
  "TLS, no request",
  "half the headers",
  "headers trickled",
  "half a body",
  "idle keep-alive",
] as const;
export type SlowKind = (typeof SLOW_KINDS)[number];

/** A TLS record header announcing a 512-byte ClientHello, then only part of it. */
const HALF_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
const TRICKLE_MS = 500;

export interface CrowdOptions {
  host: string;
  port: number;
  ca: string;
  size: number;
  /** Source addresses, used in turn. */
  addresses: string[];
}

export class SlowCrowd {
  opened = 0;
  closedByServer = 0;
  failedToOpen = 0;
  private readonly sockets = new Set<net.Socket>();
  private running = true;

  constructor(private readonly opts: CrowdOptions) {}

  /** How many are open now. */
  get size(): number {
    return this.sockets.size;
  }

  /** Opens the whole crowd, `parallel` at a time. */
  async open(parallel = 25): Promise<void> {
    let next = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next < this.opts.size && this.running) {
          const i = next++;
          await this.hold(
            SLOW_KINDS[i % SLOW_KINDS.length],
            this.opts.addresses[i % this.opts.addresses.length],
          );
        }
      }),
    );
  }

  /** Stops reopening and closes every connection. */
  close(): void {
    this.running = false;
    for (const s of this.sockets) s.destroy();
  }

  /** Opens one stalled connection of `kind`; when the server closes it, opens another like it. */
  private async hold(kind: SlowKind, localAddress: string): Promise<void> {
    let socket: net.Socket;
    try {
      socket = await this.connect(kind, localAddress);
    } catch {
      this.failedToOpen++;
      return;
    }
    this.opened++;
    this.sockets.add(socket);
    socket.on("error", () => {}); // a reset is a close too
    socket.once("close", () => {
      this.sockets.delete(socket);
      if (!this.running) return;
      this.closedByServer++;
      setTimeout(() => void this.hold(kind, localAddress), 50);
    });
  }

  private connect(kind: SlowKind, localAddress: string): Promise<net.Socket> {
    const { host, port, ca } = this.opts;
    return new Promise((resolve, reject) => {
      if (kind === "silent TCP" || kind === "half a ClientHello" || kind === "a ClientHello trickled") {
        const s = net.connect({ host, port, localAddress }, () => {
          if (kind === "half a ClientHello") s.write(HALF_HELLO);
          if (kind === "a ClientHello trickled") trickle(s, HALF_HELLO);
          resolve(s);
        });
        s.once("error", reject);
        return;
      }
      // tls.connect has no localAddress option: the TCP connection is made first, from that address.
      const tcp = net.connect({ host, port, localAddress });
      tcp.once("error", reject);
      const s = tls.connect({ socket: tcp, ca, servername: "localhost" }, () => {
        switch (kind) {
          case "half the headers":
            s.write("GET /health HTTP/1.1\r\nHost: localhost\r\n");
            break;
          case "headers trickled":
            trickle(s, Buffer.from(`GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ${"a".repeat(2000)}`));
            break;
          case "half a body":
            s.write(
              "POST /acme/new-account HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/jose+json\r\n" +
                'Content-Length: 1000\r\n\r\n{"protected":',
            );
            break;
          case "idle keep-alive":
            s.write("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
            s.on("data", () => {}); // read the answer, then idle
            break;
        }
        resolve(s);
      });
      s.once("error", reject);
    });
  }
}

/** Writes one byte every TRICKLE_MS until the socket closes: never idle, never finished. */
function trickle(socket: net.Socket, bytes: Buffer): void {
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed) return;
    socket.write(bytes.subarray(i % bytes.length, (i % bytes.length) + 1));
    i++;
  }, TRICKLE_MS);
  socket.once("close", () => clearInterval(timer));
}
