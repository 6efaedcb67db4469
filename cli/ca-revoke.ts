import { DEFAULT_CRL_VALIDITY_MS } from "../ca/authority";
import { parseRevocationReason, REVOCATION_REASONS, revocationReasonName } from "../ca/revocation";
import type { CertificateRecord, Store } from "../ca/store";
import { formatDuration } from "../common/duration";
import { isStintError, StintError } from "../common/errors";
import { type Command, flagValue, parseFlags, printJson } from "./command";
import { caFlagOptions, caHelp, loadConfigFromFlags, openCa } from "./context";
import { refuseReservedId } from "./spiffe-flag";

/** `stint ca revoke`: revocation on the CA host itself, straight into the store, without the server. */

const OWN_FLAGS = {
  serial: { type: "string" },
  "spiffe-id": { type: "string" },
  reason: { type: "string" },
  json: { type: "boolean" },
} as const;

const REASON_NAMES = Object.keys(REVOCATION_REASONS).join("|");
const PAGE = 1000;

const usage = (msg: string) => new StintError("ERR_USAGE", `${msg} (see stint ca revoke --help)`);

/** A serial as people copy it: any case, with or without OpenSSL's colons. */
function normalizeSerial(text: string): string {
  const hex = text.replace(/:/g, "").toLowerCase();
  if (!/^[0-9a-f]{2,40}$/.test(hex)) throw usage(`"${text}" is not a certificate serial (hex)`);
  return hex;
}

/** Every unexpired, unrevoked certificate with this SPIFFE ID, a page at a time. */
async function liveCertificates(store: Store, spiffeId: string, now: Date): Promise<CertificateRecord[]> {
  const found: CertificateRecord[] = [];
  for (let after: string | undefined; ; ) {
    const page = await store.listCertificates({
      spiffeId,
      unexpiredAt: now,
      afterSerial: after,
      limit: PAGE,
    });
    found.push(...page.filter((c) => c.revokedAt === null));
    if (page.length < PAGE) return found;
    after = page[page.length - 1]!.serial;
  }
}

export const caRevoke: Command = {
  name: "ca revoke",
  summary: "revoke certificates locally, without the server (break-glass)",
  examples: [
    "stint ca revoke --serial 01c0ffee00112233440000000000000001 --reason keyCompromise",
    "stint ca revoke --spiffe-id spiffe://stint.internal/web --reason privilegeWithdrawn",
  ],
  help: () =>
    caHelp(
      `stint ca revoke (--serial SERIAL | --spiffe-id ID) --reason ${REASON_NAMES} [--json] [options]`,
      "Revokes on the CA host, writing to the store and the audit log directly; it works while\n" +
        "`stint ca serve` runs (SQLite allows a second writer). A running server lists the revocation\n" +
        `in its CRL at its next refresh, within ${formatDuration(DEFAULT_CRL_VALIDITY_MS / 2)}; for immediate effect revoke through the server\n` +
        "with `stint cert revoke SERIAL`.",
      "  --serial SERIAL            the certificate to revoke (hex, as `stint cert list` shows it)\n" +
        "  --spiffe-id ID             revoke every unexpired, unrevoked certificate with this SPIFFE ID\n" +
        "  --reason NAME              RFC 5280 reason (required); keyCompromise when the key leaked\n" +
        "  --json                     print the revoked certificates as JSON",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, caFlagOptions(OWN_FLAGS));
    const serialFlag = values.serial as string | undefined;
    const spiffeId = values["spiffe-id"] as string | undefined;
    if (Boolean(serialFlag) === Boolean(spiffeId)) throw usage("give exactly one of --serial or --spiffe-id");
    if (spiffeId) refuseReservedId("ca revoke", spiffeId);
    if (values.reason === undefined) throw usage(`--reason is required (${REASON_NAMES})`);
    const reason = flagValue("ca revoke", "reason", () => parseRevocationReason(values.reason));
    const serial = serialFlag ? normalizeSerial(serialFlag) : undefined;
    const cfg = loadConfigFromFlags(values);

    const { store, authority } = await openCa(cfg, values);
    try {
      const now = new Date();
      let targets: CertificateRecord[];
      if (serial) {
        const cert = await store.getCertificate(serial);
        if (!cert)
          throw new StintError("ERR_NOT_FOUND", `certificate serial ${serial} is unknown to this CA`);
        targets = [cert];
      } else {
        targets = await liveCertificates(store, spiffeId!, now);
        if (targets.length === 0) {
          throw new StintError(
            "ERR_NOT_FOUND",
            `no unexpired, unrevoked certificate has SPIFFE ID ${spiffeId}`,
          );
        }
      }
      const revoked: CertificateRecord[] = [];
      for (const cert of targets) {
        try {
          await authority.revoke(cert.serial, reason, "cli", now);
          revoked.push(cert);
        } catch (err) {
          // With --spiffe-id, one revoked meanwhile (by the server, say) is already what was asked for.
          if (serial || !isStintError(err, "ERR_ALREADY_REVOKED")) throw err;
        }
      }
      const rows = revoked.map((c) => ({
        serial: c.serial,
        issuer: c.issuerId,
        spiffeId: c.spiffeId,
        dnsNames: c.dnsNames,
        notAfter: c.notAfter.toISOString(),
        reason: revocationReasonName(reason),
        revokedAt: now.toISOString(),
      }));
      if (values.json) printJson(rows);
      else {
        for (const r of rows) {
          const names = r.spiffeId ?? r.dnsNames.join(",");
          console.log(`Revoked ${r.serial} (${names}, valid until ${r.notAfter}): ${r.reason}`);
        }
        console.log(
          "A running `stint ca serve` lists this in its CRL at its next refresh; `stint cert revoke` acts at once.",
        );
      }
      return 0;
    } finally {
      await store.close();
    }
  },
};
