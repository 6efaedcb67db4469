import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "../common/logger";
import { notFound, sendJson, sendProblem } from "./problem";

/**
 * A fixed table of exact routes. The CA serves a handful of paths; a
 * middleware framework would add per-request work on the issuance path for
 * nothing we need (see README, "why these dependencies").
 */

export type Handler = (req: IncomingMessage, res: ServerResponse, url: URL) => void | Promise<void>;

export class Router {
  private readonly routes = new Map<string, Map<string, Handler>>();

  constructor(private readonly log: Logger) {}

  on(method: string, path: string, handler: Handler): this {
    const byMethod = this.routes.get(path) ?? new Map<string, Handler>();
    this.routes.set(path, byMethod);
    byMethod.set(method, handler);
    return this;
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? "/", "https://stint.invalid");
    const byMethod = this.routes.get(url.pathname);
    const handler =
      byMethod?.get(req.method ?? "GET") ?? (req.method === "HEAD" ? byMethod?.get("GET") : undefined);
    if (!handler) {
      if (byMethod) {
        res.setHeader("allow", [...byMethod.keys()].join(", "));
        sendJson(
          res,
          405,
          {
            type: "urn:ietf:params:acme:error:malformed",
            detail: `${req.method} is not allowed on ${url.pathname}`,
            status: 405,
          },
          "application/problem+json",
        );
        return;
      }
      sendProblem(res, notFound(url.pathname), this.log);
      return;
    }
    try {
      const done = handler(req, res, url);
      if (done) done.catch((err) => this.fail(res, err));
    } catch (err) {
      this.fail(res, err);
    }
  };

  private fail(res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendProblem(res, err, this.log);
  }
}
