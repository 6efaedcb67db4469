import { newEntryId, parseEnrollableId, parseEntryParent, parseSelectors } from "../../ca/entries";
import { DEFAULT_INTERMEDIATE_TTL_DAYS } from "../../ca/hierarchy";
import { newJoinToken, storeJoinToken } from "../../ca/join-token";
import { parseRevocationReason, revocationReasonName } from "../../ca/revocation";
import { rotateIntermediate, taintIssuer } from "../../ca/rotation";
import { describePlan, planRotate, planTaint } from "../../ca/rotation-plan";
import type { AuditEvent, CertificateRecord } from "../../ca/store";
import type { EntryRecord } from "../../ca/store-acme";
import { parseDuration } from "../../common/duration";
import { StintError } from "../../common/errors";
import type { ConsoleUser } from "./auth";
import { type ConsoleState, serialParam } from "./context";
import { type Html, html, qs } from "./html";
import { when } from "./layout";

/**
 * The console's actions. Each has a confirmation (GET /console/confirm/NAME)
 * that restates its effect from the store as it is now, and an execution
 * (POST /console/actions/NAME) that checks everything again and leaves an
 * audit record whose actor names the console user. They call what the admin
 * API and the CLI call (Authority.revoke, ca/rotation.ts, the store's entry
 * and join-token writes), with the same parsers.
 */

export interface ActionRequest {
  console: ConsoleState;
  user: ConsoleUser;
  /** The confirmation's query, or the posted form. */
  input: URLSearchParams;
  now: Date;
}

interface Action {
  title: string;
  /** What the action would do, as sentences; throws when it cannot be done. */
  confirm(r: ActionRequest): Promise<{ effect: Html[]; fields: Record<string, string>; extra?: Html }>;
  /** Does it; returns what to show afterwards. */
  run(r: ActionRequest): Promise<Html>;
}

const REVOKE_ID_MAX = 10_000;
const MAX_DEADLINE_MS = 366 * 86_400_000;

const one = (input: URLSearchParams, name: string): string => {
  const values = input.getAll(name).map((v) => v.trim());
  if (values.length !== 1 || values[0] === "")
    throw new StintError("ERR_MALFORMED", `"${name}" is required, once`);
  return values[0]!;
};
const optional = (input: URLSearchParams, name: string): string | undefined => {
  const v = input.get(name)?.trim();
  return v ? v : undefined;
};

async function liveCertificate(c: ConsoleState, serial: string, now: Date): Promise<CertificateRecord> {
  const cert = await c.store.getCertificate(serialParam(serial));
  if (!cert)
    throw new StintError(
      "ERR_NOT_FOUND",
      `no certificate with serial ${serial.slice(0, 80)} was issued by this CA`,
    );
  if (cert.revokedAt)
    throw new StintError("ERR_ALREADY_REVOKED", `certificate ${cert.serial} is already revoked`);
  if (cert.notAfter <= now)
    throw new StintError("ERR_MALFORMED", `certificate ${cert.serial} has already expired`);
  return cert;
}

/** Live, unrevoked certificates of one SPIFFE ID, page by page. */
async function liveOf(c: ConsoleState, spiffeId: string, now: Date): Promise<CertificateRecord[]> {
  const out: CertificateRecord[] = [];
  let page = await c.store.listCertificates({ spiffeId, unexpiredAt: now, limit: 1000 });
  while (page.length > 0 && out.length < REVOKE_ID_MAX) {
    out.push(...page.filter((x) => !x.revokedAt));
    page = await c.store.listCertificates({
      spiffeId,
      unexpiredAt: now,
      afterSerial: page[page.length - 1]!.serial,
      limit: 1000,
    });
  }
  return out;
}

async function publish(c: ConsoleState): Promise<void> {
  await c
    .onRevoked?.()
    .catch((err: unknown) =>
      c.log.error("revocation feed update after a console revocation failed", { error: err }),
    );
}

