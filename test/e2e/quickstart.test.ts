import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join, resolve } from "node:path";
import { tempDir } from "../helpers/openssl";

/**
 * Issue 19: the README's quick start, run as written on a fresh directory.
 * The commands are read from README.md's "## Quick start" section (every
 * ```sh block, its subsections included), never copied here, and each must
 * succeed. Only what a test cannot do as written is changed, each by one rule
 * below with its reason:
 *
 *   npm install, npm run build   skipped: `npm ci` installed node_modules and jest's
 *                                globalSetup built dist/ from these sources; reinstalling
 *                                would need the network and rewrite the node_modules that
 *                                other suites are reading at the same time
 *   npm test                     skipped: the suite this test is part of
 *   npm start                    package.json's start script, minus its build step, run in
 *                                the background in the temp directory
 *   npm link, npm install -g .   a PATH shim instead (bin/stint, which execs node on
 *                                dist/cli/main.js, as npm link's bin link does): the machine's
 *                                global prefix is not the test's to change. The shim is on
 *                                PATH only from that step on, so a bare `stint` used earlier fails.
 *   npx stint                    `stint` (the shim): outside a checkout, npx would look the
 *                                name up in the npm registry
 *   8443                         a free port (other suites run at the same time)
 *   /var/lib/stint               a directory under the temp directory
 *   '…' (the passphrase)         a test passphrase
 *
 * The commands run with `sh -c` in a temp directory that stands in for the
 * checkout: it holds only a `dist` link to the built CLI, so `node
 * dist/cli/main.js` works as written and every file a command makes lands in
 * the fresh directory. `export` lines set the environment of later commands.
 * A command that serves (`ca serve`, `npm start`) runs in the background until
 * the next one starts or the test ends.
 */

const REPO = resolve(__dirname, "../..");
const PASSPHRASE = "quick start passphrase for tests";

interface Step {
  /** The command as the README writes it, continuation lines joined. */
  readme: string;
  section: string;
}

/** The commands of the quick start: every sh block from "## Quick start" up to the next "## " heading. */
function quickStartSteps(readme: string): Step[] {
  const start = readme.indexOf("\n## Quick start\n");
  if (start < 0) throw new Error('README.md has no "## Quick start" section');
  const end = readme.indexOf("\n## ", start + 1);
  const lines = readme.slice(start, end < 0 ? undefined : end).split("\n");
  const steps: Step[] = [];
  let section = "Quick start";
  let inBlock = false;
  let pending = "";
  for (const line of lines) {
    if (!inBlock && /^#{2,} /.test(line)) section = line.replace(/^#+ /, "");
    if (/^```/.test(line)) {
      if (!inBlock && !/^```(sh|bash|shell)?$/.test(line)) throw new Error(`unexpected block ${line}`);
      inBlock = !inBlock;
      continue;
    }
    if (!inBlock) continue;
    // The README aligns comments after two or more spaces; no command holds " #" itself.
    const text = line.replace(/\s+#\s.*$/, "").replace(/^#.*$/, "");
    pending += text.endsWith("\\") ? `${text.slice(0, -1).trimEnd()} ` : text;
    if (text.endsWith("\\")) continue;
    for (const part of pending.split("&&").map((p) => p.trim())) {
      if (part !== "") steps.push({ readme: part, section });
    }
    pending = "";
  }
  return steps;
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const server = createServer();
    server.once("error", rej);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => res(port));
    });
  });
}

