import { revocationReasonName } from "../../ca/revocation";
import { readRotationState } from "../../ca/rotation";
import type { IssuerProgress, IssuerRecord } from "../../ca/store";
import type { PageRequest } from "./context";
import { type Html, html, qs } from "./html";
import { barChart, relative, when } from "./layout";

/** Issuers (hierarchy, states, counts, taints, cross-signatures, rotation progress) and Revocations and feed. */

const REVOKED_SHOWN = 100;

export async function issuersView(r: PageRequest): Promise<Html> {
  const { store, authority, progress } = r.console;
  const issuers = await store.listIssuers();
  const state = await readRotationState(store, issuers);
  const counts = new Map<string, IssuerProgress>();
  for (const i of issuers) {
    const p = await store.issuerProgress(i.id, r.now);
    counts.set(i.id, p);
    if (i.kind === "intermediate" && (i.state === "retired" || i.state === "tainted"))
      progress.record(i.id, r.now, p);
  }
  const active = authority.activeIssuer.id;
  const children = (parent: string | null) =>
    issuers
      .filter((i) =>
        parent === null ? i.kind === "root" : i.parentId === parent && i.kind === "intermediate",
      )
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
  const standing = (i: IssuerRecord) => (state.revoked.has(i.id) ? "revoked" : i.state);

  const row = (i: IssuerRecord, depth: number): Html => {
    const c = counts.get(i.id)!;
    const taint = state.taints.get(i.id);
    const cross = state.cross.get(i.id);
    return html`<tr id="issuer-${i.id}" class="depth-${depth}"><td class="mono">${depth > 0 ? "└ " : ""}${i.id}</td>
<td>${i.kind}${i.id === active ? " (signing)" : ""}</td>
<td><span class="state ${standing(i)}">${standing(i)}</span></td>
<td>${i.subject}</td><td>${when(i.notAfter)}</td>
<td class="num">${c.live}</td><td class="num">${c.unreplaced}</td>
<td>${taint ? html`tainted ${when(taint.at)}; ${taint.deadline ? html`revoked at ${when(taint.deadline)} (${relative(taint.deadline, r.now)})` : "no deadline"}` : ""}
${cross ? html`cross-signed by ${cross.by}` : ""}</td>
<td>${
      i.kind === "intermediate" && i.state === "retired" && !state.revoked.has(i.id)
        ? html`<a class="button danger" href="/console/confirm/taint${qs({ issuer: i.id })}">Taint…</a>`
        : ""
    }</td></tr>
${children(i.id).map((child) => row(child, depth + 1))}`;
  };

  const moving = issuers.filter((i) => progress.samples(i.id).length > 0);
  return html`<p class="actions">${r.console.rotation ? html`<a class="button" href="/console/confirm/rotate">Rotate the intermediate…</a>` : ""}</p>
<table class="issuers"><thead><tr><th>Issuer</th><th>Kind</th><th>State</th><th>Subject</th><th>Not after</th>
<th>Live</th><th>Unreplaced</th><th>Taint / cross-signature</th><th></th></tr></thead>
<tbody>${children(null).map((root) => row(root, 0))}</tbody></table>
<p class="note">Live: unexpired, unrevoked certificates it signed. Unreplaced: those whose SPIFFE ID has no later certificate from another issuer.</p>
<section><h2>Rotation progress</h2>
${moving.length === 0 ? html`<p class="empty">No fleet is moving off an issuer.</p>` : moving.map((i) => progressChart(i, r))}
</section>`;
}

/** The share of the fleet moved off `issuer` over time: unreplaced certificates against the first sample. */
function progressChart(issuer: IssuerRecord, r: PageRequest): Html {
  const samples = r.console.progress.samples(issuer.id);
  const baseline = Math.max(1, ...samples.map((s) => s.unreplaced));
  const last = samples[samples.length - 1]!;
  const moved = baseline - last.unreplaced;
  const share = Math.round((moved / baseline) * 100);
  return html`<div class="progress" id="progress-${issuer.id}"><h3>Off ${issuer.id} (${issuer.state})</h3>
<p><span class="moved">${moved} of ${baseline}</span> certificates moved to the active issuer (<span class="share">${share}%</span>); ${last.unreplaced} still to go, as of ${when(last.at)}.</p>
${barChart(
  samples.map((s) => ({ label: `${when(s.at)} moved`, value: baseline - s.unreplaced })),
  { height: 80 },
)}</div>`;
}

export async function revocationsView(r: PageRequest): Promise<Html> {
  const { store, authority, feed } = r.console;
  const issuers = await store.listIssuers();
  const state = await readRotationState(store, issuers);
  const published = feed?.current();
  const revokedByIssuer = await Promise.all(
    issuers
      .filter((i) => i.kind === "intermediate")
      .map(async (i) => ({ issuer: i, revoked: await store.listRevoked(i.id, r.now) })),
  );
  const crls = issuers.map((i) => ({ issuer: i, crl: authority.crl(i.id) })).filter((x) => x.crl !== null);
  return html`<section><h2>Revocation feed</h2>
${
  published
    ? html`<dl class="facts"><dt>Sequence</dt><dd id="feed-sequence">${published.sequence}</dd>
<dt>Size</dt><dd>${published.envelope.length} bytes (signed snapshot)</dd>
<dt>Built</dt><dd>${when(published.snapshot.thisUpdate)} (${relative(published.snapshot.thisUpdate, r.now)})</dd>
<dt>Valid until</dt><dd>${when(published.snapshot.nextUpdate)} (${relative(published.snapshot.nextUpdate, r.now)})</dd>
<dt>Revoked issuers listed</dt><dd>${published.snapshot.revokedIssuers.join(", ") || "none"}</dd></dl>`
    : html`<p class="empty">This server publishes no feed.</p>`
}</section>
<section><h2>CRLs</h2>
<table><thead><tr><th>Issuer</th><th>CRL number</th><th>thisUpdate</th><th>nextUpdate</th></tr></thead><tbody>
${crls.map((x) => html`<tr><td class="mono">${x.issuer.id}</td><td class="num">${x.crl!.number}</td><td>${when(x.crl!.thisUpdate)}</td><td>${when(x.crl!.nextUpdate)} (${relative(x.crl!.nextUpdate, r.now)})</td></tr>`)}
</tbody></table></section>
<section><h2>Revoked issuers</h2>
${
  state.revoked.size === 0
    ? html`<p class="empty">None.</p>`
    : html`<ul>${[...state.revoked].map(([id, at]) => html`<li><a href="/console/issuers#issuer-${id}">${id}</a> revoked ${when(at)}</li>`)}</ul>`
}</section>
<section><h2>Revoked certificates (unexpired)</h2>
<table class="revoked"><thead><tr><th>Serial</th><th>Issuer</th><th>Revoked</th><th>Reason</th></tr></thead><tbody>
${revokedByIssuer.flatMap(({ issuer, revoked }) =>
  revoked
    .slice(0, REVOKED_SHOWN)
    .map(
      (c) =>
        html`<tr><td class="mono"><a href="/console/certificates/${c.serial}">${c.serial}</a></td><td class="mono">${issuer.id}</td><td>${when(c.revokedAt)}</td><td>${revocationReasonName(c.reason)}</td></tr>`,
    ),
)}
</tbody></table>
${revokedByIssuer.some((x) => x.revoked.length > REVOKED_SHOWN) ? html`<p class="note">The first ${REVOKED_SHOWN} of each issuer are shown.</p>` : ""}
</section>`;
}
