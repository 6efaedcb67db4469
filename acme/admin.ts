import { createHash, X509Certificate } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Authority } from "../ca/authority";
import { newEntryId, parseEnrollableId, parseEntryParent, parseSelectors } from "../ca/entries";
import { newJoinToken, storeJoinToken } from "../ca/join-token";
import { dnsNameAllowed, normalizeDnsName, validityWindow } from "../ca/policy";
import { parseRevocationReason, revocationReasonName } from "../ca/revocation";
import { inspectSpki } from "../ca/spki";
import type { AuditEvent, AuditRecord, CertificateRecord, Store } from "../ca/store";
import type { AcmeStateStore, EntryRecord } from "../ca/store-acme";
import { formatDuration, parseDuration } from "../common/duration";
import { isStintError, StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import { toPem } from "../formats/pem";
import { parseSpiffeId } from "../formats/spiffe";
import { type AdminAuthStore, adminAuthenticator } from "./admin-auth";
import { readBody } from "./body";
import { problemFor, sendJson, sendProblem } from "./problem";
import type { Handler, Params, Router } from "./router";

/**
 * The admin API under /admin/: registration entries, join tokens,
 * certificates and the audit log. Only the admin client certificate this CA
 * issued last gets past the check every route starts with (acme/admin-auth.ts). Request bodies are
 * JSON objects with no unknown members; durations are strings with a unit
 * ("30m"), as in the config and the CLI.
 */

export const ADMIN_PREFIX = "/admin";
export const ADMIN_PATHS = {
  entries: `${ADMIN_PREFIX}/entries`,
  entry: `${ADMIN_PREFIX}/entries/:id`,
  joinTokens: `${ADMIN_PREFIX}/join-tokens`,
  certificates: `${ADMIN_PREFIX}/certificates`,
  certificate: `${ADMIN_PREFIX}/certificates/:serial`,
  revoke: `${ADMIN_PREFIX}/certificates/:serial/revoke`,
  audit: `${ADMIN_PREFIX}/audit`,
} as const;

const MAX_BODY_BYTES = 64 * 1024;
const DEFAULT_PAGE = 100;
const MAX_PAGE = 10_000;

/** What the admin API needs from storage; the CA's store implements all of it. */
export type AdminStore = AdminAuthStore &
  Pick<Store, "getCertificate" | "listCertificates" | "listAudit"> &
  Pick<AcmeStateStore, "createEntry" | "getEntry" | "listEntries" | "deleteEntry" | "createJoinToken">;

export interface AdminDeps {
  authority: Authority;
  store: AdminStore;
  log: Logger;
  /** Awaited after revocations commit: settles once the feed has published them, so the answer follows it. */
  onRevoked?: () => Promise<void>;
}

interface AdminRequest {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: Params;
  /** The admin certificate's SPIFFE ID, recorded as the audit actor. */
  actor: string;
  now: Date;
}

/** Where the admin edge answers differently from the shared table (which speaks for ACME). */
function statusFor(err: unknown): number | undefined {
  if (!isStintError(err)) return undefined;
  if (err.code === "ERR_UNAUTHORIZED" && err.check === "client_certificate") return 401;
  if (err.code === "ERR_ALREADY_REVOKED") return 409;
  return undefined;
}

const malformed = (detail: string) => new StintError("ERR_MALFORMED", detail);

export function mountAdmin(deps: AdminDeps): (router: Router, origin: string) => void {
  const { authority, store, log } = deps;
  // The revocation is durable either way; a feed that fails to rebuild now picks it up at its next poll.
  const publishRevocations = (): Promise<void> =>
    deps
      .onRevoked?.()
      .catch((err: unknown) =>
        log.error("revocation feed update after a revocation failed", { error: err }),
      ) ?? Promise.resolve();

  const fail = (res: ServerResponse, err: unknown): void => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const status = statusFor(err);
    if (status === undefined) sendProblem(res, err, log);
    else sendJson(res, status, { ...problemFor(err).problem, status }, "application/problem+json");
  };

  const authenticate = adminAuthenticator({ authority, store, log });

  const route =
    (fn: (r: AdminRequest) => Promise<void>): Handler =>
    async (req, res, url, params) => {
      try {
        const now = new Date();
        const actor = await authenticate(req, now);
        await fn({ req, res, url, params, actor, now });
      } catch (err) {
        fail(res, err);
      }
    };

  /** A store write carrying its audit record; logged once it succeeded (details stay in the audit log). */
  const auditEvent = (
    r: AdminRequest,
    action: string,
    subject: string,
    details: Record<string, unknown>,
  ): AuditEvent => ({ at: r.now, actor: r.actor, action, subject, details });
  const audited = async (
    r: AdminRequest,
    action: string,
    subject: string,
    details: Record<string, unknown>,
    write: (event: AuditEvent) => Promise<void>,
  ): Promise<void> => {
    await write(auditEvent(r, action, subject, details));
    log.info("admin action", { action, subject, actor: r.actor });
  };

  /** A SPIFFE ID an entry may name: in this trust domain, with a path, outside the CA's reserved paths. */
  const entrySpiffeId = (value: unknown): string => {
    if (typeof value !== "string")
      throw malformed("spiffeId is required: a string like spiffe://<trust domain>/<path>");
    return parseEnrollableId(value, authority.trustDomain);
  };

  /** DNS names normalised, and each under policy.dnsSuffixes: an entry the CA could never issue for is refused now. */
  const entryDnsNames = (value: unknown): string[] => {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value) || !value.every((n) => typeof n === "string")) {
      throw malformed("dnsNames must be a list of strings");
    }
    const names = [...new Set(value.map(normalizeDnsName))];
    const suffixes = authority.policy.dnsSuffixes;
    for (const name of names) {
      if (!dnsNameAllowed(name, suffixes)) {
        const allowed = suffixes.length ? `allowed suffixes: ${suffixes.join(", ")}` : "none allowed";
        throw new StintError(
          "ERR_POLICY_DNS",
          `DNS name "${name}" is outside policy (${allowed}); add its suffix to policy.dnsSuffixes`,
        );
      }
    }
    return names;
  };

  /** A certificate lifetime for an entry: a duration within the policy's bounds, or null for the default. */
  const certTtl = (member: string, value: unknown, now: Date): number | null => {
    if (value === undefined || value === null) return null;
    const ms = duration(member, value);
    validityWindow(authority.policy, ms, now);
    return ms;
  };

  const createEntry = async (r: AdminRequest, entry: EntryRecord, details: Record<string, unknown> = {}) => {
    const same = (await store.listEntries({ spiffeId: entry.spiffeId })).find(
      (e) =>
        e.selectors.join("\n") === entry.selectors.join("\n") &&
        (e.parent ?? null) === (entry.parent ?? null),
    );
    if (same) {
      throw new StintError(
        "ERR_STORE_CONFLICT",
        `entry ${same.id} already maps these selectors to ${entry.spiffeId}; delete it first to change it`,
      );
    }
    const { id, ...shown } = entryJson(entry);
    await audited(r, "entry.create", id, { ...shown, ...details }, (event) =>
      store.createEntry(entry, event),
    );
  };

  return (router, origin) => {
    router
      .on(
        "GET",
        ADMIN_PATHS.entries,
        route(async ({ res, url }) => {
          const q = query(url, ["spiffeId"]);
          const spiffeId = q.spiffeId === undefined ? undefined : parseSpiffeId(q.spiffeId).uri;
          const entries = await store.listEntries(spiffeId === undefined ? {} : { spiffeId });
          sendJson(res, 200, { entries: entries.map(entryJson) });
        }),
      )
      .on(
        "POST",
        ADMIN_PATHS.entries,
        route(async (r) => {
          const body = await readJson(r.req, ["spiffeId", "selectors", "dnsNames", "ttl", "parent"]);
          const selectors = parseSelectors(body.selectors);
          const entry: EntryRecord = {
            id: newEntryId(),
            spiffeId: entrySpiffeId(body.spiffeId),
            selectors,
            dnsNames: entryDnsNames(body.dnsNames),
            ttlMs: certTtl("ttl", body.ttl, r.now),
            createdAt: r.now,
            parent: parseEntryParent(body.parent, authority.trustDomain, selectors),
          };
          await createEntry(r, entry);
          r.res.setHeader("location", `${origin}${ADMIN_PATHS.entries}/${entry.id}`);
          sendJson(r.res, 201, entryJson(entry));
        }),
      )
      .on(
        "GET",
        ADMIN_PATHS.entry,
        route(async ({ res, params }) => {
          sendJson(res, 200, entryJson(await existingEntry(store, params.id!)));
        }),
      )
      .on(
        "DELETE",
        ADMIN_PATHS.entry,
        route(async (r) => {
          const { revoke } = query(r.url, ["revoke"]);
          if (revoke !== undefined && revoke !== "true") throw malformed('revoke must be "true" when given');
          const entry = await existingEntry(store, r.params.id!);
          const remove = () =>
            audited(
              r,
              "entry.delete",
              entry.id,
              { spiffeId: entry.spiffeId, selectors: entry.selectors, ...(revoke ? { revoke: true } : {}) },
              (event) => store.deleteEntry(entry.id, event),
            );
          // Renewals stop with the entry (they need their own entry); ?revoke=true also ends its live certificates.
          let revoked: string[] = [];
          if (revoke) revoked = await authority.removeEntryRevoking(entry.id, r.actor, r.now, remove);
          else await remove();
          if (revoked.length > 0) await publishRevocations();
          sendJson(r.res, 200, { ...entryJson(entry), ...(revoke ? { revoked } : {}) });
        }),
      )
      .on(
        "POST",
        ADMIN_PATHS.joinTokens,
        route(async (r) => {
          const body = await readJson(r.req, ["spiffeId", "ttl", "certTtl", "dnsNames"]);
          const spiffeId = entrySpiffeId(body.spiffeId);
          const ttlMs = body.ttl === undefined || body.ttl === null ? undefined : duration("ttl", body.ttl);
          const dnsNames = entryDnsNames(body.dnsNames);
          const entryTtlMs = certTtl("certTtl", body.certTtl, r.now);
          const token = newJoinToken({ spiffeId, ttlMs, now: r.now });
          const fields = { dnsNames, ttlMs: entryTtlMs, now: r.now };
          const entry = await storeJoinToken(store, token, fields, (...e) => auditEvent(r, ...e), log);
          log.info("admin action", { action: "entry.create", subject: entry.id, actor: r.actor });
          log.info("admin action", { action: "join_token.create", subject: token.id, actor: r.actor });
          r.res.setHeader("cache-control", "no-store");
          const created: AdminJoinToken = {
            id: token.id,
            token: token.secret,
            spiffeId,
            expiresAt: token.expiresAt.toISOString(),
            entryId: entry.id,
          };
          sendJson(r.res, 201, created);
        }),
      )
      .on(
        "GET",
        ADMIN_PATHS.certificates,
        route(async ({ res, url, now }) => {
          const q = query(url, ["spiffeId", "issuer", "after", "limit"]);
          const limit = pageLimit(q.limit);
          const certs = await store.listCertificates({
            ...(q.spiffeId === undefined ? {} : { spiffeId: parseSpiffeId(q.spiffeId).uri }),
            ...(q.issuer === undefined ? {} : { issuerId: q.issuer }),
            ...(q.after === undefined ? {} : { afterSerial: serialParam(q.after) }),
            limit,
          });
          sendJson(res, 200, {
            certificates: certs.map((c) => certificateJson(c, now)),
            next: certs.length === limit ? certs[certs.length - 1]!.serial : null,
          });
        }),
      )
      .on(
        "GET",
        ADMIN_PATHS.certificate,
        route(async ({ res, params, now }) => {
          const cert = await existingCertificate(store, params.serial!);
          const detail: AdminCertificateDetail = {
            ...certificateJson(cert, now),
            ...parsedFacts(cert.der),
            pem: toPem("CERTIFICATE", cert.der),
          };
          sendJson(res, 200, detail);
        }),
      )
      .on(
        "POST",
        ADMIN_PATHS.revoke,
        route(async (r) => {
          const body = await readJson(r.req, ["reason"]);
          const reason = parseRevocationReason(body.reason ?? undefined);
          const cert = await existingCertificate(store, r.params.serial!);
          // The authority writes the audit record (cert.revoke) itself.
          await authority.revoke(cert.serial, reason, r.actor, r.now);
          log.info("admin action", { action: "cert.revoke", subject: cert.serial, actor: r.actor });
          await publishRevocations();
          sendJson(r.res, 200, certificateJson((await store.getCertificate(cert.serial)) ?? cert, r.now));
        }),
      )
      .on(
        "GET",
        ADMIN_PATHS.audit,
        route(async ({ res, url }) => {
          const q = query(url, ["after", "limit"]);
          const limit = pageLimit(q.limit);
          const after = q.after === undefined ? 0 : wholeNumber("after", q.after, 0, Number.MAX_SAFE_INTEGER);
          const records = await store.listAudit(after, limit);
          sendJson(res, 200, {
            records: records.map(auditJson),
            next: records.length === limit ? records[records.length - 1]!.seq : null,
          });
        }),
      );
  };
}

