import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import type { Server } from "node:http";
import { cpus, loadavg } from "node:os";
import { parseArgs } from "node:util";
import { compare } from "./acme-load/compare";
import type { LoadResult, Names, Target } from "./acme-load/load";
import {
  challengeNote,
  dnsNames,
  type JoinToken,
  load,
  log,
  mintTokens,
  namesNeeded,
  readText,
  readTokens,
  type Settings,
  tokenNames,
  UsageError,
} from "./acme-load/run";
import { startHttp01, stintTrustDomain, stopServersOnSignal } from "./acme-load/servers";
import { startWatchdog, stopWatchdog } from "./acme-load/watchdog";

/**
 * ACME issuance under load, measured on the server: certificates per second,
 * latency per certificate, and the server process's CPU time per certificate
 * read from /proc. Against any ACME server (--directory), or --compare:
 * pebble and a fresh Stint CA in one run, on the same machine, one after the
 * other. JSON on stdout with --json; progress on stderr.
 *   npm run bench:acme -- --compare [--count 2000] [--concurrency 16] [--json]
 *   npm run bench:acme -- --directory URL --ca-file PEM --server-pid PID [--challenge attest-01 --data-dir DIR]
 */

const USAGE = `usage: npm run bench:acme -- (--compare | --directory URL) [options]
  --directory URL        the ACME directory to load (any ACME server)
  --ca-file PEM          roots to trust for the server's TLS certificate (default: the system's)
  --server-pid PID       the server process, to read its CPU time and RSS from /proc
  --compare              start pebble (from PATH) and a Stint CA, load both, compare: pebble's full flow,
                         Stint's attest-01 and dns + http-01 full flows (--challenge picks one) and renewal
  --mode full|renew      full ACME flow, or Stint's renew-with-certificate (default full)
  --challenge TYPE       http-01 or attest-01 (Stint, join tokens: needs --data-dir unless --compare);
                         default http-01, or attest-01 for Stint with --compare
  --data-dir DIR         the Stint CA's data directory: its admin credential makes the join tokens
  --tokens-file FILE     join tokens made beforehand: \`stint token create --json\` outputs, or what
                         --save-tokens wrote; one per certificate (full), one per worker (renew)
  --save-tokens          with --data-dir: make the tokens this run would need, write --tokens-file, stop
  --count N              measured certificates (default 2000)
  --concurrency N        workers, each with its own account (default 16)
  --warmup N             certificates before measuring (default 100)
  --poll-ms N            longest wait between polls (default 10)
  --rss-every N          also read the server's RSS every N measured certificates (e.g. --mode renew
                         --count 100000 --rss-every 10000 shows whether memory grows with issuance)
  --http01-port N        port of the http-01 responder (default 5002; --compare picks one)
  --dns-suffix NAME      DNS names are c<n>-<run>.NAME (default bench.test)
  --stint MAIN_JS        --compare: start this Stint build (another commit's dist/cli/main.js) for an A/B
                         with this generator; default this build
  --read-order-first     read the order before finalizing even after a valid attest-01 answer (the agent
                         before issue 13, 6 requests per certificate; by default 5, as the agent now does)
  --metrics              the server is Stint: read its /metrics for requests per certificate by route
                         (--compare always does)
  --json                 print the result as JSON`;

