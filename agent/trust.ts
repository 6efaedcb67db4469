import { createHash, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { get } from "node:https";
import { join } from "node:path";
import { StintError } from "../common/errors";
import { fileError, writeFileAtomic } from "../common/files";
import { pemDecodeAll, toPem } from "../formats/pem";

/**
 * The agent's trust in the CA, bootstrapped like `step ca bootstrap`: the
 * operator gives the root's SHA-256 fingerprint; the agent fetches the bundle
 * once without verification, keeps only the root with that fingerprint, then
 * fetches the bundle again over TLS verified against that root, so the whole
 * set it then trusts came from the real CA. From then on the bundle is only
 * ever refreshed over TLS verified with the roots already trusted, so root
 * rotation reaches the agent and nothing unauthenticated does.
 */

export const ROOTS_FILE = "roots.pem";
const MAX_BUNDLE_BYTES = 256 * 1024;

export interface TrustedRoots {
  pem: string;
  /** "sha256:<hex>" of each root. */
  fingerprints: string[];
}

export function fingerprintOf(der: Buffer): string {
  return `sha256:${createHash("sha256").update(der).digest("hex")}`;
}

function rootsFrom(pem: string, what: string): TrustedRoots {
  const ders = pemDecodeAll(pem, "CERTIFICATE", what);
  if (ders.length === 0) throw new StintError("ERR_PEM", `${what} holds no certificates`);
  for (const der of ders) {
    const cert = new X509Certificate(der);
    if (!cert.ca || cert.issuer !== cert.subject)
      throw new StintError("ERR_PEM", `${what} holds a certificate that is not a root CA`);
  }
  return { pem: ders.map((d) => toPem("CERTIFICATE", d)).join(""), fingerprints: ders.map(fingerprintOf) };
}

/** GET <caUrl><path> up to `maxBytes`; `ca` null skips verification (the bootstrap's first fetch only). */
export function fetchFromCa(
  caUrl: string,
  path: string,
  ca: string | null,
  timeoutMs: number,
  maxBytes: number,
): Promise<Buffer> {
  const url = `${caUrl.replace(/\/$/, "")}${path}`;
  return new Promise((resolve, reject) => {
    const req = get(
      url,
      { ca: ca ?? undefined, rejectUnauthorized: ca !== null, timeout: timeoutMs },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          // 404 is told apart: the CA may simply keep no such document (a CRL for an issuer whose key it lacks).
          reject(
            new StintError(
              res.statusCode === 404 ? "ERR_NOT_FOUND" : "ERR_CONNECTION",
              `GET ${url} answered HTTP ${res.statusCode}; is ${caUrl} a Stint CA?`,
            ),
          );
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) req.destroy(new Error(`${path} is larger than ${maxBytes} bytes`));
          else chunks.push(chunk);
        });
        res.on("end", () => resolve(Buffer.concat(chunks)));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (err: NodeJS.ErrnoException) => reject(connectionError(caUrl, err, ca !== null)));
  });
}

const fetchBundle = async (caUrl: string, ca: string | null, timeoutMs: number): Promise<string> =>
  (await fetchFromCa(caUrl, "/bundle.pem", ca, timeoutMs, MAX_BUNDLE_BYTES)).toString("utf8");

/**
 * The SPIFFE bundle document (/bundle.json): its X509-SVID roots as PEM and
 * the CA's spiffe_refresh_hint, which tells agents how soon to look again
 * (root rotation waits one hint between publishing a root and using it).
 */
async function fetchBundleDocument(
  caUrl: string,
  ca: string,
  timeoutMs: number,
): Promise<{ pem: string; refreshHintMs: number | null }> {
  const body = await fetchFromCa(caUrl, "/bundle.json", ca, timeoutMs, MAX_BUNDLE_BYTES);
  const malformed = (why: string) =>
    new StintError("ERR_MALFORMED", `the bundle document from ${caUrl}/bundle.json ${why}`);
  let doc: { keys?: unknown; spiffe_refresh_hint?: unknown };
  try {
    doc = JSON.parse(body.toString("utf8"));
  } catch {
    throw malformed("is not JSON");
  }
  if (!Array.isArray(doc?.keys)) throw malformed("has no keys");
  const pem = (doc.keys as { use?: unknown; x5c?: unknown }[])
    .filter((k) => k?.use === "x509-svid")
    .map((k) => {
      const der = Array.isArray(k.x5c) && typeof k.x5c[0] === "string" ? k.x5c[0] : null;
      if (der === null) throw malformed("has an x509-svid key without x5c");
      return toPem("CERTIFICATE", Buffer.from(der, "base64"));
    })
    .join("");
  const hint = doc.spiffe_refresh_hint;
  const refreshHintMs = Number.isSafeInteger(hint) && (hint as number) > 0 ? (hint as number) * 1000 : null;
  return { pem, refreshHintMs };
}

