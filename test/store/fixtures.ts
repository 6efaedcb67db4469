import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { entryHash } from "../../ca/entries";
import type { AuditEvent, CertificateRecord, IssuerRecord } from "../../ca/store";
import type {
  AccountRecord,
  AttestationRecord,
  AuthorizationRecord,
  EntryRecord,
  JoinTokenRecord,
  OrderRecord,
} from "../../ca/store-acme";

export const T0 = new Date("2030-01-01T00:00:00.000Z");

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "stint-store-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function issuer(id: string, overrides: Partial<IssuerRecord> = {}): IssuerRecord {
  return {
    id,
    kind: "intermediate",
    parentId: null,
    state: "active",
    subject: `CN=Stint Intermediate ${id}`,
    certDer: Buffer.from(`issuer-der-${id}`),
    keyPath: `keys/${id}.key`,
    notBefore: T0,
    notAfter: new Date(T0.getTime() + 86_400_000),
    createdAt: T0,
    ...overrides,
  };
}

export function certificate(issuerId: string, sequence: number, overrides: Partial<CertificateRecord> = {}) {
  const record: CertificateRecord = {
    serial: `7f${issuerId}${sequence.toString(16).padStart(16, "0")}`,
    issuerId,
    sequence,
    spiffeId: `spiffe://example.org/workload/${sequence % 3}`,
    dnsNames: [`w${sequence}.example.org`],
    ipAddresses: sequence % 2 === 0 ? ["10.0.0.1", "fd00::1"] : [],
    notBefore: T0,
    notAfter: new Date(T0.getTime() + sequence * 60_000),
    der: Buffer.from(`cert-der-${sequence}`.repeat(20)),
    revokedAt: null,
    revocationReason: null,
    ...overrides,
  };
  return record;
}

export function event(action: string, subject: string, details: Record<string, unknown> = {}): AuditEvent {
  return { at: T0, actor: "test", action, subject, details };
}

/** Everything a test needs to prove a refused open left the file alone. */
export function snapshot(path: string): { bytes: Buffer; mtimeMs: number; siblings: string[] } {
  const dir = join(path, "..");
  return { bytes: readFileSync(path), mtimeMs: statSync(path).mtimeMs, siblings: readdirSync(dir).sort() };
}

export const MINUTE = 60_000;
/** T0 plus `ms` milliseconds. */
/** T0 plus `ms` milliseconds. */
export const later = (ms: number) => new Date(T0.getTime() + ms);

export function account(id: string, overrides: Partial<AccountRecord> = {}): AccountRecord {
  return {
    id,
    thumbprint: `thumb-${id}`,
    jwk: { kty: "EC", crv: "P-256", x: `x-${id}`, y: `y-${id}` },
    status: "valid",
    contact: [`mailto:${id}@example.org`],
    createdAt: T0,
    ...overrides,
  };
}

export function authorization(
  id: string,
  accountId: string,
  overrides: Partial<AuthorizationRecord> = {},
): AuthorizationRecord {
  return {
    id,
    accountId,
    identifier: { type: "spiffe", value: "spiffe://example.org/web" },
    status: "pending",
    expires: later(60 * MINUTE),
    challenges: [
      {
        id: `${id}-c`,
        type: "attest-01",
        token: `token-${id}`,
        status: "pending",
        validated: null,
        error: null,
      },
    ],
    entryId: null,
    selectors: [],
    attestationId: null,
    ...overrides,
  };
}

export function attestation(
  id: string,
  authz: AuthorizationRecord,
  e: EntryRecord,
  overrides: Partial<AttestationRecord> = {},
): AttestationRecord {
  return {
    id,
    at: later(2 * MINUTE),
    accountId: authz.accountId,
    authorizationId: authz.id,
    method: "k8s_sat",
    spiffeId: e.spiffeId,
    selectors: [...e.selectors, "k8s:pod:web-0"],
    evidence: "k8s_sat:ns=prod,sa=web,pod=web-0",
    entryId: e.id,
    entrySelectors: e.selectors,
    entryHash: entryHash(e),
    ...overrides,
  };
}

export function order(
  id: string,
  accountId: string,
  authzs: AuthorizationRecord[],
  overrides: Partial<OrderRecord> = {},
): OrderRecord {
  return {
    id,
    accountId,
    status: "pending",
    identifiers: authzs.map((a) => a.identifier),
    authorizationIds: authzs.map((a) => a.id),
    expires: later(60 * MINUTE),
    certificateSerial: null,
    replaces: null,
    error: null,
    createdAt: T0,
    ...overrides,
  };
}

export function entry(id: string, spiffeId: string, createdAt: Date, overrides: Partial<EntryRecord> = {}) {
  const record: EntryRecord = {
    id,
    spiffeId,
    selectors: ["k8s:ns:prod", `k8s:sa:${id}`],
    dnsNames: [],
    ttlMs: null,
    createdAt,
    ...overrides,
  };
  return record;
}

export function joinToken(id: string, overrides: Partial<JoinTokenRecord> = {}): JoinTokenRecord {
  return {
    id,
    hash: createHash("sha256").update(`secret-${id}`).digest("hex"),
    spiffeId: "spiffe://example.org/node/1",
    expiresAt: later(10 * MINUTE),
    usedAt: null,
    createdAt: T0,
    ...overrides,
  };
}
