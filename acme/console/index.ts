import type { IncomingMessage, ServerResponse } from "node:http";
import { isStintError, StintError } from "../../common/errors";
import { adminAuthenticator } from "../admin-auth";
import { readBody } from "../body";
import { sendJson, sendProblem } from "../problem";
import type { Params, Router } from "../router";
import { action } from "./actions";
import { AuditChainCheck } from "./audit-chain";
import { consoleAuthenticator, cookie, SESSION_COOKIE } from "./auth";
import type { ConsoleDeps, ConsoleState, PageRequest } from "./context";
import { type Html, html } from "./html";
import { checkSameSite, readForm, redirect, sendError, sendHtml } from "./http";
import { layout, type View } from "./layout";
import { ProgressHistory } from "./progress";
import { ConsoleSessions, SESSION_TTL_MS } from "./sessions";
import { loadStatic } from "./static";
import { auditView, entriesView } from "./views-audit";
import { certificateView, fleetView } from "./views-fleet";
import { issuersView, revocationsView } from "./views-issuers";

/**
 * The security console under /console/ (docs: README, "Security console"):
 * server-rendered pages over the store, for the admin certificate or a
 * session from `stint console login`, and the admin API route that login
 * uses. Nothing under /console/ except the login exchange and the static
 * files answers without one of the two.
 */

export const CONSOLE_PREFIX = "/console";
/** The admin API route `stint console login` calls (admin certificate only). */
export const CONSOLE_LOGIN_PATH = "/admin/console/login";
const PROGRESS_SAMPLE_MS = 10_000;
const MAX_USER_LENGTH = 64;

export interface ConsoleLogin {
  url: string;
  user: string;
  expiresAt: string;
}

