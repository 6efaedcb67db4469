import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import * as prom from "prom-client";
import { createLogger as createStintLogger, redact } from "../../common/logger";

/**
 * What logging and metrics cost per call, to decide whether pino and
 * prom-client may replace hand-written code on the ACME hot path (issue 19).
 * It measures them in one run on one thread:
 *   - the hand-written JSON logger as it was before issue 19 (kept here, below, as the baseline)
 *     and pino, both writing synchronously to a file, with the same fields;
 *     pino with the redactor the Stint logger applies (no key may slip through), and without;
 *   - a call at a disabled level;
 *   - a counter increment with two labels and a histogram observation,
 *     hand-written (the registry before issue 19, kept below) and prom-client;
 *   - a /metrics exposition at the CA's cardinality (~40 families, ~250 series).
 * Per certificate the ACME full flow makes 9 requests: 9 request-counter increments,
 * 1 issuance counter, 1 latency observation, and 2 info lines (challenge
 * validated, certificate issued) — the budget the per-call costs are multiplied by.
 * Prints one JSON document on stdout; progress goes to stderr.
 *   npm run bench:logging [-- --seconds 2]
 */

const secondsArg = process.argv.indexOf("--seconds");
const SECONDS = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 2;

interface Result {
  name: string;
  calls: number;
  /** CPU time (user + system) per call, the lowest of ROUNDS rounds: the machine may be shared. */
  nsPerCall: number;
}

const ROUNDS = 5;

interface Case {
  name: string;
  once: (i: number) => unknown;
}

/** Runs the cases in turn, ROUNDS times, so a busy neighbour slows all of them alike. */
const c = (name: string, once: (i: number) => unknown): Case => ({ name, once });

async function measureAll(cases: Case[]): Promise<Result[]> {
  const best = new Map<string, Result>();
  for (let round = 1; round <= ROUNDS; round++) {
    process.stderr.write(`bench: round ${round}/${ROUNDS}…\n`);
    for (const c of cases) {
      const r = await measure(c, SECONDS / ROUNDS, round === 1);
      const prev = best.get(c.name);
      if (!prev || r.nsPerCall < prev.nsPerCall) best.set(c.name, r);
    }
  }
  return cases.map((c) => best.get(c.name)!);
}

async function measure({ name, once }: Case, seconds: number, warm: boolean): Promise<Result> {
  // Only promises are awaited: an await costs about as much as a counter increment.
  const run = (i: number) => {
    const r = once(i);
    return r instanceof Promise ? r : undefined;
  };
  if (warm) for (let i = 0; i < 20_000; i++) await run(i); // JIT
  const cpu = process.cpuUsage();
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  let n = 0;
  // Batches of 100 keep the clock out of the measurement.
  while (process.hrtime.bigint() < deadline) {
    for (let j = 0; j < 100; j++) {
      const pending = run(n++);
      if (pending) await pending;
    }
  }
  const used = process.cpuUsage(cpu);
  const ns = (used.user + used.system) * 1000;
  return { name, calls: n, nsPerCall: Math.round((ns / n) * 10) / 10 };
}

/** Fields like those of the "certificate issued" line. */
const fields = (i: number) => ({
  serial: `7f3a${i.toString(16).padStart(12, "0")}`,
  spiffeId: "spiffe://stint.internal/ns/payments/sa/api",
  dnsNames: ["api.payments.svc"],
  issuer: "int-20261204-1a2b",
  notAfter: "2026-12-04T19:00:00.000Z",
  via: "acme:join_token",
});