/** Resolves once something accepts TCP connections on the port; rejects if the process exits first. */
async function listening(port: number, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`exited with ${child.exitCode} before serving:\n${output()}`);
    const up = await new Promise<boolean>((res) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        res(true);
      });
      socket.once("error", () => res(false));
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after 60s:\n${output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const root = tempDir("stint-quickstart-");
const work = join(root, "checkout");
const shimDir = join(root, "bin");
let background: { child: ChildProcess; exited: Promise<unknown> } | null = null;

async function stopBackground(): Promise<void> {
  if (!background) return;
  const { child, exited } = background;
  background = null;
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  await exited;
}

afterAll(async () => {
  await stopBackground();
  rmSync(root, { recursive: true, force: true });
});

test("the README's quick start works as written on a fresh directory", async () => {
  const steps = quickStartSteps(readFileSync(join(REPO, "README.md"), "utf8"));
  // The quick start the issue asks to keep working: a CA, a certificate OpenSSL accepts, stint on PATH.
  const all = steps.map((s) => s.readme).join("\n");
  for (const expected of ["npm start", "ca issue", "openssl verify", "npm link", "stint --version"]) {
    expect(all).toContain(expected);
  }

  mkdirSync(work);
  symlinkSync(join(REPO, "dist"), join(work, "dist"));
  mkdirSync(shimDir);
  writeFileSync(
    join(shimDir, "stint"),
    `#!/bin/sh\nexec "${process.execPath}" "${REPO}/dist/cli/main.js" "$@"\n`,
  );
  chmodSync(join(shimDir, "stint"), 0o755);

  const port = await freePort();
  const { scripts } = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as {
    scripts: Record<string, string>;
  };
  const startScript = /^npm run build --silent && (.+)$/.exec(scripts.start)?.[1];
  expect(startScript).toBeDefined();

  // A clean environment: no saved CA, config or passphrase of the machine's user leaks in.
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: join(root, "home"),
    XDG_CONFIG_HOME: join(root, "home", ".config"),
    XDG_STATE_HOME: join(root, "home", ".local", "state"),
    // npm start's server listens on the default address, 127.0.0.1:8443; this moves it to the free port.
    STINT_LISTEN: `127.0.0.1:${port}`,
  };
  const substitute = (cmd: string) =>
    cmd
      .replace(/\b8443\b/g, String(port))
      .replace(/\/var\/lib\/stint/g, join(root, "var/lib/stint"))
      .replace(/'…'/g, `'${PASSPHRASE}'`)
      .replace(/\bnpx stint\b/g, "stint");

  const ran: string[] = [];
  for (const step of steps) {
    const cmd = step.readme;
    const where = `${step.section}: ${cmd}`;
    if (/^npm (install|ci)$/.test(cmd) || /^npm run build\b/.test(cmd) || cmd === "npm test") {
      continue; // see the rules above
    }
    if (cmd === "npm link" || cmd === "npm install -g .") {
      env.PATH = `${shimDir}:${env.PATH}`;
      ran.push(cmd);
      continue;
    }
    const export_ = /^export ([A-Z_][A-Z0-9_]*)=/.exec(cmd);
    if (export_) {
      // The shell parses the value (quotes and all), as it would for the reader.
      const r = spawnSync("sh", ["-c", `${substitute(cmd)}; printf %s "$${export_[1]}"`], {
        encoding: "utf8",
      });
      if (r.status !== 0) throw new Error(`${where}\nexited ${r.status}:\n${r.stderr}`);
      env[export_[1]] = r.stdout;
      ran.push(cmd);
      continue;
    }
    const serves = cmd === "npm start" || /\bca serve\b/.test(cmd);
    if (serves) {
      await stopBackground(); // one server at a time, on the one free port
      const shell = cmd === "npm start" ? (startScript as string) : substitute(cmd);
      const child = spawn("sh", ["-c", `exec ${shell}`], {
        cwd: work,
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
      child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
      background = { child, exited: new Promise((r) => child.once("exit", r)) };
      // Both servers listen on the free port: npm start's through STINT_LISTEN, the other by substitution.
      await listening(port, child, () => `${where}\n${output}`);
      ran.push(cmd);
      continue;
    }
    const r = spawnSync("sh", ["-c", substitute(cmd)], { cwd: work, env, encoding: "utf8", timeout: 60_000 });
    // A failure names the README line and shows what it printed.
    if (r.status !== 0) throw new Error(`${where}\nexited ${r.status ?? r.signal}:\n${r.stdout}${r.stderr}`);
    if (/^openssl verify\b/.test(cmd)) expect(r.stdout).toMatch(/: OK\n$/);
    if (/^curl .*\/health$/.test(cmd)) expect(JSON.parse(r.stdout)).toMatchObject({ status: "ok" });
    if (/^stint --version$/.test(cmd)) expect(r.stdout).toMatch(/^stint \d+\.\d+\.\d+/);
    ran.push(cmd);
  }
  // Every kind of step ran, including the servers of both sections.
  expect(ran.filter((c) => c === "npm start" || /\bca serve\b/.test(c))).toHaveLength(2);

  // The encrypted CA serves its own name: reach it as a client following the README would.
  const caDir = join(root, "var/lib/stint");
  const health = spawnSync(
    "curl",
    [
      "--silent",
      "--fail",
      "--cacert",
      join(caDir, "root.pem"),
      "--resolve",
      `ca.prod.example.com:${port}:127.0.0.1`,
      `https://ca.prod.example.com:${port}/health`,
    ],
    { encoding: "utf8" },
  );
  expect({ code: health.status, stderr: health.stderr }).toEqual({ code: 0, stderr: "" });
  expect(JSON.parse(health.stdout)).toMatchObject({ status: "ok", trustDomain: "prod.example.com" });
}, 240_000);
