import type { ConsoleUser } from "./auth";
import { type Html, html } from "./html";

/** The frame every console page shares: navigation, who is logged in, and logout. */

export const VIEWS = [
  ["fleet", "Fleet"],
  ["issuers", "Issuers"],
  ["revocations", "Revocations and feed"],
  ["audit", "Audit"],
  ["entries", "Entries and tokens"],
] as const;

export type View = (typeof VIEWS)[number][0];

export function layout(title: string, user: ConsoleUser, active: View | null, body: Html): Html {
  return html`<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${title} · Stint console</title>
<link rel="stylesheet" href="/console/static/console.css">
<script src="/console/static/console.js" defer></script>
</head><body>
<header><a class="brand" href="/console/">Stint</a>
<nav>${VIEWS.map(
    ([id, name]) =>
      html`<a href="/console/${id}"${id === active ? html` aria-current="page"` : ""}>${name}</a>`,
  )}</nav>
<form class="who" method="post" action="/console/logout"><span>${user.label}</span>
<input type="hidden" name="csrf" value="${user.csrf}"><button type="submit">Log out</button></form>
</header>
<main><h1>${title}</h1>
${body}
</main></body></html>`;
}

/** A date as the console shows it: ISO 8601 to the second, UTC. */
export function when(d: Date | null | undefined): string {
  return d ? `${d.toISOString().slice(0, 19)}Z` : "—";
}

/** "in 4m", "12m ago": how far `d` is from `now`. */
export function relative(d: Date, now: Date): string {
  const ms = d.getTime() - now.getTime();
  const abs = Math.abs(ms);
  const text =
    abs < 60_000
      ? `${Math.round(abs / 1000)}s`
      : abs < 3_600_000
        ? `${Math.round(abs / 60_000)}m`
        : abs < 172_800_000
          ? `${(abs / 3_600_000).toFixed(1)}h`
          : `${Math.round(abs / 86_400_000)}d`;
  return ms >= 0 ? `in ${text}` : `${text} ago`;
}

/** A column chart as SVG (attributes, not style: the CSP allows no inline style). */
export function barChart(
  values: readonly { label: string; value: number }[],
  opts: { width?: number; height?: number; id?: string },
): Html {
  const width = opts.width ?? 720;
  const height = opts.height ?? 120;
  const max = Math.max(1, ...values.map((v) => v.value));
  const w = values.length === 0 ? 0 : width / values.length;
  return html`<svg class="chart" ${opts.id ? html`id="${opts.id}" ` : ""}viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img">
${values.map((v, i) => {
  const h = v.value === 0 ? 0 : Math.max(1, (v.value / max) * (height - 2));
  return html`<rect x="${(i * w).toFixed(1)}" y="${(height - h).toFixed(1)}" width="${Math.max(1, w - 1).toFixed(1)}" height="${h.toFixed(1)}"><title>${v.label}: ${v.value}</title></rect>`;
})}</svg>`;
}
