import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { ADMIN_PATHS } from "../../acme/admin";
import { AdminClient } from "../../cli/admin-client";
import { FeedClient } from "../../verify/feed";
import { createVerifier } from "../../verify/verifier";
import { latencySummary } from "./acme-load/load";
import { startStint, stintMain, stopServersOnSignal } from "./acme-load/servers";

/**
 * Revocation latency as a service sees it: a fresh `stint ca serve`, a
 * verifier in this process following its feed over /feed/events (its own
 * fallback poll an hour away), and certificates revoked one at a time
 * through the admin API, each timed from the request until the verifier
 * refuses the certificate. JSON on stdout, progress on stderr.
 *   npm run bench:revoke [-- --count 50] [--stint OTHER/dist/cli/main.js]
 */

const USAGE = `usage: npm run bench:revoke -- [--count N] [--stint MAIN_JS] [--poll-interval DURATION]
  --count N                revocations measured, one after another (default 50)
  --stint MAIN_JS          the server's build (another commit's dist/cli/main.js); default this build
  --poll-interval D        the server's feed.pollInterval (default: its own default, 500ms)`;

const TD = "revoke.example";
const log = (line: string) => process.stderr.write(`bench:revoke: ${line}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `stint ca issue` from the server's build, as one more process beside the server (as a user would). */
function issue(
  main: string,
  dataDir: string,
  out: string,
  name: string,
): Promise<{ chain: string; serial: string }> {
  return new Promise((resolve, reject) => {
    const args = [main, "ca", "issue", "--data-dir", dataDir, "--spiffe-id", `spiffe://${TD}/${name}`];
    const child = spawn(process.execPath, [...args, "--out", join(out, name), "--json"], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const output: Buffer[] = [];
    const errors: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => output.push(c));
    child.stderr.on("data", (c: Buffer) => errors.push(c));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code !== 0) return reject(new Error(`stint ca issue failed: ${Buffer.concat(errors).toString()}`));
      const serial = JSON.parse(Buffer.concat(output).toString()).serial as string;
      resolve({ chain: readFileSync(join(out, name, "cert.pem"), "utf8"), serial });
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      count: { type: "string" },
      stint: { type: "string" },
      "poll-interval": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const count = Number(values.count ?? 50);
  if (!Number.isInteger(count) || count < 1) throw new Error(`--count must be a whole number ≥ 1\n${USAGE}`);
  const main = stintMain(values.stint);
  const dir = mkdtempSync(join(tmpdir(), "stint-bench-revoke-"));
  const loadBefore = loadavg()[0];
  log(`starting ${main} ca serve`);
  const stint = await startStint({
    dir,
    trustDomain: TD,
    main,
    args: values["poll-interval"] ? ["--feed-poll-interval", values["poll-interval"]] : [],
  });
  let feed: FeedClient | undefined;
  try {
    log(`issuing ${count} certificates with stint ca issue`);
    const certs: { chain: string; serial: string }[] = [];
    for (let i = 0; i < count; i += 4) {
      const batch = Array.from({ length: Math.min(4, count - i) }, (_, j) =>
        issue(main, stint.dataDir, dir, `w${i + j}`),
      );
      certs.push(...(await Promise.all(batch)));
    }
    const rootsPem = stint.ca;
    feed = await FeedClient.open({ url: stint.url, rootsPem, pollMs: 3_600_000 });
    const verifier = createVerifier({
      bundle: rootsPem,
      usage: "client",
      allow: { trustDomain: TD },
      revocation: feed,
      maxFeedAge: 3_600_000,
    });
    const admin = await AdminClient.fromFlags({
      "data-dir": stint.dataDir,
      server: stint.url,
      "ca-file": join(stint.dataDir, "root.pem"),
    });
    // Issued by other processes after the feed was built: accepted as "not yet covered" until revoked.
    for (const c of certs)
      if (!verifier.verify(c.chain).ok) throw new Error("a fresh certificate was refused");

    const toReject: number[] = [];
    const adminMs: number[] = [];
    for (const [i, c] of certs.entries()) {
      const t0 = performance.now();
      const request = admin
        .post(ADMIN_PATHS.revoke.replace(":serial", c.serial), { reason: "keyCompromise" })
        .then(() => adminMs.push(performance.now() - t0));
      while (verifier.verify(c.chain).ok) {
        if (performance.now() - t0 > 30_000) throw new Error(`certificate ${i} was not refused within 30 s`);
        await sleep(1);
      }
      toReject.push(performance.now() - t0);
      await request;
      // Apart, so one revocation's feed does not carry the next.
      await sleep(20 + Math.random() * 30);
    }
    const report = {
      bench: "revoke",
      command: `npm run bench:revoke -- ${process.argv.slice(2).join(" ")}`.trim(),
      machine: {
        cpus: cpus().length,
        model: cpus()[0]?.model ?? "unknown",
        node: process.version,
        loadAverage1m: { before: Number(loadBefore.toFixed(2)), after: Number(loadavg()[0].toFixed(2)) },
      },
      server: main,
      setup:
        "one revocation at a time through POST /admin/certificates/:serial/revoke; a verifier in this process follows /feed/events (fallback poll 1 h) and is asked every ~1 ms whether it still accepts the certificate",
      revocations: toReject.length,
      revokeToRejectMs: latencySummary(toReject),
      adminRequestMs: latencySummary(adminMs),
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } finally {
    feed?.close();
    await stint.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

stopServersOnSignal();
main().catch((err: unknown) => {
  process.stderr.write(`bench:revoke failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
