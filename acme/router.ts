import type { IncomingMessage, ServerResponse } from "node:http";
import { StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import { notFound, sendJson, sendProblem } from "./problem";

/**
 * A fixed table of routes: exact paths in a map, and a few patterns with
 * `:name` segments for ACME resources (/acme/order/:id). The CA serves a
 * handful of paths; a middleware framework would add per-request work on the
 * issuance path for nothing we need (see README, "why these dependencies").
 *
 * `handle` is the request boundary: parsing the target, routing and the
 * handler (sync or async) all run inside it, and whatever they throw becomes a
 * problem document, so no request can end the process.
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

const ORIGIN = "https://stint.invalid";
// RFC 3986 pchar plus "/" for the path, and "?" too for the query; every "%" starts a valid escape.
const PATH = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/;
const QUERY = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$/;
const DOT_SEGMENT = /^(?:\.|%2e){1,2}$/i;

function malformed(detail: string): StintError {
  return new StintError("ERR_MALFORMED", detail);
}

/**
 * The request target as a URL, accepting only origin-form ("/path?query",
 * RFC 9112 3.2.1). Absolute-form, authority-form and "*" are refused, and so
 * are characters outside RFC 3986, bad %-escapes and dot segments: a client
 * resolves those itself, and a server that resolves them would route what a
 * proxy in front of it saw as another path.
 */
export function parseTarget(target: string): URL {
  if (!target.startsWith("/")) throw malformed("the request target must be a path (origin-form)");
  const q = target.indexOf("?");
  const path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? "" : target.slice(q + 1);
  if (!PATH.test(path) || !QUERY.test(query))
    throw malformed("the request target has characters or %-escapes that are not allowed");
  if (path.split("/").some((s) => DOT_SEGMENT.test(s)))
    throw malformed("the request target has . or .. segments");
  // Appended to a fixed origin, never resolved against it: "//host" would otherwise name a host.
  const url = new URL(ORIGIN + target);
  if (url.pathname !== path) throw malformed("the request target is not in normal form");
  return url;
}

// A reg-name or IP literal, then an optional port (RFC 9110 7.2).
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{1,5})?$/;

/** Host may be absent only before HTTP/1.1 (node refuses it missing on 1.1); present, it must be one valid value. */
function checkHost(req: IncomingMessage): void {
  const hosts = req.headersDistinct.host;
  if (hosts === undefined) return;
  if (hosts.length !== 1 || !HOST.test(hosts[0]!)) throw malformed("the Host header is not valid");
}

/** Decodes a parameter; parseTarget has already refused bad %-escapes, but a param must never throw. */
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
    const route: { pattern?: string } = {};
    try {
      const done = this.dispatch(req, res, route);
      if (done) done.catch((err: unknown) => this.fail(req, res, route, err));
    } catch (err) {
      this.fail(req, res, route, err);
    }
  };

  /** Routes one request; `route.pattern` records the matched route for the error log. */
  private dispatch(
    req: IncomingMessage,
    res: ServerResponse,
    route: { pattern?: string },
  ): void | Promise<void> {
    const url = parseTarget(req.url ?? "");
    checkHost(req);
    const [byMethod, params, pattern] = this.match(url.pathname);
    route.pattern = pattern;
    const handler =
      byMethod?.get(req.method ?? "GET") ?? (req.method === "HEAD" ? byMethod?.get("GET") : undefined);
    if (!handler) {
      if (!byMethod) throw notFound(url.pathname);
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
    return handler(req, res, url, params);
  }

  private match(path: string): [Map<string, Handler> | undefined, Params, string | undefined] {
    const exact = this.exact.get(path);
    if (exact) return [exact, NO_PARAMS, path];
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
      if (ok) return [p.byMethod, params, p.segments.join("/")];
    }
    return [undefined, NO_PARAMS, undefined];
  }

  /**
   * The boundary's last step: a problem document if nothing was sent yet, else
   * a dropped connection (the client must not take half a response as whole).
   * It must not throw itself: nothing above it would catch the error.
   */
  private fail(req: IncomingMessage, res: ServerResponse, route: { pattern?: string }, err: unknown): void {
    // Secret-free by construction: a method node's parser accepted and a route pattern, never the raw target.
    const fields = { method: req.method, route: route.pattern ?? "unmatched" };
    try {
      if (res.headersSent) {
        if (!(err instanceof StintError))
          this.log.error("request failed after its response started", { ...fields, error: err });
        res.destroy();
        return;
      }
      sendProblem(res, err, this.log, fields);
    } catch {
      res.destroy();
    }
  }
}
