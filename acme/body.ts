import type { IncomingMessage } from "node:http";
import { StintError } from "../common/errors";

/**
 * Reads a request body up to `limit` bytes. Past the limit it stops reading
 * and refuses, so an oversized request costs at most `limit` bytes of memory.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(tooLarge(limit));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners("data");
        req.resume();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks, size)));
    // The client went away or was cut off mid-body (a listener timeout): its fault, not an internal error.
    req.on("error", (err) =>
      reject(new StintError("ERR_MALFORMED", "the request body was not received in full", { cause: err })),
    );
  });
}

function tooLarge(limit: number): StintError {
  return new StintError("ERR_PAYLOAD_TOO_LARGE", `request body is larger than ${limit} bytes`, {
    check: "body_size",
  });
}
