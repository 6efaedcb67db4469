import { createHash, X509Certificate } from "node:crypto";
import { DEFAULT_WINDOW } from "../../ca/renewal";
import type { AuditRecord, CertificateRecord, LateRenewals } from "../../ca/store";
import { StintError } from "../../common/errors";
import { type PageRequest, query, serialParam } from "./context";
import { type Html, html, qs } from "./html";
import { barChart, relative, when } from "./layout";

/** Fleet: certificates by SPIFFE ID, issuer or selector, the expiry timeline, and workloads that stopped renewing. */

export const FLEET_PAGE = 50;
const TIMELINE_HOURS = 3;
const MINUTE = 60_000;
const UNRENEWED_LOOKBACK_MS = 24 * 3_600_000;
/** Late renewals are looked for among certificates issued this recently: its cost grows with renewals in the period. */
const LATE_LOOKBACK_MS = 3_600_000;
/** Refused attestations read from the audit log for the failed-renewal counts (newest first). */
const REFUSALS_READ = 200;
/** A selector filter shows certificates of at most this many SPIFFE IDs (entries are few; IDs per selector fewer). */
const SELECTOR_IDS = 20;

export async function fleetView(r: PageRequest): Promise<Html> {
  const { store, authority } = r.console;
  const q = query(r.url, ["id", "selector", "issuer", "after", "all"]);
  const live = q.all === undefined;
  const filter = {
    ...(q.id === undefined ? {} : { spiffeIdPrefix: q.id }),
    ...(q.issuer === undefined ? {} : { issuerId: q.issuer.toLowerCase() }),
    ...(live ? { unexpiredAt: r.now } : {}),
  };
  let certs: CertificateRecord[];
  let next: string | null = null;
  let selectorNote: Html | string = "";
  if (q.selector !== undefined) {
    const ids = [
      ...new Set(
        (await store.listEntries({})).filter((e) => e.selectors.includes(q.selector!)).map((e) => e.spiffeId),
      ),
    ];
    const shown = ids.slice(0, SELECTOR_IDS);
    certs = (
      await Promise.all(
        shown.map((spiffeId) => store.listCertificates({ ...filter, spiffeId, limit: FLEET_PAGE })),
      )
    ).flat();
    certs = certs.filter((c) => q.id === undefined || c.spiffeId?.startsWith(q.id));
    selectorNote = html`<p class="note">Selector ${q.selector} is granted by entries for ${ids.length} SPIFFE ID(s)${
      ids.length > shown.length ? `; the first ${shown.length} are shown` : ""
    }.</p>`;
  } else {
    certs = await store.listCertificates({
      ...filter,
      ...(q.after === undefined ? {} : { afterSerial: serialParam(q.after) }),
      limit: FLEET_PAGE,
    });
    if (certs.length === FLEET_PAGE) next = certs[certs.length - 1]!.serial;
  }

  const until = new Date(r.now.getTime() + TIMELINE_HOURS * 3_600_000);
  const since = new Date(r.now.getTime() - UNRENEWED_LOOKBACK_MS);
  const windowEnd = (r.console.renewalWindow ?? DEFAULT_WINDOW).end;
  const [timeline, unrenewed, issuers, late, refusals] = await Promise.all([
    store.expiryTimeline(r.now, until, MINUTE),
    store.expiredUnrenewed(since, r.now, FLEET_PAGE),
    store.listIssuers(),
    store.lateRenewals(new Date(r.now.getTime() - LATE_LOOKBACK_MS), r.now, windowEnd * 100, FLEET_PAGE),
    store.searchAudit({ action: "attest.refused", from: since, limit: REFUSALS_READ }),
  ]);
  const perMinute = new Map(
    timeline.map((b) => [Math.round((b.start.getTime() - r.now.getTime()) / MINUTE), b.count]),
  );
  const bars = Array.from({ length: TIMELINE_HOURS * 60 }, (_, m) => ({
    label: `expiring ${m}–${m + 1} min from now`,
    value: perMinute.get(m) ?? 0,
  }));
  const total = timeline.reduce((n, b) => n + b.count, 0);
  const firstHour = bars.slice(0, 60).reduce((n, b) => n + b.value, 0);
  const intermediates = issuers.filter((i) => i.kind === "intermediate");

  return html`
<form class="filters" method="get" action="/console/fleet" role="search">
<label>SPIFFE ID starts with <input name="id" value="${q.id ?? ""}" placeholder="spiffe://${authority.trustDomain}/"></label>
<label>Selector <input name="selector" value="${q.selector ?? ""}" placeholder="unix:uid:1000"></label>
<label>Issuer <select name="issuer"><option value="">any</option>${intermediates.map(
    (i) =>
      html`<option value="${i.id}"${i.id === q.issuer ? html` selected` : ""}>${i.id} (${i.state})</option>`,
  )}</select></label>
<label class="check"><input type="checkbox" name="all" value="1"${live ? "" : html` checked`}> include expired</label>
<button type="submit">Search</button></form>
${selectorNote}
<section><h2>Certificates</h2>
${certificateTable(certs, r.now)}
${next ? html`<p class="pager"><a href="/console/fleet${qs({ ...q, after: next })}" rel="next">Next ${FLEET_PAGE} →</a></p>` : ""}
</section>
<section><h2>Expiry timeline</h2>
<p>${total} live certificate(s) expire in the next ${TIMELINE_HOURS} hours, ${firstHour} in the next hour (one column per minute).</p>
${barChart(bars, { id: "expiry-timeline" })}
</section>
<section><h2>Expired without renewal</h2>
<p class="note">Workloads whose last certificate expired in the past 24 hours and that got no newer one.</p>
${unrenewed.length === 0 ? html`<p class="empty">None.</p>` : certificateTable(unrenewed, r.now)}
</section>
${renewalTrouble(late, refusals, windowEnd, r.now)}`;
}

