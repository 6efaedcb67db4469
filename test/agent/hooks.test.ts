import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runHook, signalProcess, splitCommand } from "../../agent/hooks";

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "stint-hooks-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("splitCommand", () => {
  it.each([
    ["nginx -s reload", ["nginx", "-s", "reload"]],
    ["  nginx\t-s \n reload  ", ["nginx", "-s", "reload"]],
    [`sh -c 'kill -HUP $(cat /run/x.pid)'`, ["sh", "-c", "kill -HUP $(cat /run/x.pid)"]],
    [`echo "a b" 'c d'`, ["echo", "a b", "c d"]],
    [`echo "say \\"hi\\"" \\$HOME`, ["echo", 'say "hi"', "$HOME"]],
    [`echo "a\\nb" "c\\\\d" "\\$x"`, ["echo", "a\\nb", "c\\d", "$x"]],
    [`echo 'single \\ stays' a\\ b`, ["echo", "single \\ stays", "a b"]],
    [`echo 'it'\\''s'`, ["echo", "it's"]],
    [`echo pre"mid"'post'`, ["echo", "premidpost"]],
    [`echo "" ''`, ["echo", "", ""]],
    ["echo a\\\nb c \\\n d", ["echo", "ab", "c", "d"]],
    [`echo $(touch x) ~ *`, ["echo", "$(touch", "x)", "~", "*"]],
    [`find . -exec rm {} \\;`, ["find", ".", "-exec", "rm", "{}", ";"]],
    [`echo "&&" '|'`, ["echo", "&&", "|"]],
  ])("%s", (text, argv) => {
    expect(splitCommand(text)).toEqual(argv);
  });

  it.each([
    [`nginx -s "reload`, "the command has an unterminated double quote (opened at character 10)"],
    [`echo 'abc`, "the command has an unterminated single quote (opened at character 6)"],
    [`echo "a\\"`, "the command has an unterminated double quote (opened at character 6)"],
    ["echo \\", "the command ends with a lone backslash; escape it as \\\\"],
    ["   ", "the command is empty"],
    ["", "the command is empty"],
    [
      "systemctl reload nginx && echo ok",
      "the command contains the shell operator &&, but commands run without a shell; use sh -c '…' if you need one",
    ],
  ])("rejects %j", (text, message) => {
    const err = thrown(() => splitCommand(text));
    expect(err).toMatchObject({ code: "ERR_CONFIG", message });
    expect((err as Error).message).not.toContain("\n");
  });
});

describe("runHook", () => {
  it("reports exit codes", async () => {
    expect(await runHook(["true"])).toEqual({ code: 0, signal: null, stderr: "" });
    expect(await runHook(["false"])).toEqual({ code: 1, signal: null, stderr: "" });
  });

  it("turns a missing binary into an error instead of throwing", async () => {
    const r = await runHook(["/nonexistent/stint-no-such-binary", "x"]);
    expect(r).toEqual({
      code: null,
      signal: null,
      error: "/nonexistent/stint-no-such-binary: command not found",
      stderr: "",
    });
  });

  it("kills a command that runs past its timeout", async () => {
    const r = await runHook(["sleep", "5"], { timeoutMs: 200 });
    expect(r).toMatchObject({ code: null, signal: "SIGTERM", error: "timed out after 200 ms" });
  });

  it("passes arguments literally: no shell runs $(…) or backticks", async () => {
    const marker = join(dir, "x");
    const out = join(dir, "argv.json");
    const script = `require("fs").writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.argv.slice(1)))`;
    const argv = [
      process.execPath,
      "-e",
      script,
      `$(touch ${marker})`,
      `\`touch ${marker}\``,
      "; touch x",
      "*",
    ];
    expect(await runHook(argv)).toEqual({ code: 0, signal: null, stderr: "" });
    expect(JSON.parse(readFileSync(out, "utf8"))).toEqual(argv.slice(3));
    expect(existsSync(marker)).toBe(false);
    expect(existsSync(join(process.cwd(), "x"))).toBe(false);
  });

  it("does not wait for a background process the hook left holding stderr", async () => {
    const started = Date.now();
    const r = await runHook(["sh", "-c", "echo started >&2; sleep 3 & exit 0"]);
    expect(r).toEqual({ code: 0, signal: null, stderr: "started\n" });
    expect(Date.now() - started).toBeLessThan(2900); // well before the background sleep ends
  });

  it("keeps the last 4 KiB of stderr", async () => {
    const script = "process.stderr.write('a'.repeat(10000) + 'END'); process.exit(3)";
    const r = await runHook([process.execPath, "-e", script]);
    expect(r.code).toBe(3);
    expect(r.stderr).toHaveLength(4096);
    expect(r.stderr.endsWith("aEND")).toBe(true);
  });

  it("gives the command exactly the environment it is handed", async () => {
    const out = join(dir, "env");
    const script = `require("fs").writeFileSync(${JSON.stringify(out)}, process.env.STINT_HOOK_TEST ?? "unset")`;
    await runHook([process.execPath, "-e", script], { env: { STINT_HOOK_TEST: "yes" } });
    expect(readFileSync(out, "utf8")).toBe("yes");
  });

  it("rejects an empty argv", async () => {
    await expect(runHook([])).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: "the hook command is empty",
    });
  });
});

