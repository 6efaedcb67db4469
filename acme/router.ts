import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "../common/logger";
import { notFound, sendJson, sendProblem } from "./problem";

/**
 * A fixed table of routes: exact paths in a map, and a few patterns with
 * `:name` segments for ACME resources (/acme/order/:id). The CA serves a
 * handful of paths; a middleware framework would add per-request work on the
 * issuance path for nothing we need (see README, "why these dependencies").
 */

export type Params = Readonly<Record<string, string>>;
export type Handler = (
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  params: Params,
) => void | Promise<void>;

interface Pattern {
  segments: string[];
  byMethod: Map<string, Handler>;
}

const NO_PARAMS: Params = Object.freeze({});

/** A malformed %-escape must not throw outside the handler's error handling; it simply matches nothing useful. */
function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

export class Router {
  private readonly exact = new Map<string, Map<string, Handler>>();
  private readonly patterns: Pattern[] = [];

  constructor(private readonly log: Logger) {}

  on(method: string, path: string, handler: Handler): this {
    if (path.includes("/:")) {
      const segments = path.split("/");
      let p = this.patterns.find((x) => x.segments.join("/") === path);
      if (!p) {
        p = { segments, byMethod: new Map() };
        this.patterns.push(p);
      }
      p.byMethod.set(method, handler);
    } else {
      const byMethod = this.exact.get(path) ?? new Map<string, Handler>();
      this.exact.set(path, byMethod);
      byMethod.set(method, handler);
    }
    return this;
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? "/", "https://stint.invalid");
    const [byMethod, params] = this.match(url.pathname);
    const handler =
      byMethod?.get(req.method ?? "GET") ?? (req.method === "HEAD" ? byMethod?.get("GET") : undefined);
    if (!handler) {
      if (byMethod) {
        res.setHeader("allow", [...byMethod.keys()].join(", "));
        const detail = `${req.method} is not allowed on ${url.pathname}`;
        sendJson(
          res,
          405,
          { type: "urn:ietf:params:acme:error:malformed", detail, status: 405 },
          "application/problem+json",
        );
        return;
      }
      sendProblem(res, notFound(url.pathname), this.log);
      return;
    }
    try {
      const done = handler(req, res, url, params);
      if (done) done.catch((err) => this.fail(res, err));
    } catch (err) {
      this.fail(res, err);
    }
  };

  private match(path: string): [Map<string, Handler> | undefined, Params] {
    const exact = this.exact.get(path);
    if (exact) return [exact, NO_PARAMS];
    const segments = path.split("/");
    for (const p of this.patterns) {
      if (p.segments.length !== segments.length) continue;
      const params: Record<string, string> = {};
      const ok = p.segments.every((s, i) => {
        if (s.startsWith(":")) {
          params[s.slice(1)] = safeDecode(segments[i]);
          return segments[i] !== "";
        }
        return s === segments[i];
      });
      if (ok) return [p.byMethod, params];
    }
    return [undefined, NO_PARAMS];
  }

  private fail(res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendProblem(res, err, this.log);
  }
}