const FLAGS = {
  directory: { type: "string" },
  "ca-file": { type: "string" },
  "server-pid": { type: "string" },
  compare: { type: "boolean" },
  mode: { type: "string" },
  challenge: { type: "string" },
  "data-dir": { type: "string" },
  "tokens-file": { type: "string" },
  "save-tokens": { type: "boolean" },
  count: { type: "string" },
  concurrency: { type: "string" },
  warmup: { type: "string" },
  "poll-ms": { type: "string" },
  "rss-every": { type: "string" },
  "http01-port": { type: "string" },
  "dns-suffix": { type: "string" },
  metrics: { type: "boolean" },
  stint: { type: "string" },
  "read-order-first": { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

function int(values: Record<string, unknown>, name: string, dflt: number, min: number): number {
  const raw = values[name];
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be a whole number ≥ ${min}`);
  return n;
}

function oneOf<T extends string>(values: Record<string, unknown>, name: string, allowed: readonly T[]) {
  const raw = values[name];
  if (raw === undefined) return undefined;
  if (!allowed.includes(raw as T)) throw new UsageError(`--${name} must be one of ${allowed.join(", ")}`);
  return raw as T;
}

async function standalone(values: Record<string, unknown>, s: Settings): Promise<Record<string, unknown>> {
  const directoryUrl = values.directory as string;
  let origin: string;
  try {
    origin = new URL(directoryUrl).origin;
  } catch {
    throw new UsageError(`--directory ${directoryUrl} is not a URL`);
  }
  const ca = values["ca-file"] ? readText(values["ca-file"] as string) : undefined;
  const serverPid = values["server-pid"] === undefined ? undefined : int(values, "server-pid", 0, 1);
  const challenge = s.challenge ?? "http-01";
  if (s.mode === "renew" && challenge !== "attest-01")
    throw new UsageError("--mode renew is Stint's renew-with-certificate: it needs --challenge attest-01");
  const target: Target = {
    name: new URL(directoryUrl).host,
    directoryUrl,
    ca,
    serverPid,
    ...(values.metrics ? { metricsUrl: `${origin}/metrics` } : {}),
  };

  let names: Names;
  let responder: Server | undefined;
  if (challenge === "attest-01") {
    const needed = namesNeeded(s, s.mode);
    let tokens: JoinToken[];
    if (values["tokens-file"] && !values["save-tokens"]) tokens = readTokens(values["tokens-file"] as string);
    else {
      const dataDir = values["data-dir"] as string | undefined;
      if (!dataDir)
        throw new UsageError(
          "--challenge attest-01 needs --tokens-file, or --data-dir (the CA's) to make tokens",
        );
      tokens = await mintTokens(s, dataDir, origin, await stintTrustDomain(origin, ca), needed);
      if (values["save-tokens"]) {
        writeFileSync(values["tokens-file"] as string, `${JSON.stringify(tokens)}\n`, { mode: 0o600 });
        log(`saved ${tokens.length} join tokens to ${values["tokens-file"]}`);
        return { saved: tokens.length };
      }
    }
    names = tokenNames(tokens, needed);
  } else {
    const tokens = new Map<string, string>();
    responder = (await startHttp01(tokens, s.http01Port)).server;
    names = dnsNames(s, tokens);
  }
  try {
    const result = await load(target, s, s.mode, names);
    return { results: [result], challengeNote: challengeNote(names.challenge, false) };
  } finally {
    responder?.close();
  }
}

function table(results: LoadResult[]): string {
  const head = [
    "server",
    "mode",
    "challenge",
    "certs",
    "fail",
    "certs/s",
    "p50 ms",
    "p99 ms",
    "srv CPU ms/cert",
    "req/cert",
    "srv RSS MiB",
    "client CPU ms/cert",
  ];
  const rows = results.map((r) => [
    r.server,
    r.mode,
    r.mode === "renew" ? "-" : r.challenge,
    String(r.certificates),
    String(r.failures),
    r.certsPerSecond.toFixed(1),
    r.latencyMs.p50.toFixed(1),
    r.latencyMs.p99.toFixed(1),
    r.serverCpuMsPerCert?.toFixed(2) ?? "-",
    r.requestsPerCert?.total.toFixed(2) ?? "-",
    r.serverRssMiB?.toFixed(0) ?? "-",
    r.clientCpuMsPerCert.toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padStart(widths[i])).join("  ")).join("\n");
}

async function main(): Promise<number> {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: process.argv.slice(2), options: FLAGS, strict: true }).values;
  } catch (err) {
    throw new UsageError((err as Error).message.split("\n")[0]);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const s: Settings = {
    mode: oneOf(values, "mode", ["full", "renew"] as const) ?? "full",
    challenge: oneOf(values, "challenge", ["http-01", "attest-01"] as const),
    count: int(values, "count", 2000, 1),
    concurrency: int(values, "concurrency", 16, 1),
    warmup: int(values, "warmup", 100, 0),
    pollMs: int(values, "poll-ms", 10, 1),
    dnsSuffix: (values["dns-suffix"] as string | undefined) ?? "bench.test",
    http01Port: int(values, "http01-port", 5002, 0),
    rssEvery: int(values, "rss-every", 0, 0),
    runId: randomBytes(3).toString("hex"),
    ...(values.stint ? { stintMain: values.stint as string } : {}),
    readOrderFirst: values["read-order-first"] === true,
  };
  if (values["save-tokens"] && !values["tokens-file"])
    throw new UsageError("--save-tokens needs --tokens-file");
  if (!values.compare && !values.directory) throw new UsageError("give --directory URL, or --compare");
  if (values.compare && values.directory)
    throw new UsageError("--compare starts its own servers: drop --directory");
  if (values.compare && values.mode !== undefined)
    throw new UsageError("--compare runs both modes: drop --mode");
  const loadBefore = loadavg()[0];
  const body = values.compare ? await compare(s) : await standalone(values, s);
  if (body.saved !== undefined) return 0;
  const report = {
    bench: "acme-load",
    command: `npm run bench:acme -- ${process.argv.slice(2).join(" ")}`.trim(),
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model ?? "unknown",
      node: process.version,
      loadAverage1m: { before: Number(loadBefore.toFixed(2)), after: Number(loadavg()[0].toFixed(2)) },
    },
    settings: {
      count: s.count,
      concurrency: s.concurrency,
      warmup: s.warmup,
      pollMs: s.pollMs,
      readOrderFirst: s.readOrderFirst === true,
    },
    ...body,
  };
  const results = body.results as LoadResult[];
  if (values.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else {
    process.stdout.write(`${table(results)}\n`);
    for (const r of results) {
      if (!r.serverRssSamples) continue;
      const samples = r.serverRssSamples.map((x) => `${x.certificates}: ${x.rssMiB}`).join(", ");
      process.stdout.write(`${r.server} ${r.mode}: server RSS MiB after N certificates: ${samples}\n`);
    }
    for (const r of results) {
      if (!r.requestsPerCert) continue;
      const routes = Object.entries(r.requestsPerCert).map(([route, n]) => `${route} ${n}`);
      process.stdout.write(
        `${r.server} ${r.mode} ${r.challenge}: requests per certificate: ${routes.join(", ")}\n`,
      );
    }
    const ratios = body.stintOverPebble as Record<string, { serverCpuMsPerCert?: number }> | undefined;
    for (const [challenge, ratio] of Object.entries(ratios ?? {}))
      process.stdout.write(
        `server CPU per certificate, stint ${challenge} / pebble: ${ratio.serverCpuMsPerCert}\n`,
      );
    if (body.pebbleMissing) process.stdout.write(`${body.pebbleMissing}\n`);
    const restarts = results.find((r) => r.pebbleRestarts)?.pebbleRestarts;
    if (restarts)
      process.stdout.write(
        `pebble deadlocked and was restarted ${restarts} time(s); its row is from the last start\n`,
      );
  }
  return results.some((r) => r.failures > 0) ? 1 : 0;
}

/** Longer than any stall the run's own check (load.ts, 20 s) handles: this one is for a blocked event loop. */
const WATCHDOG_MS = 60_000;

stopServersOnSignal();
startWatchdog(WATCHDOG_MS);
main().then(
  (code) => {
    stopWatchdog();
    process.exitCode = code;
  },
  (err) => {
    stopWatchdog();
    if (err instanceof UsageError) {
      console.error(`bench:acme: ${err.message}\n${USAGE}`);
      process.exitCode = 2;
    } else {
      console.error(`bench:acme failed: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    }
  },
);
