import { get } from "node:http";
import { agentRig, checkSet } from "./agent-setup";
import { type DrillContext, runDrill, sleep } from "./harness";
import { type Proc, spawnStint, stop } from "./processes";

/**
 * The CA down for minutes while `stint agent` holds a short-lived
 * certificate: the set on disk must stay in place and whole the whole time
 * (the agent never removes or half-replaces it), renewals must back off
 * exponentially with full jitter within backoff.cap, and once the CA is back
 * the agent must attest again (x509pop) and hold a new certificate.
 *   npm run drill:agent-outage [-- --short] [--outage-seconds 180] [--cert-ttl-seconds 60]
 */

interface Settings extends Record<string, number> {
  "outage-seconds": number;
  "cert-ttl-seconds": number;
  "backoff-base-ms": number;
  "backoff-cap-ms": number;
}

const FAILED = "renewal failed; keeping the current files and retrying";

interface LogLine {
  time: string;
  msg: string;
  attempt?: number;
  retryInSeconds?: number;
  url?: string;
}

const logLines = (p: Proc): LogLine[] =>
  p
    .lines()
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as LogLine);

function agentHealth(url: string): Promise<string> {
  return new Promise((resolve) => {
    get(`${url}/health`, (res) => {
      let body = "";
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () => resolve((JSON.parse(body) as { state: string }).state));
    }).on("error", (err) => resolve(`unreachable: ${err.message}`));
  });
}

async function run(ctx: DrillContext<Settings>) {
  const s = ctx.settings;
  const base = s["backoff-base-ms"];
  const cap = s["backoff-cap-ms"];
  const rig = await agentRig(ctx, {
    certTtl: `${s["cert-ttl-seconds"]}s`,
    minTtl: "1s",
    extraAgentArgs: ["--backoff-base", `${base}ms`, "--backoff-cap", `${cap}ms`],
  });
  const agent = spawnStint(rig.agentArgs);
  ctx.onCleanup(() => stop(agent));
  const healthUrl = (
    await agent.waitForLine(/"msg":"health endpoint listening".*"url":"([^"]+)"/, 30_000)
  )[1];
  // Start the outage just after a fresh certificate, so it spans the renewal point and the expiry.
  agent.child.kill("SIGHUP");
  await agent.waitForLine(/"msg":"certificate switched"/, 30_000);
  const before = checkSet(rig.outDir);
  await rig.ca.kill9();
  const downAt = Date.now();
  ctx.log(
    `CA down for ${s["outage-seconds"]} s; the certificate expires in ${Math.round((before.notAfter - downAt) / 1000)} s`,
  );

  let torn = 0;
  let changed = 0;
  let checks = 0;
  const until = downAt + s["outage-seconds"] * 1000;
  while (Date.now() < until && !ctx.overdue()) {
    try {
      if (checkSet(rig.outDir).serial !== before.serial) changed++;
    } catch (err) {
      torn++;
      ctx.log(`torn set during the outage: ${(err as Error).message}`);
    }
    checks++;
    await sleep(250);
  }
  const stateDuringOutage = await agentHealth(healthUrl);
  const agentExited = agent.child.exitCode !== null || agent.child.signalCode !== null ? 1 : 0;

  const failures = logLines(agent).filter((l) => l.msg === FAILED && Date.parse(l.time) >= downAt);
  await rig.ca.start();
  const upAt = Date.now();
  ctx.log(`CA back after ${failures.length} failed renewals; waiting for a new certificate`);
  let recoveredMs = -1;
  while (Date.now() < upAt + cap + 60_000 && !ctx.overdue()) {
    try {
      if (checkSet(rig.outDir).serial !== before.serial) {
        recoveredMs = Date.now() - upAt;
        break;
      }
    } catch {
      torn++;
    }
    await sleep(100);
  }
  const stateAfter = await agentHealth(healthUrl);

  // Full jitter: each delay is at most base·2^(attempt−1), capped; attempts count up; each retry waits its delay.
  const delays = failures.map((f) => ({
    attempt: f.attempt ?? 0,
    s: f.retryInSeconds ?? 0,
    at: Date.parse(f.time),
  }));
  const bound = (attempt: number) => Math.min(cap, base * 2 ** (attempt - 1)) / 1000;
  const overBound = delays.filter((d) => d.s > bound(d.attempt) + 0.1).length;
  const outOfOrder = delays.filter((d, i) => i > 0 && d.attempt !== delays[i - 1].attempt + 1).length;
  const early = delays.filter(
    (d, i) => i > 0 && d.at - delays[i - 1].at < delays[i - 1].s * 1000 - 100,
  ).length;
  // Jitter shows as delays below their bound; a fixed schedule would sit on it every time.
  const belowBound = delays.filter((d) => d.s < bound(d.attempt) - 0.1).length;
  const stopCode = await stop(agent);
  return {
    zeros: {
      tornSetsDuringOutage: torn,
      setReplacedDuringOutage: changed,
      agentExited,
      retriesOverBackoffBound: overBound,
      retriesEarly: early,
      attemptsOutOfOrder: outOfOrder,
      noJitter: delays.length >= 3 && belowBound === 0 ? 1 : 0,
      tooFewRetries: failures.length >= 3 ? 0 : 1,
      notRecovered: recoveredMs >= 0 && stateAfter !== "expired" ? 0 : 1,
      uncleanStop: stopCode === 0 ? 0 : 1,
    },
    figures: {
      outageSeconds: Math.round((upAt - downAt) / 1000),
      certificateLifetimeSeconds: s["cert-ttl-seconds"],
      certificateExpiredDuringOutage: before.notAfter < upAt,
      setChecksDuringOutage: checks,
      failedRenewals: failures.length,
      retryDelaysSeconds: delays.map((d) => d.s),
      stateDuringOutage,
      recoverySeconds: recoveredMs < 0 ? null : Math.round(recoveredMs / 100) / 10,
      stateAfter,
    },
  };
}

runDrill<Settings>({
  name: "agent-outage",
  about:
    "Stops the CA for minutes while `stint agent` holds a short-lived certificate: the set on disk stays\n" +
    "whole and in place, retries back off with full jitter, and the agent recovers when the CA returns.",
  settings: {
    "outage-seconds": { full: 180, short: 10, help: "how long the CA stays down" },
    "cert-ttl-seconds": { full: 60, short: 6, help: "certificate lifetime (the entry's TTL)" },
    "backoff-base-ms": { full: 1000, short: 200, help: "the agent's backoff.base" },
    "backoff-cap-ms": { full: 20_000, short: 1500, help: "the agent's backoff.cap" },
  },
  deadlineSeconds: { full: 600, short: 120 },
  run,
});
