import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type AgentProcess, fingerprint, startAgent, waitFor } from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * The node agent end to end (issue 14): a real CA, `stint agent
 * --workload-api-socket`, and workloads as separate processes under other
 * uids (setpriv; the suite runs as root) speaking the SPIFFE Workload API and
 * Envoy SDS over the socket with stubs @grpc/proto-loader builds from proto/.
 * Users need no /etc/passwd entry: the kernel reports numeric uids.
 */

const TD = "workload.example";
const NODE_ID = `spiffe://${TD}/node/host1`;
const NODE = realpathSync(process.execPath);
const CLIENT = resolve(__dirname, "fixtures/workload-client.js");
const PROTO = resolve(__dirname, "../../proto");
const UIDS = { web: 65534, api: 1001, db: 1002, stranger: 1003 } as const;

const dir = tempDir("stint-workload-e2e-");
chmodSync(dir, 0o755); // the workloads, not root, must reach the socket inside
const dataDir = join(dir, "ca");
const socket = join(dir, "agent.sock");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = (args: string[]) => stint([...args, "--data-dir", dataDir]);
function runOk(args: string[]): string {
  const r = run(args);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

interface Client {
  child: ChildProcess;
  lines: () => Record<string, unknown>[];
  send: (line: string) => void;
  exited: Promise<number | null>;
}

const children: ChildProcess[] = [];

/** The fixture client as uid `uid` (gid the same), printing JSON lines. */
function client(uid: number, mode: string, ...args: string[]): Client {
  const child = spawn(
    "setpriv",
    [
      "--reuid",
      String(uid),
      "--regid",
      String(uid),
      "--clear-groups",
      NODE,
      CLIENT,
      mode,
      socket,
      PROTO,
      ...args,
    ],
    {
      env: {
        PATH: process.env.PATH ?? "",
        STINT_GRPC: require.resolve("@grpc/grpc-js"),
        STINT_PROTO_LOADER: require.resolve("@grpc/proto-loader"),
        STINT_PROTOBUFJS: require.resolve("protobufjs"),
      },
      stdio: ["pipe", "pipe", "pipe"],
    },
  );
  children.push(child);
  const lines: Record<string, unknown>[] = [];
  let partial = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => {
    const parts = (partial + d.toString()).split("\n");
    partial = parts.pop() ?? "";
    for (const p of parts) if (p.startsWith("{")) lines.push(JSON.parse(p));
  });
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((r) =>
    child.once("exit", (code) => {
      if (code !== 0) lines.push({ crashed: code, stderr });
      r(code);
    }),
  );
  return { child, lines: () => lines, send: (l) => child.stdin!.write(`${l}\n`), exited };
}

/** Runs a one-shot client to its end and returns what it printed. */
async function once(uid: number, mode: string, ...args: string[]): Promise<Record<string, unknown>[]> {
  const c = client(uid, mode, ...args);
  const timer = setTimeout(() => c.child.kill("SIGKILL"), 30_000);
  await c.exited;
  clearTimeout(timer);
  return c.lines();
}

async function nextLine(c: Client, after: number, what: string, timeoutMs = 60_000) {
  return waitFor(what, () => c.lines()[after], timeoutMs);
}

let ca: ServerProcess;
let agent: AgentProcess;

