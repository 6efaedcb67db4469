import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import type { Authority } from "../ca/authority";
import { type ParsedCsr, parseCsr } from "../ca/csr";
import { entryHash, RESERVED_PATH } from "../ca/entries";
import { type JwtSvidService, parseAudience } from "../ca/jwt-svid";
import { renewalWindow, type WindowFractions } from "../ca/renewal";
import type { CertificateBinding, Store } from "../ca/store";
import type { AcmeStateStore, EntryRecord } from "../ca/store-acme";
import { isStintError, StintError } from "../common/errors";
import type { Logger } from "../common/logger";
import { parseSpiffeId } from "../formats/spiffe";
import { readBody } from "./body";
import { problemFor, sendJson } from "./problem";
import type { Router } from "./router";

/**
 * The node agent API under /agent/v1/ (docs/acme.md, "Node agents and
 * workload SVIDs"). A node agent authenticates with its own X.509-SVID as the
 * TLS client certificate; it may list, and obtain SVIDs for, exactly the
 * entries whose parent is its SPIFFE ID. The agent attests workloads on its
 * host; the CA authorizes from the agent's certificate and the entry's
 * parent, so no agent can obtain an ID whose entry names another parent.
 * One batch request replaces, per workload, an ACME account, order,
 * authorization, attestation and finalize.
 */

export const AGENT_PATHS = {
  entries: "/agent/v1/entries",
  x509Svids: "/agent/v1/x509-svids",
  jwtSvids: "/agent/v1/jwt-svids",
} as const;

/** Requests per batch: a host's renewals for a few minutes, a body well under a megabyte. */
export const MAX_BATCH = 100;
const MAX_BODY_BYTES = 512 * 1024;

export type AgentApiStore = Pick<Store, "getCertificate" | "getIssuer" | "appendAudit"> &
  Pick<AcmeStateStore, "listEntries">;

export interface AgentApiDeps {
  authority: Authority;
  store: AgentApiStore;
  jwt: JwtSvidService;
  log: Logger;
  renewalWindow?: WindowFractions;
}

const unauthorized = (detail: string) =>
  new StintError("ERR_UNAUTHORIZED", detail, { check: "agent_identity" });
const malformed = (detail: string) => new StintError("ERR_MALFORMED", detail);

const sha256 = (der: Buffer) => createHash("sha256").update(der).digest("hex");
const evenHex = (hex: string) => (hex.length % 2 === 0 ? hex : `0${hex}`).toLowerCase();

/**
 * The calling agent's SPIFFE ID, from its client certificate: chained to our
 * roots by the handshake, and then, on every request (a resumed session is
 * not verified again), valid now, recorded by this CA with these very bytes,
 * not revoked, from an issuer not revoked, and not one of the CA's own
 * identities (so the admin certificate is no agent, as an agent's is no admin).
 */
export async function authenticateAgent(
  req: IncomingMessage,
  deps: Pick<AgentApiDeps, "authority" | "store">,
  now: Date,
): Promise<string> {
  const socket = req.socket as TLSSocket;
  const peer = socket.getPeerX509Certificate?.();
  if (!peer) throw unauthorized("the agent API needs the node agent's X.509-SVID as TLS client certificate");
  if (!socket.authorized) {
    throw unauthorized(
      `client certificate not accepted (${String(socket.authorizationError ?? "not verified")}): the agent API takes SVIDs this CA issued`,
    );
  }
  const uris = (peer.subjectAltName ?? "")
    .split(", ")
    .filter((n) => n.startsWith("URI:"))
    .map((n) => n.slice(4));
  if (uris.length !== 1) throw unauthorized("the client certificate must carry exactly one SPIFFE ID");
  let id: ReturnType<typeof parseSpiffeId>;
  try {
    id = parseSpiffeId(uris[0]!);
  } catch {
    throw unauthorized("the client certificate's URI is not a SPIFFE ID");
  }
  if (id.trustDomain !== deps.authority.trustDomain || id.path.startsWith(`${RESERVED_PATH}/`)) {
    throw unauthorized(`${id.uri} is not a node agent of trust domain ${deps.authority.trustDomain}`);
  }
  if (!(Date.parse(peer.validFrom) <= now.getTime() && now.getTime() < Date.parse(peer.validTo)))
    throw unauthorized(`the agent certificate for ${id.uri} is not valid now`);
  const serial = evenHex(peer.serialNumber);
  const record = await deps.store.getCertificate(serial);
  if (!record || sha256(record.der) !== sha256(peer.raw))
    throw unauthorized(`certificate ${serial} was not issued by this CA`);
  if (record.revokedAt) throw unauthorized(`the agent certificate ${serial} for ${id.uri} is revoked`);
  if (deps.authority.revokedIssuers().includes(record.issuerId))
    throw unauthorized(`the agent certificate ${serial} comes from revoked intermediate ${record.issuerId}`);
  return id.uri;
}

