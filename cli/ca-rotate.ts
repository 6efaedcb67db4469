import { DEFAULT_INTERMEDIATE_TTL_DAYS, DEFAULT_ROOT_TTL_DAYS } from "../ca/hierarchy";
import { activateOfflineRoot, planActivateOfflineRoot, prepareOfflineRoot } from "../ca/offline-rotation";
import {
  activateRoot,
  prepareRoot,
  type RotationContext,
  retireRoot,
  revokeIssuer,
  rotateIntermediate,
  taintIssuer,
} from "../ca/rotation";
import {
  describePlan,
  planActivateRoot,
  planRetireRoot,
  planRevokeIssuer,
  planRotate,
  planTaint,
  type RotationPlan,
} from "../ca/rotation-plan";
import type { IssuerRecord } from "../ca/store";
import { openStore } from "../ca/store/open";
import { formatDuration, parseDuration } from "../common/duration";
import { StintError } from "../common/errors";
import type { CaConfig } from "./ca-config";
import {
  OFFLINE_ACTIVATE_FLAGS,
  OFFLINE_ACTIVATE_HELP,
  OFFLINE_PREPARE_FLAGS,
  OFFLINE_PREPARE_HELP,
  offlineActivationFiles,
  offlineCrlNextStep,
  offlineRootCertificate,
  preparedOfflineLines,
} from "./ca-root-offline";
import { type Command, type Options, parseFlags, printJson } from "./command";
import {
  caFlagOptions,
  caHelp,
  loadConfigFromFlags,
  passphraseFrom,
  rotationContext,
  storedTrustDomain,
  trustDomainConfigured,
} from "./context";
import { readPemFile } from "./pem-file";

/**
 * The rotation commands (docs/architecture.md, "Rotation"; README, "Rotation
 * runbook"). Each is one step of ca/rotation.ts run against the store; a
 * running `stint ca serve` takes it up at its next poll (feed.pollInterval).
 */

const JSON_FLAG = { json: { type: "boolean" } } as const;
const DRY_RUN_FLAG = { "dry-run": { type: "boolean" } } as const;
const DRY_RUN_HELP =
  "  --dry-run                  print what would change (issuers, certificate counts); change nothing\n";
const NEW_KEY_FLAGS = {
  ...JSON_FLAG,
  "ttl-days": { type: "string" },
  "insecure-no-passphrase": { type: "boolean" },
} as const;

export const TAKEN_UP =
  'A running `stint ca serve` takes this up within feed.pollInterval (default 500ms) and logs "issuers changed".';

/** The admin API accepts only an admin certificate from the active intermediate (acme/admin-auth.ts). */
export const RENEW_ADMIN =
  "the admin certificate came from the intermediate just retired: run `stint ca admin-cert` before the next entry, token, cert or audit command";

export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

function usage(command: string, message: string): StintError {
  return new StintError("ERR_USAGE", `${message} (see stint ${command} --help)`);
}

function ttlDays(command: string, values: Values, fallback: number): number {
  const text = values["ttl-days"] as string | undefined;
  if (text === undefined) return fallback;
  const days = Number(text);
  if (!Number.isInteger(days) || days < 1 || days > 36500) {
    throw usage(
      command,
      `--ttl-days must be a whole number of days between 1 and 36500 (got "${text.slice(0, 20)}")`,
    );
  }
  return days;
}

/**
 * Opens the store and runs one rotation step; new CA keys need a passphrase
 * unless explicitly waived, or made in the token (keys.backend pkcs11: a key
 * file made before a switch still asks for it when opened).
 */
export async function withRotation<T>(
  values: Values,
  opts: { writesKeys: boolean },
  step: (ctx: RotationContext, cfg: CaConfig) => Promise<T>,
): Promise<T> {
  const cfg = loadConfigFromFlags(values);
  const passphrase = await passphraseFrom(cfg);
  const inToken = cfg["keys.backend"] === "pkcs11";
  if (opts.writesKeys && passphrase === null && !inToken && values["insecure-no-passphrase"] !== true) {
    throw new StintError(
      "ERR_CONFIG",
      "new CA keys need a passphrase: set STINT_CA_PASSPHRASE or --passphrase-file (or --insecure-no-passphrase for development)",
    );
  }
  const store = await openStore(cfg.dataDir, { url: cfg["store.url"] });
  try {
    const trustDomain = await storedTrustDomain(store, cfg, trustDomainConfigured(values));
    return await step(rotationContext(cfg, store, trustDomain, passphrase, "cli"), cfg);
  } finally {
    await store.close();
  }
}

