import type Database from "better-sqlite3";
import { type AuditTail, sqliteCode } from "./sqlite-rows";

/**
 * Group commit. Every write waits for the next flush, which applies all
 * queued writes in one IMMEDIATE transaction (one fsync) and then settles
 * each promise. A write that fails (a duplicate serial, an unknown issuer)
 * must reject alone while the rest commit: the batch first runs without
 * savepoints (they cost about a third of an insert), and only if some write
 * fails is it rolled back and run again with a SAVEPOINT around each write.
 */

/** Upper bound on writes per transaction, so one flush never holds the event loop for long. */
const MAX_BATCH = 1000;

export type WriteOp<T> = (tail: AuditTail) => T;

interface Job {
  /** `isolate`: run under a savepoint and keep a failure to this job instead of throwing. */
  apply(tail: AuditTail, isolate: boolean): void;
  settle(batchFailed: boolean, batchError: unknown): void;
}

/** Errors that belong to one write (bad input, a constraint) rather than to the transaction (I/O, busy, corrupt). */
function isWriteError(err: unknown): boolean {
  const code = sqliteCode(err);
  return code === undefined || code.startsWith("SQLITE_CONSTRAINT");
}

export class GroupCommit {
  private queue: Job[] = [];
  private scheduled = false;
  private readonly runBatch: Database.Transaction<(jobs: Job[], isolate: boolean) => void>;
  private readonly inSavepoint: Database.Transaction<(op: WriteOp<unknown>, tail: AuditTail) => unknown>;

  /**
   * `readTail` runs first in every batch transaction, so the audit chain
   * continues from what is committed, even by another process.
   */
  constructor(
    private readonly db: Database.Database,
    readTail: () => AuditTail,
    private readonly mapBatchError: (err: unknown) => unknown,
  ) {
    // Called inside runBatch, so better-sqlite3 uses SAVEPOINT / ROLLBACK TO rather than BEGIN.
    this.inSavepoint = db.transaction((op: WriteOp<unknown>, tail: AuditTail) => op(tail));
    this.runBatch = db.transaction((jobs: Job[], isolate: boolean) => {
      const tail = readTail();
      for (const job of jobs) job.apply(tail, isolate);
    });
  }

  enqueue<T>(op: WriteOp<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
      this.queue.push({
        apply: (tail, isolate) => {
          if (!isolate) {
            outcome = { ok: true, value: op(tail) };
            return;
          }
          const mark = { ...tail };
          try {
            outcome = { ok: true, value: this.inSavepoint(op, tail) as T };
          } catch (error) {
            // When SQLite has already aborted the whole transaction, the failure is the batch's.
            if (!isWriteError(error) || !this.db.inTransaction) throw error;
            Object.assign(tail, mark);
            outcome = { ok: false, error };
          }
        },
        settle: (batchFailed, batchError) => {
          if (batchFailed || outcome === undefined) reject(batchError);
          else if (outcome.ok) resolve(outcome.value);
          else reject(outcome.error);
        },
      });
      this.schedule();
    });
  }

  /** Commits everything queued, synchronously; for close(). */
  drain(): void {
    while (this.queue.length > 0) this.flush();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
      if (this.queue.length > 0) this.schedule();
    });
  }

  private flush(): void {
    const jobs = this.queue.splice(0, MAX_BATCH);
    if (jobs.length === 0) return;
    let failed = false;
    let error: unknown;
    try {
      try {
        this.runBatch.immediate(jobs, false);
      } catch (err) {
        if (!isWriteError(err)) throw err;
        this.runBatch.immediate(jobs, true);
      }
    } catch (err) {
      failed = true;
      error = this.mapBatchError(err);
    }
    for (const job of jobs) job.settle(failed, error);
  }
}
