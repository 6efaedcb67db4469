import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { resolve } from "node:path";

/**
 * Real processes, started as a user starts them: `node dist/cli/main.js …`
 * with a clean environment. A CA can be killed with SIGKILL and started
 * again on the same port; every exit it was not asked for is counted, since
 * "the CA crashed" is one of the figures drills report.
 */

export const STINT_MAIN = resolve(__dirname, "../../cli/main.js");

const baseEnv = (env: Record<string, string>): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH ?? "",
  HOME: process.env.HOME ?? "/tmp",
  ...env,
});

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs one `stint` command to its end. */
export function stint(args: string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, [STINT_MAIN, ...args], {
    encoding: "utf8",
    env: baseEnv(env),
    timeout: 120_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** `stint … --json`, parsed; throws with the command's stderr when it fails. */
export function stintJson<T>(args: string[], env: Record<string, string> = {}): T {
  const r = stint([...args, "--json"], env);
  if (r.code !== 0)
    throw new Error(`stint ${args.slice(0, 2).join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

/** Children still running, so a drill that ends early leaves none behind. */
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** A running process with its stderr lines (JSON log lines for stint). */
export interface Proc {
  child: ChildProcess;
  pid: number;
  lines(): string[];
  /** Resolves with the exit code, or the signal's name. */
  exited: Promise<number | string>;
  /** Waits for a line matching `re` (already seen or still to come), at most timeoutMs. */
  waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
}

/** Spawns `node main.js <args>` and collects its stderr lines (at most the last `keepLines`). */
export function spawnStint(args: string[], env: Record<string, string> = {}, keepLines = 5000): Proc {
  const child = spawn(process.execPath, [STINT_MAIN, ...args], {
    env: baseEnv(env),
    stdio: ["ignore", "ignore", "pipe"],
  });
  live.add(child);
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; done: (m: RegExpExecArray) => void }> = [];
  let partial = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    const parts = (partial + chunk.toString("utf8")).split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) {
      lines.push(line);
      if (lines.length > keepLines) lines.shift();
      for (const w of [...waiters]) {
        const m = w.re.exec(line);
        if (m) {
          waiters.splice(waiters.indexOf(w), 1);
          w.done(m);
        }
      }
    }
  });
  const exited = new Promise<number | string>((done) =>
    child.once("exit", (code, signal) => {
      live.delete(child);
      done(code ?? signal ?? -1);
    }),
  );
  return {
    child,
    pid: child.pid!,
    lines: () => [...lines],
    exited,
    waitForLine: (re, timeoutMs) =>
      new Promise((done, reject) => {
        for (const line of lines) {
          const m = re.exec(line);
          if (m) return done(m);
        }
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`no line matching ${re} within ${timeoutMs} ms:\n${lines.slice(-20).join("\n")}`));
        }, timeoutMs);
        const waiter = {
          re,
          done: (m: RegExpExecArray) => {
            clearTimeout(timer);
            done(m);
          },
        };
        waiters.push(waiter);
        void exited.then((code) => {
          if (!waiters.includes(waiter)) return;
          waiters.splice(waiters.indexOf(waiter), 1);
          clearTimeout(timer);
          reject(new Error(`exited (${code}) before a line matching ${re}:\n${lines.slice(-20).join("\n")}`));
        });
      }),
  };
}

/** Sends SIGKILL and waits for the process to be gone. */
export async function kill9(p: Proc): Promise<void> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  await p.exited;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code or signal. */
export async function stop(p: Proc, graceMs = 30_000): Promise<number | string> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return p.exited;
  const timer = setTimeout(() => p.child.kill("SIGKILL"), graceMs);
  p.child.kill("SIGTERM");
  const code = await p.exited;
  clearTimeout(timer);
  return code;
}

const LISTENING = /"msg":"listening".*"url":"([^"]+)"/;

/**
 * `stint ca serve` on a fixed address, so it can be killed and started again
 * where clients expect it. Exits the drill did not cause are counted in
 * `unexpectedExits`, with the last log lines kept for the report.
 */
export class CaServer {
  proc!: Proc;
  url = "";
  unexpectedExits = 0;
  readonly exitReports: string[] = [];
  private expectingExit = false;

  constructor(
    readonly name: string,
    private readonly args: string[],
    private readonly env: Record<string, string>,
  ) {}

  get pid(): number {
    return this.proc.pid;
  }

  get running(): boolean {
    return (
      this.proc !== undefined && this.proc.child.exitCode === null && this.proc.child.signalCode === null
    );
  }

  /** Starts it and resolves with its URL once it logs "listening". */
  async start(): Promise<string> {
    this.expectingExit = false;
    const proc = spawnStint(["ca", "serve", ...this.args], this.env);
    this.proc = proc;
    void proc.exited.then((code) => {
      if (this.expectingExit || this.proc !== proc) return;
      this.unexpectedExits++;
      this.exitReports.push(`${this.name} exited (${code}):\n${proc.lines().slice(-10).join("\n")}`);
    });
    this.url = (await proc.waitForLine(LISTENING, 60_000))[1];
    return this.url;
  }

  async kill9(): Promise<void> {
    this.expectingExit = true;
    await kill9(this.proc);
  }

  /** SIGTERM; resolves with the exit code (0 for a clean stop). */
  async stop(): Promise<number | string> {
    if (!this.proc) return 0;
    this.expectingExit = true;
    return stop(this.proc);
  }

  /** Log lines at level error from the current process. */
  errorLines(): string[] {
    return this.proc.lines().filter((l) => l.includes('"level":"error"'));
  }
}
