import { X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pemDecodeAll } from "../../formats/pem";
import { type AgentProcess, currentFiles, fingerprint, startAgent, waitFor } from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";
import { type ServicePair, startServicePair } from "../helpers/service-pair";

/**
 * Issue 15: a root rotation with the old and the new root both kept offline
 * (`old/` and `new/` stand in for the offline host), under continuous mTLS
 * traffic between two services built on verify/, each on an agent's files
 * with 60-second certificates (renewed with 20 s to spare: with 20-second
 * ones a loaded machine let one expire). No handshake may fail while the new
 * root is prepared from its certificate alone, activated with an imported
 * intermediate and cross-certificate, and the old root retired.
 */

const TD = "offline.example";
const AGENTS = ["web", "api"] as const;
const dir = tempDir("stint-offline-traffic-e2e-");
const dataDir = join(dir, "ca");
const oldDir = join(dir, "old");
const newDir = join(dir, "new");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const outDir = (name: string) => join(dir, `out-${name}`);
const at = (name: string) => join(dir, name);

/** A CA-host command, with the CA's data directory and the development-mode key flag where it takes one. */
function ca(args: string[]): { code: number; stdout: string; stderr: string } {
  return stint([...args, "--data-dir", dataDir]);
}

function ok(r: { code: number; stdout: string; stderr: string }, what: string): string {
  if (r.code !== 0) throw new Error(`${what} failed: ${r.stderr}`);
  return r.stdout;
}

const caOk = (args: string[]) => ok(ca(args), `stint ${args.join(" ")}`);
/** An offline-host command: no data directory, no passphrase (keys written with --insecure-no-passphrase). */
const offlineOk = (args: string[]) => ok(stint(args), `stint ${args.join(" ")}`);

function issuers(): { id: string; kind: string; state: string }[] {
  return JSON.parse(caOk(["ca", "status", "--json"])).issuers;
}

const bundleRoots = (name: string) =>
  pemDecodeAll(currentFiles(outDir(name)).bundle.toString(), "CERTIFICATE", "bundle").length;

/** The id of the intermediate that issued an agent's current certificate (the chain's second certificate). */
function leafIssuerId(name: string): string {
  const chain = pemDecodeAll(currentFiles(outDir(name)).cert.toString(), "CERTIFICATE", "cert");
  return /Stint Intermediate CA ([0-9a-f]{16})/.exec(new X509Certificate(chain[1]!).subject)![1]!;
}

