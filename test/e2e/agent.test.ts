import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { get as httpGet } from "node:http";
import { createServer as createHttpsServer, type Server } from "node:https";
import { join } from "node:path";
import * as tls from "node:tls";
import { pemDecodeAll } from "../../formats/pem";
import { FeedFile } from "../../verify/feed";
import {
  type AgentProcess,
  currentFiles,
  fingerprint,
  freePort,
  startAgent,
  waitFor,
} from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { bootstrapPki, openssl, tempDir } from "../helpers/openssl";

/**
 * `stint agent` as real processes against a real CA whose certificates live
 * seconds: renewals, the reload hook, an mTLS server that re-reads the files,
 * a CA outage, 200 kills mid-renewal, and bad inputs in --once mode.
 */

const TD = "agent.example";
const SPIFFE_ID = `spiffe://${TD}/svc/web`;
const dir = tempDir("stint-agent-e2e-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CA_ARGS = (dataDir: string, port: number) => [
  "--insecure-no-passphrase",
  "--data-dir",
  dataDir,
  "--trust-domain",
  TD,
  "--policy-min-ttl",
  "1s",
  "--listen",
  `127.0.0.1:${port}`,
];

function joinTokenFile(dataDir: string, url: string, certTtl: string): string {
  const r = stint([
    "token",
    "create",
    "--spiffe-id",
    SPIFFE_ID,
    "--cert-ttl",
    certTtl,
    "--json",
    "--data-dir",
    dataDir,
    "--server",
    url,
  ]);
  if (r.code !== 0) throw new Error(r.stderr);
  const path = join(dir, `token-${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, JSON.parse(r.stdout).token, { mode: 0o600 });
  return path;
}

/** The set on disk; throws unless it is a matching pair that chains to bundle.pem. */
function readSet(outDir: string): { serial: string; notAfter: number } {
  const files = currentFiles(outDir);
  const chain = pemDecodeAll(files.cert.toString(), "CERTIFICATE", "cert.pem").map(
    (d) => new X509Certificate(d),
  );
  const key = createPrivateKey(files.key);
  const roots = pemDecodeAll(files.bundle.toString(), "CERTIFICATE", "bundle").map(
    (d) => new X509Certificate(d),
  );
  const pub = (k: ReturnType<typeof createPublicKey>) =>
    k.export({ type: "spki", format: "der" }).toString("hex");
  if (pub(chain[0].publicKey) !== pub(createPublicKey(key)))
    throw new Error("key.pem does not match cert.pem");
  if (!chain[0].verify(chain[1].publicKey)) throw new Error("leaf not signed by the intermediate");
  if (!roots.some((r) => chain[1].verify(r.publicKey)))
    throw new Error("intermediate does not chain to bundle.pem");
  return { serial: chain[0].serialNumber, notAfter: Date.parse(chain[0].validTo) };
}

function httpJson(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    httpGet(url, (res) => {
      let body = "";
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

describe("an agent beside a workload", () => {
  const dataDir = join(dir, "ca");
  const outDir = join(dir, "out");
  const stateDir = join(dir, "state");
  const hookLog = join(dir, "hook.log");
  let caPort: number;
  let ca: ServerProcess;
  let agent: AgentProcess;
  let mtls: Server;

  const pki = bootstrapPki(dir, "bootstrap", "web-1");

  beforeAll(async () => {
    caPort = await freePort();
    ca = await startServer([...CA_ARGS(dataDir, caPort), "--attest-x509pop-bundle-file", pki.caPath]);
    // x509pop can attest again after an expiry (a join token cannot), which the outage test needs.
    const entry = stint(
      [
        "entry",
        "create",
        "--spiffe-id",
        SPIFFE_ID,
        "--selector",
        "x509pop:subject:cn:web-1",
        "--ttl",
        "12s",
      ].concat(["--data-dir", dataDir, "--server", ca.url]),
    );
    expect(entry.code).toBe(0);
    const hook = join(dir, "hook.js");
    // The hook records which certificate it saw; run without a shell, so its argument arrives verbatim.
    writeFileSync(
      hook,
      `const fs = require("fs"); const { X509Certificate } = require("crypto");
       const c = new X509Certificate(fs.readFileSync(process.argv[2] + "/cert.pem"));
       fs.appendFileSync(${JSON.stringify(hookLog)}, c.serialNumber + "\\n");`,
    );
    agent = startAgent([
      "--ca-url",
      ca.url,
      "--ca-fingerprint",
      fingerprint(dataDir),
      "--spiffe-id",
      SPIFFE_ID,
      "--state-dir",
      stateDir,
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
      "--backoff-base",
      "200ms",
      "--backoff-cap",
      "2s",
      "--exec",
      `${process.execPath} ${hook} '${outDir}'`,
    ]);
    await waitFor("the first certificate", () => existsSync(join(outDir, "cert.pem")));
  }, 60_000);

  afterAll(async () => {
    await agent?.stop();
    await ca?.stop();
    mtls?.close();
  });

  it("keeps a matching set on disk across renewals, runs the hook after each switch, and mTLS keeps working", async () => {
    // A server that re-reads the files for every handshake, as a reloading workload would.
    const context = () => {
      const f = currentFiles(outDir);
      return tls.createSecureContext({ cert: f.cert, key: f.key, ca: f.bundle });
    };
    mtls = createHttpsServer(
      { SNICallback: (_name, cb) => cb(null, context()), requestCert: true, rejectUnauthorized: true },
      (req, res) => {
        const peer = (req.socket as tls.TLSSocket).getPeerCertificate();
        res.end(peer.subjectaltname ?? "");
      },
    );
    await new Promise<void>((r) => mtls.listen(0, "127.0.0.1", r));
    const port = (mtls.address() as { port: number }).port;
    const handshake = () =>
      new Promise<string>((resolve, reject) => {
        const f = currentFiles(outDir);
        const s = tls.connect({
          host: "127.0.0.1",
          port,
          servername: "workload.local",
          cert: f.cert,
          key: f.key,
          ca: f.bundle,
          // SPIFFE certificates name no host: check the SPIFFE ID instead.
          checkServerIdentity: (_host, cert) =>
            cert.subjectaltname === `URI:${SPIFFE_ID}`
              ? undefined
              : new Error(`peer is ${cert.subjectaltname}`),
        });
        s.on("secureConnect", () => {
          s.end("GET / HTTP/1.0\r\n\r\n");
        });
        let body = "";
        s.on("data", (d) => {
          body += d;
        });
        s.on("end", () => resolve(body));
        s.on("error", reject);
      });

    const serials = new Set<string>();
    let handshakes = 0;
    const until = Date.now() + 40_000;
    while (Date.now() < until && serials.size < 4) {
      serials.add(readSet(outDir).serial);
      expect(await handshake()).toContain(`URI:${SPIFFE_ID}`);
      handshakes++;
      await new Promise((r) => setTimeout(r, 150));
    }
    expect(serials.size).toBeGreaterThanOrEqual(3);
    expect(handshakes).toBeGreaterThan(50);

    // The hook runs just after each switch: the last one may still be under way.
    const hooked = await waitFor("the hook to see every certificate", () => {
      const seen = readFileSync(hookLog, "utf8").trim().split("\n");
      return [...serials].every((serial) => seen.includes(serial)) && seen;
    });
    for (const serial of serials) expect(hooked).toContain(serial);
    const ran = agent.logs().filter((l) => l.msg === "reload command ran");
    expect(ran.length).toBeGreaterThanOrEqual(serials.size);
    expect(ran[0]).toMatchObject({ code: 0 });

    // Only the current version directory survives each switch.
    expect(readdirSync(outDir).filter((n) => n.startsWith("..") && n !== "..data")).toHaveLength(1);
    // The top-level names consumers configure point into the current version.
    expect(readFileSync(join(outDir, "key.pem"))).toEqual(currentFiles(outDir).key);
  }, 60_000);

  it("syncs the CA's revocation feed beside the credentials, verified", async () => {
    const file = await FeedFile.open(join(outDir, "feed.bin"), currentFiles(outDir).bundle.toString());
    expect(file.view()).toMatchObject({ sequence: expect.any(Number) });
    file.close();
  });

  it("reports health and metrics on its local endpoint", async () => {
    const url = (agent.logs().find((l) => l.msg === "health endpoint listening") as { url: string }).url;
    const health = await httpJson(`${url}/health`);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({
      state: "ok",
      spiffeId: SPIFFE_ID,
      renewalsOk: expect.any(Number),
    });
    const metrics = await httpJson(`${url}/metrics`);
    expect(metrics.body).toMatch(/stint_agent_certificate_expiry_seconds \d/);
    expect(metrics.body).toMatch(/stint_agent_renewals_total\{result="ok"\} [1-9]/);
  });

  it("survives a CA outage longer than the renewal margin: keeps the old set, backs off, re-attests when the CA returns", async () => {
    const before = readSet(outDir);
    await ca.stop();
    const stoppedAt = Date.now();
    const failed = () =>
      agent
        .logs()
        .filter(
          (l) =>
            l.msg === "renewal failed; keeping the current files and retrying" &&
            Date.parse(l.time as string) >= stoppedAt,
        );
    // Down past the certificate's expiry: renewal comes due, fails, and the certificate expires.
    const failures = await waitFor(
      "the certificate to expire during the outage",
      () => {
        const f = failed();
        return f.length >= 6 && Date.now() > before.notAfter + 1000 && f;
      },
      40_000,
    );
    // The old set stayed in place throughout: nothing partial, nothing removed.
    expect(readSet(outDir).serial).toBe(before.serial);
    // Full jitter: each delay is within base·2^(attempt-1), capped at 2 s; attempts count up; the spacing follows the delays.
    const delays = failures.map((f) => ({
      attempt: f.attempt as number,
      seconds: f.retryInSeconds as number,
      at: Date.parse(f.time as string),
    }));
    for (const d of delays)
      expect(d.seconds).toBeLessThanOrEqual(Math.min(2, 0.2 * 2 ** (d.attempt - 1)) + 0.1);
    expect(delays.map((d) => d.attempt)).toEqual(delays.map((_, i) => delays[0].attempt + i));
    for (let i = 1; i < delays.length; i++)
      expect(delays[i].at - delays[i - 1].at).toBeGreaterThanOrEqual(delays[i - 1].seconds * 1000 - 50);
    // Before expiry the delays stop at the expiry; after it they reach the cap.
    expect(Math.max(...delays.map((d) => d.seconds))).toBeGreaterThan(0.2);

    ca = await startServer([...CA_ARGS(dataDir, caPort), "--attest-x509pop-bundle-file", pki.caPath]);
    await waitFor(
      "a new certificate after the CA returned",
      () => {
        try {
          return readSet(outDir).serial !== before.serial;
        } catch {
          return false;
        }
      },
      30_000,
    );
    expect(agent.logs().some((l) => l.msg === "enrolled" && Date.parse(l.time as string) > stoppedAt)).toBe(
      true,
    );
    const health = await httpJson(
      `${(agent.logs().find((l) => l.msg === "health endpoint listening") as { url: string }).url}/health`,
    );
    // Recovered: holding a valid certificate again (possibly renewing it right now).
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({
      state: expect.stringMatching(/^(ok|renewing)$/),
      renewalsFailed: expect.any(Number),
    });
  }, 90_000);
});

describe("an agent that cannot renew", () => {
  /** The agent's /health, once its endpoint is listening. */
  const health = async (agent: AgentProcess) => {
    const line = await waitFor("the health endpoint", () =>
      agent.logs().find((l) => l.msg === "health endpoint listening"),
    );
    const r = await httpJson(`${(line as { url: string }).url}/health`);
    return { status: r.status, body: JSON.parse(r.body) as Record<string, unknown> };
  };
  /** waitFor for a probe that must ask over HTTP. */
  const waitForAsync = async <T>(what: string, probe: () => Promise<T | false>, timeoutMs = 30_000) => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v) return v;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  it("says so once its certificate is revoked and its token spent (503 reattest-needed), then takes a new token file without a signal", async () => {
    const dataDir = join(dir, "ca-revoked");
    const outDir = join(dir, "out-revoked");
    const ca = await startServer(CA_ARGS(dataDir, 0));
    const tokenFile = joinTokenFile(dataDir, ca.url, "60s");
    const agent = startAgent([
      "--ca-url",
      ca.url,
      "--ca-fingerprint",
      fingerprint(dataDir),
      "--spiffe-id",
      SPIFFE_ID,
      "--state-dir",
      join(dir, "state-revoked"),
      "--out-dir",
      outDir,
      "--join-token-file",
      tokenFile,
      "--health-listen",
      "127.0.0.1:0",
      "--backoff-base",
      "200ms",
      "--backoff-cap",
      "1s",
    ]);
    try {
      await waitFor("the first certificate", () => existsSync(join(outDir, "cert.pem")));
      const first = readSet(outDir);
      const revoked = stint(["cert", "revoke", first.serial, "--data-dir", dataDir, "--server", ca.url]);
      expect(revoked.code).toBe(0);

      // ARI pulls the window forward; the renewal is refused and the token is spent.
      await waitForAsync(
        "health to report reattest-needed after a few refused renewals",
        async () => {
          const seen = await health(agent);
          return seen.body.state === "reattest-needed" && (seen.body.renewalsFailed as number) >= 3;
        },
        // A deadline, not a timing claim: alone this takes about 15 s; a loaded CI run once needed more than 40.
        80_000,
      );
      const h = await health(agent);
      expect([h.status, h.body.state]).toEqual([503, "reattest-needed"]);
      expect(h.body.secondsUntilExpiry as number).toBeGreaterThan(0);
      // What to do is said once, naming the file to write; the retries do not repeat it.
      const told = agent
        .logs()
        .filter((l) => l.msg === "the agent needs new attestation evidence to get a certificate");
      expect(told).toHaveLength(1);
      expect(told[0]).toMatchObject({
        level: "error",
        reason: expect.stringContaining(`to ${tokenFile}: the agent picks it up`),
      });
      expect(
        agent
          .logs()
          .filter(
            (l) => l.level === "warn" && Date.parse(l.time as string) > Date.parse(told[0].time as string),
          ),
      ).toEqual([]);

      // A new token in the same file: picked up with no SIGHUP and no restart.
      writeFileSync(tokenFile, readFileSync(joinTokenFile(dataDir, ca.url, "60s")));
      await waitFor(
        "a new certificate from the new token",
        () => {
          try {
            return readSet(outDir).serial !== first.serial;
          } catch {
            return false;
          }
        },
        20_000,
      );
      expect(agent.logs().some((l) => l.msg === "new attestation evidence found; attesting again")).toBe(
        true,
      );
      const after = await waitForAsync("health to turn ok", async () => {
        const r = await health(agent);
        return r.status === 200 && r;
      });
      expect(after.body.state).toBe("ok");
    } finally {
      await agent.stop();
      await ca.stop();
    }
  }, 150_000);

  it("in daemon mode, waits with backoff for a CA that is not up yet instead of exiting", async () => {
    const dataDir = join(dir, "ca-late");
    const outDir = join(dir, "out-late");
    const init = stint([
      "ca",
      "init",
      "--insecure-no-passphrase",
      "--data-dir",
      dataDir,
      "--trust-domain",
      TD,
    ]);
    expect(init.code).toBe(0);
    const port = await freePort();
    const tokenFile = join(dir, "token-late");
    const agent = startAgent([
      "--ca-url",
      `https://127.0.0.1:${port}`,
      "--ca-fingerprint",
      fingerprint(dataDir),
      "--spiffe-id",
      SPIFFE_ID,
      "--state-dir",
      join(dir, "state-late"),
      "--out-dir",
      outDir,
      "--join-token-file",
      tokenFile,
      "--health-listen",
      "",
      "--backoff-base",
      "200ms",
      "--backoff-cap",
      "1s",
    ]);
    let ca: ServerProcess | null = null;
    try {
      const retries = await waitFor("retries while the CA is down", () => {
        const r = agent.logs().filter((l) => l.msg === "cannot reach the CA yet; retrying");
        return r.length >= 3 && r;
      });
      expect(agent.child.exitCode).toBeNull();
      expect(retries.map((r) => r.attempt)).toEqual([1, 2, 3, ...retries.slice(3).map((_, i) => i + 4)]);
      ca = await startServer(CA_ARGS(dataDir, port));
      writeFileSync(tokenFile, readFileSync(joinTokenFile(dataDir, ca.url, "60s")));
      await waitFor(
        "the first certificate once the CA is up",
        () => existsSync(join(outDir, "cert.pem")),
        30_000,
      );
      expect(readSet(outDir).notAfter).toBeGreaterThan(Date.now());
    } finally {
      await agent.stop();
      await ca?.stop();
    }
  }, 90_000);
});

