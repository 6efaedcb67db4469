import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pemDecodeAll } from "../../formats/pem";
import type { TlsDir } from "../../verify/node";
import { openVerifier } from "../../verify/open";
import { type AgentProcess, currentFiles, fingerprint, startAgent, waitFor } from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";
import { mtlsCall, type ServicePair, startServicePair } from "../helpers/service-pair";

/**
 * Rotation under traffic: a CA, three agents with 20-second certificates, and
 * an mTLS server and client built on verify/ (each on an agent's files)
 * exchanging requests the whole time. In turn: a routine intermediate
 * rotation, a taint then revocation of an intermediate, and a full root
 * rotation (prepare, activate with a cross-certificate, retire). No handshake
 * may fail; the time until every agent holds a certificate from the new
 * issuer is measured and printed, never asserted.
 */

const TD = "rotation.example";
const AGENTS = ["web", "api", "db"] as const;
const dir = tempDir("stint-rotation-e2e-");
const dataDir = join(dir, "ca");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const outDir = (name: string) => join(dir, `out-${name}`);

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  return stint([...args, "--data-dir", dataDir]);
}

function runOk(args: string[]): string {
  const r = run(args);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

function issuers(): { id: string; kind: string; state: string }[] {
  return JSON.parse(runOk(["ca", "status", "--json"])).issuers;
}

/** The id the CA gives an issuer: the first 8 bytes of its key identifier, which its leaves carry as their AKI. */
function leafIssuerId(name: string): string {
  return akiOf(pemDecodeAll(currentFiles(outDir(name)).cert.toString(), "CERTIFICATE", "cert")[0]);
}

/** The authorityKeyIdentifier's keyIdentifier, first 8 bytes in hex, read from the DER. */
function akiOf(der: Buffer): string {
  // 06 03 55 1d 23 (id-ce-authorityKeyIdentifier) … 80 14 <20-byte key id>
  const at = der.indexOf(Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x23]));
  const keyId = der.indexOf(Buffer.from([0x80, 0x14]), at);
  if (at < 0 || keyId < 0) throw new Error("leaf has no authority key identifier");
  return der.subarray(keyId + 2, keyId + 10).toString("hex");
}

function bundleRoots(name: string): number {
  return pemDecodeAll(currentFiles(outDir(name)).bundle.toString(), "CERTIFICATE", "bundle").length;
}

/** Waits until every agent holds a certificate from `issuerId`; returns how long that took. */
async function allMovedTo(issuerId: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  await waitFor(
    `every agent on issuer ${issuerId}`,
    () => AGENTS.every((a) => leafIssuerId(a) === issuerId),
    timeoutMs,
  );
  return Date.now() - started;
}

/** Runs a rotation command until it succeeds (it refuses while agents have not moved yet). */
async function untilAccepted(args: string[], timeoutMs: number, refusal: RegExp): Promise<string> {
  let last = "";
  await waitFor(
    `stint ${args.join(" ")} to be accepted`,
    () => {
      const r = run(args);
      if (r.code === 0) return true;
      last = r.stderr;
      if (!refusal.test(r.stderr))
        throw new Error(`stint ${args.join(" ")}: unexpected refusal: ${r.stderr}`);
      return false;
    },
    timeoutMs,
  );
  return last;
}

