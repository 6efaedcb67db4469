import { StintError } from "../common/errors";
import * as der from "./der";
import { b64u, fromB64u } from "./jose";

/**
 * ACME Renewal Information certificate identifiers (RFC 9773 4.1):
 * base64url(AKI keyIdentifier) "." base64url(serial content octets), shared
 * by the CA that answers renewalInfo and the agent that asks.
 */

export interface CertId {
  authorityKeyId: Buffer;
  serial: Buffer;
}

export function formatCertId(id: CertId): string {
  return `${b64u(id.authorityKeyId)}.${b64u(id.serial)}`;
}

export function parseCertId(text: string): CertId {
  const parts = text.split(".");
  if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
    throw new StintError(
      "ERR_MALFORMED",
      "renewalInfo identifier must be <base64url AKI>.<base64url serial>",
    );
  }
  const authorityKeyId = fromB64u(parts[0], "renewalInfo AKI");
  const serial = fromB64u(parts[1], "renewalInfo serial");
  if (serial[0] & 0x80 || (serial.length > 1 && serial[0] === 0 && !(serial[1] & 0x80))) {
    throw new StintError(
      "ERR_MALFORMED",
      "renewalInfo serial is not a DER-encoded positive INTEGER's content",
    );
  }
  return { authorityKeyId, serial };
}

const AKI_OID = "2.5.29.35";

/** The ARI identifier of a certificate, read from its DER: AKI keyIdentifier and serial. */
export function certIdOf(certDer: Buffer): CertId {
  const cert = der.expectTlv(certDer, 0, der.Tag.SEQUENCE, "Certificate");
  const tbs = der.expectTlv(certDer, cert.valueStart, der.Tag.SEQUENCE, "TBSCertificate");
  const fields = der.children(certDer, tbs);
  const serial = der.contents(certDer, fields[1]);
  const extField = fields.find((f) => f.tag === der.contextTag(3, true));
  if (!extField)
    throw new StintError("ERR_MALFORMED", "certificate has no extensions, so no authority key identifier");
  for (const ext of der.children(certDer, der.children(certDer, extField)[0])) {
    const parts = der.children(certDer, ext);
    if (der.decodeOid(der.contents(certDer, parts[0])) !== AKI_OID) continue;
    const value = der.contents(certDer, parts[parts.length - 1]);
    const aki = der.children(value, der.readTlv(value, 0)).find((t) => t.tag === der.contextTag(0, false));
    if (aki) return { authorityKeyId: Buffer.from(der.contents(value, aki)), serial: Buffer.from(serial) };
  }
  throw new StintError("ERR_MALFORMED", "certificate has no authority key identifier");
}