describe("the reload hook", () => {
  it("runs when bundle.pem changes (root prepare), not only when the certificate does", async () => {
    const dataDir = join(dir, "ca-hook");
    const outDir = join(dir, "out-hook");
    const hookLog = join(dir, "hook-bundle.log");
    const ca = await startServer(CA_ARGS(dataDir, 0));
    const hook = join(dir, "hook-bundle.js");
    // Records the certificate and how many roots bundle.pem holds at each reload.
    writeFileSync(
      hook,
      `const fs = require("fs"); const { X509Certificate } = require("crypto");
       const c = new X509Certificate(fs.readFileSync(process.argv[2] + "/cert.pem"));
       const roots = fs.readFileSync(process.argv[2] + "/bundle.pem", "utf8").split("BEGIN CERTIFICATE").length - 1;
       fs.appendFileSync(${JSON.stringify(hookLog)}, c.serialNumber + " " + roots + "\\n");`,
    );
    // Without crls.pem, so only bundle.pem changes (CRL changes already ran the hook).
    const config = join(dir, "agent-hook.json");
    writeFileSync(config, JSON.stringify({ crls: false }));
    const agent = startAgent([
      "--config",
      config,
      "--ca-url",
      ca.url,
      "--ca-fingerprint",
      fingerprint(dataDir),
      "--spiffe-id",
      SPIFFE_ID,
      "--state-dir",
      join(dir, "state-hook"),
      "--out-dir",
      outDir,
      "--join-token-file",
      joinTokenFile(dataDir, ca.url, "10m"),
      "--health-listen",
      "",
      "--bundle-refresh",
      "1s",
      "--exec",
      `${process.execPath} ${hook} '${outDir}'`,
    ]);
    const seen = () => (existsSync(hookLog) ? readFileSync(hookLog, "utf8").trim().split("\n") : []);
    try {
      const [first] = await waitFor("the hook after enrollment", () => seen().length >= 1 && seen());
      const serial = first.split(" ")[0];
      expect(first).toBe(`${serial} 1`);
      const prepared = stint([
        "ca",
        "root",
        "prepare",
        "--json",
        "--insecure-no-passphrase",
        "--data-dir",
        dataDir,
      ]);
      expect(prepared.code).toBe(0);
      // Same certificate, new bundle: the server must be told, or peers under the new root fail.
      const lines = await waitFor(
        "the hook after the bundle changed",
        () => seen().includes(`${serial} 2`) && seen(),
        20_000,
      );
      expect(lines).toEqual([`${serial} 1`, `${serial} 2`]);
    } finally {
      await agent.stop();
      await ca.stop();
    }
  }, 60_000);
});

