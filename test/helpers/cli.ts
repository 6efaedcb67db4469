import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { CA_CONFIG } from "../../cli/ca-config";
import { envName } from "../../common/config";
import { type SoftHsmToken, softHsmToken } from "./softhsm";

export const STINT = resolve(__dirname, "../../dist/cli/main.js");

/**
 * The key backend every CA a test makes uses: STINT_TEST_KEY_BACKEND=pkcs11
 * (npm run test:pkcs11) gives each data directory a SoftHSM token of its own,
 * made at its `ca init` (or `ca serve --init`), and every later `stint ca …`
 * on that directory the keys.* settings and PIN to reach it.
 */
export const TEST_KEY_BACKEND: "file" | "pkcs11" =
  process.env.STINT_TEST_KEY_BACKEND === "pkcs11" ? "pkcs11" : "file";

const tokens = new Map<string, SoftHsmToken>();
process.once("exit", () => {
  for (const t of tokens.values()) t.cleanup();
});

const settingEnv = (key: string): string => envName(CA_CONFIG.find((d) => d.key === key)!)!;

/** The data directory a `stint ca …` command works on, from --data-dir, STINT_DATA_DIR or its config file. */
function caDataDir(args: readonly string[], env: Record<string, string>): string | null {
  if (args[0] !== "ca") return null;
  const flag = (name: string): string | undefined => {
    const i = args.findIndex((a) => a === name || a.startsWith(`${name}=`));
    if (i < 0) return undefined;
    return args[i].includes("=") ? args[i].slice(name.length + 1) : args[i + 1];
  };
  const dir = flag("--data-dir") ?? env.STINT_DATA_DIR;
  if (dir) return resolve(dir);
  const config = flag("--config") ?? flag("-c") ?? env.STINT_CONFIG;
  if (!config) return null;
  const m = /"?dataDir"?\s*:\s*["']?([^"'\n,}]+)/.exec(readFileSync(config, "utf8"));
  return m ? resolve(m[1].trim()) : null;
}

/** The token of the CA in `dataDir` (pkcs11 runs only): for tests that look inside it. */
export function testToken(dataDir: string): SoftHsmToken | undefined {
  return tokens.get(resolve(dataDir));
}

/** What a `stint` process needs to reach its CA's token: nothing with file keys. */
export function keyBackendEnv(
  args: readonly string[],
  env: Record<string, string> = {},
): Record<string, string> {
  if (TEST_KEY_BACKEND !== "pkcs11") return {};
  const dir = caDataDir(args, env);
  if (!dir) return {};
  let token = tokens.get(dir);
  const creates = args[1] === "init" || (args[1] === "serve" && args.includes("--init"));
  if (!token && !creates) return {};
  if (!token) {
    token = softHsmToken({ label: `stint-${tokens.size + 1}` });
    tokens.set(dir, token);
  }
  return tokenCaEnv(token);
}

/** The environment of a `stint` process whose CA keys are in `token`: keys.backend pkcs11, its module, label and PIN. */
export function tokenCaEnv(token: SoftHsmToken): Record<string, string> {
  return {
    ...token.env,
    [settingEnv("keys.backend")]: "pkcs11",
    [settingEnv("keys.pkcs11.module")]: token.module,
    [settingEnv("keys.pkcs11.tokenLabel")]: token.tokenLabel,
    STINT_PKCS11_PIN: token.pin,
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `stint` CLI as a user would, with a clean environment plus `env`. */
export function stint(args: string[], env: Record<string, string> = {}): RunResult {
  const r = spawnSync(process.execPath, [STINT, ...args], {
    encoding: "utf8",
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "/tmp",
      ...keyBackendEnv(args, env),
      ...env,
    },
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
  const argv = ["ca", "serve", "--init", "--listen", "127.0.0.1:0", ...args];
  const child = spawn(process.execPath, [STINT, ...argv], {
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "/tmp",
      ...keyBackendEnv(argv, env),
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
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