/** --dry-run: the step's checks and what it would change, with nothing written (ca/rotation-plan.ts). */
async function dryRun(values: Values, plan: (ctx: RotationContext, cfg: CaConfig) => Promise<RotationPlan>) {
  const result = await withRotation(values, { writesKeys: false }, plan);
  return report(values, { dryRun: true, ...result }, describePlan(result));
}

export function issuerJson(i: IssuerRecord) {
  return { id: i.id, kind: i.kind, state: i.state, subject: i.subject, notAfter: i.notAfter.toISOString() };
}

export function report(values: Values, json: unknown, lines: string[]): number {
  if (values.json === true) printJson(json);
  else console.log(lines.join("\n"));
  return 0;
}

export interface RotationCommand {
  name: string;
  summary: string;
  usage: string;
  about: string;
  flags: Options;
  flagHelp: string;
  examples: readonly string[];
  /** How many positional arguments (issuer ids, files) the command takes at most. */
  maxPositionals: number;
  run: (values: Values, positionals: string[]) => Promise<number>;
}

export function command(spec: RotationCommand): Command {
  return {
    name: spec.name,
    summary: spec.summary,
    examples: spec.examples,
    help: () => caHelp(spec.usage, spec.about, spec.flagHelp),
    async run(argv) {
      const { values, positionals } = parseFlags(argv, caFlagOptions(spec.flags), true);
      if (positionals.length > spec.maxPositionals) {
        throw usage(spec.name, `unexpected argument "${positionals[spec.maxPositionals]!.slice(0, 40)}"`);
      }
      // A malformed --ttl-days is a usage mistake, reported before the passphrase or the store is needed.
      ttlDays(spec.name, values, 0);
      return spec.run(values, positionals);
    },
  };
}

const NEW_KEY_HELP =
  "  --ttl-days N               lifetime of the new certificate in days\n" +
  "  --insecure-no-passphrase   write the new key unencrypted when no passphrase is set (development only)\n" +
  "  --json                     print the result as JSON";

async function rotate(name: string, values: Values, importFile: string | undefined): Promise<number> {
  const dry = values["dry-run"] === true;
  const importedDer =
    importFile === undefined
      ? undefined
      : await readPemFile(
          importFile,
          "CERTIFICATE",
          "intermediate certificate",
          "give the file `stint root sign` wrote",
        );
  if (dry) return dryRun(values, (ctx) => planRotate(ctx, { importedDer }));
  const result = await withRotation(values, { writesKeys: importedDer === undefined }, (ctx) =>
    rotateIntermediate(ctx, {
      ttlDays: ttlDays(name, values, DEFAULT_INTERMEDIATE_TTL_DAYS),
      importedDer,
    }),
  );
  return report(
    values,
    {
      activated: issuerJson(result.activated),
      // rotateIntermediate returns the record as it was read, before the step retired it.
      retired: result.retired && issuerJson({ ...result.retired, state: "retired" }),
    },
    [
      `intermediate ${result.activated.id} is active (${importedDer ? "imported" : "new"}, under root ${result.activated.parentId}, until ${result.activated.notAfter.toISOString()})`,
      result.retired
        ? `intermediate ${result.retired.id} is retired: its certificates stay valid and its CRL and feed records stay published until the last one expires`
        : "no intermediate was active before",
      RENEW_ADMIN,
      TAKEN_UP,
    ],
  );
}

export const caRotate = command({
  name: "ca rotate",
  summary: "make a new intermediate active and retire the current one",
  usage: "stint ca rotate [--import FILE] [--ttl-days N] [--json] [options]",
  about:
    "Creates a new intermediate signed by the current root (whose key must be in the data directory)\n" +
    "and makes it active; the current one becomes retired. With --import, the new intermediate is one\n" +
    "`stint root sign` made from `stint ca intermediate-csr`'s request (the root key stays offline).\n" +
    "Then run `stint ca admin-cert`: the admin API accepts only an admin certificate from the active\n" +
    "intermediate. " +
    TAKEN_UP,
  flags: { ...NEW_KEY_FLAGS, ...DRY_RUN_FLAG, import: { type: "string" } },
  flagHelp:
    "  --import FILE              activate this intermediate (PEM) instead of creating one\n" +
    DRY_RUN_HELP +
    NEW_KEY_HELP,
  examples: ["stint ca rotate --dry-run", "stint ca rotate", "stint ca rotate --import int.pem --json"],
  maxPositionals: 0,
  run: (values) => rotate("ca rotate", values, values.import as string | undefined),
});

