import type pg from "pg";
import { StintError } from "../../common/errors";
import type {
  AuditEvent,
  AuditQuery,
  AuditRecord,
  CertificateBinding,
  CertificateCounts,
  CertificateFilter,
  CertificateRecord,
  ConsoleGrant,
  ExpiryBucket,
  IssuerProgress,
  IssuerRecord,
  IssuerState,
  JoinTokenSummary,
  LateRenewals,
  OrderCompletion,
  RevocationWindow,
  RevokedCertificate,
  Store,
} from "../store";
import { MAX_CONSOLE_GRANTS } from "../store";
import { AcmeCache } from "./acme-cache";
import {
  BINDING_COLUMNS,
  type BindingRow,
  bindingFromRow,
  checkBoundEntry,
  ENTRY_COLUMNS,
} from "./acme-common";
import { AcmeStateDelegate } from "./acme-delegate";
import {
  auditSearchSql,
  CONSOLE_GRANT_SQL,
  type ConsoleGrantRow,
  consoleGrantParams,
  EXPIRY_TIMELINE_SQL,
  expiredUnrenewedSql,
  INIT_META_SQL,
  JOIN_TOKENS_SQL,
  type JoinTokenRow,
  joinTokenFromRow,
  LATE_RENEWALS_SQL,
  type LateRenewalRow,
  lateRenewalsFromRow,
  liveConsoleGrant,
} from "./console-rows";
import { ISSUER_PROGRESS_SQL, type ProgressRow, progressFrom, windowsFrom } from "./feed-rows";
import { PostgresAcmeState } from "./postgres-acme";
import { type EntryRow, entryFromRow } from "./postgres-acme-rows";
import { type BatchTx, PgGroupCommit, type WriteOp } from "./postgres-batch";
import { connectError, createPool, parseTarget } from "./postgres-connect";
import { migrate } from "./postgres-migrations";
import {
  AUDIT_COLUMNS,
  type AuditRow,
  auditFromRow,
  CERT_COLUMNS,
  type CertificateRow,
  certificateFromRow,
  ISSUER_COLUMNS,
  type IssuerRow,
  issuerFromRow,
  issuerParams,
  mapConstraint,
} from "./postgres-rows";
import { STORE_FORMAT_KEY } from "./sqlite-migrations";

const DEFAULT_LIST_LIMIT = 100;
const MAX_LIST_LIMIT = 1000;

/**
 * The shared backend: several CA replicas can use one PostgreSQL database.
 * Certificate and audit writes are group-committed under an advisory lock
 * that keeps one audit chain across replicas; sequence reservations are
 * single atomic UPDATEs, so replicas never get overlapping ranges.
 */
/** AcmeStateStore's methods are AcmeStateDelegate's, handing each call to postgres-acme.ts. */
export class PostgresStore extends AcmeStateDelegate implements Store {
  readonly backend = "postgres";

  /** Private (#) so util.inspect of a store never prints the pool and the URL inside it. */
  readonly #pool: pg.Pool;
  private readonly writes: PgGroupCommit;
  protected readonly acme: AcmeCache;
  /** The ACME tables behind the cache, for writes that join a certificate's transaction. */
  private readonly acmeState: PostgresAcmeState;
  private closed = false;

  /** Only host:port/database is kept: the target's secrets (for scrubbing) are not needed once open. */
  private constructor(
    pool: pg.Pool,
    readonly location: string,
  ) {
    super();
    this.#pool = pool;
    // Failures after open pass through as the driver reports them: its messages never hold the password.
    this.writes = new PgGroupCommit(() => pool.connect());
    // Replicas change rows behind this one's back, with no cheap way to know: only attestations are cached.
    this.acmeState = new PostgresAcmeState({
      write: (op) => this.write(op),
      run: (sql, params) => this.run(sql, params),
    });
    this.acme = new AcmeCache(this.acmeState, null);
  }

