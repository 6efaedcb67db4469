import { join } from "node:path";
import Database from "better-sqlite3";
import { openStore, STORE_FILE } from "../../ca/store/open";
import type { Received } from "./issuance";
import { stintJson } from "./processes";

/**
 * What a crash must not do to the store, checked once the CA is stopped:
 * every certificate a client received is recorded byte for byte, no serial
 * or (issuer, sequence) was handed out twice, the audit chain verifies, and
 * SQLite finds its file intact.
 */

export interface StoreFigures {
  /** Received by a client but not in the store, or stored with other bytes. */
  certificatesLost: number;
  /** Two different certificates received with the same serial. */
  duplicateSerials: number;
  /** Two certificates (received or stored) with the same issuer and sequence number. */
  duplicateSequences: number;
  certificatesStored: number;
}

export async function checkReceived(
  dataDir: string,
  storeUrl: string,
  received: readonly Received[],
): Promise<StoreFigures> {
  let duplicateSerials = 0;
  let duplicateSequences = 0;
  const bySerial = new Map<string, Buffer>();
  const bySequence = new Set<string>();
  for (const r of received) {
    const seen = bySerial.get(r.serial);
    if (seen && !seen.equals(r.der)) duplicateSerials++;
    bySerial.set(r.serial, r.der);
    const seq = `${r.issuer}#${r.sequence}`;
    if (!seen && bySequence.has(seq)) duplicateSequences++;
    bySequence.add(seq);
  }

  const store = await openStore(dataDir, { url: storeUrl });
  try {
    let certificatesLost = 0;
    for (const [serial, der] of bySerial) {
      const stored = await store.getCertificate(serial);
      if (!stored?.der.equals(der)) certificatesLost++;
    }
    // The store's own view: a sequence recorded twice for one issuer (the schema forbids it; a crash must not either).
    let certificatesStored = 0;
    for (const issuer of await store.listIssuers()) {
      if (issuer.kind !== "intermediate") continue;
      const sequences = new Set<number>();
      let after: string | undefined;
      for (;;) {
        const page = await store.listCertificates({ issuerId: issuer.id, afterSerial: after, limit: 1000 });
        if (page.length === 0) break;
        for (const c of page) {
          if (sequences.has(c.sequence)) duplicateSequences++;
          sequences.add(c.sequence);
        }
        certificatesStored += page.length;
        after = page[page.length - 1].serial;
      }
    }
    return { certificatesLost, duplicateSerials, duplicateSequences, certificatesStored };
  } finally {
    await store.close();
  }
}

/** `stint ca status --json`: whether every audit record chains to the one before, and how many there are. */
export function auditChain(env: Record<string, string>): { intact: boolean; records: number } {
  const status = stintJson<{ audit: { intact: boolean; records: number } }>(["ca", "status"], env);
  return status.audit;
}

/** SQLite's PRAGMA integrity_check on the store file, read-only: "ok" or the problems it lists. */
export function sqliteIntegrity(dataDir: string): string {
  const db = new Database(join(dataDir, STORE_FILE), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare("PRAGMA integrity_check").all() as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join("; ");
  } finally {
    db.close();
  }
}
