import { verifyAuditChain } from "../ca/audit";
import { CaKeyStore } from "../ca/key-store";
import { fingerprintSha256 } from "../ca/keys";
import { isPkcs11Ref } from "../ca/pkcs11/uri";
import { readRotationState } from "../ca/rotation";
import type { Store } from "../ca/store";
import { openStore } from "../ca/store/open";
import { isStintError } from "../common/errors";
import { type Command, parseFlags, printJson } from "./command";
import { caFlagOptions, caHelp, loadConfigFromFlags } from "./context";

const OWN_FLAGS = { json: { type: "boolean" } } as const;
const AUDIT_PAGE = 1000;

/** Walks the whole audit log page by page; returns the record count or the first break in the chain. */
export async function checkAuditLog(
  store: Store,
): Promise<{ records: number; intact: boolean; problem?: string }> {
  let after = 0;
  let prevHash = "";
  for (;;) {
    const page = await store.listAudit(after, AUDIT_PAGE);
    if (page.length === 0) return { records: after, intact: true };
    try {
      verifyAuditChain(page, prevHash);
    } catch (err) {
      if (isStintError(err, "ERR_AUDIT_CHAIN"))
        return { records: after + page.length, intact: false, problem: err.message };
      throw err;
    }
    after = page[page.length - 1].seq;
    prevHash = page[page.length - 1].hash;
  }
}

/**
 * Whether the issuer's key is held on this host: in a PKCS#11 token (its
 * `pkcs11:` URI; whether the token answers shows when a command opens it),
 * or as a key file still in the data directory (an operator may have carried
 * the root's away to keep it offline).
 */
async function keyOnHost(dataDir: string, ref: string | null): Promise<boolean> {
  return ref !== null && (isPkcs11Ref(ref) || (await CaKeyStore.files(dataDir, null).has(ref)));
}

export const caStatus: Command = {
  name: "ca status",
  summary: "show issuers, certificate counts and whether the audit chain is intact",
  examples: ["stint ca status --data-dir /var/lib/stint", "stint ca status --json"],
  help: () =>
    caHelp(
      "stint ca status [options]",
      "Reads the store (no passphrase needed) and reports the issuers with their states, how many\n" +
        "certificates were issued, and whether every audit record still chains to the one before.\n" +
        "Exits 1 when the audit chain is broken.",
      "  --json                     print the report as JSON",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, caFlagOptions(OWN_FLAGS));
    const cfg = loadConfigFromFlags(values);
    const store = await openStore(cfg.dataDir, { url: cfg["store.url"] });
    try {
      const now = new Date();
      const records = await store.listIssuers();
      const rotation = await readRotationState(store, records);
      const issuers = await Promise.all(
        records.map(async (i) => ({
          id: i.id,
          kind: i.kind,
          state: i.state,
          parentId: i.parentId,
          subject: i.subject,
          notBefore: i.notBefore.toISOString(),
          notAfter: i.notAfter.toISOString(),
          fingerprint: fingerprintSha256(i.certDer),
          keyOnHost: await keyOnHost(cfg.dataDir, i.keyPath),
          taintedAt: rotation.taints.get(i.id)?.at.toISOString() ?? null,
          revokeAt: rotation.taints.get(i.id)?.deadline?.toISOString() ?? null,
          revokedAt: rotation.revoked.get(i.id)?.toISOString() ?? null,
          crossSignedBy: rotation.cross.get(i.id)?.by ?? null,
        })),
      );
      const counts = await store.counts(now);
      const audit = await checkAuditLog(store);
      const report = {
        dataDir: cfg.dataDir,
        backend: store.backend,
        trustDomain: await store.getMeta("trust_domain"),
        issuers,
        certificates: counts,
        audit,
      };
      if (values.json) printJson(report);
      else {
        console.log(`CA for ${report.trustDomain} in ${report.dataDir} (${report.backend})`);
        for (const i of issuers) {
          const notes = [
            i.parentId && `under ${i.parentId}`,
            i.crossSignedBy && `cross-signed by ${i.crossSignedBy}`,
            i.revokedAt ? `REVOKED ${i.revokedAt}` : i.revokeAt && `to be revoked at ${i.revokeAt}`,
          ].filter(Boolean);
          console.log(
            `  ${i.kind.padEnd(12)} ${i.id}  ${i.state.padEnd(8)}  until ${i.notAfter}  ${i.fingerprint}${notes.length ? `  (${notes.join("; ")})` : ""}`,
          );
        }
        console.log(
          `certificates: ${counts.issued} issued, ${counts.unexpired} unexpired, ${counts.revoked} revoked`,
        );
        console.log(
          audit.intact
            ? `audit log: ${audit.records} records, chain intact`
            : `audit log: BROKEN: ${audit.problem}; restore the store from backup and investigate`,
        );
      }
      return audit.intact ? 0 : 1;
    } finally {
      await store.close();
    }
  },
};