describe("root rotation with both roots offline, under traffic", () => {
  let server: ServerProcess;
  const agents: AgentProcess[] = [];
  let services: ServicePair;
  let traffic: ServicePair["traffic"];

  beforeAll(async () => {
    server = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      dataDir,
      "--trust-domain",
      TD,
      "--policy-min-ttl",
      "1s",
      "--bundle-refresh-hint",
      "2s",
      "--feed-poll-interval",
      "250ms",
    ]);
    // The first root goes offline: the server never needs it, and no step below does either.
    mkdirSync(oldDir, { mode: 0o700 });
    renameSync(join(dataDir, "keys", "root.key.pem"), join(oldDir, "root.key.pem"));
    writeFileSync(join(oldDir, "root.pem"), readFileSync(join(dataDir, "root.pem")));
    for (const name of AGENTS) {
      const spiffeId = `spiffe://${TD}/svc/${name}`;
      const args = ["token", "create", "--spiffe-id", spiffeId, "--cert-ttl", "60s", "--json"];
      const token = JSON.parse(caOk([...args, "--server", server.url])).token as string;
      const tokenFile = at(`token-${name}`);
      writeFileSync(tokenFile, token, { mode: 0o600 });
      agents.push(
        startAgent([
          ...["--ca-url", server.url, "--ca-fingerprint", fingerprint(dataDir), "--spiffe-id", spiffeId],
          ...["--join-token-file", tokenFile, "--state-dir", at(`state-${name}`), "--out-dir", outDir(name)],
          ...["--health-listen", "127.0.0.1:0", "--backoff-base", "200ms", "--backoff-cap", "2s"],
        ]),
      );
    }
    await waitFor("every agent's first certificate", () => AGENTS.every((a) => hasFiles(a)), 60_000);

    services = await startServicePair({
      caUrl: server.url,
      web: { outDir: outDir("web"), spiffeId: `spiffe://${TD}/svc/web` },
      api: { outDir: outDir("api"), spiffeId: `spiffe://${TD}/svc/api` },
    });
    traffic = services.traffic;
  }, 120_000);

  afterAll(async () => {
    await services?.stop();
    await Promise.all(agents.map((a) => a.stop()));
    await server?.stop();
    console.log(
      JSON.stringify({ offlineRootRotation: { requests: traffic?.ok, failures: traffic?.failures } }),
    );
  });

  function hasFiles(name: string): boolean {
    try {
      currentFiles(outDir(name));
      return true;
    } catch {
      return false;
    }
  }

  it("prepares, activates and retires an offline root with no failed handshake", async () => {
    const oldRoot = issuers().find((i) => i.kind === "root" && i.state === "active")!.id;
    const oldCert = join(oldDir, "root.pem");
    const oldKey = join(oldDir, "root.key.pem");

    // Offline: the next root. CA host: only its certificate, then its first CRL signed offline.
    const made = JSON.parse(
      offlineOk([
        "root",
        "init",
        "--out-dir",
        newDir,
        "--trust-domain",
        TD,
        "--insecure-no-passphrase",
        "--json",
      ]),
    );
    const newRoot = made.id as string;
    caOk(["ca", "root", "prepare", "--offline", "--root-cert", made.certFile]);
    await waitFor(
      "every agent's bundle to hold both roots",
      () => AGENTS.every((a) => bundleRoots(a) === 2),
      30_000,
    );
    caOk(["ca", "root", "crl-request", newRoot, "--out", at("crl-request.json")]);
    const signCrl = ["root", "sign-crl", "--root-cert", made.certFile, "--root-key", made.keyFile];
    offlineOk([...signCrl, "--request", at("crl-request.json"), "--out", at("new.crl")]);
    caOk(["ca", "import-crl", at("new.crl")]);

    // CA host: the intermediate's key and CSR. Offline: the new root signs it, the old root cross-signs the new.
    caOk(["ca", "intermediate-csr", "--insecure-no-passphrase", "--out", at("int.csr")]);
    const rootSign = ["root", "sign", "--root-cert", made.certFile, "--root-key", made.keyFile];
    offlineOk([...rootSign, "--csr", at("int.csr"), "--out", at("int.pem")]);
    const crossSign = ["root", "cross-sign", "--root-cert", oldCert, "--root-key", oldKey];
    offlineOk([...crossSign, "--new-root-cert", made.certFile, "--out", at("cross.pem")]);

    // Refused until one bundle refresh hint (2 s) has passed since prepare.
    const activate = ["ca", "root", "activate", "--bundle-refresh-hint", "2s"];
    const files = ["--cross-cert", at("cross.pem"), "--intermediate", at("int.pem"), "--json"];
    await waitFor(
      "root activate to be accepted",
      () => {
        const r = ca([...activate, ...files]);
        if (r.code !== 0 && !/activate after/.test(r.stderr)) throw new Error(r.stderr);
        return r.code === 0;
      },
      30_000,
    );
    const activated = issuers().find((i) => i.kind === "intermediate" && i.state === "active")!.id;
    await waitFor(
      "every agent on the new intermediate",
      () => AGENTS.every((a) => leafIssuerId(a) === activated),
      150_000,
    );

    // The chain agents serve validates with either root alone.
    writeFileSync(at("chain.pem"), currentFiles(outDir("web")).cert);
    for (const trusted of [oldCert, made.certFile]) {
      expect(
        openssl(["verify", "-CAfile", trusted, "-untrusted", at("chain.pem"), at("chain.pem")]),
      ).toContain(": OK");
    }

    caOk(["ca", "admin-cert"]);
    await waitFor(
      "root retire to be accepted",
      () => {
        const r = ca(["ca", "root", "retire"]);
        if (r.code !== 0 && !/have not been replaced/.test(r.stderr)) throw new Error(r.stderr);
        return r.code === 0;
      },
      120_000,
    );
    expect(issuers().find((i) => i.id === oldRoot)!.state).toBe("retired");
    await waitFor(
      "every agent's bundle to drop the old root",
      () => AGENTS.every((a) => bundleRoots(a) === 1),
      30_000,
    );
    const okBefore = traffic.ok;
    await new Promise((r) => setTimeout(r, 5000));
    expect(traffic.ok).toBeGreaterThan(okBefore);
    expect(traffic.failures).toEqual([]);
    expect(traffic.ok).toBeGreaterThan(50);
  }, 360_000);
});
