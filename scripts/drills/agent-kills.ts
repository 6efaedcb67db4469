import { agentRig, checkSet, leftovers } from "./agent-setup";
import { type DrillContext, runDrill, sleep, summary } from "./harness";
import { kill9, spawnStint, stop } from "./processes";

/**
 * `stint agent` killed with SIGKILL at random moments of renewals it was
 * told to start with SIGHUP, against a real CA issuing 1-minute
 * certificates. After every kill, with no agent running, cert.pem and
 * key.pem must match and chain to bundle.pem (torn sets: 0). Kills land
 * before, during and after the switch: the figures count how many left the
 * old certificate and how many the new one.
 *   npm run drill:agent-kills [-- --short] [--kills 200]
 */

interface Settings extends Record<string, number> {
  kills: number;
}

const READY = /"msg":"health endpoint listening"/;
const SWITCHED = /"msg":"certificate switched"/;

async function run(ctx: DrillContext<Settings>) {
  const rig = await agentRig(ctx, { certTtl: "1m", minTtl: "1m" });
  const start = () => spawnStint(rig.agentArgs);

  // How long a forced renewal takes here and now, so kills spread over all of it.
  const samples: number[] = [];
  for (let i = 0; i < 2; i++) {
    const p = start();
    await p.waitForLine(READY, 30_000);
    const t0 = Date.now();
    p.child.kill("SIGHUP");
    await p.waitForLine(SWITCHED, 30_000);
    samples.push(Date.now() - t0);
    if ((await stop(p)) !== 0) throw new Error("the agent did not stop cleanly on SIGTERM");
  }
  const renewalMs = Math.max(...samples);
  ctx.log(`a forced renewal takes about ${renewalMs} ms; ${ctx.settings.kills} kills follow`);

  let torn = 0;
  let keptOld = 0;
  let tookNew = 0;
  let exitedBeforeKill = 0;
  let maxLeftovers = 0;
  const tornReasons: string[] = [];
  const killAfterMs: number[] = [];
  let serial = checkSet(rig.outDir).serial;
  for (let i = 0; i < ctx.settings.kills && !ctx.overdue(); i++) {
    const p = start();
    await p.waitForLine(READY, 30_000);
    p.child.kill("SIGHUP");
    const wait = Math.random() * renewalMs * 1.5;
    killAfterMs.push(wait);
    await sleep(wait);
    // Ended on its own (an exit code, or SIGHUP's default action before its handler was in place).
    if (p.child.exitCode !== null || p.child.signalCode !== null) exitedBeforeKill++;
    await kill9(p);
    try {
      const now = checkSet(rig.outDir).serial;
      if (now === serial) keptOld++;
      else tookNew++;
      serial = now;
    } catch (err) {
      torn++;
      if (tornReasons.length < 5) tornReasons.push((err as Error).message);
      ctx.log(`kill ${i + 1}: TORN SET: ${(err as Error).message}`);
    }
    maxLeftovers = Math.max(maxLeftovers, leftovers(rig.outDir));
    if ((i + 1) % 20 === 0)
      ctx.log(`${i + 1}/${ctx.settings.kills} kills: ${tookNew} after a switch, ${keptOld} before`);
  }

  // And it still works: a clean start renews, cleans up what the kills left, and stops.
  const p = start();
  await p.waitForLine(READY, 30_000);
  p.child.kill("SIGHUP");
  const recovered = await p.waitForLine(SWITCHED, 60_000).then(
    () => true,
    () => false,
  );
  const stopCode = await stop(p);
  const final = checkSet(rig.outDir);
  const caCrashes = rig.ca.unexpectedExits;
  await rig.ca.stop();
  return {
    zeros: {
      tornSets: torn,
      agentExitedBeforeKill: exitedBeforeKill,
      notRecoveredAfterKills: recovered && stopCode === 0 && final.notAfter > Date.now() ? 0 : 1,
      caCrashes,
    },
    figures: {
      kills: keptOld + tookNew + torn,
      killsBeforeSwitch: keptOld,
      killsAfterSwitch: tookNew,
      renewalMs,
      killAfterMs: summary(killAfterMs),
      maxLeftoversAfterKill: maxLeftovers,
      leftoversAfterCleanRun: leftovers(rig.outDir),
      ...(tornReasons.length > 0 ? { tornReasons } : {}),
    },
  };
}

runDrill<Settings>({
  name: "agent-kills",
  about:
    "Starts `stint agent`, forces a renewal of its 1-minute certificate with SIGHUP, and kills it with\n" +
    "SIGKILL at a random moment of that renewal, again and again; after each kill cert.pem and key.pem\n" +
    "must match and chain to bundle.pem.",
  settings: { kills: { full: 200, short: 10, help: "agent processes killed" } },
  deadlineSeconds: { full: 900, short: 120 },
  run,
});
