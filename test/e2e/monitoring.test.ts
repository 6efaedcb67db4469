import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { get as httpGet } from "node:http";
import { get as httpsGet } from "node:https";
import { join, resolve } from "node:path";
import { type AgentProcess, fingerprint, startAgent, waitFor } from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * The monitoring kit in deploy/ against the real thing: promtool accepts the
 * rules and their unit tests pass; every metric the Grafana dashboard and the
 * rules name is exported by a live `stint ca serve` or a live node agent; the
 * CA's expired-without-renewal gauge counts a workload whose agent stopped.
 */

const ROOT = resolve(__dirname, "../..");
const RULES = join(ROOT, "deploy/prometheus/stint-rules.yml");
const RULE_TESTS = join(ROOT, "deploy/prometheus/tests");
const DASHBOARD = join(ROOT, "deploy/grafana/stint.json");
const TD = "monitoring.example";
const NODE_ID = `spiffe://${TD}/node/n1`;
const WORKLOAD_ID = `spiffe://${TD}/web`;

const dir = tempDir("stint-monitoring-");
const dataDir = join(dir, "ca");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function promtool(args: string[], input?: string): { code: number | null; out: string } {
  const r = spawnSync("promtool", args, { input, encoding: "utf8" });
  if (r.error) throw r.error;
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

function get(url: string, ca?: string): Promise<string> {
  return new Promise((ok, fail) => {
    const done = (res: import("node:http").IncomingMessage) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => (res.statusCode === 200 ? ok(body) : fail(new Error(`${url}: ${res.statusCode}`))));
    };
    (ca ? httpsGet(url, { ca }, done) : httpGet(url, done)).on("error", fail);
  });
}

/** Names a /metrics page exports, from its TYPE lines (so a labelled family with no series yet counts too). */
function exported(page: string): Set<string> {
  const names = new Set<string>();
  for (const m of page.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]!);
    if (m[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m[1]! + s);
  }
  return names;
}

const PROMQL_WORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "offset",
  "and",
  "or",
  "unless",
  "bool",
  "inf",
  "nan",
]);

/** The metric names a PromQL expression reads: labels, strings, durations, functions and clauses removed. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, "")
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "")
    // Numbers and durations ("offset 1h", "14.4"), whose unit letters would read as names.
    .replace(/\b\d+(\.\d+)?[a-z]*/g, "")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");
  const names: string[] = [];
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\()/g)) {
    const name = m[0];
    // The lookahead backtracks into a function's name ("su" of "sum("): keep whole words only.
    const after = bare.slice(m.index! + name.length);
    if (/^[a-zA-Z0-9_:]/.test(after) || /^\s*\(/.test(after)) continue;
    if (!PROMQL_WORDS.has(name.toLowerCase())) names.push(name);
  }
  return names;
}

function ruleExprs(): { records: Set<string>; exprs: string[] } {
  const text = readFileSync(RULES, "utf8");
  const records = new Set([...text.matchAll(/^\s*- record: (\S+)$/gm)].map((m) => m[1]!));
  // Every expr, single-line or a "|" block, up to the next key.
  const exprs = [...text.matchAll(/^(\s*)expr: (?:\|\n((?:\1 {2}.*\n)+)|(.*)\n)/gm)].map(
    (m) => (m[2] ?? m[3])!,
  );
  return { records, exprs };
}

function panelExprs(): { title: string; expr: string }[] {
  const dash = JSON.parse(readFileSync(DASHBOARD, "utf8")) as {
    panels: { type: string; title: string; targets?: { expr: string }[] }[];
  };
  return dash.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));
}