beforeAll(async () => {
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
    // JWT-SVIDs live 3 s here, so one can be seen to expire.
    "--jwt-max-ttl",
    "3s",
  ]);
  const token = JSON.parse(
    runOk(["token", "create", "--spiffe-id", NODE_ID, "--cert-ttl", "10m", "--json", "--server", ca.url]),
  ).token as string;
  const tokenFile = join(dir, "node-token");
  writeFileSync(tokenFile, token, { mode: 0o600 });
  const entry = (name: string, ...selectors: string[]) =>
    runOk([
      "entry",
      "create",
      "--spiffe-id",
      `spiffe://${TD}/${name}`,
      "--parent",
      NODE_ID,
      ...selectors.flatMap((s) => ["--selector", s]),
      "--ttl",
      "20s",
      "--server",
      ca.url,
    ]);
  entry("web", `unix:uid:${UIDS.web}`);
  entry("api", `unix:uid:${UIDS.api}`);
  entry("db", `unix:uid:${UIDS.db}`, `unix:path:${NODE}`);
  // Same uid as db, another executable: db's process proves the uid but not this path.
  entry("db-admin", `unix:uid:${UIDS.db}`, "unix:path:/usr/local/bin/db-admin");
  agent = startAgent([
    "--ca-url",
    ca.url,
    "--ca-fingerprint",
    fingerprint(dataDir),
    "--spiffe-id",
    NODE_ID,
    "--join-token-file",
    tokenFile,
    "--state-dir",
    join(dir, "state"),
    "--out-dir",
    join(dir, "out"),
    "--health-listen",
    "127.0.0.1:0",
    "--backoff-base",
    "200ms",
    "--backoff-cap",
    "2s",
    "--workload-api-socket",
    socket,
  ]);
  await waitFor(
    "the agent's first workload SVIDs",
    () => agent.logs().some((l) => l.msg === "workload SVID issued"),
    60_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; agent logs: ${JSON.stringify(agent.logs().slice(-8))}`);
  });
}, 90_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await agent?.stop();
  await ca?.stop();
});

describe("SPIFFE Workload API", () => {
  it("gives each workload exactly its own SPIFFE ID, attested from the kernel", async () => {
    const [web, api, db] = await Promise.all([
      once(UIDS.web, "fetch"),
      once(UIDS.api, "fetch"),
      once(UIDS.db, "fetch"),
    ]);
    const ids = (lines: Record<string, unknown>[]) =>
      (lines[0] as { svids?: { spiffeId: string; uri: string; keyBytes: number; roots: number }[] }).svids;
    for (const [name, lines] of [
      ["web", web],
      ["api", api],
      ["db", db],
    ] as const) {
      const svids = ids(lines);
      expect(svids).toEqual([
        expect.objectContaining({ spiffeId: `spiffe://${TD}/${name}`, uri: `URI:spiffe://${TD}/${name}` }),
      ]);
      expect(svids![0].keyBytes).toBeGreaterThan(0);
      expect(svids![0].roots).toBe(1);
    }
  });

  it("refuses a process that matches no entry with PermissionDenied naming its uid and path only", async () => {
    const [line] = await once(UIDS.stranger, "fetch");
    expect(line).toEqual({
      error: "PERMISSION_DENIED",
      details: `no identity issued for uid ${UIDS.stranger}, path ${NODE}`,
    });
  });

  it("refuses a call without the workload.spiffe.io header with InvalidArgument", async () => {
    const [line] = await once(UIDS.web, "fetch-noheader");
    expect(line).toEqual({ error: "INVALID_ARGUMENT", details: "security header missing from request" });
  });

  it("streams a new SVID after a renewal and a new bundle after `stint ca root prepare`, on one stream", async () => {
    const c = client(UIDS.api, "stream");
    type Msg = { svids: { serial: string; roots: number }[] };
    const first = (await nextLine(c, 0, "the first message")) as Msg;
    const renewed = (await waitFor(
      "a renewed SVID on the same stream",
      () => (c.lines() as Msg[]).find((m) => m.svids?.[0]?.serial !== first.svids[0].serial),
      60_000,
    )) as Msg;
    expect(renewed.svids[0].roots).toBe(1);
    runOk(["ca", "root", "prepare", "--json", "--insecure-no-passphrase"]);
    const twoRoots = await waitFor(
      "the prepared root in the streamed bundle",
      () => (c.lines() as Msg[]).find((m) => m.svids?.[0]?.roots === 2),
      60_000,
    );
    expect(twoRoots).toBeTruthy();
    expect(c.child.exitCode).toBeNull(); // the client never reconnected: the same process, the same stream
    expect(c.lines().some((l) => "error" in l)).toBe(false);
    c.child.kill("SIGTERM");
  }, 150_000);

  it("keeps a Node mTLS pair fed from FetchX509SVID handshaking through an intermediate rotation", async () => {
    const c = client(UIDS.web, "mtls");
    const first = (await nextLine(c, 0, "the first SVID")) as { issuer: string };
    await new Promise((r) => setTimeout(r, 2000));
    runOk(["ca", "rotate", "--json", "--insecure-no-passphrase"]);
    await waitFor(
      "an SVID from the new intermediate",
      () => c.lines().some((l) => typeof l.issuer === "string" && l.issuer !== first.issuer),
      60_000,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}; client: ${JSON.stringify(c.lines().slice(-4))}; agent: ${JSON.stringify(agent.logs().slice(-6))}`,
      );
    });
    await new Promise((r) => setTimeout(r, 2000)); // handshakes on the new SVID too
    c.child.kill("SIGTERM");
    const stats = (await waitFor("the client's tally", () => c.lines().find((l) => "stats" in l))).stats as {
      ok: number;
      failed: number;
      errors: string[];
      issuers: string[];
    };
    expect(stats.errors).toEqual([]);
    expect(stats.failed).toBe(0);
    expect(stats.ok).toBeGreaterThan(20);
    expect(stats.issuers.length).toBeGreaterThanOrEqual(2);
  }, 120_000);

  it("hands out a JWT-SVID for audience a that validates for a and is refused for b", async () => {
    const lines = await once(UIDS.web, "jwt", "a", "a", "b");
    const fetched = lines[0] as { fetched: string[]; token: string };
    expect(fetched.fetched).toEqual([`spiffe://${TD}/web`]);
    expect(lines[1]).toEqual({ audience: "a", spiffeId: `spiffe://${TD}/web`, sub: `spiffe://${TD}/web` });
    expect(lines[2]).toMatchObject({ audience: "b", error: "INVALID_ARGUMENT" });
    expect(lines[3]).toEqual({ jwtBundles: { [`spiffe://${TD}`]: expect.any(Number) } });
    expect((lines[3] as { jwtBundles: Record<string, number> }).jwtBundles[`spiffe://${TD}`]).toBeGreaterThan(
      0,
    );

    // The same token through verify/ directly, against the CA's published bundle, and tampered with.
    const { verifyJwtSvid } = require("../../verify/jwt-svid") as typeof import("../../verify/jwt-svid");
    const bundle = await fetchText(`${ca.url}/bundle.json`);
    expect(verifyJwtSvid(fetched.token, { audience: "a", bundle }).spiffeId).toBe(`spiffe://${TD}/web`);
    expect(() => verifyJwtSvid(fetched.token, { audience: "b", bundle })).toThrow();
    const [h, p, s] = fetched.token.split(".");
    const flipped = `${h}.${p}.${s.slice(0, -2)}${s.endsWith("AA") ? "BA" : "AA"}`;
    const tampered = await once(UIDS.web, "validate", "a", flipped);
    expect(tampered[0]).toMatchObject({ error: "INVALID_ARGUMENT" });
    const none = `${Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url")}.${p}.`;
    expect((await once(UIDS.web, "validate", "a", none))[0]).toMatchObject({ error: "INVALID_ARGUMENT" });
    const exp = (JSON.parse(Buffer.from(p, "base64url").toString()) as { exp: number }).exp * 1000;
    await new Promise((r) => setTimeout(r, Math.max(0, exp - Date.now() + 1000)));
    expect((await once(UIDS.web, "validate", "a", fetched.token))[0]).toEqual({
      error: "INVALID_ARGUMENT",
      details: expect.stringContaining("expired"),
    });
  });
});

