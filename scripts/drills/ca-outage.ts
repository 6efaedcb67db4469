import { join } from "node:path";
import { freePort } from "../bench/acme-load/servers";
import { AgentFleet, fleetPki } from "./agent-fleet";
import { type DrillContext, runDrill, sleep } from "./harness";
import { CaServer, stintJson } from "./processes";

/**
 * The CA gone for a fifth of the certificate lifetime at the worst moment,
 * while `stint agent` daemons hold short certificates: no agent may ever
 * hold an expired certificate, and every agent must renew once the CA is
 * back.
 *
 * The worst moment, as this drill takes it: the instant the renewal window
 * opens for most agents (start-percent of the lifetime, 50 % with the
 * default renewal.window of 50%-75%). Every agent still holds the
 * certificate it is about to replace, so the outage catches all of them,
 * not only those whose renewal was due; 20 of the window's 25 points of
 * lifetime are gone, so each agent's planned renewal falls in the outage
 * with odds of about 80 % and fails, and they all retry, with grown
 * backoff, once the CA is back. An outage starting earlier ends before any renewal is due; one
 * starting later meets agents that have already renewed. (It is not the
 * worst for every single agent: one that drew a renewal instant near the
 * window's end has less runway left when an outage starting there ends;
 * `--start-percent 70` catches the agents renewing at 70-75 % and ends at
 * 90 %, leaving them a tenth of the lifetime.)
 *
 * The CA is frozen with SIGSTOP by default, as a hung host or a partition
 * looks: connections are accepted by the kernel and never answered, so the
 * agents' request timeouts are tested too; `--freeze 0` kills it instead
 * and starts it again after the outage, as a crash with a slow supervisor.
 *   npm run drill:ca-outage [-- --short] [--agents 6] [--cert-ttl-seconds 60]
 *     [--outage-percent 20] [--start-percent 50] [--freeze 1]
 */

interface Settings extends Record<string, number> {
  agents: number;
  "cert-ttl-seconds": number;
  "outage-percent": number;
  "start-percent": number;
  freeze: number;
}

const TD = "outage.example";

