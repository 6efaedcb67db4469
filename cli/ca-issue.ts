import { lstat, readFile } from "node:fs/promises";
import { join } from "node:path";
import { bundlePem } from "../ca/bundle";
import { parseCsr } from "../ca/csr";
import { generateKeyPair, parseKeyAlgorithm } from "../ca/keys";
import { inspectSpki } from "../ca/spki";
import { parseDuration } from "../common/duration";
import { StintError } from "../common/errors";
import { ensureDir, writeFileAtomic, writeSecretFile } from "../common/files";
import { parsePemBlocks } from "../formats/pem";
import { type Command, flagValue, parseFlags, printJson } from "./command";
import { caFlagOptions, caHelp, loadConfigFromFlags, openCa } from "./context";
import { refuseReservedId } from "./spiffe-flag";

const OWN_FLAGS = {
  "spiffe-id": { type: "string" },
  dns: { type: "string", multiple: true },
  ttl: { type: "string" },
  csr: { type: "string" },
  out: { type: "string" },
  "key-type": { type: "string" },
  force: { type: "boolean" },
  json: { type: "boolean" },
} as const;

const OUT_FILES = ["key.pem", "cert.pem", "bundle.pem"] as const;

/**
 * --out never replaces a key or certificate in use unless --force: checked
 * before the CA signs anything, so a refusal leaves no certificate behind.
 */
async function refuseOverwrite(dir: string): Promise<void> {
  for (const name of OUT_FILES) {
    // lstat: a dangling symlink counts too; writing through it would land somewhere unexpected.
    const exists = await lstat(join(dir, name)).then(
      () => true,
      () => false,
    );
    if (exists) {
      throw new StintError(
        "ERR_FILE",
        `${join(dir, name)} already exists; choose another --out directory, or pass --force to replace its files`,
      );
    }
  }
}

const usage = (msg: string) => new StintError("ERR_USAGE", `${msg} (see stint ca issue --help)`);

/** Reads a CSR file in PEM or DER; the names in it, if any, must be the names asked for on the command line. */
async function csrFrom(path: string) {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch {
    throw new StintError("ERR_FILE", `cannot read CSR file ${path}`);
  }
  const pem = parsePemBlocks(bytes.toString("latin1")).find((b) => /CERTIFICATE REQUEST/.test(b.label));
  return parseCsr(pem ? pem.der : bytes);
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  const norm = (l: readonly string[]) => [...new Set(l.map((s) => s.toLowerCase()))].sort().join(",");
  return norm(a) === norm(b);
}

export const caIssue: Command = {
  name: "ca issue",
  summary: "issue a workload certificate locally, without the server (tests, break-glass)",
  examples: [
    "stint ca issue --spiffe-id spiffe://stint.internal/web --out ./web-certs",
    "stint ca issue --spiffe-id spiffe://stint.internal/web --csr web.csr --ttl 15m > web.pem",
  ],
  help: () =>
    caHelp(
      "stint ca issue --spiffe-id ID [--dns NAME]... [--ttl 1h] (--csr FILE | --out DIR) [options]",
      "Issues one certificate with the CA's active intermediate, under the same policy the server\n" +
        "applies, and records it in the store and the audit log. With --csr the key stays with the\n" +
        "requester and the chain is printed; with --out a new key is made and written with the chain.",
      "  --spiffe-id ID             the workload's SPIFFE ID (required)\n" +
        "  --dns NAME                 a DNS name to add; repeat for more (must be under policy.dnsSuffixes)\n" +
        "  --ttl DURATION             lifetime, e.g. 15m (default policy.defaultTtl)\n" +
        "  --csr FILE                 PKCS#10 request (PEM or DER); its names, if any, must match the flags\n" +
        "  --out DIR                  write key.pem (0600), cert.pem (leaf + intermediate) and bundle.pem;\n" +
        "                             refuses when any of them exists, unless --force\n" +
        "  --force                    with --out, replace key.pem, cert.pem and bundle.pem if they exist\n" +
        "  --key-type TYPE            key for --out: ec-p256 (default), ec-p384, ed25519, rsa-2048, rsa-3072,\n" +
        "                             rsa-4096 (policy.keyTypes must allow it)\n" +
        "  --json                     print serial, names and validity as JSON",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, caFlagOptions(OWN_FLAGS));
    const spiffeId = values["spiffe-id"] as string | undefined;
    if (!spiffeId) throw usage("--spiffe-id is required");
    refuseReservedId("ca issue", spiffeId);
    if (Boolean(values.csr) === Boolean(values.out))
      throw usage("give exactly one of --csr FILE or --out DIR");
    if (values.out && values.force !== true) await refuseOverwrite(values.out as string);
    const dnsNames = (values.dns as string[] | undefined) ?? [];
    const ttlMs = values.ttl
      ? flagValue("ca issue", "ttl", () => parseDuration(values.ttl as string))
      : undefined;
    const cfg = loadConfigFromFlags(values);

    let spki: Buffer;
    let keyPem: string | null = null;
    if (values.csr) {
      const csr = await csrFrom(values.csr as string);
      if (csr.requestsCa)
        throw new StintError("ERR_BAD_CSR", "CSR asks for a CA certificate; workloads get CA:FALSE only");
      const asked = [spiffeId, ...dnsNames];
      const inCsr = [...csr.uris, ...csr.dnsNames, ...csr.ipAddresses];
      if (inCsr.length > 0 && !sameNames(asked, inCsr)) {
        throw new StintError(
          "ERR_BAD_CSR",
          `CSR names (${inCsr.join(", ")}) differ from the names asked for (${asked.join(", ")})`,
        );
      }
      spki = csr.spki;
    } else {
      const keys = await generateKeyPair(parseKeyAlgorithm((values["key-type"] as string) ?? "ec-p256"));
      spki = keys.publicKey.export({ format: "der", type: "spki" });
      keyPem = keys.privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    }
    const facts = inspectSpki(spki);

    const { store, authority } = await openCa(cfg, values);
    try {
      const issued = await authority.issue(
        { spiffeId, dnsNames, ttlMs, spki, keyAlgorithm: facts.algorithm, keyDescription: facts.description },
        "cli",
      );
      if (values.out) {
        const dir = values.out as string;
        await ensureDir(dir, 0o755);
        await writeSecretFile(join(dir, "key.pem"), keyPem!, { overwrite: values.force === true });
        await writeFileAtomic(join(dir, "cert.pem"), issued.chainPem, 0o644);
        await writeFileAtomic(join(dir, "bundle.pem"), bundlePem(authority.trustedRoots()), 0o644);
      }
      const summary = {
        serial: issued.serial,
        sequence: issued.sequence,
        issuer: issued.issuerId,
        spiffeId,
        dnsNames,
        notBefore: issued.notBefore.toISOString(),
        notAfter: issued.notAfter.toISOString(),
        ...(values.out
          ? { files: ["key.pem", "cert.pem", "bundle.pem"].map((f) => join(values.out as string, f)) }
          : {}),
      };
      if (values.json) printJson(values.out ? summary : { ...summary, chainPem: issued.chainPem });
      else if (values.out)
        console.log(
          `Issued ${spiffeId} (serial ${issued.serial}) until ${summary.notAfter} into ${values.out}`,
        );
      else process.stdout.write(issued.chainPem);
      return 0;
    } finally {
      await store.close();
    }
  },
};
