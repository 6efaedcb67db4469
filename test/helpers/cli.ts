import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

export const STINT = resolve(__dirname, "../../dist/cli/main.js");

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `stint` CLI as a user would, with a clean environment plus `env`. */
export function stint(args: string[], env: Record<string, string> = {}): RunResult {
  const r = spawnSync(process.execPath, [STINT, ...args], {
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    timeout: 60_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** Every line the server wrote to stderr so far. */
  logs: () => string[];
  stop: () => Promise<number | null>;
}

/**
 * Starts `stint ca serve --init` (tests start on fresh directories; --init does nothing where a CA
 * exists) and resolves once its "listening" log line names the URL.
 */
export function startServer(args: string[], env: Record<string, string> = {}): Promise<ServerProcess> {
  const child = spawn(
    process.execPath,
    [STINT, "ca", "serve", "--init", "--listen", "127.0.0.1:0", ...args],
    {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const lines: string[] = [];
  let partial = "";
  const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${lines.join("\n")}`)), 30_000);
    child.stderr!.on("data", (chunk: Buffer) => {
      const text = partial + chunk.toString();
      const parts = text.split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts) {
        lines.push(line);
        const m = /"msg":"listening".*"url":"([^"]+)"/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolvePromise({
            child,
            url: m[1],
            logs: () => [...lines],
            stop: async () => {
              if (child.exitCode === null) child.kill("SIGTERM");
              return exited;
            },
          });
        }
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${lines.concat(partial).join("\n")}`));
    });
  });
}

/** Hash of every file under dir (path, mode, content), to prove a failed command changed nothing. */
export function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else
        out[p] =
          `${(st.mode & 0o777).toString(8)} ${createHash("sha256").update(readFileSync(p)).digest("hex")}`;
    }
  };
  walk(dir);
  return out;
}