// ---------- request parsing ----------

async function readJson(req: IncomingMessage, allowed: readonly string[]): Promise<Record<string, unknown>> {
  const type = String(req.headers["content-type"] ?? "")
    .split(";")[0]!
    .trim()
    .toLowerCase();
  if (type !== "application/json") {
    throw new StintError(
      "ERR_UNSUPPORTED_MEDIA_TYPE",
      `send the request body as application/json (got ${type || "no content type"})`,
    );
  }
  const body = await readBody(req, MAX_BODY_BYTES);
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw malformed("the request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw malformed("the request body must be a JSON object");
  }
  const extra = Object.keys(value).find((k) => !allowed.includes(k));
  if (extra !== undefined) {
    throw malformed(`unknown member ${JSON.stringify(extra.slice(0, 40))}; allowed: ${allowed.join(", ")}`);
  }
  return value as Record<string, unknown>;
}

/** Query parameters, each at most once, none unknown (a misspelt filter must not silently list everything). */
function query(url: URL, allowed: readonly string[]): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [name, value] of url.searchParams) {
    if (!allowed.includes(name)) {
      throw malformed(
        `unknown query parameter ${JSON.stringify(name.slice(0, 40))}; allowed: ${allowed.join(", ")}`,
      );
    }
    if (out[name] !== undefined) throw malformed(`query parameter ${name} given twice`);
    out[name] = value;
  }
  return out;
}