/**
 * Late renewals come from the store; failed ones only as far as the audit log
 * records them (refused attestations). Finalize errors and an unreachable CA
 * leave no record here, so the view says where those are counted.
 */
export function renewalTrouble(
  late: readonly LateRenewals[],
  refusals: readonly AuditRecord[],
  windowEnd: number,
  now: Date,
): Html {
  const refused = new Map<string, { count: number; last: AuditRecord }>();
  for (const a of refusals) {
    const seen = refused.get(a.subject);
    if (seen) seen.count++;
    else refused.set(a.subject, { count: 1, last: a });
  }
  const pct = Math.round(windowEnd * 100);
  return html`<section id="late-renewals"><h2>Late renewals</h2>
<p class="note">Certificates issued in the past hour after ${pct}% of the previous certificate's lifetime for the same SPIFFE ID (the end of the renewal window), per ID.</p>
${
  late.length === 0
    ? html`<p class="empty">None.</p>`
    : html`<table class="late"><thead><tr><th>SPIFFE ID</th><th>Late renewals</th><th>Latest renewal</th><th>Window closed</th><th>Previous certificate</th></tr></thead><tbody>
${late.map(
  (
    l,
  ) => html`<tr><td><a href="/console/fleet${qs({ id: l.spiffeId })}">${l.spiffeId}</a></td><td class="num">${l.count}</td>
<td><a class="mono" href="/console/certificates/${l.latest.successor}">${l.latest.successor}</a> ${when(l.latest.renewedAt)} <span class="rel">(${relative(l.latest.renewedAt, now)})</span></td>
<td>${when(l.latest.windowEnd)}${l.latest.renewedAt > l.latest.predecessorNotAfter ? html` <span class="status expired">after expiry</span>` : ""}</td>
<td><a class="mono" href="/console/certificates/${l.latest.predecessor}">${l.latest.predecessor}</a></td></tr>`,
)}</tbody></table>`
}</section>
<section id="failed-renewals"><h2>Failed renewals</h2>
<p class="note">Refused attestations in the past 24 hours, from the audit log (the latest ${REFUSALS_READ} read). Other failures (a finalize error, a CA the agent could not reach) are not in the audit log; agents report them on their /metrics as stint_agent_renewals_total{result="failed"} and stint_agent_workload_failures_total.</p>
${
  refused.size === 0
    ? html`<p class="empty">None recorded.</p>`
    : html`<table class="failed"><thead><tr><th>SPIFFE ID</th><th>Refused</th><th>Latest</th><th>Reason</th></tr></thead><tbody>
${[...refused].map(
  ([
    id,
    f,
  ]) => html`<tr><td><a href="/console/audit${qs({ action: "attest.refused", text: id })}">${id}</a></td><td class="num">${f.count}</td>
<td>${when(f.last.at)}</td><td>${typeof f.last.details.reason === "string" ? f.last.details.reason : ""}</td></tr>`,
)}</tbody></table>`
}</section>`;
}

