import { randomBytes } from "node:crypto";
import { type ParsedCsr, parseCsr } from "../ca/csr";
import { parseEnrollableId } from "../ca/entries";
import { dnsNameAllowed, normalizeDnsName } from "../ca/policy";
import type {
  AccountRecord,
  AuthorizationRecord,
  ChallengeRecord,
  Identifier,
  OrderRecord,
} from "../ca/store-acme";
import { isStintError, StintError } from "../common/errors";
import { formatCertId, parseCertId } from "../formats/ari";
import { fromB64u } from "../formats/jose";
import { toPem } from "../formats/pem";
import type { AcmeContext } from "./context";
import { type EntryGrant, entryGrant } from "./entry-grant";
import { problemFor } from "./problem";
import type { Handler } from "./router";
import { isObject, orderJson } from "./wire";

/** newOrder, order reads, finalize and certificate download (RFC 8555 7.4). */

const MAX_IDENTIFIERS = 20;
const newId = () => randomBytes(12).toString("base64url");

/** Validates and canonicalises an order's identifiers against the CA's policy. */
function parseIdentifiers(ctx: AcmeContext, value: unknown): Identifier[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_IDENTIFIERS) {
    throw new StintError(
      "ERR_MALFORMED",
      `identifiers must be a list of 1 to ${MAX_IDENTIFIERS} identifiers`,
    );
  }
  const policy = ctx.authority.policy;
  const out: Identifier[] = [];
  for (const id of value) {
    if (!isObject(id) || typeof id.value !== "string")
      throw new StintError("ERR_MALFORMED", "each identifier needs a type and a string value");
    if (id.type === "spiffe") {
      if (out.some((i) => i.type === "spiffe"))
        throw new StintError("ERR_REJECTED_IDENTIFIER", "an order may name one SPIFFE ID");
      try {
        out.push({ type: "spiffe", value: parseEnrollableId(id.value, policy.trustDomain) });
      } catch (err) {
        throw new StintError("ERR_REJECTED_IDENTIFIER", (err as Error).message);
      }
    } else if (id.type === "dns") {
      let name: string;
      try {
        name = normalizeDnsName(id.value);
      } catch (err) {
        throw new StintError("ERR_REJECTED_IDENTIFIER", (err as Error).message);
      }
      if (!dnsNameAllowed(name, policy.dnsSuffixes)) {
        throw new StintError(
          "ERR_REJECTED_IDENTIFIER",
          `DNS name "${name}" is outside this CA's policy (policy.dnsSuffixes)`,
        );
      }
      if (!out.some((i) => i.type === "dns" && i.value === name)) out.push({ type: "dns", value: name });
    } else {
      throw new StintError(
        "ERR_UNSUPPORTED_IDENTIFIER",
        `identifier type ${JSON.stringify(id.type)} is not supported; use "spiffe" or "dns"`,
      );
    }
  }
  return out;
}

function challengesFor(identifier: Identifier): ChallengeRecord[] {
  const challenge = (type: ChallengeRecord["type"]): ChallengeRecord => ({
    id: randomBytes(6).toString("base64url"),
    type,
    token: randomBytes(32).toString("base64url"),
    status: "pending",
    validated: null,
    error: null,
  });
  return identifier.type === "spiffe" ? [challenge("attest-01")] : [challenge("http-01")];
}