  /**
   * Connects and checks the database before anything is written: one that
   * holds other tables, a newer schema, or (without `create`) nothing at all
   * is refused with one clear line and left as it was.
   */
  static async open(url: string, opts: { create?: boolean } = {}): Promise<PostgresStore> {
    const target = parseTarget(url);
    const pool = createPool(url);
    try {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw connectError(err, target);
      }
      try {
        const outcome = await migrate(client, target.where, opts.create === true, new Date());
        if (outcome.kind === "empty") {
          throw new StintError(
            "ERR_NOT_INITIALIZED",
            `PostgreSQL database ${target.where} is empty; create a CA there first (stint ca init), ` +
              "or point store.url at an existing one",
          );
        }
      } catch (err) {
        if (err instanceof StintError) throw err;
        throw connectError(err, target, "cannot open the Stint store in");
      } finally {
        client.release();
      }
      return new PostgresStore(pool, target.where);
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
  }

  async getMeta(key: string): Promise<string | null> {
    const rows = await this.run<{ value: string }>("SELECT value FROM meta WHERE key = $1", [key]);
    return rows[0]?.value ?? null;
  }

  async setMeta(key: string, value: string): Promise<void> {
    if (key === STORE_FORMAT_KEY) throw new RangeError(`meta key ${key} is reserved`);
    await this.run(
      "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      [key, value],
    );
  }

  async initMeta(key: string, value: string): Promise<string> {
    if (key === STORE_FORMAT_KEY) throw new RangeError(`meta key ${key} is reserved`);
    // A concurrent insert of the same key waits for the other to commit, then does nothing.
    await this.run(INIT_META_SQL, [key, value]);
    return (await this.getMeta(key))!;
  }

  async putConsoleGrant(grant: ConsoleGrant, now: Date): Promise<void> {
    await this.run(CONSOLE_GRANT_SQL.dropExpired, [now.getTime()]);
    await this.run(CONSOLE_GRANT_SQL.dropOverflow, [MAX_CONSOLE_GRANTS - 1, grant.kind]);
    await this.run(CONSOLE_GRANT_SQL.insert, consoleGrantParams(grant));
  }

  async takeConsoleCode(hash: string, now: Date): Promise<ConsoleGrant | null> {
    return liveConsoleGrant(
      (await this.run<ConsoleGrantRow>(CONSOLE_GRANT_SQL.take, [hash, "code"]))[0],
      now,
    );
  }

  async findConsoleSession(hash: string, now: Date): Promise<ConsoleGrant | null> {
    return liveConsoleGrant(
      (await this.run<ConsoleGrantRow>(CONSOLE_GRANT_SQL.find, [hash, "session"]))[0],
      now,
    );
  }

  async deleteConsoleSession(hash: string): Promise<void> {
    await this.run(CONSOLE_GRANT_SQL.delete, [hash, "session"]);
  }

  /** One autocommitted upsert: the row lock orders concurrent increments from every replica. */
  async incrementMeta(key: string): Promise<number> {
    if (key === STORE_FORMAT_KEY) throw new RangeError(`meta key ${key} is reserved`);
    const rows = await this.run<{ value: string }>(
      `INSERT INTO meta (key, value) VALUES ($1, '1')
       ON CONFLICT (key) DO UPDATE SET value = CASE WHEN meta.value ~ '^[0-9]{1,15}$'
         THEN (meta.value::bigint + 1)::text ELSE meta.value END
       RETURNING value`,
      [key],
    );
    const value = rows[0].value;
    // A value that is not a counter is left as it was and reported, never silently restarted at 1.
    if (!/^\d{1,15}$/.test(value)) {
      throw new StintError(
        "ERR_STORE_CORRUPT",
        `${this.location}: meta ${key} holds "${value}", not a counter`,
      );
    }
    return Number(value);
  }

