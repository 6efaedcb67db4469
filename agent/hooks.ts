import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import type { Socket } from "node:net";
import { StintError } from "../common/errors";
import { fileError } from "../common/files";

/**
 * What the agent does after it switches certificates: run a reload command
 * or signal the workload. Nothing here goes through a shell, so a value the
 * agent puts into an argument or the environment cannot become a command.
 */

// POSIX: inside double quotes a backslash escapes only these; elsewhere it stays literal.
const DOUBLE_QUOTE_ESCAPES = '"\\$`\n';
// Unquoted, these words mean the user expected a shell; running them as arguments would fail confusingly.
const SHELL_OPERATORS = new Set(["|", "||", "&", "&&", ";", ">", ">>", "<", "<<", "2>", "2>&1"]);
const isBlank = (c: string) => c === " " || c === "\t" || c === "\n" || c === "\r";

/**
 * Splits a command line into argv the way a POSIX shell would, minus every
 * expansion: whitespace separates words, '…' is literal, "…" honours
 * backslash before " \ $ ` and newline, and a backslash outside quotes
 * escapes the next character. `$(…)`, globs and `~` stay literal text.
 */
export function splitCommand(text: string): string[] {
  const argv: string[] = [];
  let word = "";
  let inWord = false;
  // True while the word has no quoted or escaped part, so a bare `&&` can be told from a quoted one.
  let bare = true;
  const flush = () => {
    if (!inWord) return;
    if (bare && SHELL_OPERATORS.has(word))
      throw new StintError(
        "ERR_CONFIG",
        `the command contains the shell operator ${word}, but commands run without a shell; use sh -c '…' if you need one`,
      );
    argv.push(word);
    word = "";
    inWord = false;
    bare = true;
  };

  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (isBlank(c)) {
      flush();
      i++;
    } else if (c === "\\") {
      if (i + 1 >= text.length)
        throw new StintError("ERR_CONFIG", "the command ends with a lone backslash; escape it as \\\\");
      // Backslash-newline is a line continuation: it joins, it adds nothing.
      if (text[i + 1] !== "\n") {
        word += text[i + 1];
        inWord = true;
        bare = false;
      }
      i += 2;
    } else if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) throw unterminated("single", i);
      word += text.slice(i + 1, end);
      inWord = true;
      bare = false;
      i = end + 1;
    } else if (c === '"') {
      const openedAt = i++;
      inWord = true;
      bare = false;
      for (;;) {
        if (i >= text.length) throw unterminated("double", openedAt);
        const d = text[i]!;
        if (d === '"') break;
        if (d === "\\" && i + 1 < text.length && DOUBLE_QUOTE_ESCAPES.includes(text[i + 1]!)) {
          if (text[i + 1] !== "\n") word += text[i + 1];
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      i++;
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  flush();
  if (argv.length === 0) throw new StintError("ERR_CONFIG", "the command is empty");
  return argv;
}

function unterminated(kind: "single" | "double", at: number): StintError {
  // The position, not the text: a command line may carry a token.
  return new StintError(
    "ERR_CONFIG",
    `the command has an unterminated ${kind} quote (opened at character ${at + 1})`,
  );
}

export interface RunHookOptions {
  /** Default 30 s; then SIGTERM, and SIGKILL 5 s later. */
  timeoutMs?: number;
  /** The whole environment of the command; process.env by default. */
  env?: NodeJS.ProcessEnv;
}

export interface HookResult {
  /** Exit code; the hook succeeded exactly when it is 0. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the command did not run to completion: not found, not executable, timed out. */
  error?: string;
  /** The last 4 KiB of its stderr, for the log line. */
  stderr: string;
}

const STDERR_TAIL_BYTES = 4096;
const KILL_GRACE_MS = 5000;
/** After exit, how long to wait for the rest of stderr: a daemon the hook started may hold the pipe open forever. */
const STDERR_DRAIN_MS = 200;

/**
 * Runs argv without a shell: stdin closed, stdout shared with the agent
 * (whose log lines go to stderr), stderr collected. Resolves for every
 * outcome; only an empty argv rejects. The hook runs in its own process
 * group so a timeout also stops what it started.
 */
export function runHook(argv: readonly string[], opts: RunHookOptions = {}): Promise<HookResult> {
  const [command, ...args] = argv;
  if (!command) return Promise.reject(new StintError("ERR_CONFIG", "the hook command is empty"));
  const timeoutMs = opts.timeoutMs ?? 30_000;

  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: HookResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve(r);
    };
    let timer: NodeJS.Timeout | undefined;
    let killTimer: NodeJS.Timeout | undefined;

    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(command, args, {
        shell: false,
        stdio: ["ignore", "inherit", "pipe"],
        env: opts.env ?? process.env,
        detached: true,
      });
    } catch (err) {
      // Invalid arguments (a NUL byte, say) throw synchronously.
      finish({ code: null, signal: null, error: spawnError(err, command), stderr: "" });
      return;
    }

    let tail = Buffer.alloc(0);
    const stderr = child.stderr!;
    stderr.on("data", (chunk: Buffer) => {
      tail = Buffer.concat([tail, chunk]);
      if (tail.length > STDERR_TAIL_BYTES) tail = tail.subarray(tail.length - STDERR_TAIL_BYTES);
    });
    stderr.on("error", () => {}); // a pipe error only loses log text

    const kill = (signal: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        child.kill(signal);
      }
    };
    let timedOut = false;
    timer = setTimeout(() => {
      timedOut = true;
      kill("SIGTERM");
      killTimer = setTimeout(() => kill("SIGKILL"), KILL_GRACE_MS);
    }, timeoutMs);

    child.on("error", (err) => {
      // Without a pid the process never started, and no exit event will follow.
      if (child.pid === undefined)
        finish({ code: null, signal: null, error: spawnError(err, command), stderr: "" });
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      const done = () =>
        finish({
          code,
          signal,
          ...(timedOut ? { error: `timed out after ${timeoutMs} ms` } : {}),
          stderr: tailText(tail),
        });
      if (stderr.readableEnded) return done();
      const drain = setTimeout(() => {
        // Keep reading and discarding rather than closing: closing would SIGPIPE a daemon the hook
        // started the next time it logs. unref() lets a one-shot agent exit regardless.
        (stderr as Socket).unref();
        done();
      }, STDERR_DRAIN_MS);
      stderr.once("end", () => {
        clearTimeout(drain);
        done();
      });
    });
  });
}