export function connectionError(caUrl: string, err: NodeJS.ErrnoException, verified: boolean): StintError {
  if (err instanceof StintError) return err;
  const tlsCodes = [
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    "SELF_SIGNED_CERT_IN_CHAIN",
    "DEPTH_ZERO_SELF_SIGNED_CERT",
    "CERT_SIGNATURE_FAILURE",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  ];
  if (verified && err.code && tlsCodes.includes(err.code)) {
    return new StintError(
      "ERR_UNAUTHORIZED",
      `the CA at ${caUrl} presented a certificate that does not chain to the trusted roots (${err.code}); is this the right CA? If it really was re-created, remove the state directory's ${ROOTS_FILE} and bootstrap again with --ca-fingerprint`,
    );
  }
  if (
    err.code === "ECONNREFUSED" ||
    err.code === "ENOTFOUND" ||
    err.code === "EHOSTUNREACH" ||
    err.code === "ECONNRESET"
  ) {
    return new StintError(
      "ERR_CONNECTION",
      `cannot reach the CA at ${caUrl} (${err.code}); is it running and is the address right?`,
    );
  }
  return new StintError("ERR_CONNECTION", `cannot reach the CA at ${caUrl}: ${err.message}`);
}

export class Trust {
  private constructor(
    private readonly stateDir: string,
    private readonly caUrl: string,
    private current: TrustedRoots,
    /** Whether `current` is what the state directory holds. */
    private saved: boolean,
    /** When the bundle was last confirmed with the CA; null until the first refresh this run. */
    public updatedAt: Date | null = null,
    /** The CA's spiffe_refresh_hint from the last refresh; null when it gave none. */
    public refreshHintMs: number | null = null,
  ) {}

  get roots(): TrustedRoots {
    return this.current;
  }

  /**
   * The roots from the state directory, or a bootstrap with the fingerprint
   * when there are none yet. A fingerprint that disagrees with the stored
   * roots is refused rather than silently ignored.
   */
  static async load(opts: {
    stateDir: string;
    caUrl: string;
    fingerprint: string;
    timeoutMs?: number;
  }): Promise<Trust> {
    const path = join(opts.stateDir, ROOTS_FILE);
    let stored: string | null = null;
    try {
      stored = await readFile(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        throw fileError(err, path, "read the trusted roots");
    }
    if (stored !== null) {
      const roots = rootsFrom(stored, path);
      if (opts.fingerprint !== "" && !roots.fingerprints.includes(opts.fingerprint)) {
        throw new StintError(
          "ERR_CONFIG",
          `caFingerprint ${opts.fingerprint} is not among the roots already trusted in ${path}; remove that file to bootstrap again`,
        );
      }
      return new Trust(opts.stateDir, opts.caUrl, roots, true);
    }
    if (opts.fingerprint === "") {
      throw new StintError(
        "ERR_CONFIG",
        "no trusted roots yet: give --ca-fingerprint sha256:… (as `stint ca init` printed it)",
      );
    }
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const unverified = rootsFrom(
      await fetchBundle(opts.caUrl, null, timeoutMs),
      `the bundle from ${opts.caUrl}`,
    );
    const index = unverified.fingerprints.indexOf(opts.fingerprint);
    if (index < 0) {
      // Never name the fingerprints the server has: that invites pasting one, trusting whoever answered.
      throw new StintError(
        "ERR_UNAUTHORIZED",
        `the CA at ${opts.caUrl} serves no root with fingerprint ${opts.fingerprint}; check the fingerprint ` +
          "out of band (`stint ca fingerprint` on the CA host, or ask its operator) and --ca-url",
      );
    }
    const pinned = pemDecodeAll(unverified.pem, "CERTIFICATE", "bundle")[index];
    const trust = new Trust(
      opts.stateDir,
      opts.caUrl,
      rootsFrom(toPem("CERTIFICATE", pinned), "the pinned root"),
      false,
    );
    await trust.refresh(timeoutMs);
    return trust;
  }

  /** Fetches the bundle over TLS verified with the current roots and adopts it; returns whether it changed. */
  async refresh(timeoutMs = 10_000): Promise<boolean> {
    const fetched = await fetchBundleDocument(this.caUrl, this.current.pem, timeoutMs);
    const next = rootsFrom(fetched.pem, `the bundle from ${this.caUrl}`);
    this.updatedAt = new Date();
    this.refreshHintMs = fetched.refreshHintMs;
    const changed = next.pem !== this.current.pem;
    if (changed || !this.saved) {
      this.current = next;
      await writeFileAtomic(join(this.stateDir, ROOTS_FILE), next.pem, 0o644);
      this.saved = true;
    }
    return changed;
  }
}