const reasonOf = (input: URLSearchParams) =>
  parseRevocationReason(optional(input, "reason") ?? "unspecified");

function deadlineOf(input: URLSearchParams, now: Date): Date | null {
  const text = optional(input, "deadline");
  if (text === undefined) return null;
  const ms = parseDuration(text);
  if (ms <= 0 || ms > MAX_DEADLINE_MS)
    throw new StintError("ERR_MALFORMED", "the deadline must be a duration from 1s to 366d, such as 30m");
  return new Date(now.getTime() + ms);
}

function rotation(r: ActionRequest) {
  if (!r.console.rotation)
    throw new StintError("ERR_ROTATION_STATE", "this server was started without rotation support");
  return { ...r.console.rotation(r.user.actor), now: r.now };
}

async function entryFrom(r: ActionRequest): Promise<EntryRecord> {
  const { authority, store } = r.console;
  const spiffeId = parseEnrollableId(one(r.input, "spiffeId"), authority.trustDomain);
  const selectors = parseSelectors(
    one(r.input, "selectors")
      .split(/\r?\n/)
      .map((s) => s.trim())
      .filter((s) => s !== ""),
  );
  const parent = parseEntryParent(optional(r.input, "parent"), authority.trustDomain, selectors);
  const same = (await store.listEntries({ spiffeId })).find(
    (e) => e.selectors.join("\n") === selectors.join("\n") && (e.parent ?? null) === (parent ?? null),
  );
  if (same)
    throw new StintError(
      "ERR_STORE_CONFLICT",
      `entry ${same.id} already maps these selectors to ${spiffeId}`,
    );
  return { id: newEntryId(), spiffeId, selectors, dnsNames: [], ttlMs: null, createdAt: r.now, parent };
}

/** Whether an entry deletion also revokes the entry's certificates ("1"; absent: no). */
function revokeAsked(r: ActionRequest): boolean {
  const value = optional(r.input, "revoke");
  if (value !== undefined && value !== "1")
    throw new StintError("ERR_MALFORMED", 'revoke must be "1" when given');
  return value === "1";
}

const event = (
  r: ActionRequest,
  action: string,
  subject: string,
  details: Record<string, unknown>,
): AuditEvent => ({
  at: r.now,
  actor: r.user.actor,
  action,
  subject,
  details: { ...details, via: "console" },
});