/** A duration string with a unit ("30m", "1h"), the same syntax as the config and the CLI. */
function duration(member: string, value: unknown): number {
  if (typeof value !== "string") throw malformed(`${member} must be a duration string such as "30m" or "1h"`);
  try {
    return parseDuration(value);
  } catch (err) {
    if (isStintError(err)) throw malformed(`${member}: ${err.message}`);
    throw err;
  }
}

function wholeNumber(name: string, text: string, min: number, max: number): number {
  const n = /^\d{1,16}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw malformed(`${name} must be a whole number from ${min} to ${max}`);
  }
  return n;
}

const pageLimit = (text: string | undefined) =>
  text === undefined ? DEFAULT_PAGE : wholeNumber("limit", text, 1, MAX_PAGE);

/** Serials as `stint cert list` shows them; upper case and colons (openssl's form) are accepted too. */
function serialParam(text: string): string {
  const hex = text.replace(/:/g, "").toLowerCase();
  if (!/^[0-9a-f]{2,80}$/.test(hex)) {
    throw malformed(
      `"${text.slice(0, 80)}" is not a certificate serial number (hex digits, as stint cert list shows)`,
    );
  }
  return evenHex(hex);
}

const evenHex = (hex: string) => {
  const lower = hex.toLowerCase();
  return lower.length % 2 === 0 ? lower : `0${lower}`;
};

