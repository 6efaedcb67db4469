import type pg from "pg";
import { chainRecord } from "../audit";
import type { AuditEvent, AuditRecord, CertificateBinding, CertificateRecord } from "../store";
import { AUDIT_LOCK } from "./postgres-migrations";
import {
  type AuditTail,
  auditJson,
  bindingsJson,
  certificatesJson,
  FLUSH_SQL,
  isWriteError,
} from "./postgres-rows";

/**
 * Group commit over the network. While one batch is in flight, new writes
 * queue; the next batch takes all of them in one transaction, so the cost of
 * a commit (a round trip and an fsync on the server) is shared. Each batch
 * holds the audit-chain advisory lock, so writers in other replicas chain
 * onto what this one committed and never fork the log.
 *
 * As in the SQLite backend, a write that fails (a duplicate serial, an
 * unknown issuer) must reject alone: the batch first runs without
 * savepoints, and only if some write fails is it rolled back and run again
 * with a SAVEPOINT around each write.
 */

/** Upper bound on writes per transaction, so one statement stays a few megabytes. */
const MAX_BATCH = 1000;

/**
 * What a write sees inside the batch transaction. Certificate and audit rows
 * are staged and sent together in one statement before any other query and
 * before commit, so a later write in the batch still sees them.
 */
export class BatchTx {
  private certs: CertificateRecord[] = [];
  private certErrors: ((err: unknown) => unknown)[] = [];
  private bindings: { serial: string; binding: CertificateBinding }[] = [];
  private audits: AuditRecord[] = [];

  constructor(
    private readonly client: pg.ClientBase,
    readonly tail: AuditTail,
  ) {}

  async query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    await this.flush();
    return this.client.query<R>(text, values);
  }

  /**
   * `mapError` names the failure for the caller (e.g. "serial … is already
   * recorded") when this certificate's own flush fails, as it does when a
   * write runs alone under its savepoint.
   */
  stageCertificate(
    cert: CertificateRecord,
    mapError: (err: unknown) => unknown,
    binding?: CertificateBinding,
  ): void {
    this.certs.push(cert);
    this.certErrors.push(mapError);
    if (binding) this.bindings.push({ serial: cert.serial, binding });
  }

  /** Chains the event onto the tail this transaction sees and advances it. */
  appendAudit(event: AuditEvent): AuditRecord {
    const rec = chainRecord(this.tail.seq + 1, this.tail.hash, event);
    this.audits.push(rec);
    this.tail.seq = rec.seq;
    this.tail.hash = rec.hash;
    return rec;
  }

  async flush(): Promise<void> {
    if (this.certs.length === 0 && this.audits.length === 0) return;
    const [certs, bindings, audits, errors] = [this.certs, this.bindings, this.audits, this.certErrors];
    this.discard();
    try {
      await this.client.query(FLUSH_SQL, [
        certificatesJson(certs),
        auditJson(audits),
        bindingsJson(bindings),
      ]);
    } catch (err) {
      throw errors.length === 1 ? errors[0](err) : err;
    }
  }

  /** Forgets staged rows, after the savepoint they belonged to was rolled back. */
  discard(): void {
    this.certs = [];
    this.bindings = [];
    this.audits = [];
    this.certErrors = [];
  }
}

export type WriteOp<T> = (tx: BatchTx) => Promise<T>;

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

interface Job {
  op: WriteOp<unknown>;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

export class PgGroupCommit {
  private queue: Job[] = [];
  private running: Promise<void> | null = null;

  constructor(private readonly connect: () => Promise<pg.PoolClient>) {}

  enqueue<T>(op: WriteOp<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, resolve: resolve as (v: unknown) => void, reject });
      this.kick();
    });
  }

  /** Resolves once every write queued so far has committed or failed. */
  async drain(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  private kick(): void {
    if (this.running !== null) return;
    this.running = (async () => {
      while (this.queue.length > 0) await this.runBatch();
    })().finally(() => {
      this.running = null;
      if (this.queue.length > 0) this.kick();
    });
  }

  private async runBatch(): Promise<void> {
    let client: pg.PoolClient | undefined;
    let jobs: Job[] = [];
    let outcomes: Outcome[] = [];
    try {
      client = await this.connect();
      let tail = await begin(client);
      // Taken after the lock is held, so writes that arrived meanwhile join this batch.
      jobs = this.queue.splice(0, MAX_BATCH);
      try {
        outcomes = await runJobs(client, jobs, tail, false);
      } catch (err) {
        if (!isWriteError(err)) throw err;
        await client.query("ROLLBACK");
        tail = await begin(client);
        outcomes = await runJobs(client, jobs, tail, true);
      }
      // COMMIT of a transaction the server already aborted answers ROLLBACK instead of failing.
      const done = await client.query("COMMIT");
      if (done.command !== "COMMIT") throw new Error(`transaction ended with ${done.command}, not COMMIT`);
    } catch (err) {
      if (jobs.length === 0) jobs = this.queue.splice(0, MAX_BATCH);
      for (const job of jobs) job.reject(err);
      if (client !== undefined) {
        const clean = await client.query("ROLLBACK").then(
          () => true,
          () => false,
        );
        // A connection that cannot even roll back is broken: destroy it instead of pooling it.
        client.release(!clean);
      }
      return;
    }
    client.release();
    jobs.forEach((job, i) => {
      const outcome = outcomes[i];
      if (outcome.ok) job.resolve(outcome.value);
      else job.reject(outcome.error);
    });
  }
}

/** Opens the batch transaction and reads the audit tail once this writer holds the chain. */
async function begin(client: pg.ClientBase): Promise<AuditTail> {
  await client.query(`BEGIN; SELECT pg_advisory_xact_lock(${AUDIT_LOCK})`);
  // A new statement after the lock: READ COMMITTED gives it a snapshot with the previous holder's commit.
  const rows = await client.query<AuditTail>("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1");
  return rows.rows[0] ?? { seq: 0, hash: "" };
}

/** `isolate`: a savepoint around each write, so a failure stays its own instead of failing the batch. */
async function runJobs(
  client: pg.ClientBase,
  jobs: readonly Job[],
  tail: AuditTail,
  isolate: boolean,
): Promise<Outcome[]> {
  const tx = new BatchTx(client, tail);
  const outcomes: Outcome[] = [];
  for (const job of jobs) {
    if (!isolate) {
      outcomes.push({ ok: true, value: await job.op(tx) });
      continue;
    }
    const mark = { ...tail };
    await client.query("SAVEPOINT write");
    try {
      const value = await job.op(tx);
      await tx.flush();
      await client.query("RELEASE SAVEPOINT write");
      outcomes.push({ ok: true, value });
    } catch (error) {
      if (!isWriteError(error)) throw error;
      await client.query("ROLLBACK TO SAVEPOINT write");
      tx.discard();
      Object.assign(tail, mark);
      outcomes.push({ ok: false, error });
    }
  }
  await tx.flush();
  return outcomes;
}
