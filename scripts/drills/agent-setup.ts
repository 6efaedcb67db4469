import { createHash, createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { pemDecodeAll } from "../../formats/pem";
import { bootstrapPki } from "../../test/helpers/openssl";
import { freePort } from "../bench/acme-load/servers";
import type { DrillContext } from "./harness";
import { CaServer, stint, stintJson } from "./processes";

/**
 * What the agent drills share: a CA on a fixed port (so it can be stopped
 * and started again where the agent expects it), an x509pop bootstrap PKI
 * made by OpenSSL (x509pop can attest again after a certificate expired,
 * which a spent join token cannot), an entry with the drill's certificate
 * lifetime, the agent's command line, and the check of the set on disk.
 */

const TD = "agent-drill.example";
export const SPIFFE_ID = `spiffe://${TD}/svc/web`;

export interface AgentRig {
  ca: CaServer;
  dir: string;
  outDir: string;
  /** `stint agent` flags for a daemon (add --once for one pass). */
  agentArgs: string[];
}

export async function agentRig<S>(
  ctx: DrillContext<S>,
  opts: { certTtl: string; minTtl: string; extraAgentArgs?: string[] },
): Promise<AgentRig> {
  const dir = ctx.tempDir("agent");
  const dataDir = join(dir, "ca");
  const env = { STINT_DATA_DIR: dataDir, STINT_TRUST_DOMAIN: TD, STINT_POLICY_MIN_TTL: opts.minTtl };
  stintJson(["ca", "init", "--insecure-no-passphrase"], env);
  const pki = bootstrapPki(dir, "bootstrap", "web-1");
  const port = await freePort();
  const ca = new CaServer(
    "ca",
    ["--insecure-no-passphrase", "--listen", `127.0.0.1:${port}`, "--attest-x509pop-bundle-file", pki.caPath],
    env,
  );
  ctx.onCleanup(() => ca.stop());
  await ca.start();
  const entry = stint(
    ["entry", "create", "--spiffe-id", SPIFFE_ID, "--selector", "x509pop:subject:cn:web-1"].concat([
      "--ttl",
      opts.certTtl,
      "--server",
      ca.url,
    ]),
    env,
  );
  if (entry.code !== 0) throw new Error(`stint entry create: ${entry.stderr.trim()}`);
  const outDir = join(dir, "out");
  const agentArgs = [
    "agent",
    "--ca-url",
    ca.url,
    "--ca-fingerprint",
    rootFingerprint(join(dataDir, "root.pem")),
    "--spiffe-id",
    SPIFFE_ID,
    "--state-dir",
    join(dir, "state"),
    "--out-dir",
    outDir,
    "--attestor",
    "x509pop",
    "--x509pop-cert-file",
    pki.leafPath,
    "--x509pop-key-file",
    pki.keyPath,
    "--health-listen",
    "127.0.0.1:0",
    ...(opts.extraAgentArgs ?? []),
  ];
  const first = stint([...agentArgs, "--once"]);
  if (first.code !== 0) throw new Error(`the first enrollment failed: ${first.stderr.trim()}`);
  return { ca, dir, outDir, agentArgs };
}

export function rootFingerprint(path: string): string {
  const der = pemDecodeAll(readFileSync(path, "utf8"), "CERTIFICATE", "root")[0];
  return `sha256:${createHash("sha256").update(der).digest("hex")}`;
}

export interface SetOnDisk {
  serial: string;
  notBefore: number;
  notAfter: number;
}

/**
 * The set as a server configured with the top-level names reads it, while
 * no agent runs: cert.pem, key.pem and bundle.pem. Throws unless the key
 * matches the leaf, each link of the chain verifies, and the chain's top is
 * issued by a root in bundle.pem.
 */
export function checkSet(outDir: string): SetOnDisk {
  const read = (name: string) => readFileSync(join(outDir, name), "utf8");
  const chain = pemDecodeAll(read("cert.pem"), "CERTIFICATE", "cert.pem").map((d) => new X509Certificate(d));
  const key = createPrivateKey(read("key.pem"));
  const roots = pemDecodeAll(read("bundle.pem"), "CERTIFICATE", "bundle.pem").map(
    (d) => new X509Certificate(d),
  );
  if (!chain[0].publicKey.equals(createPublicKey(key))) throw new Error("key.pem does not match cert.pem");
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i].checkIssued(chain[i + 1]) || !chain[i].verify(chain[i + 1].publicKey))
      throw new Error(`cert.pem: certificate ${i} is not signed by certificate ${i + 1}`);
  }
  const top = chain[chain.length - 1];
  if (!roots.some((r) => top.checkIssued(r) && top.verify(r.publicKey)))
    throw new Error("cert.pem does not chain to a root in bundle.pem");
  return {
    serial: chain[0].serialNumber.toLowerCase(),
    notBefore: Date.parse(chain[0].validFrom),
    notAfter: Date.parse(chain[0].validTo),
  };
}

/** Names a killed writer left in the output directory (temporary links, unswitched versions). */
export function leftovers(outDir: string): number {
  const current = readlinkSync(join(outDir, "..data"));
  return readdirSync(outDir).filter((n) => n.startsWith("..") && n !== "..data" && n !== current).length;
}