/** Decodes the tail, dropping a UTF-8 sequence the cut left incomplete at its start. */
function tailText(buf: Buffer): string {
  let start = 0;
  while (start < buf.length && start < 3 && (buf[start]! & 0xc0) === 0x80) start++;
  return buf.subarray(start).toString("utf8");
}

function spawnError(err: unknown, command: string): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return `${command}: command not found`;
  if (code === "EACCES") return `${command}: permission denied (is it an executable file?)`;
  return `${command}: ${err instanceof Error ? err.message : String(err)}`;
}

export interface SignalTarget {
  pid?: number;
  pidFile?: string;
}

/** Linux's PID_MAX_LIMIT is 2^22; anything above 2^31 - 1 cannot be a pid anywhere. */
const MAX_PID = 2 ** 31 - 1;
/** A pid file holds a few digits; reading more would mean the wrong file. */
const PID_FILE_MAX_BYTES = 64;

/**
 * Sends `signal` to one process, named by pid or by pid file. Only positive
 * pids are accepted: 0 and negative numbers would signal process groups.
 */
export async function signalProcess(signal: NodeJS.Signals, target: SignalTarget): Promise<{ pid: number }> {
  if ((target.pid === undefined) === (target.pidFile === undefined))
    throw new StintError("ERR_CONFIG", "give either a pid or a pid file to signal, not both or neither");
  let pid: number;
  let from = "";
  if (target.pidFile !== undefined) {
    pid = await readPidFile(target.pidFile);
    from = ` (from ${target.pidFile})`;
  } else {
    pid = target.pid!;
    if (!Number.isSafeInteger(pid) || pid < 1 || pid > MAX_PID)
      throw new StintError("ERR_CONFIG", `${pid} is not a process id: expected a positive integer`);
  }
  try {
    process.kill(pid, signal);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ESRCH") throw new StintError("ERR_CONFIG", `no process ${pid}${from}`, { cause: err });
    if (code === "EPERM")
      throw new StintError(
        "ERR_CONFIG",
        `not permitted to send ${signal} to process ${pid}${from}; run the agent as the same user as that process`,
        { cause: err },
      );
    throw err;
  }
  return { pid };
}

async function readPidFile(path: string): Promise<number> {
  const buf = Buffer.alloc(PID_FILE_MAX_BYTES);
  let size: number;
  try {
    const handle = await open(path, "r");
    try {
      size = (await handle.read(buf, 0, buf.length, 0)).bytesRead;
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw fileError(err, path, "read the pid file");
  }
  // The content is never echoed: pointed at the wrong file, it could be a key.
  if (size === buf.length)
    throw new StintError("ERR_CONFIG", `${path} is too large to be a pid file; is it the right file?`);
  const text = buf.subarray(0, size).toString("latin1").trim();
  if (text === "") throw new StintError("ERR_CONFIG", `pid file ${path} is empty`);
  if (!/^[1-9][0-9]{0,9}$/.test(text) || Number(text) > MAX_PID)
    throw new StintError(
      "ERR_CONFIG",
      `pid file ${path} does not hold a process id: expected a positive integer`,
    );
  return Number(text);
}
