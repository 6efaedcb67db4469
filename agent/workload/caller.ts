import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, readlink, stat } from "node:fs/promises";
import { StintError } from "../../common/errors";
import { Lru } from "../../common/lru";
import type { PeerCredentials } from "./peercred";

/**
 * Who is calling on the Workload API socket, from what the kernel says only:
 * SO_PEERCRED at connect time (uid, gid, pid), then /proc/<pid> for the
 * executable. A pid can be reused once its process exits, so the process's
 * start time is read before and after /proc is consulted and must be the same
 * both times and no later than the moment the connection was accepted: a
 * process that started after the connection cannot be the one that made it.
 */

export interface CallerIdentity {
  pid: number;
  uid: number;
  gid: number;
  user: string | null;
  group: string | null;
  /** The executable's path as /proc/<pid>/exe names it. */
  path: string;
  sha256: string;
}

/** What the server records when it accepts a connection, before any call on it. */
export interface ConnectionFacts {
  creds: PeerCredentials;
  /** System uptime in clock ticks when the connection was accepted. */
  acceptedAtTicks: number;
}

/** USER_HZ: what /proc/<pid>/stat counts start times in; 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcFs {
  proc: string;
  etc: string;
}
const SYSTEM: ProcFs = { proc: "/proc", etc: "/etc" };

/** Uptime now, in clock ticks: compared with process start times. */
export async function uptimeTicks(fs: ProcFs = SYSTEM): Promise<number> {
  const text = await readFile(`${fs.proc}/uptime`, "utf8");
  return Math.ceil(Number.parseFloat(text.split(" ")[0]) * CLOCK_TICKS_PER_SECOND);
}

/** Field 22 of /proc/<pid>/stat (start time in ticks after boot); the command name before it may hold spaces and parentheses. */
export function parseStartTicks(stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(rest[19]);
  if (!Number.isSafeInteger(ticks)) throw new StintError("ERR_ATTESTATION", "unreadable process start time");
  return ticks;
}

async function startTicks(fs: ProcFs, pid: number): Promise<number> {
  try {
    return parseStartTicks(await readFile(`${fs.proc}/${pid}/stat`, "utf8"));
  } catch (err) {
    if (err instanceof StintError) throw err;
    throw gone(pid);
  }
}

const gone = (pid: number) =>
  new StintError("ERR_ATTESTATION", `the calling process (pid ${pid}) exited before it could be attested`);

/** SHA-256 of executables, keyed by what identifies a file's contents: hashing node (~100 MB) per call would be slow. */
const hashes = new Lru<string>(256);

async function executableSha256(exe: string): Promise<string> {
  const st = await stat(exe);
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  const known = hashes.get(key);
  if (known !== undefined) return known;
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(exe)) hash.update(chunk as Buffer);
  const hex = hash.digest("hex");
  hashes.set(key, hex);
  return hex;
}

/** The name of `id` in /etc/passwd or /etc/group (field 3 holds the number), or null. */
async function nameOf(file: string, id: number): Promise<string | null> {
  const text = await readFile(file, "utf8").catch(() => "");
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields.length >= 3 && fields[2] === String(id)) return fields[0];
  }
  return null;
}

export async function attestCaller(facts: ConnectionFacts, fs: ProcFs = SYSTEM): Promise<CallerIdentity> {
  const { pid, uid, gid } = facts.creds;
  if (pid <= 0) throw new StintError("ERR_ATTESTATION", "the kernel reported no process for the caller");
  const before = await startTicks(fs, pid);
  // One tick of slack for rounding: uptime is read just after accept(), the start time is whole ticks.
  if (before > facts.acceptedAtTicks + 1)
    throw new StintError(
      "ERR_ATTESTATION",
      `pid ${pid} now belongs to a process started after the connection; the caller is gone`,
    );
  let path: string;
  let sha256: string;
  try {
    path = await readlink(`${fs.proc}/${pid}/exe`);
    sha256 = await executableSha256(`${fs.proc}/${pid}/exe`);
  } catch {
    throw gone(pid);
  }
  const [user, group] = await Promise.all([nameOf(`${fs.etc}/passwd`, uid), nameOf(`${fs.etc}/group`, gid)]);
  if ((await startTicks(fs, pid)) !== before) throw gone(pid);
  return { pid, uid, gid, user, group, path, sha256 };
}

/** The selectors a caller proves (ca/entries.ts SELECTOR_KINDS spelling). */
export function selectorsOf(id: CallerIdentity): Set<string> {
  const out = new Set([
    `unix:uid:${id.uid}`,
    `unix:gid:${id.gid}`,
    `unix:path:${id.path}`,
    `unix:sha256:${id.sha256}`,
  ]);
  if (id.user !== null) out.add(`unix:user:${id.user}`);
  if (id.group !== null) out.add(`unix:group:${id.group}`);
  return out;
}

/** Entries the caller may have: every selector of the entry is proven. An entry without selectors matches nobody (deny by default). */
export function matchingEntries<E extends { selectors: readonly string[] }>(
  entries: Iterable<E>,
  proven: ReadonlySet<string>,
): E[] {
  const out: E[] = [];
  for (const e of entries) if (e.selectors.length > 0 && e.selectors.every((s) => proven.has(s))) out.push(e);
  return out;
}