export const caImportIntermediate = command({
  name: "ca import-intermediate",
  summary: "activate an intermediate signed offline by `stint root sign`",
  usage: "stint ca import-intermediate FILE [--json] [options]",
  about:
    "Checks that FILE (PEM) is signed by an active root of this CA and matches the key\n" +
    "`stint ca intermediate-csr` left in keys/, records it and makes it active; the current one\n" +
    "becomes retired. The same as `stint ca rotate --import FILE`. " +
    TAKEN_UP,
  flags: { ...JSON_FLAG, "insecure-no-passphrase": { type: "boolean" } },
  flagHelp: "  --json                     print the result as JSON",
  examples: ["stint ca import-intermediate int.pem"],
  maxPositionals: 1,
  run: (values, positionals) => {
    if (positionals.length !== 1)
      throw usage("ca import-intermediate", "give the certificate file to import");
    return rotate("ca import-intermediate", values, positionals[0]);
  },
});

/** A deadline as a duration from now ("30m") or an ISO 8601 instant. */
function parseDeadline(text: string, now: Date): Date {
  if (/^\d{4}-\d{2}-\d{2}T/.test(text)) {
    const at = new Date(text);
    if (Number.isNaN(at.getTime()))
      throw usage("ca taint", `--revoke-at "${text.slice(0, 40)}" is not a valid time`);
    return at;
  }
  try {
    return new Date(now.getTime() + parseDuration(text));
  } catch {
    throw usage(
      "ca taint",
      `--revoke-at takes a duration like 30m or an ISO time, not "${text.slice(0, 40)}"`,
    );
  }
}

export const caTaint = command({
  name: "ca taint",
  summary: "mark an intermediate as suspected compromised, so agents renew off it now",
  usage: "stint ca taint ISSUER [--revoke-at DURATION|TIME] [--json] [options]",
  about:
    "Moves the ACME renewal window (ARI) of every certificate from ISSUER to now: agents renew onto\n" +
    "the active intermediate at their next renewalInfo poll, spread across the window. Rotate first\n" +
    "(the active intermediate cannot be tainted). Watch stint_issuer_unreplaced_certificates on\n" +
    "/metrics, then run `stint ca revoke-issuer ISSUER`; with --revoke-at the server does it itself then.\n" +
    TAKEN_UP,
  flags: { ...JSON_FLAG, ...DRY_RUN_FLAG, "revoke-at": { type: "string" } },
  flagHelp:
    "  --revoke-at WHEN           have the server revoke the issuer then (e.g. 30m, or 2026-11-23T18:00:00Z)\n" +
    DRY_RUN_HELP +
    "  --json                     print the result as JSON",
  examples: ["stint ca taint ISSUER_ID --dry-run", "stint ca taint ISSUER_ID --revoke-at 30m"],
  maxPositionals: 1,
  run: async (values, positionals) => {
    if (positionals.length !== 1)
      throw usage("ca taint", "give the issuer id to taint (see stint ca status)");
    const now = new Date();
    const deadline =
      values["revoke-at"] === undefined ? null : parseDeadline(values["revoke-at"] as string, now);
    if (values["dry-run"] === true)
      return dryRun(values, (ctx) => planTaint({ ...ctx, now }, positionals[0]!, deadline));
    const issuer = await withRotation(values, { writesKeys: false }, (ctx) =>
      taintIssuer({ ...ctx, now }, positionals[0]!, deadline),
    );
    return report(values, { tainted: issuer.id, revokeAt: deadline?.toISOString() ?? null }, [
      `intermediate ${issuer.id} is tainted: its certificates' renewal windows start now`,
      deadline
        ? `the server revokes it at ${deadline.toISOString()} (in ${formatDuration(deadline.getTime() - now.getTime())})`
        : `revoke it once agents have moved: stint ca revoke-issuer ${issuer.id}`,
      TAKEN_UP,
    ]);
  },
});