async function existingEntry(store: AdminStore, id: string): Promise<EntryRecord> {
  const entry = /^[0-9a-f]{16}$/.test(id) ? await store.getEntry(id) : null;
  if (!entry) {
    throw new StintError(
      "ERR_NOT_FOUND",
      `no registration entry with id "${id.slice(0, 80)}" (see stint entry list)`,
    );
  }
  return entry;
}

async function existingCertificate(store: AdminStore, serial: string): Promise<CertificateRecord> {
  const hex = serialParam(serial);
  const cert = await store.getCertificate(hex);
  if (!cert) throw new StintError("ERR_NOT_FOUND", `no certificate with serial ${hex} was issued by this CA`);
  return cert;
}

// ---------- response shapes (the CLI reads these types) ----------

export interface AdminEntry {
  id: string;
  spiffeId: string;
  selectors: string[];
  dnsNames: string[];
  /** Certificate lifetime as a duration ("30m"); null means the policy default. */
  ttl: string | null;
  createdAt: string;
  /** The node agent that alone may obtain it (agent API); absent for ordinary entries. */
  parent?: string;
}

export interface AdminJoinToken {
  id: string;
  /** The secret, returned once and never again. */
  token: string;
  spiffeId: string;
  expiresAt: string;
  entryId: string;
}

