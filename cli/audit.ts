import { ADMIN_PATHS, type AdminAuditRecord, type AdminPage } from "../acme/admin";
import { AdminClient, adminFlagOptions, adminHelp, formatTable } from "./admin-client";
import { type Command, parseFlags, printJson } from "./command";

/** `stint audit`: the CA's audit log, a page at a time, through the admin API. */

const FLAGS = {
  after: { type: "string" },
  limit: { type: "string" },
  json: { type: "boolean" },
} as const;

export const audit: Command = {
  name: "audit",
  summary: "list audit records: issuance, revocation, entries, join tokens, with who did them",
  help: () =>
    adminHelp(
      "stint audit [--after N] [--limit N] [--json] [options]",
      "Lists audit records in order: sequence, time, actor, action, subject and details. Each record\n" +
        "hashes the one before; `stint ca status` checks the whole chain.",
      "  --after N                  start after record N (the last seq of the previous page; default 0)\n" +
        "  --limit N                  at most N records (default 100, at most 10000)\n" +
        "  --json                     print the records as a JSON array",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, adminFlagOptions(FLAGS));
    const client = await AdminClient.fromFlags(values);
    const page = await client.get<{ records: AdminAuditRecord[] } & AdminPage>(ADMIN_PATHS.audit, {
      after: values.after as string | undefined,
      limit: values.limit as string | undefined,
    });
    if (values.json) printJson(page.records);
    else if (page.records.length === 0) console.log("no audit records");
    else {
      const rows = page.records.map((r) => [
        String(r.seq),
        r.at,
        r.actor,
        r.action,
        r.subject,
        JSON.stringify(r.details),
      ]);
      console.log(formatTable([["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAILS"], ...rows]));
      if (page.next !== null) console.log(`more: stint audit --after ${page.next}`);
    }
    return 0;
  },
};