export const caRevokeIssuer = command({
  name: "ca revoke-issuer",
  summary: "put a tainted or retired intermediate in the revocation feed and its root's CRL",
  usage: "stint ca revoke-issuer ISSUER [--force] [--json] [options]",
  about:
    "Verifiers then reject every certificate ISSUER signed. Refuses while some of its live\n" +
    "certificates have not been replaced by a newer one from another issuer, unless --force.\n" +
    "The root's CRL is re-signed when the root's key is in the data directory; otherwise only the\n" +
    "feed lists it. " +
    TAKEN_UP,
  flags: { ...JSON_FLAG, ...DRY_RUN_FLAG, force: { type: "boolean" } },
  flagHelp:
    "  --force                    revoke even though some certificates were not replaced yet\n" +
    DRY_RUN_HELP +
    "  --json                     print the result as JSON",
  examples: ["stint ca revoke-issuer ISSUER_ID --dry-run", "stint ca revoke-issuer ISSUER_ID --force --json"],
  maxPositionals: 1,
  run: async (values, positionals) => {
    if (positionals.length !== 1)
      throw usage("ca revoke-issuer", "give the issuer id to revoke (see stint ca status)");
    if (values["dry-run"] === true)
      return dryRun(values, (ctx) =>
        planRevokeIssuer(ctx, positionals[0]!, { force: values.force === true }),
      );
    const result = await withRotation(values, { writesKeys: false }, (ctx) =>
      revokeIssuer(ctx, positionals[0]!, { force: values.force === true }),
    );
    const { live, unreplaced } = result.progress;
    // Under an offline root the revocation is not published until its CRL comes back: say how, in JSON too.
    const nextStep = result.rootCrlSigned ? null : offlineCrlNextStep(result.issuer.parentId!);
    return report(
      values,
      { revoked: result.issuer.id, live, unreplaced, rootCrlSigned: result.rootCrlSigned, nextStep },
      [
        `intermediate ${result.issuer.id} is revoked (${live} live certificates, ${unreplaced} not replaced)`,
        nextStep ?? `root ${result.issuer.parentId}'s CRL lists it`,
        TAKEN_UP,
      ],
    );
  },
});

export const caRootPrepare = command({
  name: "ca root prepare",
  summary: "publish the next root in the trust bundle before it signs anything",
  usage: "stint ca root prepare [--ttl-days N] [--json] [options]",
  about:
    "Creates a new root (state prepared) and adds it to /bundle.pem and /bundle.json (sequence\n" +
    "bumped). Wait one bundle.refreshHint for agents and verifiers to fetch it, then run\n" +
    "`stint ca root activate`. With --offline --root-cert FILE, the new root is one `stint root init`\n" +
    "made on the offline host: only its certificate comes here, and its first CRL comes from there too\n" +
    "(`stint ca root crl-request`, `stint root sign-crl`, `stint ca import-crl`). " +
    TAKEN_UP,
  flags: { ...NEW_KEY_FLAGS, ...OFFLINE_PREPARE_FLAGS },
  flagHelp: OFFLINE_PREPARE_HELP + NEW_KEY_HELP,
  examples: [
    "stint ca root prepare",
    "stint ca root prepare --ttl-days 3650 --json",
    "stint ca root prepare --offline --root-cert root-NEWID.pem",
  ],
  maxPositionals: 0,
  run: async (values) => {
    if (values.offline === true || values["root-cert"] !== undefined) {
      const certDer = await offlineRootCertificate(values);
      const root = await withRotation(values, { writesKeys: false }, (ctx) =>
        prepareOfflineRoot(ctx, certDer),
      );
      return report(values, { prepared: issuerJson(root), keyOnHost: false }, [
        ...preparedOfflineLines(root.id),
        TAKEN_UP,
      ]);
    }
    const root = await withRotation(values, { writesKeys: true }, (ctx) =>
      prepareRoot(ctx, { ttlDays: ttlDays("ca root prepare", values, DEFAULT_ROOT_TTL_DAYS) }),
    );
    return report(values, { prepared: issuerJson(root) }, [
      `root ${root.id} is prepared and in the trust bundle; activate it after one bundle.refreshHint`,
      TAKEN_UP,
    ]);
  },
});

