import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { URL_ENV } from "./helpers/postgres";

/**
 * The short version of every drill (scripts/drills/, `npm run drill:<name>`),
 * as CI runs them on every change: each is the built script run as a user
 * runs it, and must end with exit 0 and a JSON line whose must-be-zero
 * figures are all 0. The figures named here are the issue's: certificates
 * lost, duplicate serials, torn agent sets, 5xx, crashes, token
 * double-spends, stranded join tokens, stuck orders, expired agent
 * certificates, plus each drill's own. Wall-clock times are reported by the
 * drills, never asserted here. Two drills run at a time (all nine took
 * 278 s on a two-core machine busy with other work; the ca-outage drill
 * mostly waits for its certificates to age).
 */

interface Outcome {
  code: number | null;
  result: {
    drill: string;
    ok: boolean;
    zeros: Record<string, number>;
    figures: Record<string, unknown>;
    error?: string;
  };
  stderr: string;
}

const DRILLS = [
  "ca-crash",
  "agent-kills",
  "token-race",
  "agent-outage",
  "hostile-input",
  "slow-clients",
  "authorization",
  "restart",
  "ca-outage",
] as const;
type Drill = (typeof DRILLS)[number];

function runShort(name: Drill): Promise<Outcome> {
  const script = resolve(__dirname, `../dist/scripts/drills/${name}.js`);
  return new Promise((done) => {
    const child = spawn(process.execPath, [script, "--short"], {
      // The PostgreSQL drills use the server the global setup started.
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        [URL_ENV]: process.env[URL_ENV] ?? "",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.once("exit", (code) => {
      const last = stdout.trim().split("\n").pop() ?? "";
      let result: Outcome["result"];
      try {
        result = JSON.parse(last);
      } catch {
        result = {
          drill: name,
          ok: false,
          zeros: {},
          figures: {},
          error: `no JSON line: ${last.slice(0, 200)}`,
        };
      }
      done({ code, result, stderr });
    });
  });
}

const outcomes = new Map<Drill, Promise<Outcome>>();

beforeAll(() => {
  // Two lanes: each starts its next drill when the one before has finished.
  const queue = [...DRILLS];
  const lane = async () => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const started = runShort(name);
      outcomes.set(name, started);
      await started;
    }
  };
  void Promise.all([lane(), lane()]);
});

/** The drill's outcome, once it has run; its progress lines are shown if it failed. */
async function outcome(name: Drill): Promise<Outcome["result"]> {
  while (!outcomes.has(name)) await new Promise((r) => setTimeout(r, 200));
  const o = await outcomes.get(name)!;
  if (o.code !== 0 || !o.result.ok) process.stderr.write(`drill ${name} failed:\n${o.stderr.slice(-4000)}\n`);
  expect({ exit: o.code, error: o.result.error }).toEqual({ exit: 0, error: undefined });
  expect(o.result.ok).toBe(true);
  // Every must-be-zero figure is 0 (listed, so a failure names it).
  expect(o.result.zeros).toEqual(Object.fromEntries(Object.keys(o.result.zeros).map((k) => [k, 0])));
  return o.result;
}

const TIMEOUT = 240_000;

it(
  "ca-crash: SIGKILLs under load, on SQLite and on two PostgreSQL replicas: no certificate lost, no serial twice, audit and file intact",
  async () => {
    const r = await outcome("ca-crash");
    for (const backend of ["sqlite", "postgres"]) {
      expect(r.zeros).toMatchObject({
        [`${backend}.certificatesLost`]: 0,
        [`${backend}.duplicateSerials`]: 0,
        [`${backend}.duplicateSequences`]: 0,
        [`${backend}.auditChainBroken`]: 0,
        [`${backend}.crashes`]: 0,
        [`${backend}.serverErrors5xx`]: 0,
      });
      const f = r.figures[backend] as { kills: number; fromOrders: number; fromRenewals: number };
      expect(f.kills).toBe(2);
      expect(f.fromOrders).toBeGreaterThan(0);
      expect(f.fromRenewals).toBeGreaterThan(0);
    }
    expect(r.zeros["sqlite.integrityProblems"]).toBe(0);
  },
  TIMEOUT,
);

