import type { IncomingMessage, ServerResponse } from "node:http";
import { isStintError, StintError } from "../../common/errors";
import type { Logger } from "../../common/logger";
import { readBody } from "../body";
import { problemFor } from "../problem";
import { type Html, html } from "./html";
import { sameToken } from "./sessions";

/** The console's HTTP edge: HTML responses with strict headers, typed errors as error pages, form checks. */

export const CSP =
  "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const SECURITY_HEADERS = {
  "content-security-policy": CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  // Not no-referrer: with it, Chromium sends "Origin: null" on our own form posts, which checkSameSite refuses.
  "referrer-policy": "same-origin",
  "cache-control": "no-store",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

const MAX_FORM_BYTES = 16 * 1024;

export function sendHtml(
  res: ServerResponse,
  status: number,
  page: Html,
  headers: Record<string, string> = {},
): void {
  const body = `<!doctype html>\n${page.text}`;
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    ...headers,
    "content-type": "text/html; charset=utf-8",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}

export function redirect(res: ServerResponse, location: string, headers: Record<string, string> = {}): void {
  res.writeHead(303, { ...SECURITY_HEADERS, ...headers, location, "content-length": 0 });
  res.end();
}

/** 401 without a credential, 403 with the wrong one or a forged form; the page carries no data either way. */
function statusFor(err: unknown): number {
  if (isStintError(err, "ERR_UNAUTHORIZED")) return err.check === "client_certificate" ? 401 : 403;
  if (isStintError(err, "ERR_ROTATION_STATE") || isStintError(err, "ERR_ALREADY_REVOKED")) return 409;
  return problemFor(err).problem.status;
}

export function sendError(res: ServerResponse, err: unknown, log: Logger): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { problem, errorId } = problemFor(err);
  if (errorId) log.error("console request failed", { errorId, error: err });
  const status = statusFor(err);
  const title = status === 401 ? "Log in" : status === 403 ? "Not allowed" : "Could not do that";
  sendHtml(
    res,
    status,
    html`<html lang="en"><head><meta charset="utf-8"><title>Stint console: ${title}</title>
<link rel="stylesheet" href="/console/static/console.css"></head>
<body><main class="error"><h1>${title}</h1><p class="problem">${problem.detail}</p>
${status >= 401 && status <= 403 ? "" : html`<p><a href="/console/">Back to the console</a></p>`}</main></body></html>`,
  );
}

/**
 * Refuses a state-changing request another site started: the browser's
 * Sec-Fetch-Site and Origin must say same-origin when present (browsers send
 * them on every POST), and the form must carry the session's token.
 */
export function checkSameSite(
  req: IncomingMessage,
  origin: string,
  form: URLSearchParams,
  csrf: string,
): void {
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin") throw crossSite(`the request came from a ${site} page`);
  const from = req.headers.origin;
  const ours = [origin, `https://${req.headers.host ?? ""}`];
  if (from !== undefined && !ours.includes(from)) throw crossSite("the request came from another origin");
  const sent = form.get("csrf");
  if (sent === null || !sameToken(sent, csrf)) {
    throw crossSite("the form's token does not match this session; reload the page and try again");
  }
}

const crossSite = (why: string) => new StintError("ERR_UNAUTHORIZED", `refused: ${why}`, { check: "csrf" });

export async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const type = String(req.headers["content-type"] ?? "")
    .split(";")[0]!
    .trim()
    .toLowerCase();
  if (type !== "application/x-www-form-urlencoded") {
    throw new StintError(
      "ERR_UNSUPPORTED_MEDIA_TYPE",
      `send the form as application/x-www-form-urlencoded (got ${type || "no content type"})`,
    );
  }
  return new URLSearchParams((await readBody(req, MAX_FORM_BYTES)).toString("utf8"));
}

/** A form field that must be present, once, and not empty. */
export function field(form: URLSearchParams, name: string): string {
  const values = form.getAll(name);
  if (values.length !== 1 || values[0]!.trim() === "") {
    throw new StintError("ERR_MALFORMED", `the form needs exactly one "${name}"`);
  }
  return values[0]!.trim();
}