export const caRootActivate = command({
  name: "ca root activate",
  summary: "issue the new intermediate under the prepared root, cross-signed by the old one",
  usage: "stint ca root activate [--ttl-days N] [--force] [--json] [options]",
  about:
    "Makes the prepared root active with a new intermediate under it, and has the current root\n" +
    "cross-sign the new root, so chains served from now on validate both for verifiers that still\n" +
    "trust only the old root and for those that trust the new one. Refuses until one\n" +
    "bundle.refreshHint has passed since `root prepare`, unless --force. Both roots' keys must be here,\n" +
    "unless both signatures were made offline: --cross-cert (`stint root cross-sign`) and --intermediate\n" +
    "(`stint ca intermediate-csr`, then `stint root sign` with the new root), checked and imported.\n" +
    TAKEN_UP,
  flags: { ...NEW_KEY_FLAGS, ...DRY_RUN_FLAG, ...OFFLINE_ACTIVATE_FLAGS, force: { type: "boolean" } },
  flagHelp:
    "  --force                    activate before every verifier can have fetched the new root\n" +
    OFFLINE_ACTIVATE_HELP +
    DRY_RUN_HELP +
    NEW_KEY_HELP,
  examples: [
    "stint ca root activate --dry-run",
    "stint ca root activate --ttl-days 365",
    "stint ca root activate --cross-cert cross.pem --intermediate int.pem",
  ],
  maxPositionals: 0,
  run: async (values) => {
    // Both signatures made on the offline host (ca/offline-rotation.ts); null when neither file is given.
    const signed = await offlineActivationFiles(values);
    const timing = (cfg: CaConfig) => ({
      bundleRefreshMs: cfg["bundle.refreshHint"],
      force: values.force === true,
    });
    if (values["dry-run"] === true) {
      return dryRun(values, (ctx, cfg) =>
        signed
          ? planActivateOfflineRoot(ctx, { ...signed, ...timing(cfg) })
          : planActivateRoot(ctx, timing(cfg)),
      );
    }
    const result = await withRotation(values, { writesKeys: signed === null }, (ctx, cfg) =>
      signed
        ? activateOfflineRoot(ctx, { ...signed, ...timing(cfg) })
        : activateRoot(ctx, {
            intermediateTtlDays: ttlDays("ca root activate", values, DEFAULT_INTERMEDIATE_TTL_DAYS),
            ...timing(cfg),
          }),
    );
    return report(
      values,
      {
        root: issuerJson(result.root),
        intermediate: issuerJson(result.intermediate),
        crossSignedBy: result.crossSignedBy,
      },
      [
        `root ${result.root.id} is active; intermediate ${result.intermediate.id} under it is active`,
        `chains carry the new root cross-signed by ${result.crossSignedBy} until \`stint ca root retire\``,
        RENEW_ADMIN,
        TAKEN_UP,
      ],
    );
  },
});

export const caRootRetire = command({
  name: "ca root retire",
  summary: "remove the old root from the trust bundle once nothing chains to it",
  usage: "stint ca root retire [ROOT] [--force] [--json] [options]",
  about:
    "Retires ROOT (default: the active root that no longer signs the active intermediate): it leaves\n" +
    "the bundle (sequence bumped) and chains stop carrying its cross-certificate. Refuses while live\n" +
    "certificates of intermediates under it have not been replaced by renewal, unless --force. " +
    TAKEN_UP,
  flags: { ...JSON_FLAG, ...DRY_RUN_FLAG, force: { type: "boolean" } },
  flagHelp:
    "  --force                    retire even though some certificates under it were not replaced yet\n" +
    DRY_RUN_HELP +
    "  --json                     print the result as JSON",
  examples: ["stint ca root retire --dry-run", "stint ca root retire ROOT_ID --force"],
  maxPositionals: 1,
  run: async (values, positionals) => {
    if (positionals.length > 1) throw usage("ca root retire", "give at most one root id");
    if (values["dry-run"] === true)
      return dryRun(values, (ctx) =>
        planRetireRoot(ctx, { id: positionals[0], force: values.force === true }),
      );
    const root = await withRotation(values, { writesKeys: false }, (ctx) =>
      retireRoot(ctx, { id: positionals[0], force: values.force === true }),
    );
    return report(values, { retired: issuerJson({ ...root, state: "retired" }) }, [
      `root ${root.id} is retired and out of the trust bundle`,
      TAKEN_UP,
    ]);
  },
});

export const ROTATION_COMMANDS: readonly Command[] = [
  caRotate,
  caImportIntermediate,
  caTaint,
  caRevokeIssuer,
  caRootPrepare,
  caRootActivate,
  caRootRetire,
];
