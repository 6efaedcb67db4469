import { readFileSync } from "node:fs";
import { relative, sep } from "node:path";
import { originalLine } from "./sourcemap";

/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time by
 * function, by file and by area (a Stint folder, an npm package, a part of
 * Node), and inclusive time by function, as shares of the non-idle time.
 *   node dist/scripts/bench/acme-load/cpuprofile.js FILE.cpuprofile [--top 15] [--json]
 */

interface CallFrame {
  functionName: string;
  url: string;
  /** 0-based, in the file that ran (dist/*.js). */
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface Entry {
  name: string;
  ms: number;
  /** Share of non-idle time, in percent. */
  percent: number;
}

export interface ProfileSummary {
  sampledMs: number;
  idleMs: number;
  busyMs: number;
  selfByFunction: Entry[];
  selfByFile: Entry[];
  selfByArea: Entry[];
  /** Time with the function anywhere on the stack (counted once per sample). */
  inclusiveByFunction: Entry[];
}

const ROOT = process.cwd();

/** A file as a reader of this repository knows it: dist/acme/jws.js is acme/jws.ts. */
export function fileLabel(url: string): string {
  if (url === "") return "(native)";
  if (url.startsWith("node:")) return url;
  const path = filePath(url);
  const nm = path.lastIndexOf("/node_modules/");
  if (nm >= 0) return path.slice(nm + 1);
  // Any build directory, so a profile of a copy built elsewhere reads the same.
  const dist = path.lastIndexOf("/dist/");
  if (dist >= 0) return path.slice(dist + "/dist/".length).replace(/\.js$/, ".ts");
  return relative(ROOT, path).split(sep).join("/");
}

/** The part of the system a file belongs to: a Stint folder, an npm package, or a Node subsystem. */
export function areaLabel(file: string): string {
  if (file === "(native)") return "(native: GC, program, idle)";
  if (file.startsWith("node:")) {
    const parts = file.slice("node:".length).split("/");
    return `node:${parts[0] === "internal" ? parts.slice(0, 2).join("/") : parts[0]}`;
  }
  const nm = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
  if (nm) return nm[1];
  return `stint:${file.split("/")[0]}/`;
}

/** "name file:line", the line in the TypeScript source when the build's source map says where. */
function functionLabel(f: CallFrame, file: string): string {
  const name = f.functionName || "(anonymous)";
  if (!f.url || f.url.startsWith("node:")) return `${name} ${file}`;
  const path = filePath(f.url);
  if (!path.includes("/dist/") || path.includes("/node_modules/"))
    return `${name} ${file}:${f.lineNumber + 1}`;
  const line = originalLine(path, f.lineNumber, f.columnNumber);
  return line === undefined ? `${name} ${file} (${path}:${f.lineNumber + 1})` : `${name} ${file}:${line + 1}`;
}

const filePath = (url: string) =>
  url.startsWith("file://") ? decodeURIComponent(url.slice("file://".length)) : url;

export function summarise(profile: CpuProfile, top = 15): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map<number, number>(); // node id → µs
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; it is the better estimate of sample i's duration
    // than the sampling interval, which V8 does not keep to under load.
    const dt = Math.max(0, profile.timeDeltas[i] ?? 0);
    self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + dt);
    total += dt;
  }

  const selfFn = new Map<string, number>();
  const selfFile = new Map<string, number>();
  const selfArea = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const labelOf = new Map<number, string>();
  const label = (id: number) => {
    let l = labelOf.get(id);
    if (l === undefined) {
      const f = byId.get(id)!.callFrame;
      l = functionLabel(f, fileLabel(f.url));
      labelOf.set(id, l);
    }
    return l;
  };
  let idle = 0;
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    if (f.functionName === "(idle)") {
      idle += us;
      continue;
    }
    const file = fileLabel(f.url);
    add(selfFn, label(id), us);
    add(selfFile, file, us);
    add(selfArea, areaLabel(file), us);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const l = label(at);
      if (seen.has(l)) continue; // recursion: count a function once per sample
      seen.add(l);
      add(inclusive, l, us);
    }
  }
  const busy = total - idle;
  const ranked = (m: Map<string, number>, n: number): Entry[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, ms: round(us / 1000), percent: round((100 * us) / Math.max(1, busy)) }));
  return {
    sampledMs: round(total / 1000),
    idleMs: round(idle / 1000),
    busyMs: round(busy / 1000),
    selfByFunction: ranked(selfFn, top),
    selfByFile: ranked(selfFile, top),
    selfByArea: ranked(selfArea, top),
    inclusiveByFunction: ranked(
      new Map([...inclusive].filter(([l]) => !l.startsWith("(root)") && !l.startsWith("(program)"))),
      top,
    ),
  };
}

function add(m: Map<string, number>, k: string, v: number): void {
  m.set(k, (m.get(k) ?? 0) + v);
}

const round = (x: number) => Number(x.toFixed(1));

export function formatSummary(s: ProfileSummary): string {
  const table = (title: string, rows: Entry[]) =>
    [
      `${title}:`,
      ...rows.map(
        (r, i) =>
          `${String(i + 1).padStart(3)}. ${r.percent.toFixed(1).padStart(5)}%  ${r.ms.toFixed(0).padStart(7)} ms  ${r.name}`,
      ),
    ].join("\n");
  return [
    `sampled ${s.sampledMs.toFixed(0)} ms: busy ${s.busyMs.toFixed(0)} ms, idle ${s.idleMs.toFixed(0)} ms (shares below are of busy time)`,
    table("self time by function", s.selfByFunction),
    table("self time by file", s.selfByFile),
    table("self time by area", s.selfByArea),
    table("inclusive time by function", s.inclusiveByFunction),
  ].join("\n\n");
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith("--") && !/^\d+$/.test(a));
  const topAt = args.indexOf("--top");
  const top = topAt >= 0 ? Number(args[topAt + 1]) : 15;
  if (!file || !Number.isInteger(top) || top <= 0) {
    console.error(
      "usage: node dist/scripts/bench/acme-load/cpuprofile.js FILE.cpuprofile [--top N] [--json]",
    );
    process.exit(2);
  }
  try {
    const summary = summarise(JSON.parse(readFileSync(file, "utf8")) as CpuProfile, top);
    process.stdout.write(
      args.includes("--json") ? `${JSON.stringify(summary, null, 2)}\n` : `${formatSummary(summary)}\n`,
    );
  } catch (err) {
    console.error(`cpuprofile: ${file}: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