export function mountConsole(deps: ConsoleDeps): (router: Router, origin: string) => void {
  const state: ConsoleState = {
    ...deps,
    sessions: new ConsoleSessions(deps.store),
    progress: new ProgressHistory(deps.store, deps.log),
  };
  state.progress.start(PROGRESS_SAMPLE_MS);
  const chain = new AuditChainCheck(deps.store);
  const statics = loadStatic();
  const authenticate = consoleAuthenticator({ ...deps, sessions: state.sessions });
  const adminOnly = adminAuthenticator(deps);

  const page =
    (
      view: View | null,
      render: (r: PageRequest) => Promise<Html | { title: string; body: Html }>,
      title = "",
    ) =>
    async (req: IncomingMessage, res: ServerResponse, url: URL, params: Params) => {
      try {
        const now = new Date();
        const user = await authenticate(req, now);
        const out = await render({ console: state, user, url, params, now });
        const { title: t, body } = "title" in out ? out : { title, body: out };
        sendHtml(res, 200, layout(t, user, view, body));
      } catch (err) {
        sendError(res, err, deps.log);
      }
    };

  return (router, origin) => {
    router
      .on("GET", CONSOLE_PREFIX, (_req, res) => redirect(res, `${CONSOLE_PREFIX}/`))
      .on("GET", `${CONSOLE_PREFIX}/`, (_req, res) => redirect(res, `${CONSOLE_PREFIX}/fleet`))
      .on("GET", `${CONSOLE_PREFIX}/fleet`, page("fleet", fleetView, "Fleet"))
      .on("GET", `${CONSOLE_PREFIX}/issuers`, page("issuers", issuersView, "Issuers"))
      .on(
        "GET",
        `${CONSOLE_PREFIX}/revocations`,
        page("revocations", revocationsView, "Revocations and feed"),
      )
      .on(
        "GET",
        `${CONSOLE_PREFIX}/audit`,
        page("audit", (r) => auditView(r, chain), "Audit"),
      )
      .on("GET", `${CONSOLE_PREFIX}/entries`, page("entries", entriesView, "Entries and tokens"))
      .on("GET", `${CONSOLE_PREFIX}/certificates/:serial`, page("fleet", certificateView))
      .on(
        "GET",
        `${CONSOLE_PREFIX}/confirm/:action`,
        page(null, async (r) => {
          const a = action(r.params.action!);
          const input = r.url.searchParams;
          const c = await a.confirm({ console: state, user: r.user, input, now: r.now });
          return {
            title: `Confirm: ${a.title}`,
            body: html`<div class="confirm"><ul class="effect">${c.effect.map((e) => html`<li>${e}</li>`)}</ul>
<form method="post" action="${CONSOLE_PREFIX}/actions/${r.params.action!}">
<input type="hidden" name="csrf" value="${r.user.csrf}">
${Object.entries(c.fields).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`)}
<button type="submit" class="danger" id="confirm">Confirm</button> <a href="${CONSOLE_PREFIX}/fleet">Cancel</a></form>
${c.extra ?? ""}</div>`,
          };
        }),
      )
      .on("POST", `${CONSOLE_PREFIX}/actions/:action`, async (req, res, _url, params) => {
        try {
          const now = new Date();
          const user = await authenticate(req, now);
          const form = await readForm(req);
          checkSameSite(req, origin, form, user.csrf);
          const a = action(params.action!);
          const done = await a.run({ console: state, user, input: form, now });
          deps.log.info("console action", { action: params.action, actor: user.actor });
          sendHtml(res, 200, layout(a.title, user, null, done));
        } catch (err) {
          sendError(res, err, deps.log);
        }
      })
      .on("GET", `${CONSOLE_PREFIX}/login`, async (_req, res, url) => {
        try {
          const code = url.searchParams.get("code") ?? "";
          const redeemed = await state.sessions.redeem(code, new Date());
          if (!redeemed) {
            throw new StintError(
              "ERR_UNAUTHORIZED",
              "this login link is unknown, used or expired; run `stint console login` for a new one",
              { check: "client_certificate" },
            );
          }
          redirect(res, `${CONSOLE_PREFIX}/fleet`, {
            "set-cookie": `${SESSION_COOKIE}=${redeemed.token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}`,
          });
        } catch (err) {
          sendError(res, err, deps.log);
        }
      })
      .on("POST", `${CONSOLE_PREFIX}/logout`, async (req: IncomingMessage, res: ServerResponse) => {
        try {
          const user = await authenticate(req, new Date());
          checkSameSite(req, origin, await readForm(req), user.csrf);
          const token = cookie(req, SESSION_COOKIE);
          if (token) await state.sessions.end(token);
          sendHtml(
            res,
            200,
            html`<html lang="en"><head><meta charset="utf-8"><title>Logged out</title><link rel="stylesheet" href="/console/static/console.css"></head>
<body><main><h1>Logged out</h1><p>Run <code>stint console login</code> to log in again.</p></main></body></html>`,
            { "set-cookie": `${SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0` },
          );
        } catch (err) {
          sendError(res, err, deps.log);
        }
      })
      .on("POST", CONSOLE_LOGIN_PATH, async (req, res) => {
        try {
          const now = new Date();
          const actor = await adminOnly(req, now);
          const user = await loginUser(req);
          const { code, expiresAt } = await state.sessions.issueCode(user, now);
          await deps.store.appendAudit({
            at: now,
            actor,
            action: "console.login",
            subject: user,
            details: { expiresAt: expiresAt.toISOString() },
          });
          const login: ConsoleLogin = {
            url: `${origin}${CONSOLE_PREFIX}/login?code=${code}`,
            user,
            expiresAt: expiresAt.toISOString(),
          };
          res.setHeader("cache-control", "no-store");
          sendJson(res, 201, login);
        } catch (err) {
          const status =
            isStintError(err, "ERR_UNAUTHORIZED") && err.check === "client_certificate" ? 401 : undefined;
          if (status)
            sendJson(
              res,
              401,
              { type: "urn:ietf:params:acme:error:unauthorized", detail: (err as Error).message, status },
              "application/problem+json",
            );
          else sendProblem(res, err, deps.log);
        }
      });
    for (const [name, file] of statics) {
      router.on("GET", `${CONSOLE_PREFIX}/static/${name}`, (req, res) => {
        const headers = {
          "content-type": file.type,
          etag: file.etag,
          "cache-control": "no-cache",
          "x-content-type-options": "nosniff",
        };
        if (req.headers["if-none-match"] === file.etag) {
          res.writeHead(304, headers);
          res.end();
          return;
        }
        res.writeHead(200, { ...headers, "content-length": file.body.length });
        res.end(file.body);
      });
    }
  };
}

/** The login request's body: {"user": NAME}, a short printable name the audit records carry. */
async function loginUser(req: IncomingMessage): Promise<string> {
  const text = (await readBody(req, 4096)).toString("utf8");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new StintError("ERR_MALFORMED", "the request body is not valid JSON");
  }
  const user = (value as { user?: unknown } | null)?.user;
  if (typeof user !== "string" || !/^[\x21-\x7e]{1,64}$/.test(user) || user.length > MAX_USER_LENGTH) {
    throw new StintError(
      "ERR_MALFORMED",
      `user must be 1 to ${MAX_USER_LENGTH} printable characters without spaces`,
    );
  }
  return user;
}