export interface AdminCertificate {
  serial: string;
  issuer: string;
  sequence: number;
  spiffeId: string | null;
  dnsNames: string[];
  ipAddresses: string[];
  notBefore: string;
  notAfter: string;
  status: "valid" | "expired" | "revoked";
  revokedAt: string | null;
  revocationReason: string | null;
}

export interface AdminCertificateDetail extends AdminCertificate {
  subject: string;
  issuerSubject: string;
  subjectAltName: string;
  keyType: string;
  fingerprint: string;
  pem: string;
}

export interface AdminAuditRecord {
  seq: number;
  at: string;
  actor: string;
  action: string;
  subject: string;
  details: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface AdminPage {
  /** Pass as `after` to get the next page; null on the last page. */
  next: string | number | null;
}

function entryJson(e: EntryRecord): AdminEntry {
  return {
    id: e.id,
    spiffeId: e.spiffeId,
    selectors: e.selectors,
    dnsNames: e.dnsNames,
    ttl: e.ttlMs === null ? null : formatDuration(e.ttlMs),
    createdAt: e.createdAt.toISOString(),
    ...(e.parent ? { parent: e.parent } : {}),
  };
}

function certificateJson(c: CertificateRecord, now: Date): AdminCertificate {
  return {
    serial: c.serial,
    issuer: c.issuerId,
    sequence: c.sequence,
    spiffeId: c.spiffeId,
    dnsNames: c.dnsNames,
    ipAddresses: c.ipAddresses,
    notBefore: c.notBefore.toISOString(),
    notAfter: c.notAfter.toISOString(),
    status: c.revokedAt ? "revoked" : c.notAfter <= now ? "expired" : "valid",
    revokedAt: c.revokedAt?.toISOString() ?? null,
    revocationReason: c.revocationReason === null ? null : revocationReasonName(c.revocationReason),
  };
}

/** What the certificate itself says, read from its DER (the record's columns are the CA's copy). */
function parsedFacts(der: Buffer) {
  const x = new X509Certificate(der);
  const spki = x.publicKey.export({ format: "der", type: "spki" });
  const facts = inspectSpki(spki);
  return {
    subject: x.subject.replace(/\n/g, ", "),
    issuerSubject: x.issuer.replace(/\n/g, ", "),
    subjectAltName: x.subjectAltName ?? "",
    keyType: facts.algorithm ?? facts.description,
    fingerprint: `sha256:${createHash("sha256").update(der).digest("hex")}`,
  };
}

function auditJson(a: AuditRecord): AdminAuditRecord {
  return {
    seq: a.seq,
    at: a.at.toISOString(),
    actor: a.actor,
    action: a.action,
    subject: a.subject,
    details: a.details,
    prevHash: a.prevHash,
    hash: a.hash,
  };
}