describe("Envoy SDS", () => {
  it("speaks StreamSecrets as Envoy does: request, ACK, NACK, stale nonce, and a push after renewal", async () => {
    const names = [`spiffe://${TD}/api`, "ROOTCA", "default"];
    const c = client(UIDS.api, "sds", ...names);
    type Res = {
      version: string;
      nonce: string;
      secrets: { name: string; kind: string; serial?: string; hasKey: boolean; typeUrl: string }[];
    };
    const responses = () => c.lines().filter((l) => "version" in l) as Res[];
    const first = await waitFor("the first DiscoveryResponse", () => responses()[0]);
    expect(first.nonce).not.toBe("");
    expect(first.secrets.map((s) => [s.name, s.kind, s.hasKey])).toEqual([
      [`spiffe://${TD}/api`, "tls_certificate", true],
      ["ROOTCA", "validation_context", false],
      ["default", "tls_certificate", true],
    ]);
    expect(new Set(first.secrets.map((s) => s.typeUrl))).toEqual(
      new Set(["type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"]),
    );
    // NACK the first (Envoy keeps what it had), then a request with a nonce never sent: neither is answered.
    c.send("nack");
    c.send("stale");
    await waitFor("the client to send both", () => c.lines().filter((l) => "sent" in l).length === 2);
    // The next response is the push after renewal: another version, another certificate.
    const pushed = await waitFor("the secrets pushed after a renewal", () => responses()[1], 60_000);
    expect(pushed.version).not.toBe(first.version);
    expect(pushed.nonce).not.toBe(first.nonce);
    expect(pushed.secrets[0].serial).not.toBe(first.secrets[0].serial);
    c.send("ack");
    await waitFor("the ACK", () => c.lines().filter((l) => "sent" in l).length === 3);
    expect(c.lines().some((l) => "error" in l)).toBe(false);
    c.child.kill("SIGTERM");
  }, 120_000);

  it("serves the caller's secrets only: another workload's ID is not among them", async () => {
    const c = client(UIDS.web, "sds", `spiffe://${TD}/api`, `spiffe://${TD}/web`);
    const res = (await waitFor("a DiscoveryResponse", () => c.lines().find((l) => "version" in l))) as {
      secrets: { name: string }[];
    };
    expect(res.secrets.map((s) => s.name)).toEqual([`spiffe://${TD}/web`]);
    c.child.kill("SIGTERM");
  });
});

