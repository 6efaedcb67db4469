import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { issuerIdFromKeyId, readCrl } from "../../formats/crl";
import { parsePemBlocks, pemDecodeAll } from "../../formats/pem";
import {
  type AgentProcess,
  currentFiles,
  fingerprint,
  freePort,
  startAgent,
  waitFor,
} from "../helpers/agent";
import { type RunResult, type ServerProcess, STINT, startServer } from "../helpers/cli";
import { type Nginx, startNginx } from "../helpers/nginx";
import { tempDir } from "../helpers/openssl";

/**
 * The whole rotation runbook against Debian's nginx, reloaded only by the
 * agents' --exec hooks. Two nginx servers require client certificates
 * (ssl_verify_depth 3, as the README says), each on its own agent's files:
 * "crl" trusts bundle.pem and checks crls.pem; "plain" trusts bundle.pem
 * alone, and its agent writes no CRLs, so only a new certificate or bundle
 * reloads it (the CRLs' frequent reloads would hide a missed one). A Node client presents a third agent's certificate on a fresh
 * connection (a full mTLS handshake) to each in turn, every few milliseconds,
 * through rotate → taint → admin-cert → revoke-issuer → root prepare → root
 * activate → root retire. No handshake may fail, and every phase must have
 * seen handshakes with both, so the count cannot be zero by accident. Leaves
 * live 60 s.
 */

const TD = "nginx-rotation.example";
const LEAF_TTL = "60s";
const dir = tempDir("stint-nginx-rotation-e2e-");
const dataDir = join(dir, "ca");
const SERVERS = ["crl", "plain"] as const;
type ServerName = (typeof SERVERS)[number];
const serverOut = (server: ServerName) => join(dir, `out-${server}`);
const clientOut = join(dir, "out-client");
/** Every agent's output directory: the two servers' and the client's. */
const allOuts = [...SERVERS.map(serverOut), clientOut];

type Phase =
  | "start"
  | "rotate"
  | "taint"
  | "admin-cert"
  | "revoke-issuer"
  | "root prepare"
  | "root activate"
  | "root retire";
const PHASES: Phase[] = [
  "start",
  "rotate",
  "taint",
  "admin-cert",
  "revoke-issuer",
  "root prepare",
  "root activate",
  "root retire",
];

/** Handshakes counted per server and phase of the runbook; a phase starts when its command succeeded. */
const traffic = {
  phase: "start" as Phase,
  handshakes: Object.fromEntries(
    SERVERS.map((server) => [server, Object.fromEntries(PHASES.map((phase) => [phase, 0]))]),
  ) as Record<ServerName, Record<Phase, number>>,
  /** Failed handshakes, counted by server, phase and reason (nginx's for a refusal, else the client's error). */
  failures: {} as Record<string, number>,
  running: true,
  loop: Promise.resolve(),
};

let ca: ServerProcess;
const agents: { name: string; agent: AgentProcess }[] = [];
const nginx = {} as Record<ServerName, Nginx>;
const ports = {} as Record<ServerName, number>;

/**
 * Runs the built CLI against the CA's data directory without blocking: the
 * handshakes go on meanwhile (a spawnSync of a slow command would stall them
 * and fire their timeouts).
 */
