import { ADMIN_PATHS, type AdminEntry } from "../acme/admin";
import { StintError } from "../common/errors";
import { AdminClient, adminFlagOptions, adminHelp, formatTable, pathWith } from "./admin-client";
import { type Command, parseFlags, printJson } from "./command";
import { refuseReservedId } from "./spiffe-flag";

/** `stint entry create|list|delete`: registration entries, through the admin API. */

const CREATE_FLAGS = {
  "spiffe-id": { type: "string" },
  selector: { type: "string", multiple: true },
  dns: { type: "string", multiple: true },
  ttl: { type: "string" },
  parent: { type: "string" },
  json: { type: "boolean" },
} as const;

const usage = (cmd: string, msg: string) => new StintError("ERR_USAGE", `${msg} (see stint ${cmd} --help)`);

function describe(e: AdminEntry): string {
  const extra = [
    e.dnsNames.length ? `dns ${e.dnsNames.join(",")}` : "",
    e.ttl ? `ttl ${e.ttl}` : "",
    e.parent ? `parent ${e.parent}` : "",
  ].filter(Boolean);
  return `${e.id}  ${e.spiffeId}  ${e.selectors.join(",")}${extra.length ? `  ${extra.join("  ")}` : ""}`;
}

export const entryCreate: Command = {
  name: "entry create",
  summary: "register a workload: which attested selectors may obtain which SPIFFE ID",
  examples: [
    "stint entry create --spiffe-id spiffe://stint.internal/web --selector k8s:ns:prod --selector k8s:sa:web",
    "stint entry create --spiffe-id spiffe://stint.internal/api --selector x509pop:san:dns:api.internal --dns api.internal --ttl 30m",
    "stint entry create --spiffe-id spiffe://stint.internal/web --parent spiffe://stint.internal/node/host1 --selector unix:uid:1001",
  ],
  help: () =>
    adminHelp(
      "stint entry create --spiffe-id ID --selector S [--selector S]... [--dns NAME]... [--ttl 1h] [--parent AGENT_ID] [options]",
      "Creates a registration entry: a workload whose attestation produced ALL of the selectors may\n" +
        "obtain a certificate for the SPIFFE ID (and the DNS names). Selectors: join_token:<id>,\n" +
        "k8s:ns:<namespace>, k8s:sa:<service account>, k8s:pod:<pod>, x509pop:subject:cn:<cn>,\n" +
        "x509pop:san:dns:<name>, x509pop:san:uri:<uri>, x509pop:ca:fingerprint:<sha256 hex>;\n" +
        "for node agents (with --parent): unix:uid:<n>, unix:gid:<n>, unix:user:<name>, unix:group:<name>,\n" +
        "unix:path:<absolute path>, unix:sha256:<hex of the executable>.",
      "  --spiffe-id ID             the identity, spiffe://<trust domain>/<path> (required)\n" +
        "  --selector S               a selector the workload must have; repeat for more (at least one)\n" +
        "  --dns NAME                 a DNS name its certificates may carry; repeat for more\n" +
        "  --ttl DURATION             certificate lifetime for this workload, e.g. 30m (default policy.defaultTtl)\n" +
        "  --parent AGENT_ID          only the node agent with this SPIFFE ID may obtain it, for a workload on\n" +
        "                             its host that proves the selectors (never through ACME orders)\n" +
        "  --json                     print the entry as JSON",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, adminFlagOptions(CREATE_FLAGS));
    const spiffeId = values["spiffe-id"] as string | undefined;
    const selectors = (values.selector as string[] | undefined) ?? [];
    if (!spiffeId) throw usage("entry create", "--spiffe-id is required");
    refuseReservedId("entry create", spiffeId);
    if (selectors.length === 0) throw usage("entry create", "give at least one --selector");
    const client = await AdminClient.fromFlags(values);
    const entry = await client.post<AdminEntry>(ADMIN_PATHS.entries, {
      spiffeId,
      selectors,
      ...(values.dns ? { dnsNames: values.dns } : {}),
      ...(values.ttl ? { ttl: values.ttl } : {}),
      ...(values.parent ? { parent: values.parent } : {}),
    });
    if (values.json) printJson(entry);
    else
      console.log(
        `Created entry ${entry.id} for ${entry.spiffeId} (selectors: ${entry.selectors.join(", ")}${entry.parent ? `; parent ${entry.parent}` : ""})`,
      );
    return 0;
  },
};