  putIssuer(issuer: IssuerRecord, audit: AuditEvent): Promise<void> {
    return this.write(async (tx) => {
      try {
        await tx.query(
          `INSERT INTO issuers (${ISSUER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
          issuerParams(issuer),
        );
      } catch (err) {
        throw mapConstraint(err, {
          issuers_pkey: ["ERR_STORE_CONFLICT", `issuer ${issuer.id} already exists`],
          issuers_parent_fkey: ["ERR_NOT_FOUND", `parent issuer ${issuer.parentId} does not exist`],
        });
      }
      tx.appendAudit(audit);
    });
  }

  async listIssuers(): Promise<IssuerRecord[]> {
    const rows = await this.run<IssuerRow>(`SELECT ${ISSUER_COLUMNS} FROM issuers ORDER BY created_at, id`);
    return rows.map(issuerFromRow);
  }

  async getIssuer(id: string): Promise<IssuerRecord | null> {
    const rows = await this.run<IssuerRow>(`SELECT ${ISSUER_COLUMNS} FROM issuers WHERE id = $1`, [id]);
    return rows.length === 0 ? null : issuerFromRow(rows[0]);
  }

  setIssuerState(id: string, state: IssuerState, audit: AuditEvent): Promise<void> {
    return this.write(async (tx) => {
      const res = await tx.query("UPDATE issuers SET state = $1 WHERE id = $2", [state, id]);
      if (res.rowCount === 0) throw new StintError("ERR_NOT_FOUND", `issuer ${id} does not exist`);
      tx.appendAudit(audit);
    });
  }

  /** One autocommitted UPDATE: the row lock makes it atomic across replicas, and it is durable on return. */
  async reserveSequences(issuerId: string, count: number): Promise<number> {
    if (!Number.isSafeInteger(count) || count < 1) {
      throw new RangeError(`cannot reserve ${count} sequence numbers`);
    }
    const rows = await this.run<{ first: number }>(
      "UPDATE issuers SET next_sequence = next_sequence + $1 WHERE id = $2 RETURNING next_sequence - $1 AS first",
      [count, issuerId],
    );
    if (rows.length === 0) throw new StintError("ERR_NOT_FOUND", `issuer ${issuerId} does not exist`);
    return rows[0].first;
  }

  async insertCertificate(
    cert: CertificateRecord,
    audit: AuditEvent,
    binding?: CertificateBinding,
    completes?: OrderCompletion,
  ): Promise<void> {
    if (completes === undefined) return this.recordCertificate(cert, audit, binding);
    // Through the cache, which keeps no orders here (replicas), so it forgets rather than serves a stale one.
    await this.acme.orderWrittenBy(completes.orderId, () =>
      this.recordCertificate(cert, audit, binding, (tx) =>
        this.acmeState.updateOrderIn(tx, completes.orderId, "processing", {
          status: "valid",
          certificateSerial: cert.serial,
        }),
      ),
    );
  }

  /** The certificate, its binding and audit record, then `also` (the order it completes), in one write. */
  private recordCertificate<T = void>(
    cert: CertificateRecord,
    audit: AuditEvent,
    binding?: CertificateBinding,
    also?: (tx: BatchTx) => Promise<T>,
  ): Promise<T> {
    return this.write(async (tx) => {
      if (binding) {
        // Entries are deleted by writes holding the same audit-chain lock as this batch, so none can come
        // between this read and the commit; FOR SHARE holds the row all the same.
        const found = await tx.query<EntryRow>(
          `SELECT ${ENTRY_COLUMNS} FROM entries WHERE id = $1 FOR SHARE`,
          [binding.entryId],
        );
        checkBoundEntry(binding, found.rows.length === 0 ? null : entryFromRow(found.rows[0]));
      }
      tx.stageCertificate(
        cert,
        (err) =>
          mapConstraint(err, {
            certificates_pkey: [
              "ERR_STORE_CONFLICT",
              `certificate serial ${cert.serial} is already recorded`,
            ],
            certificates_issuer_sequence_key: [
              "ERR_STORE_CONFLICT",
              `issuer ${cert.issuerId} sequence ${cert.sequence} is already used`,
            ],
            certificates_issuer_fkey: ["ERR_NOT_FOUND", `issuer ${cert.issuerId} does not exist`],
            certificate_bindings_attestation_fkey: [
              "ERR_NOT_FOUND",
              `attestation ${binding?.attestationId} does not exist`,
            ],
          }),
        binding,
      );
      tx.appendAudit(audit);
      // tx.query sends the staged certificate first: the order is updated after it, in the same transaction.
      return (await also?.(tx)) as T;
    });
  }

  async getCertificateBinding(serial: string): Promise<CertificateBinding | null> {
    const rows = await this.run<BindingRow>(
      `SELECT ${BINDING_COLUMNS} FROM certificate_bindings WHERE serial = $1`,
      [serial],
    );
    return rows.length === 0 ? null : bindingFromRow(rows[0]);
  }

  async getCertificate(serial: string): Promise<CertificateRecord | null> {
    const rows = await this.run<CertificateRow>(
      `SELECT ${CERT_COLUMNS} FROM certificates WHERE serial = $1`,
      [serial],
    );
    return rows.length === 0 ? null : certificateFromRow(rows[0]);
  }

  async listCertificates(filter: CertificateFilter): Promise<CertificateRecord[]> {
    const limit = filter.limit ?? DEFAULT_LIST_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError(`invalid certificate list limit ${limit}`);
    }
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (clause: string, value: unknown) => {
      params.push(value);
      where.push(clause.replace("?", `$${params.length}`));
    };
    if (filter.issuerId !== undefined) add("issuer_id = ?", filter.issuerId);
    if (filter.spiffeId !== undefined) add("spiffe_id = ?", filter.spiffeId);
    if (filter.entryId !== undefined)
      add("serial IN (SELECT serial FROM certificate_bindings WHERE entry_id = ?)", filter.entryId);
    if (filter.unexpiredAt !== undefined) add("not_after > ?", filter.unexpiredAt.getTime());
    if (filter.spiffeIdPrefix !== undefined) add("starts_with(spiffe_id, ?)", filter.spiffeIdPrefix);
    if (filter.afterSerial !== undefined) add("serial > ?", filter.afterSerial);
    params.push(Math.min(limit, MAX_LIST_LIMIT));
    const sql =
      `SELECT ${CERT_COLUMNS} FROM certificates` +
      (where.length > 0 ? ` WHERE ${where.join(" AND ")}` : "") +
      ` ORDER BY serial LIMIT $${params.length}`;
    return (await this.run<CertificateRow>(sql, params)).map(certificateFromRow);
  }

  revokeCertificate(serial: string, reason: number, at: Date, audit: AuditEvent): Promise<void> {
    return this.write(async (tx) => {
      const res = await tx.query(
        "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 WHERE serial = $3 AND revoked_at IS NULL",
        [at.getTime(), reason, serial],
      );
      if (res.rowCount === 0) {
        // Nothing changed: either there is no such certificate or it was revoked before.
        const found = await tx.query("SELECT 1 FROM certificates WHERE serial = $1", [serial]);
        if (found.rowCount === 0) {
          throw new StintError("ERR_NOT_FOUND", `certificate serial ${serial} is unknown`);
        }
        throw new StintError("ERR_STORE_CONFLICT", `certificate serial ${serial} is already revoked`);
      }
      tx.appendAudit(audit);
    });
  }

  async listRevoked(issuerId: string, unexpiredAt: Date): Promise<RevokedCertificate[]> {
    const rows = await this.run<{ serial: string; revoked_at: number; revocation_reason: number }>(
      `SELECT serial, revoked_at, revocation_reason FROM certificates
       WHERE revoked_at IS NOT NULL AND issuer_id = $1 AND not_after > $2 ORDER BY revoked_at, serial`,
      [issuerId, unexpiredAt.getTime()],
    );
    return rows.map((r) => ({
      serial: r.serial,
      revokedAt: new Date(r.revoked_at),
      reason: r.revocation_reason,
    }));
  }

  async revocationWindows(now: Date): Promise<RevocationWindow[]> {
    const at = now.getTime();
    // Two statements in one REPEATABLE READ snapshot would be exact; a revocation between them only
    // shows in the next feed, which the change detector triggers anyway.
    const windows = await this.run<{ issuer_id: string; lo: string; hi: string }>(
      `SELECT issuer_id, MIN(sequence) AS lo, MAX(sequence) + 1 AS hi FROM certificates
       WHERE not_after > $1 GROUP BY issuer_id ORDER BY issuer_id`,
      [at],
    );
    const revoked = await this.run<{ issuer_id: string; sequence: string }>(
      `SELECT issuer_id, sequence FROM certificates
       WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY issuer_id, sequence`,
      [at],
    );
    return windowsFrom(windows, revoked);
  }

  async revokedCount(): Promise<number> {
    const rows = await this.run<{ n: string }>(
      "SELECT COUNT(*) AS n FROM certificates WHERE revoked_at IS NOT NULL",
      [],
    );
    return Number(rows[0].n);
  }

  async issuerProgress(issuerId: string, now: Date): Promise<IssuerProgress> {
    return progressFrom((await this.run<ProgressRow>(ISSUER_PROGRESS_SQL, [issuerId, now.getTime()]))[0]);
  }

  /** One statement, so the three numbers come from one snapshot. */
  async counts(now: Date): Promise<CertificateCounts> {
    const rows = await this.run<CertificateCounts>(
      `SELECT count(*) AS issued,
              count(*) FILTER (WHERE not_after > $1) AS unexpired,
              count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked
       FROM certificates`,
      [now.getTime()],
    );
    return rows[0];
  }

  appendAudit(event: AuditEvent): Promise<AuditRecord> {
    return this.write(async (tx) => tx.appendAudit(event));
  }

  async expiryTimeline(from: Date, to: Date, bucketMs: number): Promise<ExpiryBucket[]> {
    const rows = await this.run<{ bucket: string; n: string }>(EXPIRY_TIMELINE_SQL, [
      from.getTime(),
      to.getTime(),
      bucketMs,
    ]);
    return rows.map((r) => ({
      start: new Date(from.getTime() + Number(r.bucket) * bucketMs),
      count: Number(r.n),
    }));
  }

  async expiredUnrenewed(since: Date, now: Date, limit: number): Promise<CertificateRecord[]> {
    const rows = await this.run<CertificateRow>(expiredUnrenewedSql(CERT_COLUMNS), [
      since.getTime(),
      now.getTime(),
      limit,
    ]);
    return rows.map(certificateFromRow);
  }

  async lateRenewals(
    since: Date,
    now: Date,
    windowEndPercent: number,
    limit: number,
  ): Promise<LateRenewals[]> {
    const params = [since.getTime(), now.getTime(), Math.round(windowEndPercent), limit];
    return (await this.run<LateRenewalRow>(LATE_RENEWALS_SQL, params)).map(lateRenewalsFromRow);
  }

  async listJoinTokens(now: Date, limit: number): Promise<JoinTokenSummary[]> {
    return (await this.run<JoinTokenRow>(JOIN_TOKENS_SQL, [now.getTime(), limit])).map(joinTokenFromRow);
  }

  async searchAudit(q: AuditQuery): Promise<AuditRecord[]> {
    const { sql, params } = auditSearchSql(AUDIT_COLUMNS, q);
    return (await this.run<AuditRow>(sql, params)).map(auditFromRow);
  }

  async listAudit(afterSeq: number, limit: number): Promise<AuditRecord[]> {
    const rows = await this.run<AuditRow>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`,
      [afterSeq, limit],
    );
    return rows.map(auditFromRow);
  }

  /** Commits every write already queued, waits for statements in flight, then closes; later calls reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writes.drain();
    await this.#pool.end();
  }

  private write<T>(op: WriteOp<T>): Promise<T> {
    if (this.closed) return Promise.reject(this.closedError());
    return this.writes.enqueue(op);
  }

  /** A single statement outside the write batches (autocommitted when it writes). */
  private async run<R extends pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<R[]> {
    if (this.closed) throw this.closedError();
    return (await this.#pool.query<R>(sql, params)).rows;
  }

  private closedError(): Error {
    return new Error(`store ${this.location} is closed`);
  }
}