function run(args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [STINT, ...args, "--data-dir", dataDir],
      { env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp" }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function runOk(args: string[]): Promise<string> {
  const r = await run(args);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** Runs one step of the runbook and starts counting handshakes under its name. */
async function step(phase: Phase, args: string[]): Promise<string> {
  const out = await runOk(args);
  traffic.phase = phase;
  return out;
}

/** Retries a step the CA refuses while certificates are still moving (matching `refusal`), then counts under `phase`. */
async function stepWhenAccepted(phase: Phase, args: string[], refusal: RegExp): Promise<void> {
  const until = Date.now() + 90_000;
  for (;;) {
    const r = await run(args);
    if (r.code === 0) break;
    if (!refusal.test(r.stderr)) throw new Error(`stint ${args.join(" ")}: unexpected refusal: ${r.stderr}`);
    if (Date.now() > until) throw new Error(`timed out waiting for stint ${args.join(" ")}: ${r.stderr}`);
    await new Promise((resume) => setTimeout(resume, 500));
  }
  traffic.phase = phase;
}

async function issuers(): Promise<{ id: string; kind: string; state: string }[]> {
  return JSON.parse(await runOk(["ca", "status", "--json"])).issuers;
}

async function activeIntermediate(): Promise<string> {
  return (await issuers()).find((i) => i.kind === "intermediate" && i.state === "active")!.id;
}

/** The issuer id of an agent's leaf: the first 8 bytes of its authority key identifier, as the CA names issuers. */
function leafIssuerId(outDir: string): string {
  const der = pemDecodeAll(currentFiles(outDir).cert.toString(), "CERTIFICATE", "cert")[0];
  const at = der.indexOf(Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x23]));
  const keyId = der.indexOf(Buffer.from([0x80, 0x14]), at);
  return der.subarray(keyId + 2, keyId + 10).toString("hex");
}

const bundleRoots = (outDir: string) =>
  pemDecodeAll(currentFiles(outDir).bundle.toString(), "CERTIFICATE", "bundle").length;

async function allMovedTo(issuerId: string): Promise<void> {
  await waitFor(
    `every agent on issuer ${issuerId}`,
    () => allOuts.every((o) => leafIssuerId(o) === issuerId),
    90_000,
  );
}

/** Lets the current phase see at least `n` more handshakes with each server, so no phase passes without traffic. */
async function moreHandshakes(n: number): Promise<void> {
  const phase = traffic.phase;
  const least = () => Math.min(...SERVERS.map((server) => traffic.handshakes[server][phase]));
  const target = least() + n;
  await waitFor(`${n} handshakes with each server during ${phase}`, () => least() >= target, 30_000);
}

function fail(what: string): void {
  traffic.failures[what] = (traffic.failures[what] ?? 0) + 1;
}

/** The reason a server logged for the last client certificate it refused, if any. */
function lastRefusal(server: ServerName): string {
  const all = [...nginx[server].errorLog().matchAll(/client SSL certificate verify error: \((\d+:[^)]+)\)/g)];
  return all.at(-1)?.[1] ?? "none logged";
}

/**
 * One request on a fresh connection with the client agent's current files
 * (read as one version, each time), verifying nginx as "localhost" against the
 * client's own bundle.
 */
function handshake(port: number): Promise<{ status: number; body: string }> {
  const files = currentFiles(clientOut);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: "/",
        servername: "localhost",
        ca: files.bundle,
        cert: files.cert,
        key: files.key,
        agent: false,
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => {
          body += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error("nginx did not answer within 10 s")));
    req.on("error", reject);
    req.end();
  });
}

async function tokenFile(name: string, dns: string[]): Promise<string> {
  const token = JSON.parse(
    await runOk(
      [
        "token",
        "create",
        "--spiffe-id",
        `spiffe://${TD}/${name}`,
        "--cert-ttl",
        LEAF_TTL,
        "--json",
        "--server",
        ca.url,
      ].concat(dns.flatMap((d) => ["--dns", d])),
    ),
  ).token as string;
  const file = join(dir, `token-${name}`);
  writeFileSync(file, token, { mode: 0o600 });
  return file;
}

async function startNamedAgent(name: string, outDir: string, extra: string[], dns: string[] = []) {
  const agent = startAgent([
    ...extra,
    "--ca-url",
    ca.url,
    "--ca-fingerprint",
    fingerprint(dataDir),
    "--join-token-file",
    await tokenFile(name, dns),
    "--state-dir",
    join(dir, `state-${name}`),
    "--out-dir",
    outDir,
    "--health-listen",
    "",
    "--backoff-base",
    "200ms",
    "--backoff-cap",
    "2s",
    ...dns.flatMap((d) => ["--dns-names", d]),
  ]);
  agents.push({ name, agent });
}

