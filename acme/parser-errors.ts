import { type Server, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import { StintError } from "../common/errors";
import { problemFor } from "./problem";

/**
 * Requests node's HTTP parser refuses (broken framing, headers too large, a
 * request that did not arrive in time) never reach the router, and without
 * a listener node answers them with a bare status line. This answers them
 * with a problem document like every other refusal, then closes the
 * connection. Nothing from the request is echoed.
 */

const REFUSALS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, "the request's headers are larger than the CA accepts"],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, "the request's chunk extensions are larger than the CA accepts"],
  ERR_HTTP_REQUEST_TIMEOUT: [
    408,
    "the request did not arrive in time (http.headersTimeout, http.bodyTimeout)",
  ],
};

/**
 * How long a refused connection stays open for reading after the answer.
 * Closing at once, as node does, resets a client still sending (headers too
 * large), and a reset can discard the answer before the client reads it.
 */
const LINGER_MS = 1000;

export function answerParserErrors(server: Server): void {
  const answered = new WeakSet<Socket>();
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    // Data after the error makes node's parser report it again: the first answer stands.
    if (answered.has(socket)) return;
    answered.add(socket);
    // As node's own handler does: never write into a response that is already under way.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (!socket.writable || inFlight?.headersSent) {
      socket.destroy(err);
      return;
    }
    const [status, detail] = REFUSALS[err.code ?? ""] ?? [
      400,
      `the request is not valid HTTP/1.1 (${err.code ?? "parse error"})`,
    ];
    const body = JSON.stringify({ ...problemFor(new StintError("ERR_MALFORMED", detail)).problem, status });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/problem+json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
    const linger = setTimeout(() => socket.destroy(), LINGER_MS);
    linger.unref();
    socket.once("close", () => clearTimeout(linger));
  });
}
