import { X509Certificate } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { pemDecodeAll } from "../../formats/pem";
import {
  type AgentProcess,
  currentFiles,
  fingerprint,
  freePort,
  startAgent,
  waitFor,
} from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { type Nginx, startNginx } from "../helpers/nginx";
import { tempDir } from "../helpers/openssl";

/**
 * The whole rotation runbook against Debian's nginx, reloaded only by the
 * agent's --exec hook: nginx requires client certificates, trusting the
 * agent's bundle.pem and checking its crls.pem (ssl_verify_depth 3, as the
 * README says), while a Node client presents another agent's certificate on a
 * fresh connection (a full mTLS handshake) every few milliseconds through
 * rotate → taint → admin-cert → revoke-issuer → root prepare → root activate →
 * root retire. No handshake may fail, and every phase must have seen
 * handshakes, so the count cannot be zero by accident. Leaves live 60 s.
 */

const TD = "nginx-rotation.example";
const LEAF_TTL = "60s";
const dir = tempDir("stint-nginx-rotation-e2e-");
const dataDir = join(dir, "ca");
const nginxOut = join(dir, "out-nginx");
const clientOut = join(dir, "out-client");
const prefix = join(dir, "nginx");

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

/** Handshakes and failures counted per phase of the runbook; a phase starts when its command succeeded. */
const traffic = {
  phase: "start" as Phase,
  handshakes: Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>,
  /** Failed handshakes, counted by phase and reason (nginx's for a refusal, else the client's error). */
  failures: {} as Record<string, number>,
  running: true,
  loop: Promise.resolve(),
};

let ca: ServerProcess;
let nginxAgent: AgentProcess;
let clientAgent: AgentProcess;
let nginx: Nginx;
let port = 0;

function runOk(args: string[]): string {
  const r = stint([...args, "--data-dir", dataDir]);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** Runs one step of the runbook and starts counting handshakes under its name. */
function step(phase: Phase, args: string[]): string {
  const out = runOk(args);
  traffic.phase = phase;
  return out;
}

function issuers(): { id: string; kind: string; state: string }[] {
  return JSON.parse(runOk(["ca", "status", "--json"])).issuers;
}

const activeIntermediate = () => issuers().find((i) => i.kind === "intermediate" && i.state === "active")!.id;

/** The issuer id of an agent's leaf: the first 8 bytes of its authority key identifier, as the CA names issuers. */
function leafIssuerId(outDir: string): string {
  const der = pemDecodeAll(currentFiles(outDir).cert.toString(), "CERTIFICATE", "cert")[0];
  const at = der.indexOf(Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x23]));
  const keyId = der.indexOf(Buffer.from([0x80, 0x14]), at);
  return der.subarray(keyId + 2, keyId + 10).toString("hex");
}

const bundleRoots = (outDir: string) =>
  pemDecodeAll(currentFiles(outDir).bundle.toString(), "CERTIFICATE", "bundle").length;

async function bothMovedTo(issuerId: string): Promise<void> {
  await waitFor(
    `both agents on issuer ${issuerId}`,
    () => [nginxOut, clientOut].every((o) => leafIssuerId(o) === issuerId),
    90_000,
  );
}

/** Lets the current phase see at least `n` more handshakes, so no phase passes without traffic. */
async function moreHandshakes(n: number): Promise<void> {
  const phase = traffic.phase;
  const target = traffic.handshakes[phase] + n;
  await waitFor(`${n} handshakes during ${phase}`, () => traffic.handshakes[phase] >= target, 30_000);
}

/** Retries a step the CA refuses until the agents have moved (matching `refusal`), then runs it as `phase`. */
async function stepWhenAccepted(phase: Phase, args: string[], refusal: RegExp): Promise<void> {
  await waitFor(
    `stint ${args.join(" ")} to be accepted`,
    () => {
      const r = stint([...args, "--data-dir", dataDir]);
      if (r.code === 0) return true;
      if (!refusal.test(r.stderr))
        throw new Error(`stint ${args.join(" ")}: unexpected refusal: ${r.stderr}`);
      return false;
    },
    90_000,
  );
  traffic.phase = phase;
}

function fail(what: string): void {
  traffic.failures[what] = (traffic.failures[what] ?? 0) + 1;
}

/** The reason nginx logged for the last refused client certificate, if any. */
function lastRefusal(): string {
  const all = [...nginx.errorLog().matchAll(/client SSL certificate verify error: \((\d+:[^)]+)\)/g)];
  return all.at(-1)?.[1] ?? "none logged";
}

/**
 * One request on a fresh connection with the client agent's current files
 * (read as one version, each time), verifying nginx as "localhost" against the
 * client's own bundle.
 */