describe("killed at random points during renewals", () => {
  it("always leaves a complete, matching set (200 kills)", async () => {
    const dataDir = join(dir, "ca-kill");
    const outDir = join(dir, "out-kill");
    const stateDir = join(dir, "state-kill");
    const ca = await startServer(CA_ARGS(dataDir, 0));
    try {
      const common = [
        "--ca-url",
        ca.url,
        "--spiffe-id",
        SPIFFE_ID,
        "--state-dir",
        stateDir,
        "--out-dir",
        outDir,
        "--once",
      ];
      const passwordFile = join(dir, "p12-password");
      writeFileSync(passwordFile, "correct horse\n", { mode: 0o600 });
      const first = stint([
        "agent",
        ...common,
        "--ca-fingerprint",
        fingerprint(dataDir),
        "--join-token-file",
        joinTokenFile(dataDir, ca.url, "1h"),
        "--combined",
        "--pkcs12-password-file",
        passwordFile,
      ]);
      expect(first.code).toBe(0);
      // The optional formats, read by OpenSSL: combined.pem holds the key then the chain; cert.p12 opens with the password.
      const combined = readFileSync(join(outDir, "combined.pem"), "utf8");
      expect(combined.indexOf("PRIVATE KEY")).toBeLessThan(combined.indexOf("BEGIN CERTIFICATE"));
      const p12 = openssl([
        "pkcs12",
        "-in",
        join(outDir, "cert.p12"),
        "-passin",
        "pass:correct horse",
        "-nodes",
      ]);
      expect(p12).toContain("PRIVATE KEY");
      expect(p12).toContain("BEGIN CERTIFICATE");
      expect(statSync(join(outDir, "..data", "key.pem")).mode & 0o777).toBe(0o600);
      const serials = new Set([readSet(outDir).serial]);
      // How long one whole renewal takes on this machine now (it varies with load), so the kills
      // spread over start-up, the request, the write and the switch rather than all landing early.
      const started = Date.now();
      const toEnd = () =>
        new Promise<number | null>((resolve) =>
          startAgent([...common, "--force"]).child.once("exit", (code) => resolve(code)),
        );
      expect(await toEnd()).toBe(0);
      expect(await toEnd()).toBe(0);
      const renewalMs = (Date.now() - started) / 2;
      for (let i = 0; i < 200; i++) {
        const run = startAgent([...common, "--force"]);
        await new Promise((r) => setTimeout(r, renewalMs * (0.3 + Math.random())));
        run.child.kill("SIGKILL");
        await run.stop();
        serials.add(readSet(outDir).serial);
      }
      // Many kills landed after a switch, many before: both sides of the window were hit.
      expect(serials.size).toBeGreaterThan(10);
      expect(serials.size).toBeLessThan(201);
    } finally {
      await ca.stop();
    }
  }, 300_000);
});

