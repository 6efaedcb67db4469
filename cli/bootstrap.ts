import { X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fetchFromCa, fingerprintOf } from "../agent/trust";
import { bundlePem } from "../ca/bundle";
import { openStore, STORE_FILE } from "../ca/store/open";
import { StintError } from "../common/errors";
import { ensureDir, fileError, writeFileAtomic } from "../common/files";
import { pemDecodeAll, toPem } from "../formats/pem";
import { type Command, parseFlags, printJson } from "./command";
import { caFlagOptions, caHelp, loadConfigFromFlags } from "./context";

/**
 * A client that remembers its CA, as `step ca bootstrap` does: the operator
 * gives the URL and the root's fingerprint once; the root is fetched, checked
 * against the fingerprint and saved with the URL, and the admin commands
 * (entry, token, cert, audit) and the agent use both from then on.
 */

/** Where the bootstrap is kept: $XDG_CONFIG_HOME/stint (XDG Base Directory), by default ~/.config/stint. */
export function clientConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME?.startsWith("/") ? env.XDG_CONFIG_HOME : join(homedir(), ".config");
  return join(base, "stint");
}
const CA_FILE = "ca.json";
const ROOT_FILE = "root.pem";

export interface SavedCa {
  caUrl: string;
  fingerprint: string;
  rootPem: string;
}

/**
 * A root fingerprint as `stint ca init` prints it (sha256:<hex>), as bare hex,
 * or in OpenSSL's form (`openssl x509 -fingerprint -sha256`: "sha256
 * Fingerprint=AB:CD:…", or only the colon-separated bytes).
 */
export function parseFingerprint(text: string): string {
  const hex = text
    .trim()
    .replace(/^sha256\s*fingerprint\s*=\s*/i, "")
    .replace(/^sha256:/i, "")
    .replace(/:/g, "")
    .toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new StintError(
      "ERR_USAGE",
      "--fingerprint takes the root's SHA-256 fingerprint: sha256:<64 hex digits> as `stint ca init` printed it, or OpenSSL's AB:CD:… form",
    );
  }
  return `sha256:${hex}`;
}

/** The saved CA, or null when this machine was never bootstrapped. */
export async function readSavedCa(env: NodeJS.ProcessEnv = process.env): Promise<SavedCa | null> {
  const dir = clientConfigDir(env);
  const file = join(dir, CA_FILE);
  if (!existsSync(file)) return null;
  let saved: { caUrl?: unknown; fingerprint?: unknown };
  try {
    saved = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw fileError(err, file, "read the saved CA (from `stint ca bootstrap`)");
  }
  if (typeof saved.caUrl !== "string" || typeof saved.fingerprint !== "string") {
    throw new StintError("ERR_CONFIG", `${file} is not a saved CA; run \`stint ca bootstrap\` again`);
  }
  let rootPem: string;
  try {
    rootPem = await readFile(join(dir, ROOT_FILE), "utf8");
  } catch (err) {
    throw fileError(err, join(dir, ROOT_FILE), "read the saved root");
  }
  return { caUrl: saved.caUrl, fingerprint: saved.fingerprint, rootPem };
}

function caUrlFrom(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new StintError("ERR_USAGE", `--ca-url "${text.slice(0, 80)}" is not a URL; give https://host:port`);
  }
  if (url.protocol !== "https:" || url.pathname !== "/" || url.search || url.hash) {
    throw new StintError(
      "ERR_USAGE",
      `--ca-url takes the CA's origin, https://host:port (got "${text.slice(0, 80)}")`,
    );
  }
  return url.origin;
}

const BUNDLE_LIMIT = 256 * 1024;
const TIMEOUT_MS = 15_000;