async function logging(dir: string): Promise<Result[]> {
  const ours = openSync(join(dir, "ours.log"), "w");
  const oursLog = baselineLogger({ write: (s: string) => writeSync(ours, s) }, "ca");
  const stintLog = createStintLogger({
    component: "ca",
    stream: { write: (s: string) => writeSync(ours, s) },
  });
  const pinoOptions = {
    base: { component: "ca" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  const plain = pino(pinoOptions, pino.destination({ dest: join(dir, "pino.log"), sync: true }));
  const redacted = pino(
    {
      ...pinoOptions,
      formatters: { ...pinoOptions.formatters, log: (o: Record<string, unknown>) => redactAll(o) },
    },
    pino.destination({ dest: join(dir, "pino-redacted.log"), sync: true }),
  );
  // In memory: what formatting costs, without the write(2) every synchronous logger pays per line.
  let bytes = 0; // kept, so the engine cannot drop the formatted line
  const sink = { write: (s: string) => (bytes += s.length) };
  const memOurs = baselineLogger(sink, "ca");
  const memPino = pino(
    {
      ...pinoOptions,
      formatters: { ...pinoOptions.formatters, log: (o: Record<string, unknown>) => redactAll(o) },
    },
    sink,
  );
  return measureAll([
    c("log in memory: hand-written (before issue 19), info line", (i) =>
      memOurs.info("certificate issued", fields(i)),
    ),
    c("log in memory: pino + Stint redactor, info line", (i) =>
      memPino.info(fields(i), "certificate issued"),
    ),
    c("log: hand-written (before issue 19), info line", (i) => oursLog.info("certificate issued", fields(i))),
    c("log: pino, info line, no redaction", (i) => plain.info(fields(i), "certificate issued")),
    c("log: pino + Stint redactor, info line", (i) => redacted.info(fields(i), "certificate issued")),
    c("log: common/logger.ts as built, info line", (i) => stintLog.info("certificate issued", fields(i))),
    c("log: hand-written, disabled debug", (i) => oursLog.debug("d", fields(i))),
    c("log: pino, disabled debug", (i) => plain.debug(fields(i), "d")),
  ]).finally(() => closeSync(ours));
}

function redactAll(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(o)) out[k] = redact(k, o[k]);
  return out;
}

const ROUTES = [
  "directory",
  "new-nonce",
  "new-account",
  "new-order",
  "order",
  "authz",
  "challenge",
  "finalize",
  "cert",
  "renewal-info",
  "revoke-cert",
  "renew",
  "admin",
  "crl",
  "feed",
  "feed-events",
  "bundle",
  "health",
  "metrics",
  "other",
];
const CODES = ["200", "201", "204", "400", "403", "404", "429", "500"];
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

async function metrics(): Promise<Result[]> {
  const ours = new BaselineRegistry();
  const oursRequests = ours.counter("stint_http_requests_total", "HTTP requests.", ["route", "code"]);
  const oursLatency = ours.histogram("stint_issuance_seconds", "Issuance.", ["profile"], BUCKETS);
  const reg = new prom.Registry();
  const promRequests = new prom.Counter({
    name: "stint_http_requests_total",
    help: "HTTP requests.",
    labelNames: ["route", "code"],
    registers: [reg],
  });
  const promLatency = new prom.Histogram({
    name: "stint_issuance_seconds",
    help: "Issuance.",
    labelNames: ["profile"],
    buckets: BUCKETS,
    registers: [reg],
  });
  // Realistic cardinality: every route × code seen, 3 profiles, 30 more small families.
  for (const route of ROUTES) {
    for (const code of CODES) {
      oursRequests.inc({ route, code });
      promRequests.inc({ route, code });
    }
  }
  for (const profile of ["workload", "server", "admin"]) {
    oursLatency.observe(0.002, { profile });
    promLatency.observe({ profile }, 0.002);
  }
  for (let f = 0; f < 30; f++) {
    const c = ours.counter(`stint_family_${f}_total`, "Other.", ["kind"]);
    const p = new prom.Counter({
      name: `stint_family_${f}_total`,
      help: "Other.",
      labelNames: ["kind"],
      registers: [reg],
    });
    for (const kind of ["a", "b"]) {
      c.inc({ kind });
      p.inc({ kind });
    }
  }
  const label = (i: number) => ({ route: ROUTES[i % ROUTES.length]!, code: CODES[i % 3]! });
  const cached = new Map<string, prom.Counter.Internal>();
  return measureAll([
    c("metric: hand-written counter inc, 2 labels", (i) => oursRequests.inc(label(i))),
    c("metric: prom-client counter inc, 2 labels", (i) => promRequests.inc(label(i))),
    c("metric: prom-client labels() child cached by caller, inc", (i) => {
      const l = label(i);
      const key = `${l.route}\u0000${l.code}`;
      let child = cached.get(key);
      if (child === undefined) {
        child = promRequests.labels(l);
        cached.set(key, child);
      }
      child.inc();
    }),
    c("metric: hand-written histogram observe", (i) =>
      oursLatency.observe((i % 50) / 1000, { profile: "workload" }),
    ),
    c("metric: prom-client histogram observe", (i) =>
      promLatency.observe({ profile: "workload" }, (i % 50) / 1000),
    ),
    c("exposition: hand-written render (~250 series)", () => ours.render()),
    c("exposition: prom-client metrics() (~250 series)", () => reg.metrics()),
  ]);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "stint-bench-logging-"));
  try {
    const results = [...(await logging(dir)), ...(await metrics())];
    const ns = (name: string) => results.find((r) => r.name.startsWith(name))!.nsPerCall;
    // Per certificate on the ACME full flow: 11 metric calls, 2 info lines (see the comment at the top).
    const perCert = (counter: string, histogram: string, log: string) =>
      Math.round((10 * ns(counter) + ns(histogram) + 2 * ns(log)) / 100) / 10;
    console.log(
      JSON.stringify(
        {
          node: process.version,
          seconds: SECONDS,
          results,
          microsPerCertificate: {
            handWritten: perCert(
              "metric: hand-written counter",
              "metric: hand-written histogram",
              "log: hand-written (before",
            ),
            pinoPromClient: perCert(
              "metric: prom-client counter",
              "metric: prom-client histogram",
              "log: pino + Stint",
            ),
          },
        },
        null,
        2,
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- The baseline: the hand-written logger and registry as they were before issue 19, reduced to what is measured.

function baselineLogger(stream: { write(s: string): unknown }, component: string) {
  const noop = (_m: string, _f?: Record<string, unknown>) => {};
  return {
    debug: noop,
    info(msg: string, f?: Record<string, unknown>) {
      const line: Record<string, unknown> = { time: new Date().toISOString(), level: "info", component, msg };
      if (f) for (const k of Object.keys(f)) line[k] = redact(k, f[k]);
      stream.write(`${JSON.stringify(line)}\n`);
    },
  };
}

interface Series {
  labels: string;
  value: number;
  counts?: Float64Array;
  sum?: number;
}

/** Series found through one Map per label, as common/metrics.ts did before issue 19. */
class BaselineFamily<L extends string> {
  private readonly root = new Map<string, unknown>();
  readonly series: Series[] = [];
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: string,
    readonly labelNames: readonly L[],
    readonly bounds: readonly number[] = [],
  ) {}
  lookup(labels: Record<L, string>): Series {
    let node = this.root;
    const names = this.labelNames;
    for (let i = 0; i < names.length - 1; i++) {
      const v = labels[names[i]!];
      let next = node.get(v) as Map<string, unknown> | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(v, next);
      }
      node = next;
    }
    const v = labels[names[names.length - 1]!];
    let s = node.get(v) as Series | undefined;
    if (s === undefined) {
      const text = names.map((n) => `${n}="${labels[n]}"`).join(",");
      s = { labels: text, value: 0, counts: new Float64Array(this.bounds.length + 1), sum: 0 };
      node.set(v, s);
      this.series.push(s);
    }
    return s;
  }
  inc(labels: Record<L, string>, by = 1): void {
    this.lookup(labels).value += by;
  }
  observe(value: number, labels: Record<L, string>): void {
    const s = this.lookup(labels);
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    s.counts![i]!++;
    s.sum! += value;
    s.value++;
  }
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`);
    for (const s of this.series) {
      if (this.type !== "histogram") {
        out.push(`${this.name}{${s.labels}} ${s.value}`);
        continue;
      }
      let cumulative = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += s.counts![i]!;
        const le = i < this.bounds.length ? String(this.bounds[i]) : "+Inf";
        out.push(`${this.name}_bucket{${s.labels},le="${le}"} ${cumulative}`);
      }
      out.push(`${this.name}_sum{${s.labels}} ${s.sum}`, `${this.name}_count{${s.labels}} ${s.value}`);
    }
  }
}

class BaselineRegistry {
  private readonly families: BaselineFamily<string>[] = [];
  counter<L extends string>(name: string, help: string, labelNames: readonly L[]): BaselineFamily<L> {
    const f = new BaselineFamily(name, help, "counter", labelNames);
    this.families.push(f as BaselineFamily<string>);
    return f;
  }
  histogram<L extends string>(name: string, help: string, labelNames: readonly L[], bounds: number[]) {
    const f = new BaselineFamily(name, help, "histogram", labelNames, bounds);
    this.families.push(f as BaselineFamily<string>);
    return f;
  }
  render(): string {
    const out: string[] = [];
    for (const f of this.families) f.render(out);
    return `${out.join("\n")}\n`;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
