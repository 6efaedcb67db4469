import { StintError } from "../common/errors";

/**
 * What the CA host tells the offline host a root's next CRL must say: `stint
 * ca root crl-request` writes it, `stint root sign-crl` reads it, and `stint
 * ca import-crl` checks the signed CRL against what the store knows then. One
 * module for both sides (STYLE.md, habit 12). JSON, so the operator can read
 * on the offline machine what the root is about to sign.
 */

export const CRL_REQUEST_FORMAT = "stint-root-crl-request/1";

export interface RevokedEntry {
  /** The revoked intermediate's issuer id (for the operator; the CRL lists only the serial). */
  issuer: string;
  /** Lowercase hex of the intermediate certificate's serial. */
  serial: string;
  revokedAt: Date;
}

export interface RootCrlRequest {
  trustDomain: string;
  /** The issuer id of the root that signs the CRL. */
  root: string;
  /** "sha256:<hex>" of the root certificate, so the offline host signs with exactly that root. */
  rootFingerprint: string;
  /** The CRL number to sign: one more than the highest the CA has published for this root. */
  number: number;
  revoked: RevokedEntry[];
  createdAt: Date;
}

export function encodeCrlRequest(r: RootCrlRequest): string {
  return `${JSON.stringify(
    {
      format: CRL_REQUEST_FORMAT,
      trustDomain: r.trustDomain,
      root: r.root,
      rootFingerprint: r.rootFingerprint,
      number: r.number,
      revoked: r.revoked.map((e) => ({
        issuer: e.issuer,
        serial: e.serial,
        revokedAt: e.revokedAt.toISOString(),
      })),
      createdAt: r.createdAt.toISOString(),
    },
    null,
    2,
  )}\n`;
}

const bad = (why: string) =>
  new StintError("ERR_MALFORMED", `not a CRL request from stint ca root crl-request: ${why}`);

const HEX_ID = /^[0-9a-f]{16}$/;
const SERIAL = /^[0-9a-f]{2,40}$/;

function date(v: unknown, field: string): Date {
  const d = typeof v === "string" && /^\d{4}-\d{2}-\d{2}T/.test(v) ? new Date(v) : new Date(Number.NaN);
  if (Number.isNaN(d.getTime())) throw bad(`${field} is not an ISO 8601 time`);
  return d;
}

/** Reads a request strictly: every field present, of its type and shape, nothing else trusted. */
export function decodeCrlRequest(text: string): RootCrlRequest {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw bad("it is not JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("it is not a JSON object");
  if (v.format !== CRL_REQUEST_FORMAT) throw bad(`format is not "${CRL_REQUEST_FORMAT}"`);
  if (typeof v.trustDomain !== "string" || v.trustDomain.length === 0) throw bad("trustDomain is missing");
  if (typeof v.root !== "string" || !HEX_ID.test(v.root)) throw bad("root is not an issuer id");
  if (typeof v.rootFingerprint !== "string" || !/^sha256:[0-9a-f]{64}$/.test(v.rootFingerprint))
    throw bad("rootFingerprint is not sha256:<hex>");
  if (typeof v.number !== "number" || !Number.isSafeInteger(v.number) || v.number < 1)
    throw bad("number is not a positive integer");
  if (!Array.isArray(v.revoked)) throw bad("revoked is not a list");
  const revoked = v.revoked.map((e: unknown, i: number): RevokedEntry => {
    const o = (typeof e === "object" && e !== null ? e : {}) as Record<string, unknown>;
    if (typeof o.issuer !== "string" || !HEX_ID.test(o.issuer))
      throw bad(`revoked[${i}].issuer is not an issuer id`);
    if (typeof o.serial !== "string" || !SERIAL.test(o.serial)) throw bad(`revoked[${i}].serial is not hex`);
    return { issuer: o.issuer, serial: o.serial, revokedAt: date(o.revokedAt, `revoked[${i}].revokedAt`) };
  });
  return {
    trustDomain: v.trustDomain,
    root: v.root,
    rootFingerprint: v.rootFingerprint,
    number: v.number,
    revoked,
    createdAt: date(v.createdAt, "createdAt"),
  };
}