export const entryList: Command = {
  name: "entry list",
  summary: "list registration entries",
  examples: ["stint entry list", "stint entry list --spiffe-id spiffe://stint.internal/web --json"],
  help: () =>
    adminHelp(
      "stint entry list [--spiffe-id ID] [--json] [options]",
      "Lists registration entries in SPIFFE ID order: id, SPIFFE ID, selectors, DNS names, TTL, parent.",
      "  --spiffe-id ID             only entries for this SPIFFE ID\n" +
        "  --json                     print the entries as a JSON array",
    ),
  async run(argv) {
    const { values } = parseFlags(
      argv,
      adminFlagOptions({ "spiffe-id": { type: "string" }, json: { type: "boolean" } }),
    );
    const client = await AdminClient.fromFlags(values);
    const page = await client.get<{ entries: AdminEntry[] }>(ADMIN_PATHS.entries, {
      spiffeId: values["spiffe-id"] as string | undefined,
    });
    if (values.json) printJson(page.entries);
    else if (page.entries.length === 0) console.log("no entries");
    else {
      const rows = page.entries.map((e) => [
        e.id,
        e.spiffeId,
        e.selectors.join(","),
        e.dnsNames.join(",") || "-",
        e.ttl ?? "default",
        e.parent ?? "-",
      ]);
      // The PARENT column only when a node agent's entries are among them, so other listings stay narrow.
      const parented = page.entries.some((e) => e.parent);
      const header = ["ID", "SPIFFE ID", "SELECTORS", "DNS", "TTL", "PARENT"];
      const table = [header, ...rows].map((row) => (parented ? row : row.slice(0, 5)));
      console.log(formatTable(table));
    }
    return 0;
  },
};

export const entryDelete: Command = {
  name: "entry delete",
  summary: "delete a registration entry, stopping its renewals (and with --revoke, its certificates)",
  examples: ["stint entry delete ENTRY_ID", "stint entry delete ENTRY_ID --revoke"],
  help: () =>
    adminHelp(
      "stint entry delete ID [--revoke] [options]",
      "Deletes the registration entry with this id (from stint entry list). Certificates issued under\n" +
        "it can no longer be renewed, even if another entry names the same SPIFFE ID: their holders must\n" +
        "attest again. Without --revoke they stay valid until they expire.",
      "  --revoke                   also revoke its unexpired certificates (reason privilegeWithdrawn)\n" +
        "  --json                     print the deleted entry as JSON",
    ),
  async run(argv) {
    const { values, positionals } = parseFlags(
      argv,
      adminFlagOptions({ revoke: { type: "boolean" }, json: { type: "boolean" } }),
      true,
    );
    if (positionals.length !== 1) throw usage("entry delete", "give exactly one entry id");
    const client = await AdminClient.fromFlags(values);
    const path = pathWith(ADMIN_PATHS.entry, positionals[0]!);
    const entry = await client.delete<AdminEntry & { revoked?: string[] }>(
      values.revoke ? `${path}?revoke=true` : path,
    );
    if (values.json) printJson(entry);
    else {
      console.log(`Deleted entry ${describe(entry)}`);
      if (entry.revoked !== undefined) {
        const n = entry.revoked.length;
        console.log(
          `Revoked ${n} certificate${n === 1 ? "" : "s"}${n ? `: ${entry.revoked.join(", ")}` : ""}`,
        );
      }
    }
    return 0;
  },
};