/** A JSON object body with only the given members. */
async function readJson(req: IncomingMessage, allowed: readonly string[]): Promise<Record<string, unknown>> {
  const type = String(req.headers["content-type"] ?? "")
    .split(";")[0]!
    .trim();
  if (type !== "application/json")
    throw new StintError("ERR_UNSUPPORTED_MEDIA_TYPE", "the agent API takes application/json");
  const body = await readBody(req, MAX_BODY_BYTES);
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw malformed("the body is not JSON");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw malformed("the body must be a JSON object");
  const unknown = Object.keys(value).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) throw malformed(`unknown member ${JSON.stringify(unknown[0]!.slice(0, 40))}`);
  return value as Record<string, unknown>;
}

/** The caller's entry by id, or rejectedIdentifier: an entry of another parent (or none) looks like no entry. */
function ownEntry(entries: ReadonlyMap<string, EntryRecord>, entryId: unknown, agent: string): EntryRecord {
  if (typeof entryId !== "string" || entryId.length === 0 || entryId.length > 128)
    throw malformed("entryId must be an entry id string");
  const entry = entries.get(entryId);
  if (!entry) {
    throw new StintError(
      "ERR_REJECTED_IDENTIFIER",
      `no registration entry ${JSON.stringify(entryId)} has parent ${agent}`,
    );
  }
  return entry;
}

/** The CSR of one request: base64url DER whose only URI SAN is the entry's ID and whose DNS names the entry lists. */
function entryCsr(entry: EntryRecord, text: unknown): ParsedCsr {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]+$/.test(text))
    throw new StintError("ERR_BAD_CSR", "csr must be base64url DER of a PKCS#10 request");
  const csr = parseCsr(Buffer.from(text, "base64url"));
  if (csr.requestsCa) throw new StintError("ERR_BAD_CSR", "the CSR asks for a CA certificate");
  if (csr.ipAddresses.length > 0) throw new StintError("ERR_BAD_CSR", "the CSR asks for IP addresses");
  if (csr.uris.length !== 1 || csr.uris[0] !== entry.spiffeId) {
    throw new StintError(
      "ERR_BAD_CSR",
      `the CSR's URI SANs (${csr.uris.join(", ") || "none"}) must be exactly the entry's SPIFFE ID ${entry.spiffeId}`,
    );
  }
  const extra = csr.dnsNames.map((n) => n.toLowerCase()).filter((n) => !entry.dnsNames.includes(n));
  if (extra.length > 0)
    throw new StintError("ERR_BAD_CSR", `the entry does not list the CSR's DNS names ${extra.join(", ")}`);
  return csr;
}

/** The revision of an agent's entry list: changes whenever any entry is added, removed or changed. */
function revision(entries: readonly EntryRecord[]): string {
  const h = createHash("sha256");
  for (const e of entries) h.update(JSON.stringify([e.id, e.spiffeId, e.selectors, e.dnsNames, e.ttlMs]));
  return h.digest("base64url").slice(0, 22);
}

const entryJson = (e: EntryRecord) => ({
  id: e.id,
  spiffeId: e.spiffeId,
  selectors: e.selectors,
  ttlSeconds: e.ttlMs === null ? null : Math.floor(e.ttlMs / 1000),
  dnsNames: e.dnsNames,
});

