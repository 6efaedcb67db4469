import type { AuditQuery, AuditRecord, JoinTokenSummary } from "../../ca/store";
import { formatDuration } from "../../common/duration";
import { StintError } from "../../common/errors";
import type { AuditChainCheck } from "./audit-chain";
import { type PageRequest, query } from "./context";
import { type Html, html, qs } from "./html";
import { relative, when } from "./layout";

/** Audit (search, chain integrity, links to what each record names) and Entries and tokens. */

const AUDIT_PAGE = 50;
/** Join tokens shown, outstanding first; older used and expired ones fall off the end. */
export const TOKENS_SHOWN = 100;

export async function auditView(r: PageRequest, chain: AuditChainCheck): Promise<Html> {
  const q = query(r.url, ["actor", "action", "text", "from", "to", "before"]);
  const search: AuditQuery = {
    ...(q.actor === undefined ? {} : { actor: q.actor }),
    ...(q.action === undefined ? {} : { action: q.action }),
    ...(q.text === undefined ? {} : { text: q.text }),
    ...(q.from === undefined ? {} : { from: time("from", q.from) }),
    ...(q.to === undefined ? {} : { to: time("to", q.to) }),
    ...(q.before === undefined ? {} : { beforeSeq: seq(q.before) }),
    limit: AUDIT_PAGE,
  };
  const [records, integrity] = await Promise.all([r.console.store.searchAudit(search), chain.check()]);
  const next = records.length === AUDIT_PAGE ? records[records.length - 1]!.seq : null;
  return html`<p id="chain" class="${integrity.broken ? "chain broken" : "chain ok"}">${
    integrity.broken
      ? html`Hash chain BROKEN: ${integrity.broken}`
      : html`Hash chain intact through record ${integrity.verifiedSeq}${integrity.behind ? " (later records are still being checked)" : ""}.`
  }</p>
<form class="filters" method="get" action="/console/audit" role="search">
<label>Actor <input name="actor" value="${q.actor ?? ""}"></label>
<label>Action <input name="action" value="${q.action ?? ""}" placeholder="cert.revoke"></label>
<label>SPIFFE ID, serial or id <input name="text" value="${q.text ?? ""}"></label>
<label>From <input name="from" value="${q.from ?? ""}" placeholder="2026-01-01T00:00:00Z"></label>
<label>To <input name="to" value="${q.to ?? ""}"></label>
<button type="submit">Search</button></form>
${
  records.length === 0
    ? html`<p class="empty">No records match.</p>`
    : html`<table class="audit"><thead><tr><th>#</th><th>Time</th><th>Actor</th><th>Action</th><th>Subject</th><th>Details</th></tr></thead><tbody>
${records.map(auditRow)}</tbody></table>`
}
${next ? html`<p class="pager"><a href="/console/audit${qs({ ...q, before: next })}" rel="next">Older →</a></p>` : ""}`;
}

function auditRow(a: AuditRecord): Html {
  return html`<tr><td class="num" title="${a.hash}">${a.seq}</td><td>${when(a.at)}</td><td>${a.actor}</td>
<td>${a.action}</td><td class="mono">${subjectLink(a)}</td><td class="details">${detailsOf(a.details)}</td></tr>`;
}

/** Every record links to what it names: a certificate, an entry, an issuer. */
function subjectLink(a: AuditRecord): Html | string {
  const [kind] = a.action.split(".");
  if (kind === "cert" && /^[0-9a-f]+$/.test(a.subject))
    return html`<a href="/console/certificates/${a.subject}">${a.subject}</a>`;
  if (kind === "entry") return html`<a href="/console/entries#entry-${a.subject}">${a.subject}</a>`;
  if (kind === "issuer" || kind === "root")
    return html`<a href="/console/issuers#issuer-${a.subject}">${a.subject}</a>`;
  if (a.subject.startsWith("spiffe://"))
    return html`<a href="/console/fleet${qs({ id: a.subject })}">${a.subject}</a>`;
  return a.subject;
}