beforeAll(async () => {
  for (const server of SERVERS) ports[server] = await freePort();
  ca = await startServer([
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--trust-domain",
    TD,
    "--policy-min-ttl",
    "1s",
    "--policy-dns-suffixes",
    "localhost",
    "--bundle-refresh-hint",
    "2s",
    "--feed-poll-interval",
    "250ms",
    // Short CRLs: the "crl" block is reloaded for new CRLs as well, all through the run.
    "--crl-validity",
    "60s",
  ]);

  // The reload command is known before nginx starts: the paths are the test's own.
  const prefix = (server: ServerName) => join(dir, `nginx-${server}`);
  const reload = (server: ServerName) => [
    "--exec",
    `/usr/sbin/nginx -c ${join(prefix(server), "nginx.conf")} -p ${prefix(server)} -s reload`,
  ];
  const noCrls = join(dir, "agent-no-crls.json");
  writeFileSync(noCrls, JSON.stringify({ crls: false }));
  await startNamedAgent("crl", serverOut("crl"), reload("crl"), ["localhost"]);
  await startNamedAgent("plain", serverOut("plain"), ["--config", noCrls, ...reload("plain")], ["localhost"]);
  await startNamedAgent("client", clientOut, []);
  const haveFiles = (outDir: string) => {
    try {
      return currentFiles(outDir).cert.length > 0;
    } catch {
      return false;
    }
  };
  await waitFor("every agent's first certificate", () => allOuts.every(haveFiles), 60_000);

  const file = (server: ServerName, name: string) => join(serverOut(server), name);
  for (const server of SERVERS) {
    nginx[server] = await startNginx(prefix(server), [
      {
        port: ports[server],
        cert: file(server, "cert.pem"),
        key: file(server, "key.pem"),
        clientCa: file(server, "bundle.pem"),
        crl: server === "crl" ? file(server, "crls.pem") : undefined,
      },
    ]);
  }
  traffic.loop = (async () => {
    for (let i = 0; traffic.running; i++) {
      const phase = traffic.phase;
      const server = SERVERS[i % SERVERS.length];
      await handshake(ports[server]).then(
        ({ status, body }) => {
          if (status === 200 && body.startsWith("verified ")) traffic.handshakes[server][phase]++;
          else fail(`${server}, ${phase}: HTTP ${status}, nginx: ${lastRefusal(server)}`);
        },
        (err: Error) => fail(`${server}, ${phase}: ${err.message}`),
      );
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
}, 90_000);

afterAll(async () => {
  traffic.running = false;
  await traffic.loop;
  await Promise.all(Object.values(nginx).map((n) => n.stop()));
  await Promise.all(agents.map((a) => a.agent.stop()));
  await ca?.stop();
  console.log(JSON.stringify({ handshakes: traffic.handshakes, failures: traffic.failures }));
  // Kept on failure, with the agents' logs: with nginx's error log they say what was loaded when.
  if (Object.keys(traffic.failures).length === 0) rmSync(dir, { recursive: true, force: true });
  else {
    for (const { name, agent } of agents) {
      const lines = agent.logs().map((l) => JSON.stringify(l));
      writeFileSync(join(dir, `agent-${name}.log`), lines.join("\n"));
    }
    console.log(`kept ${dir} with nginx's error log and the agents' logs`);
  }
});

it("keeps every mTLS handshake to nginx working through the whole rotation runbook", async () => {
  await moreHandshakes(10);

  // Routine rotation, then the admin certificate: the admin API accepts one from the active intermediate only.
  const first = await activeIntermediate();
  const rotated = JSON.parse(await step("rotate", ["ca", "rotate", "--json", "--insecure-no-passphrase"]));
  expect(rotated.retired.id).toBe(first);
  await runOk(["ca", "admin-cert"]);
  // Agents move at their normal renewal, each at its own time: peers on both intermediates meet.
  await allMovedTo(rotated.activated.id);
  await moreHandshakes(10);

  // Suspected compromise: rotate again and taint the one just left; ARI pulls the renewals forward.
  const tainted = await activeIntermediate();
  const next = JSON.parse(await runOk(["ca", "rotate", "--json", "--insecure-no-passphrase"])).activated
    .id as string;
  await step("taint", ["ca", "taint", tainted]);
  await allMovedTo(next);
  await moreHandshakes(10);

  // No agent renews the admin certificate, from the tainted intermediate since the first step: revoke-issuer
  // refuses until `ca admin-cert` replaces it, as the runbook says.
  expect(await run(["ca", "revoke-issuer", tainted])).toMatchObject({
    code: 1,
    stderr: expect.stringMatching(/have not been replaced yet/),
  });
  await step("admin-cert", ["ca", "admin-cert"]);
  await moreHandshakes(5);
  // The CA's own TLS certificate may still be moving: retry as an operator watching the metric would.
  await stepWhenAccepted("revoke-issuer", ["ca", "revoke-issuer", tainted], /have not been replaced yet/);
  // The "crl" block is reloaded with the root's CRL naming the revoked intermediate (the only revocation here).
  await waitFor("the root CRL with the revoked intermediate in crls.pem", () =>
    parsePemBlocks(readFileSync(join(serverOut("crl"), "crls.pem"), "utf8")).some(
      (b) => readCrl(b.der).revoked.length > 0,
    ),
  );
  await moreHandshakes(10);

  // Root rotation.
  const oldRoot = (await issuers()).find((i) => i.kind === "root" && i.state === "active")!.id;
  await step("root prepare", ["ca", "root", "prepare", "--json", "--insecure-no-passphrase"]);
  await waitFor("every agent's bundle to hold both roots", () => allOuts.every((o) => bundleRoots(o) === 2));
  await moreHandshakes(5);
  await stepWhenAccepted(
    "root activate",
    ["ca", "root", "activate", "--insecure-no-passphrase", "--bundle-refresh-hint", "2s"],
    /activate after/,
  );
  const activated = await activeIntermediate();
  // The client moves at once (SIGHUP renews now), as the first of a fleet would, while both servers still
  // hold certificates from the old root. It waits only for the "crl" server's agent to fetch the new
  // intermediate's CRL (that agent learns of the intermediate at its next bundle refresh)
  await waitFor("the new intermediate's CRL in the crl server's crls.pem", () =>
    parsePemBlocks(readFileSync(join(serverOut("crl"), "crls.pem"), "utf8")).some((b) => {
      const aki = readCrl(b.der).authorityKeyId;
      return aki !== null && issuerIdFromKeyId(aki) === activated;
    }),
  );
  // ...and for nginx to load it: a reload after the file was seen, with the old worker gone (an old worker
  // still accepts connections for a moment after a reload, with the CRLs it loaded).
  const loaded = nginx.crl.workerGenerations();
  await waitFor(
    "the crl server's nginx to reload with that crls.pem",
    () => nginx.crl.workerGenerations() > loaded && nginx.crl.onlyNewestWorker(),
    60_000,
  );
  agents.find((a) => a.name === "client")!.agent.child.kill("SIGHUP");
  await allMovedTo(activated);
  // The client now presents leaf → new intermediate → cross-certificate (the new root signed by the old one).
  const chain = pemDecodeAll(currentFiles(clientOut).cert.toString(), "CERTIFICATE", "chain");
  expect(chain).toHaveLength(3);
  expect(new X509Certificate(chain[2]).issuer).toContain(oldRoot);
  await moreHandshakes(10);

  await runOk(["ca", "admin-cert"]);
  await stepWhenAccepted("root retire", ["ca", "root", "retire"], /have not been replaced/);
  await waitFor("every agent's bundle to drop the old root", () =>
    allOuts.every((o) => bundleRoots(o) === 1),
  );
  // nginx now trusts the new root alone (the hooks reloaded it); keep talking a while.
  await moreHandshakes(25);

  expect(traffic.failures).toEqual({});
  for (const server of SERVERS)
    for (const phase of PHASES)
      expect({ server, phase, seen: traffic.handshakes[server][phase] > 0 }).toEqual({
        server,
        phase,
        seen: true,
      });
}, 360_000);