export function mountAgentApi(deps: AgentApiDeps): (router: Router) => void {
  const { authority, store, jwt, log } = deps;

  const fail = (res: ServerResponse, err: unknown) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const { problem, errorId } = problemFor(err);
    if (errorId) log.error("agent API request failed", { errorId, error: err });
    // A missing or refused certificate is 401 here, as the admin API answers it.
    const status = isStintError(err, "ERR_UNAUTHORIZED") ? 401 : problem.status;
    sendJson(res, status, { ...problem, status }, "application/problem+json");
  };

  const byId = async (agent: string) => {
    const entries = await store.listEntries({ parent: agent });
    return new Map(entries.map((e) => [e.id, e]));
  };

  const issueOne = async (
    agent: string,
    entries: ReadonlyMap<string, EntryRecord>,
    item: unknown,
    now: Date,
  ): Promise<Record<string, unknown>> => {
    const entryId = (item as { entryId?: unknown } | null)?.entryId;
    try {
      if (item === null || typeof item !== "object" || Array.isArray(item))
        throw malformed("each request must be an object {entryId, csr}");
      const entry = ownEntry(entries, entryId, agent);
      const csr = entryCsr(entry, (item as { csr?: unknown }).csr);
      // Bound to the entry as read above: the store re-checks it in the transaction that records the
      // certificate, so an entry deleted or moved to another agent meanwhile lends nothing, and
      // `stint entry delete --revoke` finds what was issued under it.
      const binding: CertificateBinding = {
        entryId: entry.id,
        entryHash: entryHash(entry),
        attestationId: null,
        renews: null,
        requestedBy: agent,
      };
      const issued = await authority.issue(
        {
          spiffeId: entry.spiffeId,
          dnsNames: csr.dnsNames.map((n) => n.toLowerCase()),
          ttlMs: entry.ttlMs ?? undefined,
          spki: csr.spki,
          keyAlgorithm: csr.keyAlgorithm,
          keyDescription: csr.keyDescription,
        },
        agent,
        now,
        { binding, details: { via: "agent-api" } },
      );
      const window = renewalWindow(issued, now, deps.renewalWindow);
      return {
        entryId: entry.id,
        spiffeId: entry.spiffeId,
        certificateChain: issued.chainPem,
        notAfter: issued.notAfter.toISOString(),
        renewAfter: window.start.toISOString(),
      };
    } catch (err) {
      const { problem, errorId } = problemFor(err);
      if (errorId) log.error("agent API issuance failed", { errorId, error: err });
      return { entryId: typeof entryId === "string" ? entryId.slice(0, 128) : null, error: problem };
    }
  };

  return (router) => {
    router
      .on("GET", AGENT_PATHS.entries, async (req, res) => {
        try {
          const agent = await authenticateAgent(req, deps, new Date());
          const entries = await store.listEntries({ parent: agent });
          sendJson(res, 200, { entries: entries.map(entryJson), revision: revision(entries) });
        } catch (err) {
          fail(res, err);
        }
      })
      .on("POST", AGENT_PATHS.x509Svids, async (req, res) => {
        try {
          const now = new Date();
          const agent = await authenticateAgent(req, deps, now);
          const { requests } = await readJson(req, ["requests"]);
          if (!Array.isArray(requests) || requests.length === 0 || requests.length > MAX_BATCH)
            throw malformed(`requests must be a list of 1 to ${MAX_BATCH} {entryId, csr} objects`);
          const entries = await byId(agent);
          const svids = await Promise.all(requests.map((item) => issueOne(agent, entries, item, now)));
          sendJson(res, 200, { svids });
        } catch (err) {
          fail(res, err);
        }
      })
      .on("POST", AGENT_PATHS.jwtSvids, async (req, res) => {
        try {
          const now = new Date();
          const agent = await authenticateAgent(req, deps, now);
          const body = await readJson(req, ["entryId", "audience"]);
          const audience = parseAudience(body.audience);
          const entry = ownEntry(await byId(agent), body.entryId, agent);
          // Awaited: a key in a PKCS#11 token signs through C_Sign.
          const signed = await jwt.sign({ spiffeId: entry.spiffeId, audience, now });
          await store.appendAudit({
            at: now,
            actor: agent,
            action: "jwt-svid.issue",
            subject: entry.spiffeId,
            details: {
              entryId: entry.id,
              requestedBy: agent,
              audience,
              kid: signed.kid,
              expiresAt: signed.expiresAt.toISOString(),
            },
          });
          sendJson(res, 200, {
            token: signed.token,
            spiffeId: entry.spiffeId,
            expiresAt: signed.expiresAt.toISOString(),
          });
        } catch (err) {
          fail(res, err);
        }
      });
  };
}
