import { type KeyObject, X509Certificate } from "node:crypto";
import { renewalWindow } from "../ca/renewal";
import { parseRevocationReason } from "../ca/revocation";
import type { CertificateRecord } from "../ca/store";
import { StintError } from "../common/errors";
import { parseCertId } from "../formats/ari";
import { fromB64u } from "../formats/jose";
import { type CertificateKey, readCertificateKey } from "../formats/x509";
import type { AcmeContext } from "./context";
import { type EntryGrant, entryGrant } from "./entry-grant";
import { csrFromPayload, sameSet } from "./orders";
import type { Handler } from "./router";
import { isObject } from "./wire";

/**
 * What a client does with a certificate it holds: revoke it (RFC 8555 7.6),
 * ask when to renew it (ARI, RFC 9773), and renew it with itself
 * (renew-with-certificate, Stint's extension: docs/acme.md).
 */

/**
 * The stored record of a certificate presented as DER, or null when this CA
 * did not issue exactly these bytes. Equal bytes make the stored record's
 * checks (issuer, signature, names) hold for the presented one, so nothing
 * is verified again.
 */
async function ownCertificate(
  ctx: AcmeContext,
  der: Buffer,
  parsed?: CertificateKey,
): Promise<CertificateRecord | null> {
  let facts: CertificateKey;
  try {
    facts = parsed ?? readCertificateKey(der);
  } catch {
    throw new StintError("ERR_MALFORMED", "certificate is not a DER X.509 certificate");
  }
  const record = await ctx.store.getCertificate(serialHex(facts.serial));
  return record?.der.equals(der) ? record : null;
}

/** The store's serial text: the INTEGER's value in hex, without DER's sign octet. */
function serialHex(content: Buffer): string {
  const value = content.length > 1 && content[0] === 0 ? content.subarray(1) : content;
  return value.toString("hex");
}

const spkiOf = (key: KeyObject) => key.export({ type: "spki", format: "der" });