export const caBootstrap: Command = {
  name: "ca bootstrap",
  summary: "trust a CA by its root fingerprint and remember its URL for the admin commands",
  examples: [
    "stint ca bootstrap --ca-url https://ca.example.com:8443 --fingerprint sha256:3f1c…",
    'stint ca bootstrap --ca-url https://ca:8443 --fingerprint "$(openssl x509 -in root.pem -noout -fingerprint -sha256)"',
  ],
  help: () =>
    [
      "usage: stint ca bootstrap --ca-url URL --fingerprint FP [--force] [--json]",
      "",
      "Fetches the CA's roots, keeps the one with the given SHA-256 fingerprint, checks that the CA's",
      "HTTPS certificate chains to it, and saves the URL and root in $XDG_CONFIG_HOME/stint",
      "(~/.config/stint). `stint entry`, `token`, `cert` and `audit` then use them unless --server or",
      "--ca-file say otherwise, and `stint agent` unless --ca-url says so. A fingerprint no root",
      "matches is refused without showing the CA's.",
      "",
      "options:",
      "  --ca-url URL               the CA's origin, https://host:port",
      "  --fingerprint FP           sha256:<hex> as `stint ca init` or `stint ca fingerprint` printed it,",
      "                             or OpenSSL's form (SHA256 Fingerprint=AB:CD:…)",
      "  --force                    replace a CA saved before",
      "  --json                     print {caUrl, fingerprint, dir} as JSON",
      "  -h, --help                 this help",
    ].join("\n"),
  async run(argv) {
    const { values } = parseFlags(argv, {
      "ca-url": { type: "string" },
      fingerprint: { type: "string" },
      force: { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
    if (values["ca-url"] === undefined || values.fingerprint === undefined) {
      throw new StintError("ERR_USAGE", "give --ca-url and --fingerprint (see stint ca bootstrap --help)");
    }
    const caUrl = caUrlFrom(values["ca-url"] as string);
    const fingerprint = parseFingerprint(values.fingerprint as string);
    const dir = clientConfigDir();
    if (values.force !== true && existsSync(join(dir, CA_FILE))) {
      throw new StintError("ERR_FILE", `a CA is already saved in ${dir}; pass --force to replace it`);
    }
    // The first fetch cannot be verified: the fingerprint is what makes its answer trustworthy.
    const unverified = (await fetchFromCa(caUrl, "/bundle.pem", null, TIMEOUT_MS, BUNDLE_LIMIT)).toString(
      "utf8",
    );
    const root = pemDecodeAll(unverified, "CERTIFICATE", `${caUrl}/bundle.pem`).find(
      (der) => fingerprintOf(der) === fingerprint,
    );
    if (!root) {
      // Never name the fingerprints the server has: that invites pasting one.
      throw new StintError(
        "ERR_UNAUTHORIZED",
        `the CA at ${caUrl} serves no root with fingerprint ${fingerprint}; check the fingerprint with the CA's operator (\`stint ca fingerprint\` on the CA host) and the URL`,
      );
    }
    const rootPem = toPem("CERTIFICATE", root);
    // Now over TLS verified against that root: the server really is that CA's.
    await fetchFromCa(caUrl, "/bundle.pem", rootPem, TIMEOUT_MS, BUNDLE_LIMIT);
    await ensureDir(dir, 0o700);
    await writeFileAtomic(join(dir, ROOT_FILE), rootPem, 0o644);
    await writeFileAtomic(join(dir, CA_FILE), `${JSON.stringify({ caUrl, fingerprint }, null, 2)}\n`, 0o644);
    if (values.json) printJson({ caUrl, fingerprint, dir });
    else console.log(`Trusting the CA at ${caUrl} (root ${fingerprint}); saved in ${dir}`);
    return 0;
  },
};

export const caFingerprint: Command = {
  name: "ca fingerprint",
  summary: "print the SHA-256 fingerprint of the CA's root (for bootstrap and --ca-fingerprint)",
  examples: ["stint ca fingerprint --data-dir /var/lib/stint", "stint ca fingerprint root.pem"],
  help: () =>
    caHelp(
      "stint ca fingerprint [CERT.pem] [options]",
      "Prints sha256:<hex> of the CA's trusted roots: from the store when the data directory holds\n" +
        "a CA (no passphrase needed), else of the CA saved by `stint ca bootstrap`; with CERT.pem, of\n" +
        "that certificate. Agents take it as --ca-fingerprint, clients as `stint ca bootstrap --fingerprint`.",
      "",
    ),
  async run(argv) {
    const { values, positionals } = parseFlags(argv, caFlagOptions(), true);
    if (positionals.length > 1) {
      throw new StintError(
        "ERR_USAGE",
        "give at most one certificate file (see stint ca fingerprint --help)",
      );
    }
    if (positionals[0] !== undefined) {
      let text: string;
      try {
        text = await readFile(positionals[0], "utf8");
      } catch (err) {
        throw fileError(err, positionals[0], "read the certificate");
      }
      for (const der of pemDecodeAll(text, "CERTIFICATE", positionals[0])) console.log(fingerprintOf(der));
      return 0;
    }
    const cfg = loadConfigFromFlags(values);
    if (cfg["store.url"] !== "" || existsSync(join(cfg.dataDir, STORE_FILE))) {
      const store = await openStore(cfg.dataDir, { url: cfg["store.url"] });
      try {
        const pem = bundlePem(await store.listIssuers());
        for (const der of pemDecodeAll(pem, "CERTIFICATE", "the CA's roots")) console.log(fingerprintOf(der));
      } finally {
        await store.close();
      }
      return 0;
    }
    const saved = await readSavedCa();
    if (!saved) {
      throw new StintError(
        "ERR_NOT_INITIALIZED",
        `no CA in ${cfg.dataDir} and none saved by \`stint ca bootstrap\`; point --data-dir at the CA or give a certificate file`,
      );
    }
    console.log(fingerprintOf(new X509Certificate(saved.rootPem).raw));
    return 0;
  },
};