function detailsOf(details: Record<string, unknown>): Html[] {
  return Object.entries(details).map(([k, v]) => {
    const text = typeof v === "string" ? v : JSON.stringify(v);
    const value =
      k === "spiffeId" && typeof v === "string"
        ? html`<a href="/console/fleet${qs({ id: v })}">${v}</a>`
        : k === "entryId" && typeof v === "string"
          ? html`<a href="/console/entries#entry-${v}">${v}</a>`
          : text;
    return html`<span class="kv"><b>${k}</b> ${value}</span> `;
  });
}

function time(name: string, text: string): Date {
  const d = new Date(text);
  if (Number.isNaN(d.getTime()))
    throw new StintError("ERR_MALFORMED", `${name} must be a time such as 2026-01-01T12:00:00Z`);
  return d;
}

function seq(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new StintError("ERR_MALFORMED", "before must be an audit record number");
  return n;
}

export async function entriesView(r: PageRequest): Promise<Html> {
  const { store, authority } = r.console;
  query(r.url, []);
  const [entries, tokens] = await Promise.all([
    store.listEntries({}),
    store.listJoinTokens(r.now, TOKENS_SHOWN),
  ]);
  return html`<section><h2>Registration entries</h2>
<table class="entries"><thead><tr><th>Entry</th><th>SPIFFE ID</th><th>Selectors</th><th>Parent</th><th>DNS names</th><th>TTL</th><th>Created</th><th></th></tr></thead><tbody>
${entries.map(
  (e) => html`<tr id="entry-${e.id}"><td class="mono">${e.id}</td>
<td><a href="/console/fleet${qs({ id: e.spiffeId })}">${e.spiffeId}</a></td>
<td>${e.selectors.map((s) => html`<a class="selector" href="/console/fleet${qs({ selector: s })}">${s}</a> `)}</td>
<td>${e.parent ?? ""}</td><td>${e.dnsNames.join(", ")}</td><td>${e.ttlMs === null ? "default" : formatDuration(e.ttlMs)}</td>
<td>${when(e.createdAt)}</td><td><a class="button danger" href="/console/confirm/entry-delete${qs({ id: e.id })}">Delete…</a> <a class="button danger" href="/console/confirm/entry-delete${qs({ id: e.id, revoke: "1" })}">Delete and revoke…</a></td></tr>`,
)}</tbody></table></section>
<section><h2>Join tokens</h2>
<p class="note">Outstanding tokens first. Only a token's id is kept in the clear; its secret is never stored, so never shown again.</p>
${joinTokenTable(tokens, r.now)}</section>
<section class="forms"><h2>Create an entry</h2>
<form method="get" action="/console/confirm/entry-create">
<label>SPIFFE ID <input name="spiffeId" required placeholder="spiffe://${authority.trustDomain}/web"></label>
<label>Selectors (one a line) <textarea name="selectors" rows="3" required placeholder="unix:uid:1000"></textarea></label>
<label>Parent (node agent ID, optional) <input name="parent"></label>
<button type="submit">Review…</button></form>
<h2>Create a join token</h2>
<form method="get" action="/console/confirm/token-create">
<label>SPIFFE ID <input name="spiffeId" required placeholder="spiffe://${authority.trustDomain}/batch"></label>
<label>Usable for <input name="ttl" value="10m"></label>
<button type="submit">Review…</button></form></section>`;
}

export const tokenState = (t: JoinTokenSummary, now: Date) =>
  t.usedAt ? "used" : t.expiresAt <= now ? "expired" : "outstanding";

export function joinTokenTable(tokens: readonly JoinTokenSummary[], now: Date): Html {
  if (tokens.length === 0) return html`<p class="empty">None.</p>`;
  return html`<table class="tokens"><thead><tr><th>Token</th><th>SPIFFE ID</th><th>Created</th><th>Expires</th><th>State</th></tr></thead><tbody>
${tokens.map((t) => {
  const st = tokenState(t, now);
  return html`<tr id="token-${t.id}"><td class="mono">${t.id}</td>
<td><a href="/console/fleet${qs({ id: t.spiffeId })}">${t.spiffeId}</a></td><td>${when(t.createdAt)}</td>
<td>${when(t.expiresAt)} <span class="rel">(${relative(t.expiresAt, now)})</span></td>
<td><span class="status ${st}">${st}${t.usedAt ? html` ${when(t.usedAt)}` : ""}</span></td></tr>`;
})}</tbody></table>`;
}