async function run(ctx: DrillContext<Settings>) {
  const s = ctx.settings;
  if (s["outage-percent"] + s["start-percent"] >= 100)
    throw new Error(
      "--start-percent plus --outage-percent must stay below 100: the outage must end before expiry",
    );
  const dir = ctx.tempDir("ca-outage");
  const dataDir = join(dir, "ca");
  // A backdate of 1 s, not the default 30 s: with a lifetime of a minute, 30 s of it in the past would
  // open the renewal window at issuance, and there would be no "moment the window opens" to aim at.
  const env = {
    STINT_DATA_DIR: dataDir,
    STINT_TRUST_DOMAIN: TD,
    STINT_POLICY_MIN_TTL: "1s",
    STINT_POLICY_BACKDATE: "1s",
  };
  stintJson(["ca", "init", "--insecure-no-passphrase"], env);
  const pki = fleetPki(dir);
  const ca = new CaServer(
    "ca",
    [
      "--insecure-no-passphrase",
      "--attest-x509pop-bundle-file",
      pki.caPath,
      "--listen",
      `127.0.0.1:${await freePort()}`,
    ],
    env,
  );
  ctx.onCleanup(() => ca.stop());
  await ca.start();
  // Runs before ca.stop() (last registered first): a frozen CA cannot stop.
  ctx.onCleanup(() => ca.running && ca.proc.child.kill("SIGCONT"));
  const fleet = new AgentFleet(ctx, {
    ca,
    dataDir,
    env,
    spiffeId: `spiffe://${TD}/agent`,
    pki,
    agents: s.agents,
    certTtlSeconds: s["cert-ttl-seconds"],
    dir: join(dir, "agents"),
  });
  await fleet.start();

  // The lifetime as the renewal window reads it: notBefore (backdated by policy.backdate) to notAfter.
  const held = fleet.current();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const lifeMs = median(held.map((h) => h.notAfter - h.notBefore));
  const startAt = median(
    held.map((h) => h.notBefore + (s["start-percent"] / 100) * (h.notAfter - h.notBefore)),
  );
  const outageMs = (s["outage-percent"] / 100) * lifeMs;
  ctx.log(
    `${held.length} agents hold certificates of ${Math.round(lifeMs / 1000)} s; the outage of ` +
      `${Math.round(outageMs / 1000)} s starts in ${Math.round((startAt - Date.now()) / 1000)} s`,
  );
  while (Date.now() < startAt && !ctx.overdue()) await sleep(50);

  const renewalsBeforeOutage = fleet.renewals;
  const beforeOutage = fleet.snapshot();
  const atOutage = fleet.current();
  const downAt = Date.now();
  if (s.freeze) ca.proc.child.kill("SIGSTOP");
  else await ca.kill9();
  while (Date.now() < downAt + outageMs && !ctx.overdue()) await sleep(50);
  const renewedDuringOutage = fleet.renewedSince(beforeOutage);
  if (s.freeze) ca.proc.child.kill("SIGCONT");
  else await ca.start();
  const upAt = Date.now();
  ctx.log(`CA back after ${Math.round((upAt - downAt) / 1000)} s; waiting for every agent to renew`);

  // Every certificate held at the outage expires by this instant: wait until each is replaced, or past it.
  const lastExpiry = Math.max(...atOutage.map((h) => h.notAfter));
  while (fleet.renewedSince(beforeOutage) < s.agents && Date.now() < lastExpiry + 5000 && !ctx.overdue())
    await sleep(200);
  const renewedAfter = fleet.renewedSince(beforeOutage);
  // Agents whose window (50%-75%, the default renewal.window) had opened by the time the CA was back:
  // each must have renewed. One that renewed just before the outage holds a certificate not yet due.
  const due = atOutage.filter((h) => h.notBefore + 0.5 * (h.notAfter - h.notBefore) <= upAt).length;
  const renewedBy = Date.now();
  const agents = await fleet.stop();
  const stopCode = await ca.stop();
  return {
    zeros: {
      ...agents.zeros,
      // An agent still on the certificate it held when the outage began: it did not renew after it.
      notRenewedAfterOutage: Math.max(0, due - renewedAfter),
      noRenewalAfterOutage: renewedAfter > 0 ? 0 : 1,
      crashes: ca.unexpectedExits,
      uncleanStops: stopCode === 0 ? 0 : 1,
    },
    figures: {
      certificateLifetimeSeconds: Math.round(lifeMs / 1000),
      outageSeconds: Math.round((upAt - downAt) / 100) / 10,
      outageStartedAtPercentOfLifetime: s["start-percent"],
      how: s.freeze ? "SIGSTOP" : "SIGKILL, then started again",
      renewalsBeforeOutage,
      renewedDuringOutage,
      dueDuringOutage: due,
      renewedAfterOutage: renewedAfter,
      secondsFromCaBackToLastRenewal: Math.round((renewedBy - upAt) / 100) / 10,
      // What was left of the first-expiring certificate held at the outage when the last agent had renewed.
      runwayLeftSeconds: Math.round((Math.min(...atOutage.map((h) => h.notAfter)) - renewedBy) / 100) / 10,
      ...agents.figures,
    },
  };
}

runDrill<Settings>({
  name: "ca-outage",
  about:
    "Stops the CA for a fifth of the certificate lifetime just as the renewal window opens for most\n" +
    "`stint agent` daemons, starts it again, and counts agents that ever held an expired certificate and\n" +
    "agents that did not renew after the outage. Both must be 0.",
  settings: {
    agents: { full: 6, short: 3, help: "stint agent daemons" },
    "cert-ttl-seconds": {
      full: 90,
      short: 60,
      help: "the entry's TTL (the lifetime adds policy.backdate, 1 s)",
    },
    "outage-percent": {
      full: 20,
      short: 20,
      help: "how long the CA is gone, as a percentage of the lifetime",
    },
    "start-percent": { full: 50, short: 50, help: "when it goes, as a percentage of the lifetime" },
    freeze: { full: 1, short: 1, help: "1: SIGSTOP then SIGCONT; 0: SIGKILL then start again" },
  },
  deadlineSeconds: { full: 400, short: 240 },
  run,
});
