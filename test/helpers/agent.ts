import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { pemDecodeAll } from "../../formats/pem";
import { STINT } from "./cli";

/** What the end-to-end tests of agents share: running `stint agent`, waiting, reading its files. */

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createNetServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** The `--ca-fingerprint` of the CA in dataDir (its first root). */
export function fingerprint(dataDir: string): string {
  const der = pemDecodeAll(readFileSync(join(dataDir, "root.pem"), "utf8"), "CERTIFICATE", "root")[0];
  return `sha256:${createHash("sha256").update(der).digest("hex")}`;
}

export interface AgentProcess {
  child: ChildProcess;
  logs: () => Record<string, unknown>[];
  stop: () => Promise<number | null>;
}

export function startAgent(args: string[]): AgentProcess {
  const child = spawn(process.execPath, [STINT, "agent", ...args], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let partial = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts);
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return {
    child,
    logs: () => lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)),
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | null | false,
  timeoutMs = 30_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The files of one version, as the README tells readers to take them: resolve
 * `..data` once, then read every file from that directory, so a switch between
 * two reads cannot pair one issuance's key with another's certificate.
 */
export function currentFiles(outDir: string): { cert: Buffer; key: Buffer; bundle: Buffer } {
  for (let attempt = 0; ; attempt++) {
    try {
      const version = realpathSync(join(outDir, "..data"));
      const read = (name: string) => readFileSync(join(version, name));
      return { cert: read("cert.pem"), key: read("key.pem"), bundle: read("bundle.pem") };
    } catch (err) {
      // The version resolved a moment ago was replaced and deleted: start over, as the README says.
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 5) throw err;
    }
  }
}
