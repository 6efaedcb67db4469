import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { attestCaller, matchingEntries, parseStartTicks, selectorsOf } from "../../agent/workload/caller";
import { Callers } from "../../agent/workload/callers";
import { peerCredentials } from "../../agent/workload/peercred";

/**
 * Workload attestation from the kernel: real Unix sockets, real processes
 * under other uids (the suite runs as root; `setpriv` drops to nobody and
 * execs in place, so the child's pid is the client's), the
 * SO_PEERCRED addon and /proc.
 */

const NODE = realpathSync(process.execPath);
const nodeSha = createHash("sha256").update(readFileSync(NODE)).digest("hex");

let dir: string;
let server: Server;
let sockPath: string;
const accepted: Socket[] = [];
const callers = new Callers();
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "stint-peercred-"));
  chmodSync(dir, 0o755);
  sockPath = join(dir, "api.sock");
  server = createServer((s) => {
    callers.accept(s);
    accepted.push(s);
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  chmodSync(sockPath, 0o777);
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  for (const s of accepted) s.destroy();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/** Starts a client that connects and stays; resolves with the server's side of its connection. */
async function connectAs(user: string | null): Promise<{ child: ChildProcess; socket: Socket }> {
  const before = accepted.length;
  const script = `require("net").connect(${JSON.stringify(sockPath)}); setTimeout(() => {}, 60000);`;
  const child =
    user === null
      ? spawn(NODE, ["-e", script], { stdio: "ignore" })
      : spawn(
          "setpriv",
          [
            "--reuid",
            user,
            "--regid",
            user === "nobody" ? "nogroup" : user,
            "--clear-groups",
            NODE,
            "-e",
            script,
          ],
          {
            stdio: "ignore",
          },
        );
  children.push(child);
  const until = Date.now() + 10_000;
  while (accepted.length === before) {
    if (Date.now() > until) throw new Error("the client never connected");
    await new Promise((r) => setTimeout(r, 20));
  }
  return { child, socket: accepted[accepted.length - 1] };
}

const callOn = (socket: Socket) => ({ getPeer: () => socket.remoteAddress as string });

test("the kernel's peer credentials name the connecting process, its uid and gid", async () => {
  const { child, socket } = await connectAs("nobody");
  const creds = peerCredentials(socket);
  expect(creds.uid).toBe(65534);
  expect(creds.pid).toBe(child.pid);
});

test("a caller's selectors come from /proc and /etc: uid, gid, user, group, path, sha256", async () => {
  const { socket } = await connectAs("nobody");
  const id = await callers.identify(callOn(socket));
  expect(id).toMatchObject({ uid: 65534, user: "nobody", path: NODE, sha256: nodeSha });
  const selectors = selectorsOf(id);
  expect(selectors).toEqual(
    new Set([
      "unix:uid:65534",
      `unix:gid:${id.gid}`,
      "unix:user:nobody",
      `unix:group:${id.group}`,
      `unix:path:${NODE}`,
      `unix:sha256:${nodeSha}`,
    ]),
  );
});

test("root is told apart from nobody on the same socket", async () => {
  const { socket } = await connectAs(null);
  const id = await callers.identify(callOn(socket));
  expect(id.uid).toBe(process.getuid!());
  expect(selectorsOf(id).has("unix:uid:65534")).toBe(false);
});

test("a caller that exited is not attested, and its pid gives no identity", async () => {
  const { child, socket } = await connectAs("nobody");
  const creds = peerCredentials(socket);
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
  await expect(attestCaller({ creds, acceptedAtTicks: Number.MAX_SAFE_INTEGER })).rejects.toMatchObject({
    code: "ERR_ATTESTATION",
    message: expect.stringContaining("exited"),
  });
});

test("a call on a connection that closed is refused", async () => {
  const { child, socket } = await connectAs("nobody");
  child.kill("SIGKILL");
  await new Promise((r) => socket.once("close", r));
  await expect(callers.identify(callOn(socket))).rejects.toMatchObject({ code: "ERR_ATTESTATION" });
});

test("a pid whose process started after the connection was accepted is a reused pid, refused", async () => {
  const { socket } = await connectAs(null);
  const creds = peerCredentials(socket);
  // As if the connection had been accepted at boot: any live process started after it.
  await expect(attestCaller({ creds, acceptedAtTicks: 0 })).rejects.toMatchObject({
    code: "ERR_ATTESTATION",
    message: expect.stringContaining("started after the connection"),
  });
});

test("a call on a connection the agent did not accept is refused", async () => {
  await expect(callers.identify({ getPeer: () => "unix:/elsewhere" })).rejects.toMatchObject({
    code: "ERR_ATTESTATION",
  });
});

test("the start time is read after the last parenthesis (command names may hold spaces and parentheses)", () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3)); // field numbers from 3 on
  expect(parseStartTicks(`42 (a) b (c) ${fields.join(" ")}`)).toBe(22);
});

test("an entry matches only when the caller proves all its selectors; none at all matches nobody", () => {
  const proven = new Set(["unix:uid:1001", "unix:path:/usr/bin/web"]);
  const entries = [
    { id: "a", selectors: ["unix:uid:1001"] },
    { id: "b", selectors: ["unix:uid:1001", "unix:path:/usr/bin/web"] },
    { id: "c", selectors: ["unix:uid:1001", "unix:path:/usr/bin/db"] },
    { id: "d", selectors: [] },
  ];
  expect(matchingEntries(entries, proven).map((e) => e.id)).toEqual(["a", "b"]);
});
