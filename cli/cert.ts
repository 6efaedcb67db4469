import {
  ADMIN_PATHS,
  type AdminCertificate,
  type AdminCertificateDetail,
  type AdminPage,
} from "../acme/admin";
import { REVOCATION_REASONS } from "../ca/revocation";
import { StintError } from "../common/errors";
import { AdminClient, adminFlagOptions, adminHelp, formatTable, pathWith } from "./admin-client";
import { type Command, parseFlags, printJson } from "./command";

/** `stint cert list|show|revoke`: certificates the CA issued, through the admin API. */

const usage = (cmd: string, msg: string) => new StintError("ERR_USAGE", `${msg} (see stint ${cmd} --help)`);

function oneSerial(cmd: string, positionals: string[]): string {
  if (positionals.length !== 1) throw usage(cmd, "give exactly one serial number");
  return positionals[0]!;
}

const LIST_FLAGS = {
  "spiffe-id": { type: "string" },
  issuer: { type: "string" },
  after: { type: "string" },
  limit: { type: "string" },
  json: { type: "boolean" },
} as const;

export const certList: Command = {
  name: "cert list",
  summary: "list certificates the CA issued",
  examples: [
    "stint cert list --spiffe-id spiffe://stint.internal/web",
    "stint cert list --issuer ISSUER_ID --limit 1000 --json",
  ],
  help: () =>
    adminHelp(
      "stint cert list [--spiffe-id ID] [--issuer ID] [--after SERIAL] [--limit N] [--json] [options]",
      "Lists issued certificates in serial order, a page at a time, with their status\n" +
        "(valid, expired or revoked).",
      "  --spiffe-id ID             only certificates for this SPIFFE ID\n" +
        "  --issuer ID                only certificates from this issuer (see stint ca status)\n" +
        "  --after SERIAL             start after this serial (the last one of the previous page)\n" +
        "  --limit N                  at most N certificates (default 100, at most 10000)\n" +
        "  --json                     print the certificates as a JSON array",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, adminFlagOptions(LIST_FLAGS));
    const client = await AdminClient.fromFlags(values);
    const page = await client.get<{ certificates: AdminCertificate[] } & AdminPage>(
      ADMIN_PATHS.certificates,
      {
        spiffeId: values["spiffe-id"] as string | undefined,
        issuer: values.issuer as string | undefined,
        after: values.after as string | undefined,
        limit: values.limit as string | undefined,
      },
    );
    if (values.json) printJson(page.certificates);
    else if (page.certificates.length === 0) console.log("no certificates");
    else {
      const rows = page.certificates.map((c) => [
        c.serial,
        c.status,
        c.notAfter,
        [c.spiffeId, ...c.dnsNames, ...c.ipAddresses].filter(Boolean).join(","),
      ]);
      console.log(formatTable([["SERIAL", "STATUS", "NOT AFTER", "NAMES"], ...rows]));
      if (page.next !== null) console.log(`more: stint cert list --after ${page.next}`);
    }
    return 0;
  },
};

export const certShow: Command = {
  name: "cert show",
  summary: "show one certificate (facts, or its PEM)",
  examples: [
    "stint cert show 01c0ffee00112233440000000000000001",
    "stint cert show 01c0ffee00112233440000000000000001 --pem | openssl x509 -noout -text",
  ],
  help: () =>
    adminHelp(
      "stint cert show SERIAL [--json | --pem] [options]",
      "Shows a certificate the CA issued: names, validity, issuer, key type, fingerprint and\n" +
        "revocation status; --pem prints the certificate itself.",
      "  --json                     print the facts and the PEM as JSON\n" +
        "  --pem                      print only the certificate, PEM",
    ),
  async run(argv) {
    const { values, positionals } = parseFlags(
      argv,
      adminFlagOptions({ json: { type: "boolean" }, pem: { type: "boolean" } }),
      true,
    );
    const serial = oneSerial("cert show", positionals);
    if (values.json && values.pem) throw usage("cert show", "give --json or --pem, not both");
    const client = await AdminClient.fromFlags(values);
    const c = await client.get<AdminCertificateDetail>(pathWith(ADMIN_PATHS.certificate, serial));
    if (values.json) printJson(c);
    else if (values.pem) process.stdout.write(c.pem);
    else {
      const rows: [string, string][] = [
        ["serial", c.serial],
        ["status", c.revokedAt ? `revoked at ${c.revokedAt} (${c.revocationReason})` : c.status],
        ["spiffe id", c.spiffeId ?? "-"],
        ["dns names", c.dnsNames.join(", ") || "-"],
        ["not before", c.notBefore],
        ["not after", c.notAfter],
        ["subject", c.subject],
        ["issuer", `${c.issuer} (${c.issuerSubject})`],
        ["key", c.keyType],
        ["fingerprint", c.fingerprint],
      ];
      console.log(formatTable(rows));
    }
    return 0;
  },
};

const REASON_NAMES = Object.keys(REVOCATION_REASONS).join("|");

export const certRevoke: Command = {
  name: "cert revoke",
  summary: "revoke a certificate",
  examples: [
    "stint cert revoke 01c0ffee00112233440000000000000001 --reason keyCompromise",
    "stint cert revoke 01c0ffee00112233440000000000000001 --reason superseded --json",
  ],
  help: () =>
    adminHelp(
      `stint cert revoke SERIAL [--reason ${REASON_NAMES}] [options]`,
      "Revokes a certificate the CA issued; the revocation is recorded in the audit log. Agents\n" +
        "holding it renew early; verifiers see it in the CRL and the revocation feed.",
      "  --reason NAME              RFC 5280 reason (default unspecified); keyCompromise when the key leaked\n" +
        "  --json                     print the revoked certificate's record as JSON",
    ),
  async run(argv) {
    const { values, positionals } = parseFlags(
      argv,
      adminFlagOptions({ reason: { type: "string" }, json: { type: "boolean" } }),
      true,
    );
    const serial = oneSerial("cert revoke", positionals);
    const client = await AdminClient.fromFlags(values);
    const c = await client.post<AdminCertificate>(pathWith(ADMIN_PATHS.revoke, serial), {
      ...(values.reason ? { reason: values.reason } : {}),
    });
    if (values.json) printJson(c);
    else console.log(`Revoked ${c.serial} (${c.spiffeId ?? c.dnsNames.join(",")}): ${c.revocationReason}`);
    return 0;
  },
};