export function newOrder(ctx: AcmeContext): Handler {
  return async (req, res, url) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      const account = await ctx.account(vr);
      ctx.limits.orders.take(account.id);
      const payload = isObject(vr.payload) ? vr.payload : {};
      if (payload.notBefore !== undefined || payload.notAfter !== undefined) {
        throw new StintError(
          "ERR_MALFORMED",
          "notBefore/notAfter are not accepted: lifetimes come from registration entries and policy",
        );
      }
      const identifiers = parseIdentifiers(ctx, payload.identifiers);
      const replaces = await replacedSerial(ctx, payload.replaces);
      const now = Date.now();
      const options = ctx.deps.options;
      const authorizations: AuthorizationRecord[] = identifiers.map((identifier) => ({
        id: newId(),
        accountId: account.id,
        identifier,
        status: "pending",
        expires: new Date(now + options.authorizationTtlMs),
        challenges: challengesFor(identifier),
        entryId: null,
        selectors: [],
        attestationId: null,
      }));
      const order: OrderRecord = {
        id: newId(),
        accountId: account.id,
        status: "pending",
        identifiers,
        authorizationIds: authorizations.map((a) => a.id),
        expires: new Date(now + options.orderTtlMs),
        certificateSerial: null,
        replaces: replaces ? (payload.replaces as string) : null,
        error: null,
        createdAt: new Date(now),
      };
      await ctx.store.createOrder(order, authorizations);
      ctx.reply(res, 201, orderJson(order, ctx.urls), { location: ctx.urls.order(order.id) });
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/** ARI "replaces": must name a certificate this CA issued (RFC 9773 5). */
async function replacedSerial(ctx: AcmeContext, value: unknown): Promise<string | null> {
  if (value === undefined) return null;
  if (typeof value !== "string")
    throw new StintError("ERR_MALFORMED", "replaces must be an ARI certificate identifier");
  const serial = parseCertId(value).serial.toString("hex");
  if (!(await ctx.store.getCertificate(serial))) {
    throw new StintError(
      "ERR_MALFORMED",
      `replaces names a certificate this CA did not issue (${formatCertId(parseCertId(value))})`,
    );
  }
  return serial;
}

/**
 * An order becomes ready when every authorization is valid; a dns identifier
 * also counts as authorized when the order's SPIFFE authorization matched a
 * registration entry that lists that DNS name.
 */
async function refreshOrder(
  ctx: AcmeContext,
  order: OrderRecord,
): Promise<{ order: OrderRecord; authzs: AuthorizationRecord[] }> {
  const { next, authzs } = await nextStatus(ctx, order);
  return { order: next === order.status ? order : await casOrder(ctx, order, { status: next }), authzs };
}

/** What a pending order's authorizations make of it now (pending, ready or invalid), without writing it. */
async function nextStatus(
  ctx: AcmeContext,
  order: OrderRecord,
): Promise<{ next: OrderRecord["status"]; authzs: AuthorizationRecord[] }> {
  const authzs = (
    await Promise.all(order.authorizationIds.map((id) => ctx.store.getAuthorization(id)))
  ).filter((a): a is AuthorizationRecord => a !== null);
  if (order.status !== "pending") return { next: order.status, authzs };
  if (
    order.expires.getTime() <= Date.now() ||
    authzs.some((a) => a.status === "invalid" || a.status === "deactivated")
  ) {
    return { next: "invalid", authzs };
  }
  const spiffe = authzs.find((a) => a.identifier.type === "spiffe" && a.status === "valid");
  const entry = spiffe?.entryId ? await ctx.store.getEntry(spiffe.entryId) : null;
  const ready = authzs.every(
    (a) =>
      a.status === "valid" || (a.identifier.type === "dns" && entry?.dnsNames.includes(a.identifier.value)),
  );
  return { next: ready ? "ready" : "pending", authzs };
}

/** Compare-and-set on the order's status; when another request moved it first, use what it wrote. */
async function casOrder(
  ctx: AcmeContext,
  order: OrderRecord,
  patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
) {
  try {
    return await ctx.store.updateOrder(order.id, order.status, patch);
  } catch (err) {
    if (!isStintError(err, "ERR_STORE_CONFLICT")) throw err;
    return (await ctx.store.getOrder(order.id)) ?? order;
  }
}

/**
 * Moves a ready order (or a pending one found ready) to processing. When a
 * poll made it ready meanwhile the compare-and-set misses: re-read, and go on
 * from ready; any other status means another finalize got there first.
 */
async function startProcessing(ctx: AcmeContext, order: OrderRecord): Promise<OrderRecord> {
  try {
    return await ctx.store.updateOrder(order.id, order.status, { status: "processing" });
  } catch (err) {
    if (!isStintError(err, "ERR_STORE_CONFLICT")) throw err;
    const now = await ctx.store.getOrder(order.id);
    if (now?.status !== "ready")
      throw new StintError("ERR_ORDER_NOT_READY", `order is ${now?.status ?? "gone"}, not ready`);
    return ctx.store.updateOrder(order.id, "ready", { status: "processing" });
  }
}

async function ownOrder(ctx: AcmeContext, account: AccountRecord, id: string): Promise<OrderRecord> {
  const order = await ctx.store.getOrder(id);
  if (!order || order.accountId !== account.id)
    throw new StintError("ERR_NOT_FOUND", `no order ${id} for this account`);
  return order;
}

export function getOrder(ctx: AcmeContext): Handler {
  return async (req, res, url, params) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      const { order } = await refreshOrder(ctx, await ownOrder(ctx, await ctx.account(vr), params.id));
      // While another request finalizes it, tell pollers when to look again (RFC 8555 7.4).
      const retry: Record<string, string> = order.status === "processing" ? { "retry-after": "1" } : {};
      ctx.reply(res, 200, orderJson(order, ctx.urls), { location: ctx.urls.order(order.id), ...retry });
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/** The CSR of a finalize or renew-cert payload {csr: base64url DER}, refused if it asks for what workloads never get. */
export function csrFromPayload(payload: unknown): ParsedCsr {
  if (!isObject(payload) || typeof payload.csr !== "string")
    throw new StintError("ERR_MALFORMED", "the payload must be {csr: base64url DER}");
  let csr: ParsedCsr;
  try {
    csr = parseCsr(fromB64u(payload.csr, "csr"));
  } catch (err) {
    throw isStintError(err, "ERR_JOSE") ? new StintError("ERR_BAD_CSR", "csr is not base64url") : err;
  }
  if (csr.requestsCa)
    throw new StintError("ERR_BAD_CSR", "CSR asks for a CA certificate; workloads get CA:FALSE only");
  if (csr.ipAddresses.length > 0)
    throw new StintError(
      "ERR_BAD_CSR",
      "CSR asks for IP addresses; this CA does not issue them to workloads",
    );
  return csr;
}

export const sameSet = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && [...a].sort().join("\n") === [...b].sort().join("\n");

export function finalize(ctx: AcmeContext): Handler {
  return async (req, res, url, params) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      const account = await ctx.account(vr);
      const read = await ownOrder(ctx, account, params.id);
      const { next, authzs } = await nextStatus(ctx, read);
      if (next !== "ready") {
        const order = next === read.status ? read : await casOrder(ctx, read, { status: next });
        throw new StintError("ERR_ORDER_NOT_READY", `order is ${order.status}, not ready`);
      }
      // A pending order whose authorizations are all valid goes straight to processing: one write, not two.
      const order = read;
      const csr = csrFromPayload(vr.payload);
      const spiffeId = order.identifiers.find((i) => i.type === "spiffe")?.value ?? null;
      const dnsNames = order.identifiers.filter((i) => i.type === "dns").map((i) => i.value);
      if (
        !sameSet(csr.uris, spiffeId ? [spiffeId] : []) ||
        !sameSet(
          csr.dnsNames.map((n) => n.toLowerCase()),
          dnsNames,
        )
      ) {
        throw new StintError(
          "ERR_BAD_CSR",
          `CSR names (${[...csr.uris, ...csr.dnsNames].join(", ") || "none"}) must equal the order's identifiers (${[spiffeId, ...dnsNames].filter(Boolean).join(", ")})`,
        );
      }
      const processing = await startProcessing(ctx, order);
      try {
        const grant = spiffeId ? await attestedGrant(ctx, spiffeId, authzs, dnsNames) : null;
        const issued = await ctx.authority.issue(
          {
            spiffeId,
            dnsNames,
            ttlMs: grant?.entry.ttlMs ?? undefined,
            spki: csr.spki,
            keyAlgorithm: csr.keyAlgorithm,
            keyDescription: csr.keyDescription,
          },
          ctx.urls.account(account.id),
          new Date(),
          grant
            ? {
                ...grant.bound,
                details: { ...grant.bound.details, ...(order.replaces ? { replaces: order.replaces } : {}) },
              }
            : undefined,
          // The order becomes valid in the certificate's own commit (issue 13): one durable write, not two.
          { orderId: processing.id },
        );
        const valid: OrderRecord = { ...processing, status: "valid", certificateSerial: issued.serial };
        ctx.reply(res, 200, orderJson(valid, ctx.urls), { location: ctx.urls.order(valid.id) });
      } catch (err) {
        await settleFailed(ctx, processing, err);
        throw err;
      }
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/**
 * A finalize that issued nothing: the CSR refused by policy (key type,
 * lifetime) makes the order invalid; after a fault of ours it goes back to
 * ready, so the client may finalize again. When the order is no longer
 * processing (order recovery reopened a finalize that took minutes), whoever
 * moved it owns it now and it is left as it is.
 */
async function settleFailed(ctx: AcmeContext, processing: OrderRecord, err: unknown): Promise<void> {
  const { problem, internal } = problemFor(err);
  try {
    await ctx.store.updateOrder(
      processing.id,
      "processing",
      internal ? { status: "ready" } : { status: "invalid", error: { ...problem } },
    );
  } catch (moved) {
    if (!isStintError(moved, "ERR_STORE_CONFLICT")) throw moved;
  }
}

/**
 * The entry the order's SPIFFE authorization was attested under, re-checked
 * now: a DNS name the order holds through the entry (not through its own
 * http-01) must still be listed by it.
 */
async function attestedGrant(
  ctx: AcmeContext,
  spiffeId: string,
  authzs: readonly AuthorizationRecord[],
  dnsNames: readonly string[],
): Promise<EntryGrant> {
  const authz = authzs.find((a) => a.identifier.type === "spiffe");
  const attestation = authz?.attestationId ? await ctx.store.getAttestation(authz.attestationId) : null;
  if (!attestation) {
    throw new StintError(
      "ERR_UNAUTHORIZED",
      `this order's authorization for ${spiffeId} records no attestation; place a new order and answer its attest-01`,
    );
  }
  const ownChallenge = (name: string) =>
    authzs.some((a) => a.identifier.type === "dns" && a.identifier.value === name && a.status === "valid");
  return entryGrant(
    ctx,
    attestation,
    dnsNames.filter((n) => !ownChallenge(n)),
    null,
  );
}

export function downloadCertificate(ctx: AcmeContext): Handler {
  return async (req, res, url, params) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      await ctx.account(vr);
      const cert = await ctx.store.getCertificate(params.serial);
      if (!cert) throw new StintError("ERR_NOT_FOUND", `no certificate ${params.serial}`);
      const issuer = await ctx.store.getIssuer(cert.issuerId);
      const body = toPem("CERTIFICATE", cert.der) + (issuer ? toPem("CERTIFICATE", issuer.certDer) : "");
      ctx.acmeHeaders(res);
      res.writeHead(200, {
        "content-type": "application/pem-certificate-chain",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}