describe("bad inputs in --once mode", () => {
  const dataDir = join(dir, "ca-bad");
  let ca: ServerProcess;
  beforeAll(async () => {
    ca = await startServer(CA_ARGS(dataDir, 0));
  }, 60_000);
  afterAll(() => ca?.stop());

  /** `stint agent --once` with a fresh state directory (or the one given) and output under it; stderr's non-log lines. */
  const once = (args: string[], state = join(dir, `state-${Math.random().toString(36).slice(2)}`)) => {
    const r = stint([
      "agent",
      "--once",
      "--spiffe-id",
      SPIFFE_ID,
      "--state-dir",
      state,
      "--out-dir",
      join(state, "out"),
      ...args,
    ]);
    const lines = r.stderr
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("{"));
    return { code: r.code, lines, stderr: r.stderr };
  };

  it.each([
    [
      "a wrong fingerprint",
      () => [
        "--ca-url",
        ca.url,
        "--ca-fingerprint",
        `sha256:${"0".repeat(64)}`,
        "--join-token",
        "x".repeat(43),
      ],
      /serves no root with fingerprint sha256:0{64}/,
    ],
    [
      "an unreachable CA",
      () => ["--ca-url", "https://127.0.0.1:1", "--ca-fingerprint", fingerprint(dataDir)],
      /cannot reach the CA at https:\/\/127\.0\.0\.1:1/,
    ],
    [
      "a bad token",
      () => ["--ca-url", ca.url, "--ca-fingerprint", fingerprint(dataDir), "--join-token", "A".repeat(43)],
      /join token is not known to this CA/,
    ],
    [
      "no token at all",
      () => ["--ca-url", ca.url, "--ca-fingerprint", fingerprint(dataDir)],
      /no join token/,
    ],
    [
      "a malformed fingerprint",
      () => ["--ca-url", ca.url, "--ca-fingerprint", "abc"],
      /caFingerprint|ca-fingerprint.*sha256/,
    ],
  ] as [string, () => string[], RegExp][])(
    "%s: one clear line and a non-zero exit",
    (_name, args, message) => {
      const r = once(args());
      expect(r.code).not.toBe(0);
      expect(r.lines).toHaveLength(1);
      expect(r.lines[0]).toMatch(message);
      expect(r.stderr).not.toContain("A".repeat(43));
    },
  );

  it("an unwritable output directory", () => {
    const file = join(dir, "not-a-dir");
    writeFileSync(file, "");
    const r = once([
      "--ca-url",
      ca.url,
      "--ca-fingerprint",
      fingerprint(dataDir),
      "--join-token",
      "A".repeat(43),
      "--out-dir",
      join(file, "out"),
    ]);
    expect(r.code).not.toBe(0);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/not-a-dir/);
  });

  it("a bundle from a different root", async () => {
    const otherDir = join(dir, "ca-other");
    const other = await startServer(CA_ARGS(otherDir, 0));
    try {
      const state = join(dir, "state-other");
      mkdirSync(state, { recursive: true });
      // The state directory trusts the other CA's root; the agent is then pointed at this CA.
      writeFileSync(join(state, "roots.pem"), readFileSync(join(otherDir, "root.pem")));
      chmodSync(state, 0o700);
      const r = once(["--ca-url", ca.url, "--join-token", "A".repeat(43)], state);
      expect(r.code).not.toBe(0);
      expect(r.lines).toHaveLength(1);
      expect(r.lines[0]).toMatch(/does not chain to the trusted roots/);
    } finally {
      await other.stop();
    }
  }, 60_000);
});
