import { writeSync } from "node:fs";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";

/**
 * A watchdog for the load generator that still works when its event loop is
 * blocked. The run's own stall check (load.ts) is a timer, so when the
 * thread itself hangs (as it did in a Node crypto mutex during garbage
 * collection) nothing fires and the run hangs silently. Here the main thread
 * stamps a shared heartbeat every second; a worker thread, which has its own
 * event loop, checks it and, after `limitMs` without a stamp, says so on
 * stderr, stops the servers the run started and kills the process.
 */

interface WatchdogData {
  heartbeat: SharedArrayBuffer;
  limitMs: number;
}

let active: { worker: Worker; stamp: NodeJS.Timeout } | undefined;

/** Starts the watchdog (once per process); `limitMs` without a heartbeat ends the run. */
export function startWatchdog(limitMs: number): void {
  if (active) return;
  const heartbeat = new SharedArrayBuffer(4);
  const beat = new Int32Array(heartbeat);
  const now = () => Atomics.store(beat, 0, Math.floor(Date.now() / 1000));
  now();
  const stamp = setInterval(now, 1000);
  stamp.unref();
  const worker = new Worker(__filename, { workerData: { heartbeat, limitMs } satisfies WatchdogData });
  worker.unref();
  active = { worker, stamp };
}

/** A server the run started: the watchdog stops it before it kills the run. */
export function watchChild(pid: number | undefined): void {
  if (pid !== undefined) active?.worker.postMessage({ watch: pid });
}

export function forgetChild(pid: number | undefined): void {
  if (pid !== undefined) active?.worker.postMessage({ forget: pid });
}

export function stopWatchdog(): void {
  if (!active) return;
  clearInterval(active.stamp);
  void active.worker.terminate();
  active = undefined;
}

function runWatchdog(data: WatchdogData): void {
  const beat = new Int32Array(data.heartbeat);
  const children = new Set<number>();
  parentPort?.on("message", (m: { watch?: number; forget?: number }) => {
    if (m.watch !== undefined) children.add(m.watch);
    if (m.forget !== undefined) children.delete(m.forget);
  });
  setInterval(
    () => {
      const silentMs = Date.now() - Atomics.load(beat, 0) * 1000;
      if (silentMs < data.limitMs) return;
      // Synchronous writes: the main thread, which owns process.stderr's stream, cannot run.
      writeSync(
        2,
        `bench:acme: watchdog: the generator's event loop has been blocked for ${Math.round(silentMs / 1000)} s ` +
          "(a hang in the generator itself, not a slow server); stopping its servers and exiting\n",
      );
      for (const pid of children) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {
          // already gone
        }
      }
      process.kill(process.pid, "SIGKILL");
    },
    Math.min(5000, data.limitMs / 4),
  );
}

if (!isMainThread && (workerData as WatchdogData | undefined)?.heartbeat)
  runWatchdog(workerData as WatchdogData);
