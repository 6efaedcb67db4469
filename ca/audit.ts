import { createHash } from "node:crypto";
import { StintError } from "../common/errors";
import type { AuditEvent, AuditRecord } from "./store";

/**
 * The audit log is tamper-evident: each record's hash covers the previous
 * record's hash and its own canonical form, so editing, deleting or
 * reordering any record breaks every hash after it.
 */

/** Canonical JSON: object keys sorted at every depth, no whitespace. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value ?? null);
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return "{" + entries.map(([k, v]) => JSON.stringify(k) + ":" + canonicalJson(v)).join(",") + "}";
}

export function auditHash(seq: number, prevHash: string, event: AuditEvent): string {
  const body = canonicalJson({
    seq,
    at: event.at.toISOString(),
    actor: event.actor,
    action: event.action,
    subject: event.subject,
    details: event.details,
  });
  return createHash("sha256").update(prevHash).update("\n").update(body).digest("hex");
}

export function chainRecord(seq: number, prevHash: string, event: AuditEvent): AuditRecord {
  return { ...event, seq, prevHash, hash: auditHash(seq, prevHash, event) };
}

/**
 * Checks a run of records starting at `records[0]`; `prevHash` is the hash of
 * the record before it ("" when the run starts at seq 1). Throws ERR_AUDIT_CHAIN
 * naming the first record that does not fit.
 */
export function verifyAuditChain(records: AuditRecord[], prevHash = ""): void {
  let expectedSeq = records.length > 0 ? records[0].seq : 1;
  let prev = prevHash;
  for (const r of records) {
    if (r.seq !== expectedSeq) {
      throw new StintError("ERR_AUDIT_CHAIN", `audit log: record ${expectedSeq} is missing (found ${r.seq})`);
    }
    if (r.prevHash !== prev) {
      throw new StintError(
        "ERR_AUDIT_CHAIN",
        `audit log: record ${r.seq} does not follow record ${r.seq - 1}`,
      );
    }
    if (auditHash(r.seq, r.prevHash, r) !== r.hash) {
      throw new StintError("ERR_AUDIT_CHAIN", `audit log: record ${r.seq} was altered after it was written`);
    }
    prev = r.hash;
    expectedSeq++;
  }
}
