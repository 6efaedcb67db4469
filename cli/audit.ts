import { ADMIN_PATHS, type AdminAuditRecord, type AdminPage } from "../acme/admin";
import { parseSpiffeId } from "../formats/spiffe";
import { AdminClient, adminFlagOptions, adminHelp, formatTable } from "./admin-client";
import { type Command, parseFlags, printJson } from "./command";

/** `stint audit`: the CA's audit log, a page at a time, through the admin API. */

const FLAGS = {
  after: { type: "string" },
  limit: { type: "string" },
  "spiffe-id": { type: "string" },
  json: { type: "boolean" },
} as const;

const MAX_PAGE = "10000";

export const audit: Command = {
  name: "audit",
  summary: "list audit records: issuance, revocation, entries, join tokens, with who did them",
  examples: ["stint audit --limit 20", "stint audit --spiffe-id spiffe://stint.internal/web --json"],
  help: () =>
    adminHelp(
      "stint audit [--after N] [--limit N] [--spiffe-id ID] [--json] [options]",
      "Lists audit records in order: sequence, time, actor, action, subject and details. Each record\n" +
        "hashes the one before; `stint ca status` checks the whole chain. With --spiffe-id, the whole\n" +
        "log is read and only one identity's chain is shown: its entries, join tokens and their spends,\n" +
        "attestations (attest.ok, attest.refused), and every certificate issued, renewed or revoked\n" +
        "under them.",
      "  --after N                  start after record N (the last seq of the previous page; default 0)\n" +
        "  --limit N                  at most N records (default 100, at most 10000)\n" +
        "  --spiffe-id ID             only the records of this SPIFFE ID's chain\n" +
        "  --json                     print the records as a JSON array",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, adminFlagOptions(FLAGS));
    const client = await AdminClient.fromFlags(values);
    const spiffeId = values["spiffe-id"] as string | undefined;
    let records: AdminAuditRecord[];
    let next: AdminPage["next"] = null;
    if (spiffeId === undefined) {
      const page = await client.get<{ records: AdminAuditRecord[] } & AdminPage>(ADMIN_PATHS.audit, {
        after: values.after as string | undefined,
        limit: values.limit as string | undefined,
      });
      records = page.records;
      next = page.next;
    } else {
      records = identityChain(
        await allRecords(client, values.after as string | undefined),
        parseSpiffeId(spiffeId).uri,
      );
    }
    if (values.json) printJson(records);
    else if (records.length === 0) console.log("no audit records");
    else {
      const rows = records.map((r) => [
        String(r.seq),
        r.at,
        r.actor,
        r.action,
        r.subject,
        JSON.stringify(r.details),
      ]);
      console.log(formatTable([["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAILS"], ...rows]));
      if (next !== null) console.log(`more: stint audit --after ${next}`);
    }
    return 0;
  },
};

/** Every record after `after`, page by page. */
async function allRecords(client: AdminClient, after = "0"): Promise<AdminAuditRecord[]> {
  const out: AdminAuditRecord[] = [];
  for (let cursor: string | null = after; cursor !== null; ) {
    const page: { records: AdminAuditRecord[] } & AdminPage = await client.get(ADMIN_PATHS.audit, {
      after: cursor,
      limit: MAX_PAGE,
    });
    out.push(...page.records);
    cursor = page.next === null ? null : String(page.next);
  }
  return out;
}

/**
 * The records of one identity, in log order: those naming it (subject,
 * details.spiffeId, or the SPIFFE ID a join token was spent for), and those about what they name — its entries, join
 * tokens and certificates — so a revocation, which names only a serial, is
 * shown with the certificates it ended.
 */
export function identityChain(records: readonly AdminAuditRecord[], spiffeId: string): AdminAuditRecord[] {
  const related = new Set<string>();
  const out: AdminAuditRecord[] = [];
  for (const r of records) {
    const d = r.details as Record<string, unknown>;
    const mine = r.subject === spiffeId || d.spiffeId === spiffeId || d.requested === spiffeId;
    if (!mine && !related.has(r.subject)) continue;
    out.push(r);
    related.add(r.subject);
    for (const key of ["entryId", "tokenId", "attestationId"] as const) {
      if (typeof d[key] === "string") related.add(d[key] as string);
    }
  }
  return out;
}