export function revokeCert(ctx: AcmeContext): Handler {
  return async (req, res, url) => {
    try {
      const vr = await ctx.verify(req, url, ["kid", "jwk"]);
      const payload = isObject(vr.payload) ? vr.payload : {};
      const der = fromB64u(payload.certificate, "certificate");
      const reason = parseRevocationReason(payload.reason);
      const cert = await ownCertificate(ctx, der);
      if (!cert) throw new StintError("ERR_NOT_FOUND", "this CA did not issue that certificate");
      let actor: string;
      if (vr.source.kind === "jwk") {
        // Signed with the certificate's own key: whoever holds it may revoke it.
        if (!spkiOf(vr.source.key).equals(spkiOf(new X509Certificate(der).publicKey))) {
          throw new StintError(
            "ERR_UNAUTHORIZED",
            "the JWS key is not this certificate's key; sign with the certificate's key or with the account that ordered it",
          );
        }
        actor = `certificate-key:${cert.serial}`;
      } else {
        const account = await ctx.account(vr);
        if ((await ctx.store.accountOfCertificate(cert.serial)) !== account.id) {
          throw new StintError(
            "ERR_UNAUTHORIZED",
            "only the account that ordered a certificate, or its key, may revoke it",
          );
        }
        actor = ctx.urls.account(account.id);
      }
      await ctx.authority.revoke(cert.serial, reason, actor);
      ctx.acmeHeaders(res);
      res.writeHead(200, { "content-length": 0 });
      res.end();
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/** GET renewalInfo/<AKI>.<serial>: no JWS, so caches and proxies may serve it (RFC 9773 4.2). */
export function renewalInfo(ctx: AcmeContext): Handler {
  return async (_req, res, _url, params) => {
    try {
      const id = parseCertId(params.id);
      const serial = id.serial.toString("hex");
      const cert = await ctx.store.getCertificate(serial);
      // Issuer ids are the first 8 bytes of the issuer's key identifier (ca/store.ts).
      if (!cert || cert.issuerId !== id.authorityKeyId.subarray(0, 8).toString("hex")) {
        throw new StintError("ERR_NOT_FOUND", `no certificate ${params.id.slice(0, 120)} from this CA`);
      }
      // The lifetime runs from issuance: notBefore is backdated by policy.backdate for clock skew,
      // which would otherwise open the window early (for a minutes-long certificate, at once).
      const issuedAt = Math.min(
        cert.notAfter.getTime(),
        cert.notBefore.getTime() + ctx.authority.policy.backdateMs,
      );
      const window = renewalWindow(
        { notBefore: new Date(issuedAt), notAfter: cert.notAfter, renewFrom: ctx.authority.renewFrom(cert) },
        new Date(),
        ctx.deps.options.renewalWindow,
      );
      ctx.reply(
        res,
        200,
        { suggestedWindow: { start: window.start.toISOString(), end: window.end.toISOString() } },
        { "retry-after": String(window.retryAfterSeconds) },
      );
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/**
 * renew-with-certificate: the JWS carries the current chain in x5c and is
 * signed by the leaf's key. The new certificate has the same names (or
 * fewer) and the lifetime of the registration entry the current one was
 * issued under, as that entry is now; an administrator who deletes or
 * replaces that entry stops its renewals at once, whatever other entries
 * name the same SPIFFE ID.
 */
export function renewCert(ctx: AcmeContext): Handler {
  return async (req, res, url) => {
    try {
      const vr = await ctx.verify(req, url, ["x5c"]);
      if (vr.source.kind !== "x5c")
        throw new StintError(
          "ERR_MALFORMED",
          "renew-cert must be signed with the certificate's key, its chain in x5c",
        );
      const now = new Date();
      const current = await ownCertificate(ctx, vr.source.chain[0], vr.source.leaf);
      if (!current)
        throw new StintError(
          "ERR_UNAUTHORIZED",
          "the x5c leaf was not issued by this CA; enroll with an order instead",
        );
      if (current.revokedAt)
        throw new StintError(
          "ERR_UNAUTHORIZED",
          `certificate ${current.serial} is revoked; enroll again with attestation`,
        );
      if (current.notAfter.getTime() <= now.getTime()) {
        throw new StintError(
          "ERR_UNAUTHORIZED",
          `certificate ${current.serial} expired at ${current.notAfter.toISOString()}; enroll again with attestation`,
        );
      }
      if (!current.spiffeId)
        throw new StintError(
          "ERR_UNAUTHORIZED",
          "only SPIFFE certificates renew with renew-cert; DNS-only certificates renew through a new order",
        );
      ctx.limits.renewals.take(current.spiffeId);
      const csr = csrFromPayload(vr.payload);
      const dnsNames = csr.dnsNames.map((n) => n.toLowerCase());
      const widened = [
        ...csr.uris.filter((u) => u !== current.spiffeId),
        ...dnsNames.filter((n) => !current.dnsNames.includes(n)),
      ];
      if (!sameSet(csr.uris, [current.spiffeId]) || widened.length > 0) {
        throw new StintError(
          "ERR_BAD_CSR",
          `CSR must name ${current.spiffeId} and at most the current DNS names (${current.dnsNames.join(", ") || "none"})${widened.length ? `; not in the current certificate: ${widened.join(", ")}` : ""}`,
        );
      }
      const grant = await ownEntryGrant(ctx, current, dnsNames);
      const issued = await ctx.authority.issue(
        {
          spiffeId: current.spiffeId,
          dnsNames,
          ttlMs: grant.entry.ttlMs ?? undefined,
          spki: csr.spki,
          keyAlgorithm: csr.keyAlgorithm,
          keyDescription: csr.keyDescription,
        },
        `renew:${current.serial}`,
        now,
        grant.bound,
      );
      ctx.acmeHeaders(res);
      res.writeHead(201, {
        "content-type": "application/pem-certificate-chain",
        "content-length": Buffer.byteLength(issued.chainPem),
        location: ctx.urls.certificate(issued.serial),
      });
      res.end(issued.chainPem);
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/**
 * The grant of the entry `current` was issued under, and only that entry:
 * another entry for the same SPIFFE ID was never proven by its holder. The
 * renewal keeps the certificate's attestation and takes the entry's TTL now.
 */
async function ownEntryGrant(
  ctx: AcmeContext,
  current: CertificateRecord,
  dnsNames: readonly string[],
): Promise<EntryGrant> {
  const binding = await ctx.store.getCertificateBinding(current.serial);
  if (binding?.requestedBy) {
    // Its holder proved itself to the node agent, never to us: the agent renews it.
    throw new StintError(
      "ERR_UNAUTHORIZED",
      `certificate ${current.serial} was obtained by node agent ${binding.requestedBy} for a workload on its host; that agent renews it (SPIFFE Workload API or SDS)`,
    );
  }
  const attestation = binding?.attestationId ? await ctx.store.getAttestation(binding.attestationId) : null;
  if (!binding || !attestation) {
    throw new StintError(
      "ERR_UNAUTHORIZED",
      `certificate ${current.serial} was not issued under a registration entry (stint ca issue makes such certificates); enroll with an order and attest-01`,
    );
  }
  try {
    return await entryGrant(ctx, attestation, dnsNames, current.serial);
  } catch (err) {
    if (!(err instanceof StintError) || err.code !== "ERR_UNAUTHORIZED") throw err;
    throw new StintError(
      "ERR_UNAUTHORIZED",
      `${err.message}; certificate ${current.serial} cannot be renewed`,
    );
  }
}