it(
  "token-race: one join token through two replicas at once, round after round: exactly one success",
  async () => {
    const r = await outcome("token-race");
    expect(r.zeros).toMatchObject({ tokenDoubleSpends: 0, roundsWithoutWinner: 0, spendsAcceptedTwice: 0 });
    expect(r.figures).toMatchObject({ rounds: 8, idsWithOneCertificate: 8 });
  },
  TIMEOUT,
);

it(
  "agent-kills: SIGKILL at random moments of forced renewals: no torn set",
  async () => {
    const r = await outcome("agent-kills");
    expect(r.zeros).toMatchObject({ tornSets: 0 });
    expect(r.figures.kills).toBe(10);
  },
  TIMEOUT,
);

it(
  "agent-outage: the CA down past the certificate's expiry: the set stays whole, retries back off with jitter, the agent recovers",
  async () => {
    const r = await outcome("agent-outage");
    expect(r.zeros).toMatchObject({
      tornSetsDuringOutage: 0,
      setReplacedDuringOutage: 0,
      notRecovered: 0,
      noJitter: 0,
    });
    expect(r.figures.certificateExpiredDuringOutage).toBe(true);
  },
  TIMEOUT,
);

it(
  "hostile-input: malformed and hostile ACME and admin requests: no 5xx, no crash, a problem document each",
  async () => {
    const r = await outcome("hostile-input");
    expect(r.zeros).toMatchObject({ serverErrors5xx: 0, crashes: 0, accepted2xx: 0, notProblemDocuments: 0 });
    expect(r.figures.requests).toBe(600);
  },
  TIMEOUT,
);

it(
  "slow-clients: 500 idle and slowloris connections held: /health and issuance still answered",
  async () => {
    const r = await outcome("slow-clients");
    expect(r.zeros).toMatchObject({ healthUnanswered: 0, issuanceFailures: 0, crashes: 0 });
    expect((r.figures.heldOpen as { max: number }).max).toBe(500);
  },
  TIMEOUT,
);

it(
  "authorization: admin endpoints refuse every wrong credential; one account cannot touch another's objects",
  async () => {
    const r = await outcome("authorization");
    expect(r.zeros).toMatchObject({ adminAnswered: 0, crossAccountAccepted: 0, positiveControlFailures: 0 });
  },
  TIMEOUT,
);

it(
  "restart: SIGKILLs while clients enroll with join tokens and agents renew: no token stranded, no order stuck, no agent certificate expired",
  async () => {
    const r = await outcome("restart");
    expect(r.zeros).toMatchObject({
      strandedTokens: 0,
      stuckOrders: 0,
      agentsWithExpiredCertificate: 0,
      crashes: 0,
      noCertificates: 0,
      noAgentRenewals: 0,
    });
    // The kills and the issuance really happened.
    expect(r.figures.kills).toBe(3);
    expect(r.figures.certificatesReceived as number).toBeGreaterThan(3);
    expect(r.figures.tokensSpent as number).toBeGreaterThan(3);
    expect(r.figures.agentRenewals as number).toBeGreaterThan(0);
  },
  TIMEOUT,
);

it(
  "ca-outage: the CA gone for 20 % of the lifetime as the renewal window opens: no agent certificate expires, every agent renews after",
  async () => {
    const r = await outcome("ca-outage");
    expect(r.zeros).toMatchObject({
      agentsWithExpiredCertificate: 0,
      notRenewedAfterOutage: 0,
      noRenewalAfterOutage: 0,
      crashes: 0,
    });
    expect(r.figures).toMatchObject({ agents: 3, outageStartedAtPercentOfLifetime: 50, how: "SIGSTOP" });
    // The outage lasted its fifth of the lifetime, and renewals were due during it and happened after it.
    const life = r.figures.certificateLifetimeSeconds as number;
    expect(r.figures.outageSeconds as number).toBeGreaterThanOrEqual(0.2 * life - 1);
    expect(r.figures.dueDuringOutage as number).toBeGreaterThan(0);
    expect(r.figures.renewedAfterOutage as number).toBeGreaterThan(0);
  },
  TIMEOUT,
);
