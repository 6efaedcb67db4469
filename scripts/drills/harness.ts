import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

/**
 * What every drill shares: the command line (--short for the CI size, a few
 * whole-number overrides), progress lines on stderr, cleanup that runs
 * however the drill ends, a deadline that stops a drill that hangs, and the
 * ONE JSON line on stdout. A drill returns its figures and names the ones
 * that must be zero; any that is not makes the exit status 1.
 */

/** A mistake on the command line: one line with the usage, exit 2. */
export class UsageError extends Error {}

export interface DrillSpec<S> {
  /** "ca-crash": the npm script is drill:<name>. */
  name: string;
  /** What the drill does, for --help. */
  about: string;
  /** Whole-number settings: their full-size and --short values, and what each means. */
  settings: { [K in keyof S]: { full: number; short: number; help: string } };
  /** Whole run, after which the drill gives up (and fails): every loop is also bounded by count. */
  deadlineSeconds: { full: number; short: number };
  run(ctx: DrillContext<S>): Promise<DrillResult>;
}

export interface DrillResult {
  /** Figures that must be 0; the drill fails unless each is. */
  zeros: Record<string, number>;
  /** Everything else measured, for the report. */
  figures: Record<string, unknown>;
}

export interface DrillContext<S> {
  short: boolean;
  settings: S;
  log(line: string): void;
  /** A fresh directory, removed when the drill ends (kept with --keep). */
  tempDir(prefix: string): string;
  /** Runs when the drill ends, last registered first, even after a failure or a signal. */
  onCleanup(fn: () => unknown): void;
  /** True once the deadline has passed: loops check it and stop. */
  overdue(): boolean;
}

export function runDrill<S extends Record<string, number>>(spec: DrillSpec<S>): void {
  const started = Date.now();
  const cleanups: Array<() => unknown> = [];
  const dirs: string[] = [];
  let finished = false;
  let keep = false;
  const log = (line: string) => process.stderr.write(`drill:${spec.name}: ${line}\n`);

  const cleanup = async () => {
    while (cleanups.length > 0) {
      const fn = cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        log(`cleanup failed: ${(err as Error).message}`);
      }
    }
    if (!keep) for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };

  const emit = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);

  const main = async (): Promise<number> => {
    const { values, size } = parse(spec);
    keep = values.keep === true;
    if (values.help) {
      process.stdout.write(help(spec));
      return 0;
    }
    const settings = {} as S;
    for (const key of Object.keys(spec.settings) as (keyof S & string)[]) {
      const raw = values[key];
      const dflt = spec.settings[key][size];
      const n = raw === undefined ? dflt : Number(raw);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${key} must be a whole number ≥ 0`);
      (settings as Record<string, number>)[key] = n;
    }
    const deadline = started + spec.deadlineSeconds[size] * 1000;
    const ctx: DrillContext<S> = {
      short: size === "short",
      settings,
      log,
      tempDir: (prefix) => {
        const d = mkdtempSync(join(tmpdir(), `stint-drill-${prefix}-`));
        dirs.push(d);
        return d;
      },
      onCleanup: (fn) => cleanups.push(fn),
      overdue: () => Date.now() > deadline,
    };
    log(`${size} size: ${JSON.stringify(settings)}`);
    const watchdog = setTimeout(
      () => {
        if (finished) return;
        log(`did not finish within ${spec.deadlineSeconds[size]} s; stopping`);
        void cleanup().then(() => {
          emit({ drill: spec.name, size, ok: false, error: "deadline passed", seconds: elapsed(started) });
          process.exit(1);
        });
      },
      spec.deadlineSeconds[size] * 1000 + 60_000,
    );
    watchdog.unref();
    let result: DrillResult;
    try {
      result = await spec.run(ctx);
    } finally {
      finished = true;
      await cleanup();
    }
    const failed = Object.entries(result.zeros).filter(([, v]) => v !== 0);
    const ok = failed.length === 0 && Date.now() <= deadline;
    emit({
      drill: spec.name,
      size,
      ok,
      command: `npm run drill:${spec.name}${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
      seconds: elapsed(started),
      settings,
      zeros: result.zeros,
      figures: result.figures,
    });
    for (const [k, v] of failed) log(`FAILED: ${k} is ${v}, must be 0`);
    if (Date.now() > deadline) log(`FAILED: took longer than ${spec.deadlineSeconds[size]} s`);
    return ok ? 0 : 1;
  };

  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping`);
      void cleanup().then(() => process.exit(130));
    });
  }
  main().then(
    (code) => {
      process.exitCode = code;
    },
    async (err) => {
      finished = true;
      await cleanup();
      if (err instanceof UsageError) {
        process.stderr.write(`drill:${spec.name}: ${err.message}\n${help(spec)}`);
        process.exitCode = 2;
        return;
      }
      log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      emit({ drill: spec.name, ok: false, error: err instanceof Error ? err.message : String(err) });
      process.exitCode = 1;
    },
  );
}

function parse<S>(spec: DrillSpec<S>): { values: Record<string, unknown>; size: "full" | "short" } {
  const options: Record<string, { type: "string" | "boolean" }> = {
    short: { type: "boolean" },
    keep: { type: "boolean" },
    help: { type: "boolean" },
  };
  for (const key of Object.keys(spec.settings)) options[key] = { type: "string" };
  try {
    const { values } = parseArgs({ args: process.argv.slice(2), options, strict: true });
    return { values, size: values.short ? "short" : "full" };
  } catch (err) {
    throw new UsageError((err as Error).message.split("\n")[0]);
  }
}

function help<S>(spec: DrillSpec<S>): string {
  const rows = Object.entries(spec.settings).map(([k, v]) => {
    const s = v as { full: number; short: number; help: string };
    return `  --${k} N`.padEnd(28) + `${s.help} (default ${s.full}; --short ${s.short})`;
  });
  return [
    `usage: npm run drill:${spec.name} -- [--short] [options]`,
    "",
    spec.about,
    "",
    "options:",
    "  --short".padEnd(28) + "the small size CI runs",
    ...rows,
    "  --keep".padEnd(28) + "keep the temporary directories (named in the progress lines)",
    "",
    "Progress goes to stderr; the last line on stdout is the result as JSON. Exit 1 when a figure",
    "that must be 0 is not.",
    "",
  ].join("\n");
}

const elapsed = (since: number) => Math.round((Date.now() - since) / 100) / 10;

/** Sorted-sample summary in milliseconds (nearest rank), for latencies and restart times. */
export function summary(ms: number[]): { n: number; p50: number; p99: number; max: number } {
  if (ms.length === 0) return { n: 0, p50: 0, p99: 0, max: 0 };
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (q: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]);
  return { n: sorted.length, p50: at(0.5), p99: at(0.99), max: Math.round(sorted[sorted.length - 1]) };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
