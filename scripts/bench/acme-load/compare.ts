import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ChallengeType, type LoadResult, StallError, type Target } from "./load";
import {
  challengeNote,
  dnsNames,
  load,
  log,
  mintTokens,
  namesNeeded,
  type Settings,
  tokenNames,
} from "./run";
import { findOnPath, PEBBLE_ENV, type Started, startHttp01, startPebble, startStint } from "./servers";

/**
 * --compare: pebble and a fresh Stint CA on this machine, one after the
 * other, under the same load; Stint also renews. Installs nothing: without
 * pebble on PATH it says so in one line and measures Stint alone.
 */

export const PEBBLE_MISSING =
  "pebble is not installed (not on PATH), so there is nothing to compare with: measuring Stint alone (apt-get install pebble to compare)";
const TRUST_DOMAIN = "bench.example";

export async function compare(s: Settings): Promise<Record<string, unknown>> {
  const pebblePath = findOnPath("pebble");
  if (!pebblePath) log(PEBBLE_MISSING);
  const dir = mkdtempSync(join(tmpdir(), "stint-bench-acme-"));
  const running: Started[] = [];
  let responder: Server | undefined;
  try {
    const pebbleFull = pebblePath ? await measurePebble(pebblePath, dir, s) : undefined;

    // Both of Stint's full flows by default: attest-01 (its agents) and dns + http-01 (lego, certbot).
    const flows: ChallengeType[] = s.challenge ? [s.challenge] : ["attest-01", "http-01"];
    const tokens = new Map<string, string>();
    responder = (await startHttp01(tokens, 0)).server;
    const http01Port = (responder.address() as { port: number }).port;
    log("starting stint ca serve");
    const stint = await startStint({
      dir,
      trustDomain: TRUST_DOMAIN,
      http01: { port: http01Port, dnsSuffix: s.dnsSuffix },
      main: s.stintMain,
    });
    running.push(stint);
    const target: Target = {
      name: "stint",
      directoryUrl: stint.directoryUrl,
      ca: stint.ca,
      serverPid: stint.pid,
      metricsUrl: `${stint.url}/metrics`,
    };
    const mint = (runId: string, n: number) =>
      mintTokens({ ...s, runId }, stint.dataDir, stint.url, stint.trustDomain, n).then((t) =>
        tokenNames(t, n),
      );
    const stintFull: LoadResult[] = [];
    for (const challenge of flows) {
      const names =
        challenge === "attest-01"
          ? await mint(s.runId, namesNeeded(s, "full"))
          : dnsNames({ ...s, runId: `${s.runId}h` }, tokens);
      stintFull.push(await load(target, s, "full", names));
    }
    // Renewal needs certificates with SPIFFE IDs, so its first certificates always come from attest-01.
    const renewNames = await mint(`${s.runId}r`, namesNeeded(s, "renew"));
    const stintRenew = await load(target, s, "renew", renewNames);
    await stint.stop();

    const ratio = (a?: number, b?: number) => (a && b ? Number((a / b).toFixed(2)) : undefined);
    const overPebble = (r: LoadResult) => ({
      serverCpuMsPerCert: ratio(r.serverCpuMsPerCert, pebbleFull?.serverCpuMsPerCert),
      certsPerSecond: ratio(r.certsPerSecond, pebbleFull?.certsPerSecond),
    });
    return {
      servers: {
        pebble: pebblePath
          ? { path: pebblePath, env: PEBBLE_ENV, challenge: challengeNote("http-01", true) }
          : { missing: PEBBLE_MISSING },
        stint: {
          command: `node ${s.stintMain ?? "dist/cli/main.js"} ca serve`,
          challenges: Object.fromEntries(flows.map((c) => [c, challengeNote(c, false)])),
        },
      },
      results: [...(pebbleFull ? [pebbleFull] : []), ...stintFull, stintRenew],
      ...(pebbleFull
        ? {
            // Stint's figure over pebble's, per full flow: below 1 is Stint cheaper.
            stintOverPebble: Object.fromEntries(stintFull.map((r) => [r.challenge, overPebble(r)])),
          }
        : { pebbleMissing: PEBBLE_MISSING }),
    };
  } finally {
    for (const p of running) await p.stop();
    responder?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const PEBBLE_ATTEMPTS = 3;

/**
 * pebble's full-flow figures. pebble 2.4 (Debian 12) can deadlock on its own
 * locks under concurrent load (letsencrypt/pebble#554 describes the pattern):
 * a stuck pebble is restarted and measured again, and the result says so.
 */
async function measurePebble(pebblePath: string, dir: string, s: Settings): Promise<LoadResult> {
  for (let attempt = 1; ; attempt++) {
    log(`starting pebble (${pebblePath})`);
    const pebble = await startPebble(pebblePath, dir);
    try {
      const target = {
        name: "pebble",
        directoryUrl: pebble.directoryUrl,
        ca: pebble.ca,
        serverPid: pebble.pid,
      };
      const result = await load(
        target,
        s,
        "full",
        dnsNames({ ...s, runId: `${s.runId}p${attempt}` }, new Map()),
      );
      return attempt > 1 ? { ...result, pebbleRestarts: attempt - 1 } : result;
    } catch (err) {
      if (!(err instanceof StallError) || attempt >= PEBBLE_ATTEMPTS) throw err;
      log(
        `${err.message}: pebble deadlocked (letsencrypt/pebble#554); restarting it, attempt ${attempt + 1} of ${PEBBLE_ATTEMPTS}`,
      );
    } finally {
      await pebble.stop();
    }
  }
}