function handshake(): Promise<{ status: number; body: string }> {
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

function agentArgs(name: string, outDir: string, tokenFile: string, extra: string[]): string[] {
  return [
    "--ca-url",
    ca.url,
    "--ca-fingerprint",
    fingerprint(dataDir),
    "--join-token-file",
    tokenFile,
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
    ...extra,
  ];
}

function tokenFor(name: string, dns: string[]): string {
  const token = JSON.parse(
    runOk(
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

beforeAll(async () => {
  port = await freePort();
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
    // Short CRLs: nginx is reloaded for new CRLs as well, all through the run.
    "--crl-validity",
    "60s",
  ]);

  // The reload command is known before nginx starts: the paths are the test's own.
  const reload = `/usr/sbin/nginx -c ${join(prefix, "nginx.conf")} -p ${prefix} -s reload`;
  nginxAgent = startAgent(
    agentArgs("nginx", nginxOut, tokenFor("nginx", ["localhost"]), [
      "--dns-names",
      "localhost",
      "--exec",
      reload,
    ]),
  );
  clientAgent = startAgent(agentArgs("client", clientOut, tokenFor("client", []), []));
  const haveFiles = (outDir: string) => {
    try {
      const v = currentFiles(outDir);
      return v.cert.length > 0;
    } catch {
      return false;
    }
  };
  await waitFor("both agents' first certificates", () => haveFiles(nginxOut) && haveFiles(clientOut), 60_000);

  nginx = await startNginx(prefix, [
    {
      port,
      cert: join(nginxOut, "cert.pem"),
      key: join(nginxOut, "key.pem"),
      clientCa: join(nginxOut, "bundle.pem"),
      crl: join(nginxOut, "crls.pem"),
    },
  ]);
  traffic.loop = (async () => {
    while (traffic.running) {
      const phase = traffic.phase;
      await handshake().then(
        ({ status, body }) => {
          if (status === 200 && body.startsWith("verified ")) traffic.handshakes[phase]++;
          else fail(`${phase}: HTTP ${status}, nginx: ${lastRefusal()}`);
        },
        (err: Error) => fail(`${phase}: ${err.message}`),
      );
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
}, 90_000);

afterAll(async () => {
  traffic.running = false;
  await traffic.loop;
  await nginx?.stop();
  await Promise.all([nginxAgent?.stop(), clientAgent?.stop()]);
  await ca?.stop();
  console.log(JSON.stringify({ handshakes: traffic.handshakes, failures: traffic.failures }));
  // Kept on failure, with the agents' logs: with nginx's error log they say what was loaded when.
  if (Object.keys(traffic.failures).length === 0) rmSync(dir, { recursive: true, force: true });
  else {
    writeFileSync(
      join(dir, "agent-nginx.log"),
      nginxAgent
        .logs()
        .map((l) => JSON.stringify(l))
        .join("\n"),
    );
    writeFileSync(
      join(dir, "agent-client.log"),
      clientAgent
        .logs()
        .map((l) => JSON.stringify(l))
        .join("\n"),
    );
    console.log(`kept ${dir} with nginx's error log and the agents' logs`);
  }
});

it("keeps every mTLS handshake to nginx working through the whole rotation runbook", async () => {
  await moreHandshakes(20);

  // Routine rotation: agents move at their normal renewal.
  const first = activeIntermediate();
  const rotated = JSON.parse(step("rotate", ["ca", "rotate", "--json", "--insecure-no-passphrase"]));
  expect(rotated.retired.id).toBe(first);
  // The runbook's second step: the admin API accepts only an admin certificate from the active intermediate.
  runOk(["ca", "admin-cert"]);
  await bothMovedTo(rotated.activated.id);
  await moreHandshakes(20);

  // Suspected compromise: rotate again, taint the one just left; ARI pulls the renewals forward.
  const tainted = activeIntermediate();
  const next = JSON.parse(runOk(["ca", "rotate", "--json", "--insecure-no-passphrase"])).activated
    .id as string;
  step("taint", ["ca", "taint", tainted]);
  await bothMovedTo(next);
  await moreHandshakes(20);

  // The admin certificate is the last one under the tainted intermediate: revoke-issuer refuses until it is renewed.
  const refused = stint(["ca", "revoke-issuer", tainted, "--data-dir", dataDir]);
  expect(refused).toMatchObject({ code: 1, stderr: expect.stringMatching(/have not been replaced yet/) });
  step("admin-cert", ["ca", "admin-cert"]);
  await moreHandshakes(10);
  // The CA's own TLS certificate may still be moving; wait for it like an operator watching the metric.
  await stepWhenAccepted("revoke-issuer", ["ca", "revoke-issuer", tainted], /have not been replaced yet/);
  // nginx gets the root CRL naming the revoked intermediate from the agent, and keeps accepting the live client.
  await moreHandshakes(20);

  // Root rotation.
  const oldRoot = issuers().find((i) => i.kind === "root" && i.state === "active")!.id;
  step("root prepare", ["ca", "root", "prepare", "--json", "--insecure-no-passphrase"]);
  await waitFor("both agents' bundles to hold both roots", () =>
    [nginxOut, clientOut].every((o) => bundleRoots(o) === 2),
  );
  await moreHandshakes(10);
  await stepWhenAccepted(
    "root activate",
    ["ca", "root", "activate", "--insecure-no-passphrase", "--bundle-refresh-hint", "2s"],
    /activate after/,
  );
  const activated = activeIntermediate();
  await bothMovedTo(activated);
  // The client now presents leaf → new intermediate → cross-certificate (the new root signed by the old one).
  const chain = pemDecodeAll(currentFiles(clientOut).cert.toString(), "CERTIFICATE", "chain");
  expect(chain).toHaveLength(3);
  expect(new X509Certificate(chain[2]).issuer).toContain(oldRoot);
  await moreHandshakes(20);

  runOk(["ca", "admin-cert"]);
  await stepWhenAccepted("root retire", ["ca", "root", "retire"], /have not been replaced/);
  await waitFor("both agents' bundles to drop the old root", () =>
    [nginxOut, clientOut].every((o) => bundleRoots(o) === 1),
  );
  // Past the bundle switch nginx runs on the new root alone (the hook reloaded it); keep talking a while.
  await moreHandshakes(50);

  expect(traffic.failures).toEqual({});
  for (const phase of PHASES)
    expect({ phase, handshakes: traffic.handshakes[phase] > 0 }).toEqual({ phase, handshakes: true });
}, 360_000);