describe("when the CA is down", () => {
  it("reports each workload on /metrics and /health, then keeps serving held SVIDs through a CA outage", async () => {
    const url = (agent.logs().find((l) => l.msg === "health endpoint listening") as { url: string }).url;
    const metrics = await fetchText(`${url}/metrics`);
    for (const name of ["web", "api", "db"]) {
      expect(metrics).toContain(`stint_agent_workload_svids{spiffe_id="spiffe://${TD}/${name}"} 1`);
      expect(metrics).toMatch(
        new RegExp(`stint_agent_workload_svid_expiry_seconds\\{spiffe_id="spiffe://${TD}/${name}"\\} \\d`),
      );
      expect(metrics).toMatch(
        new RegExp(`stint_agent_workload_renewals_total\\{spiffe_id="spiffe://${TD}/${name}"\\} [1-9]`),
      );
    }
    const health = JSON.parse(await fetchText(`${url}/health`));
    expect(health.workloads).toMatchObject({ entries: 4, nearExpiry: [] });

    await ca.stop();
    const [line] = await once(UIDS.api, "fetch");
    expect((line as { svids: { spiffeId: string }[] }).svids.map((s) => s.spiffeId)).toEqual([
      `spiffe://${TD}/api`,
    ]);
  });
});

function fetchText(url: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    require(url.startsWith("https:") ? "node:https" : "node:http")
      .get(url, { rejectUnauthorized: false }, (res: import("node:http").IncomingMessage) => {
        let body = "";
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => resolvePromise(body));
      })
      .on("error", reject);
  });
}
