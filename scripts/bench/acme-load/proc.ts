import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

/**
 * What the load generator reads about a server process from /proc: CPU time
 * (utime + stime of all its threads) and resident memory. Linux only; on
 * anything else, or for a process we may not read, the figures are absent.
 */

export interface ProcSample {
  /** User plus system CPU time of the whole process, in milliseconds. */
  cpuMs: number;
  /** The system (kernel) part of cpuMs: syscalls, TLS socket writes, fsync. */
  sysMs: number;
  /** VmRSS and VmHWM (peak) in KiB, when /proc/<pid>/status could be read. */
  rssKiB?: number;
  peakRssKiB?: number;
}

let ticksPerSecond: number | undefined;

/** Clock ticks per second for /proc/<pid>/stat times; `getconf CLK_TCK`, else the usual 100. */
export function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      const n = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
      ticksPerSecond = Number.isInteger(n) && n > 0 ? n : 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** utime and stime from /proc/<pid>/stat. comm (field 2) may hold spaces and parentheses, so split after the last ')'. */
export function parseStatCpuTicks(stat: string): { utime: number; stime: number } {
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime))
    throw new Error("unexpected /proc/<pid>/stat format");
  return { utime, stime };
}

/** A `Name:   123 kB` line of /proc/<pid>/status, in KiB. */
export function statusKiB(status: string, name: string): number | undefined {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(status);
  return m ? Number(m[1]) : undefined;
}

export function sampleProcess(pid: number): ProcSample {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new Error(
      `cannot read /proc/${pid}/stat (${code}): is --server-pid a running process on this machine?`,
    );
  }
  const { utime, stime } = parseStatCpuTicks(stat);
  const msPerTick = 1000 / clockTicks();
  const sample: ProcSample = { cpuMs: (utime + stime) * msPerTick, sysMs: stime * msPerTick };
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    sample.rssKiB = statusKiB(status, "VmRSS");
    sample.peakRssKiB = statusKiB(status, "VmHWM");
  } catch {
    // RSS is optional: some systems hide status of other users' processes.
  }
  return sample;
}