describe("the Prometheus rules", () => {
  it("pass promtool check rules", () => {
    const r = promtool(["check", "rules", RULES]);
    expect(r.out).toContain("SUCCESS");
    expect(r.code).toBe(0);
  });

  it("pass their promtool unit tests: each page alert fires on a failing series, stays quiet on a healthy one", () => {
    const files = readdirSync(RULE_TESTS)
      .filter((f) => f.endsWith(".yml"))
      .map((f) => join(RULE_TESTS, f));
    expect(files.length).toBeGreaterThan(0);
    const r = promtool(["test", "rules", ...files]);
    expect(r.code).toBe(0);
    // Every page alert has a test that expects it to fire.
    const tests = files.map((f) => readFileSync(f, "utf8")).join("\n");
    const pages = [...readFileSync(RULES, "utf8").matchAll(/- alert: (\S+)\n(?:.*\n)*?\s+severity: page/g)];
    expect(pages.length).toBeGreaterThanOrEqual(4);
    for (const [, alert] of pages) {
      if (alert === "StintCaAbsent") continue; // absent() is promtool-tested only as quiet; its firing is Prometheus's own
      expect(tests).toMatch(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
      expect(tests).toMatch(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts: \\[\\]`));
    }
  });

  it("reject a rule file promtool finds broken (the check can fail)", () => {
    const bad = join(dir, "bad-rules.yml");
    writeFileSync(bad, "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m])\n");
    expect(promtool(["check", "rules", bad]).code).not.toBe(0);
  });
});

describe("the dashboard and rules against a live CA and node agent", () => {
  let ca: ServerProcess;
  let agent: AgentProcess;
  let rootPem: string;
  let caPage: string;
  let agentPage: string;

  beforeAll(async () => {
    ca = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      dataDir,
      "--trust-domain",
      TD,
      "--policy-min-ttl",
      "1s",
      "--metrics-expired-scan-interval",
      "300ms",
    ]);
    rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
    const run = (args: string[]) => {
      const r = stint([...args, "--data-dir", dataDir, "--server", ca.url]);
      if (r.code !== 0) throw new Error(`stint ${args.join(" ")}: ${r.stderr}`);
      return r.stdout;
    };
    const token = JSON.parse(run(["token", "create", "--spiffe-id", NODE_ID, "--cert-ttl", "10m", "--json"]))
      .token as string;
    const tokenFile = join(dir, "node-token");
    writeFileSync(tokenFile, token, { mode: 0o600 });
    // Short-lived, so it expires soon after the agent stops renewing it.
    run([
      "entry",
      "create",
      "--spiffe-id",
      WORKLOAD_ID,
      "--parent",
      NODE_ID,
      "--selector",
      "unix:uid:4242",
      "--ttl",
      "3s",
    ]);
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
      "--workload-api-socket",
      join(dir, "workload.sock"),
    ]);
    await waitFor(
      "the node agent's first workload SVID",
      () => agent.logs().some((l) => l.msg === "workload SVID issued"),
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; agent logs: ${JSON.stringify(agent.logs().slice(-8))}`);
    });
    const health = agent.logs().find((l) => l.msg === "health endpoint listening") as { url: string };
    caPage = await get(`${ca.url}/metrics`, rootPem);
    agentPage = await get(`${health.url}/metrics`);
  }, 90_000);

  afterAll(async () => {
    await agent?.stop();
    await ca?.stop();
  });

  it("exports issuance latency per route, finalize apart from order reads", () => {
    expect(caPage).toMatch(
      /^stint_http_request_duration_seconds_count\{route="\/acme\/order\/finalize"\} [1-9]/m,
    );
    expect(caPage).toMatch(
      /^stint_http_request_duration_seconds_count\{route="\/agent\/v1\/x509-svids"\} [1-9]/m,
    );
    expect(caPage).toMatch(/^stint_http_requests_total\{route="\/acme\/order\/finalize",code="200"\} [1-9]/m);
    expect(caPage).toMatch(/^stint_feed_validity_seconds 600$/m);
    expect(agentPage).toContain(`stint_agent_info{spiffe_id="${NODE_ID}"} 1`);
  });

  it("names in every dashboard panel and rule only metrics these processes export or the rules record", () => {
    const known = new Set([...exported(caPage), ...exported(agentPage), "up", ...ruleExprs().records]);
    // The extraction itself finds a name that is not exported, or this check could never fail.
    expect(metricNames('sum by (le) (rate(stint_nope_seconds_bucket{route="/x"}[5m]))')).toEqual([
      "stint_nope_seconds_bucket",
    ]);
    const missing: string[] = [];
    const panels = panelExprs();
    expect(panels.length).toBeGreaterThan(10);
    for (const { title, expr } of panels)
      for (const name of metricNames(expr)) if (!known.has(name)) missing.push(`${title}: ${name}`);
    for (const expr of ruleExprs().exprs)
      for (const name of metricNames(expr)) if (!known.has(name)) missing.push(`rule: ${name}`);
    expect(missing).toEqual([]);
  });

  it("passes promtool check metrics on the CA's and the agent's /metrics", () => {
    for (const page of [caPage, agentPage]) {
      const r = promtool(["check", "metrics"], page);
      expect(r.out).toBe("");
      expect(r.code).toBe(0);
    }
  });

  it("counts the workload once its agent stops renewing and its certificate expires, until its last certificate is revoked", async () => {
    await agent.stop();
    let page = "";
    const until = Date.now() + 30_000;
    while (!/^stint_certificates_expired_unrenewed 1$/m.test(page)) {
      if (Date.now() > until) throw new Error(`the workload was never counted:\n${page}`);
      await new Promise((r) => setTimeout(r, 300));
      page = await get(`${ca.url}/metrics`, rootPem);
    }
    expect(page).toContain(
      `stint_certificate_expired_unrenewed_timestamp_seconds{spiffe_id="${WORKLOAD_ID}"}`,
    );

    // Decommissioned on purpose: revoking its last certificate takes it out at the next scan.
    const run = (args: string[]) => stint([...args, "--data-dir", dataDir, "--server", ca.url]);
    const listed = run(["cert", "list", "--spiffe-id", WORKLOAD_ID, "--json"]);
    expect(listed.code).toBe(0);
    const certs = JSON.parse(listed.stdout) as { serial: string; notAfter: string }[];
    const last = certs.sort((a, b) => b.notAfter.localeCompare(a.notAfter))[0]!;
    const revoked = run(["cert", "revoke", last.serial, "--reason", "cessationOfOperation"]);
    expect(revoked.stderr).toBe("");
    const until2 = Date.now() + 30_000;
    while (!/^stint_certificates_expired_unrenewed 0$/m.test(page)) {
      if (Date.now() > until2) throw new Error(`the revoked workload stayed counted:\n${page}`);
      await new Promise((r) => setTimeout(r, 300));
      page = await get(`${ca.url}/metrics`, rootPem);
    }
    expect(page).not.toContain(WORKLOAD_ID);
  }, 40_000);
});