export const ACTIONS: Record<string, Action> = {
  revoke: {
    title: "Revoke a certificate",
    async confirm(r) {
      const cert = await liveCertificate(r.console, one(r.input, "serial"), r.now);
      const reason = revocationReasonName(reasonOf(r.input));
      return {
        effect: [
          html`Revokes 1 certificate of <b>${cert.spiffeId ?? cert.dnsNames.join(", ")}</b>, serial <span class="mono">${cert.serial}</span> (issuer ${cert.issuerId}, valid until ${when(cert.notAfter)}), reason ${reason}.`,
          html`Verifiers following the revocation feed refuse it within seconds; the workload's next renewal is refused only if you also delete its entry.`,
        ],
        fields: { serial: cert.serial, reason },
      };
    },
    async run(r) {
      const cert = await liveCertificate(r.console, one(r.input, "serial"), r.now);
      await r.console.authority.revoke(cert.serial, reasonOf(r.input), r.user.actor, r.now);
      await publish(r.console);
      return html`<p class="done">Revoked certificate <a href="/console/certificates/${cert.serial}">${cert.serial}</a> of ${cert.spiffeId ?? ""}.</p>`;
    },
  },
  "revoke-id": {
    title: "Revoke every certificate of a SPIFFE ID",
    async confirm(r) {
      const spiffeId = one(r.input, "spiffeId");
      const certs = await liveOf(r.console, spiffeId, r.now);
      if (certs.length === 0)
        throw new StintError("ERR_NOT_FOUND", `${spiffeId.slice(0, 200)} has no live certificates`);
      return {
        effect: [
          html`Revokes ${certs.length} certificate(s) of <b>${spiffeId}</b>: <span class="mono">${certs
            .slice(0, 20)
            .map((c) => c.serial)
            .join(", ")}${certs.length > 20 ? ", …" : ""}</span>.`,
          html`Its entries stay: agents holding them will obtain new certificates unless you delete the entries too.`,
        ],
        fields: { spiffeId, reason: revocationReasonName(reasonOf(r.input)) },
      };
    },
    async run(r) {
      const spiffeId = one(r.input, "spiffeId");
      const reason = reasonOf(r.input);
      const live = (await liveOf(r.console, spiffeId, r.now)).map((c) => c.serial);
      const revoked = await r.console.authority.revokeEach(live, reason, r.user.actor, r.now);
      if (revoked.length > 0) await publish(r.console);
      return html`<p class="done">Revoked ${revoked.length} certificate(s) of <a href="/console/fleet${qs({ id: spiffeId, all: "1" })}">${spiffeId}</a>.</p>`;
    },
  },
  taint: {
    title: "Taint an intermediate",
    async confirm(r) {
      const id = one(r.input, "issuer");
      const deadline = deadlineOf(r.input, r.now);
      const plan = await planTaint(rotation(r), id, deadline);
      const [change] = plan.issuers;
      return {
        effect: [
          html`Marks intermediate <b>${id}</b> as suspected compromised: its ${change?.live ?? 0} live certificates (${change?.unreplaced ?? 0} not yet replaced) are asked to renew now, onto the active intermediate.`,
          ...plan.effects.slice(1).map((e) => html`${e.replace(/^\w/, (c) => c.toUpperCase())}.`),
        ],
        fields: {
          issuer: id,
          ...(optional(r.input, "deadline") ? { deadline: optional(r.input, "deadline")! } : {}),
        },
        extra: optional(r.input, "deadline")
          ? undefined
          : html`<form method="get" action="/console/confirm/taint"><input type="hidden" name="issuer" value="${id}">
<label>Revoke it automatically after <input name="deadline" placeholder="1h"></label><button type="submit">Set a deadline…</button></form>`,
      };
    },
    async run(r) {
      const deadline = deadlineOf(r.input, r.now);
      const issuer = await taintIssuer(rotation(r), one(r.input, "issuer"), deadline);
      return html`<p class="done">Tainted ${issuer.id}${deadline ? `; the server revokes it at ${when(deadline)}` : ""}. Servers apply it within a poll interval; follow the fleet moving off it on <a href="/console/issuers">Issuers</a>.</p>`;
    },
  },
  rotate: {
    title: "Rotate the intermediate",
    async confirm(r) {
      const plan = await planRotate(rotation(r), {});
      return {
        effect: describePlan(plan)
          .slice(1)
          .map((line) => html`${line.trim()}`),
        fields: {},
      };
    },
    async run(r) {
      const result = await rotateIntermediate(rotation(r), { ttlDays: DEFAULT_INTERMEDIATE_TTL_DAYS });
      return html`<p class="done">Intermediate ${result.activated.id} is active${result.retired ? `; ${result.retired.id} is retired` : ""}. Agents move at their next renewal.</p>`;
    },
  },
  "entry-create": {
    title: "Create a registration entry",
    async confirm(r) {
      const e = await entryFrom(r);
      return {
        effect: [
          html`Creates an entry granting <b>${e.spiffeId}</b> to workloads attested with ${e.selectors.join(" and ")}${e.parent ? html`, only through node agent ${e.parent}` : ""}.`,
        ],
        fields: {
          spiffeId: e.spiffeId,
          selectors: e.selectors.join("\n"),
          ...(e.parent ? { parent: e.parent } : {}),
        },
      };
    },
    async run(r) {
      const e = await entryFrom(r);
      await r.console.store.createEntry(
        e,
        event(r, "entry.create", e.id, {
          spiffeId: e.spiffeId,
          selectors: e.selectors,
          ...(e.parent ? { parent: e.parent } : {}),
        }),
      );
      return html`<p class="done">Created entry <a href="/console/entries#entry-${e.id}">${e.id}</a> for ${e.spiffeId}.</p>`;
    },
  },
  "entry-delete": {
    title: "Delete a registration entry",
    async confirm(r) {
      const e = await existingEntry(r);
      const revoke = revokeAsked(r);
      const page = await r.console.store.listCertificates({ entryId: e.id, unexpiredAt: r.now, limit: 1000 });
      const live = page.filter((c) => !c.revokedAt);
      const count = `${live.length}${page.length === 1000 ? "+" : ""} live certificate(s)`;
      return {
        effect: [
          html`Deletes entry <span class="mono">${e.id}</span>, which grants <b>${e.spiffeId}</b> to ${e.selectors.join(" and ")}.`,
          revoke
            ? html`Revokes its ${count} (reason privilegeWithdrawn): verifiers following the revocation feed refuse them within seconds.`
            : html`Its ${count} stay valid until they expire and are not renewed.`,
        ],
        fields: { id: e.id, ...(revoke && { revoke: "1" }) },
      };
    },
    async run(r) {
      const e = await existingEntry(r);
      const revoke = revokeAsked(r);
      const remove = () =>
        r.console.store.deleteEntry(
          e.id,
          event(r, "entry.delete", e.id, {
            spiffeId: e.spiffeId,
            selectors: e.selectors,
            ...(revoke ? { revoke: true } : {}),
          }),
        );
      if (!revoke) {
        await remove();
        return html`<p class="done">Deleted entry ${e.id} for ${e.spiffeId}.</p>`;
      }
      const revoked = await r.console.authority.removeEntryRevoking(e.id, r.user.actor, r.now, remove);
      if (revoked.length > 0) await publish(r.console);
      return html`<p class="done">Deleted entry ${e.id} for ${e.spiffeId} and revoked ${revoked.length} certificate(s).</p>`;
    },
  },
  "token-create": {
    title: "Create a join token",
    async confirm(r) {
      const spiffeId = parseEnrollableId(one(r.input, "spiffeId"), r.console.authority.trustDomain);
      const ttl = optional(r.input, "ttl") ?? "10m";
      newJoinToken({ spiffeId, ttlMs: parseDuration(ttl), now: r.now }); // refuses a bad lifetime now
      return {
        effect: [
          html`Creates a one-time join token for <b>${spiffeId}</b>, usable for ${ttl}, and the entry whose only selector is that token.`,
          html`The secret is shown once, on the next page.`,
        ],
        fields: { spiffeId, ttl },
      };
    },
    async run(r) {
      const spiffeId = parseEnrollableId(one(r.input, "spiffeId"), r.console.authority.trustDomain);
      const token = newJoinToken({
        spiffeId,
        ttlMs: parseDuration(optional(r.input, "ttl") ?? "10m"),
        now: r.now,
      });
      await storeJoinToken(r.console.store, token, { dnsNames: [], ttlMs: null, now: r.now }, (...e) =>
        event(r, ...e),
      );
      return html`<p class="done">Join token ${token.id} for ${spiffeId}, usable once until ${when(token.expiresAt)}:</p>
<pre class="secret" id="join-token">${token.secret}</pre><p class="note">It is shown only now.</p>`;
    },
  },
};

async function existingEntry(r: ActionRequest): Promise<EntryRecord> {
  const id = one(r.input, "id");
  const e = /^[0-9a-f]{16}$/.test(id) ? await r.console.store.getEntry(id) : null;
  if (!e) throw new StintError("ERR_NOT_FOUND", `no registration entry with id "${id.slice(0, 80)}"`);
  return e;
}

export function action(name: string): Action {
  const a = Object.hasOwn(ACTIONS, name) ? ACTIONS[name] : undefined;
  if (!a) throw new StintError("ERR_NOT_FOUND", `no console action "${name.slice(0, 40)}"`);
  return a;
}