describe("signalProcess", () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  });

  function start(
    command: string,
    args: string[],
  ): { child: ChildProcess; exited: Promise<NodeJS.Signals | null> } {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] });
    children.push(child);
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once("exit", (_code, signal) => resolve(signal)),
    );
    return { child, exited };
  }

  it("signals a process by pid", async () => {
    const { child, exited } = start("sleep", ["30"]);
    expect(await signalProcess("SIGTERM", { pid: child.pid! })).toEqual({ pid: child.pid });
    expect(await exited).toBe("SIGTERM");
  });

  it("signals a process named by a pid file, which the process sees", async () => {
    const marker = join(dir, "marker");
    const script = `process.on("SIGHUP", () => { require("fs").writeFileSync(${JSON.stringify(marker)}, "hup"); process.exit(0); });
      console.log("ready"); setTimeout(() => {}, 30000);`;
    const { child, exited } = start(process.execPath, ["-e", script]);
    await new Promise((resolve) => child.stdout!.once("data", resolve));
    const pidFile = join(dir, "app.pid");
    writeFileSync(pidFile, `  ${child.pid}\n`);
    expect(await signalProcess("SIGHUP", { pidFile })).toEqual({ pid: child.pid });
    await exited;
    expect(readFileSync(marker, "utf8")).toBe("hup");
  });

  it("sends SIGHUP that kills a process without a handler", async () => {
    const { child, exited } = start("sleep", ["30"]);
    const pidFile = join(dir, "sleep.pid");
    writeFileSync(pidFile, String(child.pid));
    await signalProcess("SIGHUP", { pidFile });
    expect(await exited).toBe("SIGHUP");
  });

  it("says which process is gone, and where its pid came from", async () => {
    const { child, exited } = start("true", []);
    await exited;
    const pidFile = join(dir, "stale.pid");
    writeFileSync(pidFile, `${child.pid}\n`);
    await expect(signalProcess("SIGHUP", { pidFile })).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: `no process ${child.pid} (from ${pidFile})`,
    });
    await expect(signalProcess("SIGHUP", { pid: child.pid! })).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: `no process ${child.pid}`,
    });
  });

  it("rejects missing, empty, garbage and oversized pid files without echoing them", async () => {
    const missing = join(dir, "missing.pid");
    await expect(signalProcess("SIGHUP", { pidFile: missing })).rejects.toMatchObject({
      code: "ERR_FILE",
      message: `cannot read the pid file: ${missing} (or its directory) does not exist`,
    });
    const cases: [string, string][] = [
      [" \n", "pid file %s is empty"],
      ["nginx\n", "pid file %s does not hold a process id: expected a positive integer"],
      ["-1", "pid file %s does not hold a process id: expected a positive integer"],
      ["0", "pid file %s does not hold a process id: expected a positive integer"],
      ["12 34", "pid file %s does not hold a process id: expected a positive integer"],
      ["99999999999", "pid file %s does not hold a process id: expected a positive integer"],
      [
        "-----BEGIN PRIVATE KEY-----\n" + "A".repeat(100),
        "%s is too large to be a pid file; is it the right file?",
      ],
    ];
    for (const [content, message] of cases) {
      const pidFile = join(dir, "bad.pid");
      writeFileSync(pidFile, content);
      await expect(signalProcess("SIGHUP", { pidFile })).rejects.toMatchObject({
        code: "ERR_CONFIG",
        message: message.replace("%s", pidFile),
      });
    }
  });

  it("refuses pids that would signal a process group, and ambiguous targets", async () => {
    for (const pid of [0, -1, 1.5]) {
      await expect(signalProcess("SIGTERM", { pid })).rejects.toMatchObject({
        code: "ERR_CONFIG",
        message: `${pid} is not a process id: expected a positive integer`,
      });
    }
    await expect(signalProcess("SIGTERM", {})).rejects.toMatchObject({ code: "ERR_CONFIG" });
    await expect(signalProcess("SIGTERM", { pid: 5, pidFile: "/x" })).rejects.toMatchObject({
      code: "ERR_CONFIG",
      message: "give either a pid or a pid file to signal, not both or neither",
    });
  });
});