export function certificateTable(certs: readonly CertificateRecord[], now: Date): Html {
  if (certs.length === 0) return html`<p class="empty">No certificates match.</p>`;
  return html`<table class="certs"><thead><tr><th>SPIFFE ID</th><th>Serial</th><th>Issuer</th>
<th>Issued (last renewal)</th><th>Not after</th><th>Status</th></tr></thead><tbody>
${certs.map(
  (
    c,
  ) => html`<tr><td>${c.spiffeId ? html`<a href="/console/fleet${qs({ id: c.spiffeId })}">${c.spiffeId}</a>` : c.dnsNames.join(", ")}</td>
<td class="mono"><a href="/console/certificates/${c.serial}">${c.serial}</a></td>
<td class="mono">${c.issuerId}</td><td>${when(c.notBefore)}</td>
<td>${when(c.notAfter)} <span class="rel">(${relative(c.notAfter, now)})</span></td>
<td><span class="status ${status(c, now)}">${status(c, now)}</span></td></tr>`,
)}</tbody></table>`;
}

export const status = (c: CertificateRecord, now: Date) =>
  c.revokedAt ? "revoked" : c.notAfter <= now ? "expired" : "valid";

export async function certificateView(r: PageRequest): Promise<{ title: string; body: Html }> {
  const { store, authority } = r.console;
  const serial = serialParam(r.params.serial!);
  const cert = await store.getCertificate(serial);
  if (!cert)
    throw new StintError("ERR_NOT_FOUND", `no certificate with serial ${serial} was issued by this CA`);
  const binding = await store.getCertificateBinding(serial);
  const x = new X509Certificate(cert.der);
  const renewFrom = authority.renewFrom(cert);
  const st = status(cert, r.now);
  return {
    title: `Certificate ${serial}`,
    body: html`<dl class="facts">
<dt>Status</dt><dd><span class="status ${st}">${st}</span>${cert.revokedAt ? ` since ${when(cert.revokedAt)}` : ""}</dd>
<dt>SPIFFE ID</dt><dd>${cert.spiffeId ? html`<a href="/console/fleet${qs({ id: cert.spiffeId })}">${cert.spiffeId}</a>` : "—"}</dd>
<dt>DNS names</dt><dd>${cert.dnsNames.join(", ") || "—"}</dd>
<dt>Issuer</dt><dd><a href="/console/issuers#issuer-${cert.issuerId}">${cert.issuerId}</a> (sequence ${cert.sequence})</dd>
<dt>Subject</dt><dd>${x.subject.replace(/\n/g, ", ") || "—"}</dd>
<dt>Not before</dt><dd>${when(cert.notBefore)}</dd>
<dt>Not after</dt><dd>${when(cert.notAfter)} (${relative(cert.notAfter, r.now)})</dd>
<dt>Renewal asked from</dt><dd>${renewFrom ? when(renewFrom) : "the usual window (ARI)"}</dd>
<dt>Entry</dt><dd>${binding ? html`<a href="/console/entries#entry-${binding.entryId}">${binding.entryId}</a>${binding.renews ? html` · renews <a href="/console/certificates/${binding.renews}">${binding.renews}</a>` : ""}${binding.requestedBy ? html` · obtained by node agent <a href="/console/fleet${qs({ id: binding.requestedBy })}">${binding.requestedBy}</a>` : ""}` : "—"}</dd>
<dt>SHA-256</dt><dd class="mono">${createHash("sha256").update(cert.der).digest("hex")}</dd>
</dl>
<p><a href="/console/audit${qs({ text: serial })}">Audit records naming this certificate</a></p>
${
  st === "valid"
    ? html`<p class="actions"><a class="button danger" href="/console/confirm/revoke${qs({ serial })}">Revoke this certificate…</a>
${cert.spiffeId ? html`<a class="button danger" href="/console/confirm/revoke-id${qs({ spiffeId: cert.spiffeId })}">Revoke every certificate of ${cert.spiffeId}…</a>` : ""}</p>`
    : ""
}`,
  };
}