describe("rotation while services keep talking", () => {
  let ca: ServerProcess;
  const agents: AgentProcess[] = [];
  let services: ServicePair;
  let probeVerifier: Awaited<ReturnType<typeof openVerifier>>;
  let traffic: ServicePair["traffic"];
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    // Agents keep their default bundleRefresh (5 min): they follow the CA's 2 s refresh hint.
    ca = await startServer([
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
    for (const name of AGENTS) {
      const token = JSON.parse(
        runOk([
          "token",
          "create",
          "--spiffe-id",
          `spiffe://${TD}/svc/${name}`,
          "--cert-ttl",
          "20s",
          "--json",
          "--server",
          ca.url,
        ]),
      ).token as string;
      const tokenFile = join(dir, `token-${name}`);
      writeFileSync(tokenFile, token, { mode: 0o600 });
      agents.push(
        startAgent([
          "--ca-url",
          ca.url,
          "--ca-fingerprint",
          fingerprint(dataDir),
          "--spiffe-id",
          `spiffe://${TD}/svc/${name}`,
          "--join-token-file",
          tokenFile,
          "--state-dir",
          join(dir, `state-${name}`),
          "--out-dir",
          outDir(name),
          "--health-listen",
          "127.0.0.1:0",
          "--backoff-base",
          "200ms",
          "--backoff-cap",
          "2s",
        ]),
      );
    }
    await waitFor("every agent's first certificate", () => AGENTS.every((a) => tryFiles(a)), 60_000).catch(
      (err: Error) => {
        throw new Error(
          `${err.message}; agent logs: ${JSON.stringify(agents.map((a) => a.logs().slice(-3)))}`,
        );
      },
    );

    // The service: "web" serves, "api" calls it, each on its agent's files and a verifier following the feed.
    services = await startServicePair({
      caUrl: ca.url,
      web: { outDir: outDir("web"), spiffeId: `spiffe://${TD}/svc/web` },
      api: { outDir: outDir("api"), spiffeId: `spiffe://${TD}/svc/api` },
    });
    traffic = services.traffic;
    probeVerifier = await openVerifier({
      bundle: currentFiles(outDir("db")).bundle.toString(),
      usage: "client",
      allow: { trustDomain: TD },
      feedUrl: ca.url,
    });
  }, 120_000);

  afterAll(async () => {
    await services?.stop();
    probeVerifier?.close();
    await Promise.all(agents.map((a) => a.stop()));
    await ca?.stop();
    console.log(
      JSON.stringify({
        rotationTimingsMs: timings,
        requests: traffic?.ok,
        failures: traffic?.failures.length,
      }),
    );
  });

  function tryFiles(name: string): boolean {
    try {
      currentFiles(outDir(name));
      return true;
    } catch {
      return false;
    }
  }

  it("moves every agent to a routinely rotated intermediate", async () => {
    const before = issuers().find((i) => i.kind === "intermediate" && i.state === "active")!.id;
    expect(AGENTS.every((a) => leafIssuerId(a) === before)).toBe(true);
    const out = JSON.parse(runOk(["ca", "rotate", "--json", "--insecure-no-passphrase"]));
    expect(out.retired.id).toBe(before);
    timings.routine = await allMovedTo(out.activated.id, 90_000);
    expect(issuers().find((i) => i.id === before)!.state).toBe("retired");
    expect(traffic.failures).toEqual([]);
  }, 120_000);

  it("pulls renewals forward off a tainted intermediate, then revokes it for every verifier", async () => {
    const tainted = issuers().find((i) => i.kind === "intermediate" && i.state === "active")!.id;
    // A certificate of the soon-tainted issuer that nobody renews: what verifiers must reject at the end.
    const probeOut = join(dir, "probe");
    runOk(["ca", "issue", "--spiffe-id", `spiffe://${TD}/svc/probe`, "--ttl", "10m", "--out", probeOut]);
    const probeChain = readFileSync(join(probeOut, "cert.pem"), "utf8");
    expect(probeVerifier.verify(probeChain)).toMatchObject({ ok: true });

    const next = JSON.parse(runOk(["ca", "rotate", "--json", "--insecure-no-passphrase"])).activated
      .id as string;
    // Tainting pulls ARI windows to now: agents move at their next renewalInfo poll, not at two thirds of a lifetime.
    const refused = run(["ca", "taint", next]);
    expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining("is the active intermediate") });
    runOk(["ca", "taint", tainted]);
    timings.taint = await allMovedTo(next, 60_000);
    // The services switch to the new files on their own 200 ms poll, which the synchronous CLI runs below
    // hold up (the test's event loop is theirs): switch them now, so the revocation cannot overtake a
    // switch that is already due.
    await Promise.all([services.server.reload(), services.client.reload()]);

    // The probe was never replaced: revoke-issuer refuses without --force and says why.
    expect(run(["ca", "revoke-issuer", tainted])).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/1 of \d+ live certificates .* have not been replaced yet/),
    });
    const revoked = JSON.parse(runOk(["ca", "revoke-issuer", tainted, "--force", "--json"]));
    expect(revoked).toMatchObject({ revoked: tainted, unreplaced: 1, rootCrlSigned: true });
    const rejection = await waitFor("verifiers to reject the revoked issuer", () => {
      const r = probeVerifier.verify(probeChain);
      return !r.ok && r;
    });
    expect(rejection).toMatchObject({ ok: false, code: "revoked" });
    // And over TLS: the service refuses a client presenting the probe's certificate.
    const probeClient = {
      options: {
        key: readFileSync(join(probeOut, "key.pem")),
        cert: readFileSync(join(probeOut, "cert.pem")),
        ca: readFileSync(join(probeOut, "bundle.pem")),
        checkServerIdentity: () => undefined,
      },
    } as unknown as TlsDir;
    expect(await mtlsCall(services.port, probeClient)).toMatchObject({
      status: 403,
      body: expect.stringMatching(/^revoked: /),
    });
    expect(traffic.failures).toEqual([]);
  }, 120_000);

  it("rotates the root: prepared in the bundle, activated with a cross-certificate, then retired", async () => {
    const oldRoot = issuers().find((i) => i.kind === "root" && i.state === "active")!.id;
    const newRoot = JSON.parse(runOk(["ca", "root", "prepare", "--json", "--insecure-no-passphrase"]))
      .prepared.id;
    await waitFor(
      "every agent's bundle to hold both roots",
      () => AGENTS.every((a) => bundleRoots(a) === 2),
      30_000,
    );
    // Refused until one bundle refresh hint (2 s here, as the server was told) has passed since prepare.
    await untilAccepted(
      ["ca", "root", "activate", "--insecure-no-passphrase", "--bundle-refresh-hint", "2s"],
      30_000,
      /activate after/,
    );
    const activated = issuers().find((i) => i.kind === "intermediate" && i.state === "active")!.id;
    timings.rootActivate = await allMovedTo(activated, 90_000);

    // The served chain validates for a verifier that trusts only the old root and for one that trusts only the new one.
    const chainFile = join(dir, "overlap-chain.pem");
    writeFileSync(chainFile, currentFiles(outDir("web")).cert);
    const rootPem = (id: string) => {
      const path = join(dir, `root-${id}.pem`);
      const bundle = pemDecodeAll(currentFiles(outDir("web")).bundle.toString(), "CERTIFICATE", "bundle");
      const der = bundle.find((d) => new X509Certificate(d).subject.includes(id))!;
      writeFileSync(
        path,
        `-----BEGIN CERTIFICATE-----\n${der.toString("base64")}\n-----END CERTIFICATE-----\n`,
      );
      return path;
    };
    for (const root of [oldRoot, newRoot]) {
      expect(openssl(["verify", "-CAfile", rootPem(root), "-untrusted", chainFile, chainFile])).toContain(
        ": OK",
      );
    }

    // Nothing may chain to the old root when it goes: the admin certificate is renewed like any other.
    runOk(["ca", "admin-cert"]);
    await untilAccepted(["ca", "root", "retire"], 60_000, /have not been replaced/);
    expect(issuers().find((i) => i.id === oldRoot)!.state).toBe("retired");
    await waitFor(
      "every agent's bundle to drop the old root",
      () => AGENTS.every((a) => bundleRoots(a) === 1),
      30_000,
    );
    // Traffic keeps flowing on the new root alone for a few renewals.
    const okBefore = traffic.ok;
    await new Promise((r) => setTimeout(r, 5000));
    expect(traffic.ok).toBeGreaterThan(okBefore);
    expect(traffic.failures).toEqual([]);
    expect(traffic.ok).toBeGreaterThan(100);
  }, 180_000);
});
