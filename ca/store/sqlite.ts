import { closeSync, openSync } from "node:fs";
import { resolve } from "node:path";
import Database from "better-sqlite3";
import { StintError } from "../../common/errors";
import { chainRecord } from "../audit";
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
import { bindingFromRow, checkBoundEntry } from "./acme-common";
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
  sqliteNamed,
} from "./console-rows";
import { ISSUER_PROGRESS_SQL, type ProgressRow, progressFrom, windowsFrom } from "./feed-rows";
import { SqliteAcmeState } from "./sqlite-acme";
import { entryFromRow } from "./sqlite-acme-rows";
import { sqliteChangeWatch } from "./sqlite-acme-watch";
import { GroupCommit, type WriteOp } from "./sqlite-batch";
import { migrate, STORE_FORMAT_KEY } from "./sqlite-migrations";
import { corruptError, probeStoreFile } from "./sqlite-probe";
import {
  AUDIT_COLUMNS,
  type AuditRow,
  type AuditTail,
  auditFromRow,
  auditParams,
  type BindingStatements,
  bindingParams,
  CERT_COLUMNS,
  type CertificateRow,
  certificateFromRow,
  certificateParams,
  issuerFromRow,
  issuerParams,
  prepareBindingStatements,
  prepareStatements,
  rethrowConstraint,
  type Statements,
  sqliteCode,
} from "./sqlite-rows";

const BUSY_TIMEOUT_MS = 5000;
const DEFAULT_LIST_LIMIT = 100;
const MAX_LIST_LIMIT = 1000;

function createEmptyFile(path: string): void {
  try {
    closeSync(openSync(path, "wx", 0o600));
  } catch (err) {
    // Lost a race with another process creating it: its file is as good as ours.
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
}

/** The embedded backend: one SQLite file in WAL mode, writes group-committed. */
/** AcmeStateStore's methods are AcmeStateDelegate's, handing each call to sqlite-acme.ts. */
export class SqliteStore extends AcmeStateDelegate implements Store {
  readonly backend = "sqlite";

  private readonly st: Statements;
  private readonly bound: BindingStatements;
  protected readonly acme: AcmeCache;
  /** The ACME tables behind the cache, for writes that join a certificate's transaction. */
  private readonly acmeState: SqliteAcmeState;
  private readonly writes: GroupCommit;
  /** Several reads that must agree with each other (another process may commit between them). */
  private readonly readSnapshot: <T>(read: () => T) => T;
  private readonly listRevokedStatement: Database.Statement<
    [string, number],
    { serial: string; revoked_at: number; revocation_reason: number }
  >;
  // The console's queries (one per filter shape; at most 64 for the audit search).
  private readonly consoleStatements = new Map<
    string,
    Database.Statement<Record<string, unknown>, unknown>
  >();
  private readonly listStatements = new Map<
    string,
    Database.Statement<Record<string, unknown>, CertificateRow>
  >();
  private closed = false;
  private progressStatement: Database.Statement | null = null;

  private constructor(
    private readonly db: Database.Database,
    readonly path: string,
  ) {
    super();
    this.st = prepareStatements(db);
    this.bound = prepareBindingStatements(db);
    // The partial index on revoked_at keeps this a scan of the revoked set, however many certificates exist.
    this.listRevokedStatement = db.prepare(
      "SELECT serial, revoked_at, revocation_reason FROM certificates" +
        " WHERE revoked_at IS NOT NULL AND issuer_id = ? AND not_after > ? ORDER BY revoked_at, serial",
    );
    const snapshot = db.transaction((read: () => unknown) => read());
    this.readSnapshot = <T>(read: () => T) => snapshot.deferred(read) as T;
    this.writes = new GroupCommit(
      db,
      () => this.st.auditTail.get() ?? { seq: 0, hash: "" },
      (err) =>
        sqliteCode(err)?.startsWith("SQLITE_CORRUPT") ? corruptError(path, (err as Error).message) : err,
    );
    this.acmeState = new SqliteAcmeState(db, {
      write: (op) => this.write(op),
      audit: (tail, event) => this.appendAuditIn(tail, event),
      assertOpen: () => this.assertOpen(),
    });
    this.acme = new AcmeCache(this.acmeState, sqliteChangeWatch(db));
  }

  /**
   * Opens the store at `path`, refusing (and leaving untouched) a file that is
   * not a healthy Stint store this build understands. With `create`, a
   * missing or empty file becomes a new store (mode 0600).
   */
  static async open(path: string, opts: { create?: boolean } = {}): Promise<SqliteStore> {
    const abs = resolve(path);
    const probe = probeStoreFile(abs);
    if (probe.kind !== "stint" && !opts.create) {
      const what = probe.kind === "missing" ? "does not exist" : "is empty";
      throw new StintError(
        "ERR_NOT_INITIALIZED",
        `${abs} ${what}; create a CA there first (stint ca init), or point --data-dir at an existing one`,
      );
    }
    if (probe.kind === "missing") createEmptyFile(abs);

    const db = new Database(abs, { fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
    try {
      const mode = db.pragma("journal_mode = WAL", { simple: true });
      if (mode !== "wal") {
        throw new StintError("ERR_FILE", `${abs}: cannot use write-ahead logging here (got ${mode})`);
      }
      // FULL: fsync the WAL on every commit, so a resolved write survives power loss, not just a crash.
      db.pragma("synchronous = FULL");
      db.pragma("foreign_keys = ON");
      migrate(db, abs, new Date());
      return new SqliteStore(db, abs);
    } catch (err) {
      db.close();
      if (sqliteCode(err)?.startsWith("SQLITE_CORRUPT")) throw corruptError(abs, (err as Error).message);
      throw err;
    }
  }

  async getMeta(key: string): Promise<string | null> {
    this.assertOpen();
    return this.st.getMeta.get(key)?.value ?? null;
  }

  setMeta(key: string, value: string): Promise<void> {
    if (key === STORE_FORMAT_KEY) return Promise.reject(new RangeError(`meta key ${key} is reserved`));
    return this.write(() => {
      this.st.setMeta.run({ key, value });
    });
  }

  /** Insert-if-absent and the read back in one IMMEDIATE transaction: another process's insert is before or after both. */
  initMeta(key: string, value: string): Promise<string> {
    if (key === STORE_FORMAT_KEY) return Promise.reject(new RangeError(`meta key ${key} is reserved`));
    return this.write(() => {
      this.consoleRun(INIT_META_SQL, [key, value]);
      return this.st.getMeta.get(key)!.value;
    });
  }

  /** Read and write in one IMMEDIATE transaction, so another process's increment cannot interleave. */
  incrementMeta(key: string): Promise<number> {
    if (key === STORE_FORMAT_KEY) return Promise.reject(new RangeError(`meta key ${key} is reserved`));
    return this.write(() => {
      const value = this.st.getMeta.get(key)?.value ?? "0";
      if (!/^\d{1,15}$/.test(value)) {
        throw new StintError(
          "ERR_STORE_CORRUPT",
          `${this.path}: meta ${key} holds "${value}", not a counter`,
        );
      }
      const next = Number(value) + 1;
      this.st.setMeta.run({ key, value: String(next) });
      return next;
    });
  }

  putIssuer(issuer: IssuerRecord, audit: AuditEvent): Promise<void> {
    return this.write((tail) => {
      try {
        this.st.insertIssuer.run(issuerParams(issuer));
      } catch (err) {
        rethrowConstraint(err, {
          SQLITE_CONSTRAINT_PRIMARYKEY: ["ERR_STORE_CONFLICT", `issuer ${issuer.id} already exists`],
          SQLITE_CONSTRAINT_FOREIGNKEY: ["ERR_NOT_FOUND", `parent issuer ${issuer.parentId} does not exist`],
        });
      }
      this.appendAuditIn(tail, audit);
    });
  }

  async listIssuers(): Promise<IssuerRecord[]> {
    this.assertOpen();
    return this.st.listIssuers.all().map(issuerFromRow);
  }

  async getIssuer(id: string): Promise<IssuerRecord | null> {
    this.assertOpen();
    const row = this.st.getIssuer.get(id);
    return row === undefined ? null : issuerFromRow(row);
  }

  setIssuerState(id: string, state: IssuerState, audit: AuditEvent): Promise<void> {
    return this.write((tail) => {
      if (this.st.setIssuerState.run(state, id).changes === 0) {
        throw new StintError("ERR_NOT_FOUND", `issuer ${id} does not exist`);
      }
      this.appendAuditIn(tail, audit);
    });
  }

  reserveSequences(issuerId: string, count: number): Promise<number> {
    if (!Number.isSafeInteger(count) || count < 1) {
      return Promise.reject(new RangeError(`cannot reserve ${count} sequence numbers`));
    }
    return this.write(() => {
      const row = this.st.reserve.get(count, issuerId, count);
      if (row === undefined) throw new StintError("ERR_NOT_FOUND", `issuer ${issuerId} does not exist`);
      return row.first;
    });
  }

  async insertCertificate(
    cert: CertificateRecord,
    audit: AuditEvent,
    binding?: CertificateBinding,
    completes?: OrderCompletion,
  ): Promise<void> {
    if (completes === undefined) return this.recordCertificate(cert, audit, binding);
    // The order's new state enters the ACME cache only once the transaction holding both has committed.
    await this.acme.orderWrittenBy(completes.orderId, () =>
      this.recordCertificate(cert, audit, binding, () =>
        this.acmeState.updateOrderIn(completes.orderId, "processing", {
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
    also?: () => T,
  ): Promise<T> {
    return this.write((tail) => {
      if (binding) {
        // Inside the IMMEDIATE transaction: no deletion can come between this check and the insert.
        const row = this.bound.boundEntry.get(binding.entryId);
        checkBoundEntry(binding, row === undefined ? null : entryFromRow(row));
      }
      try {
        this.st.insertCertificate.run(certificateParams(cert));
      } catch (err) {
        rethrowConstraint(err, {
          SQLITE_CONSTRAINT_PRIMARYKEY: [
            "ERR_STORE_CONFLICT",
            `certificate serial ${cert.serial} is already recorded`,
          ],
          SQLITE_CONSTRAINT_UNIQUE: [
            "ERR_STORE_CONFLICT",
            `issuer ${cert.issuerId} sequence ${cert.sequence} is already used`,
          ],
          SQLITE_CONSTRAINT_FOREIGNKEY: ["ERR_NOT_FOUND", `issuer ${cert.issuerId} does not exist`],
        });
      }
      if (binding) {
        try {
          this.bound.insertBinding.run(bindingParams(cert.serial, binding));
        } catch (err) {
          rethrowConstraint(err, {
            SQLITE_CONSTRAINT_FOREIGNKEY: [
              "ERR_NOT_FOUND",
              `attestation ${binding.attestationId} does not exist`,
            ],
          });
        }
      }
      this.appendAuditIn(tail, audit);
      return also?.() as T;
    });
  }

  async getCertificate(serial: string): Promise<CertificateRecord | null> {
    this.assertOpen();
    const row = this.st.getCertificate.get(serial);
    return row === undefined ? null : certificateFromRow(row);
  }

  async getCertificateBinding(serial: string): Promise<CertificateBinding | null> {
    this.assertOpen();
    const row = this.bound.getBinding.get(serial);
    return row === undefined ? null : bindingFromRow(row);
  }

  async listCertificates(filter: CertificateFilter): Promise<CertificateRecord[]> {
    this.assertOpen();
    const limit = filter.limit ?? DEFAULT_LIST_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new RangeError(`invalid certificate list limit ${limit}`);
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: Math.min(limit, MAX_LIST_LIMIT) };
    if (filter.issuerId !== undefined) {
      where.push("issuer_id = @issuerId");
      params.issuerId = filter.issuerId;
    }
    if (filter.spiffeId !== undefined) {
      where.push("spiffe_id = @spiffeId");
      params.spiffeId = filter.spiffeId;
    }
    if (filter.entryId !== undefined) {
      where.push("serial IN (SELECT serial FROM certificate_bindings WHERE entry_id = @entryId)");
      params.entryId = filter.entryId;
    }
    if (filter.unexpiredAt !== undefined) {
      where.push("not_after > @unexpiredAt");
      params.unexpiredAt = filter.unexpiredAt.getTime();
    }
    if (filter.spiffeIdPrefix !== undefined) {
      where.push("substr(spiffe_id, 1, length(@spiffeIdPrefix)) = @spiffeIdPrefix");
      params.spiffeIdPrefix = filter.spiffeIdPrefix;
    }
    if (filter.afterSerial !== undefined) {
      where.push("serial > @afterSerial");
      params.afterSerial = filter.afterSerial;
    }
    const sql =
      `SELECT ${CERT_COLUMNS} FROM certificates` +
      (where.length > 0 ? ` WHERE ${where.join(" AND ")}` : "") +
      " ORDER BY serial LIMIT @limit";
    // At most 32 shapes of query, each prepared once.
    let stmt = this.listStatements.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare<Record<string, unknown>, CertificateRow>(sql);
      this.listStatements.set(sql, stmt);
    }
    return stmt.all(params).map(certificateFromRow);
  }

  revokeCertificate(serial: string, reason: number, at: Date, audit: AuditEvent): Promise<void> {
    return this.write((tail) => {
      if (this.st.revoke.run(at.getTime(), reason, serial).changes === 0) {
        // Nothing changed: either there is no such certificate or it was revoked before.
        if (this.st.certificateExists.get(serial) === undefined) {
          throw new StintError("ERR_NOT_FOUND", `certificate serial ${serial} is unknown`);
        }
        throw new StintError("ERR_STORE_CONFLICT", `certificate serial ${serial} is already revoked`);
      }
      this.appendAuditIn(tail, audit);
    });
  }

  async listRevoked(issuerId: string, unexpiredAt: Date): Promise<RevokedCertificate[]> {
    this.assertOpen();
    return this.listRevokedStatement.all(issuerId, unexpiredAt.getTime()).map((r) => ({
      serial: r.serial,
      revokedAt: new Date(r.revoked_at),
      reason: r.revocation_reason,
    }));
  }

  async revocationWindows(now: Date): Promise<RevocationWindow[]> {
    this.assertOpen();
    const at = now.getTime();
    return this.readSnapshot(() =>
      windowsFrom(this.st.unexpiredWindows.all(at), this.st.unexpiredRevoked.all(at)),
    );
  }

  async revokedCount(): Promise<number> {
    this.assertOpen();
    return this.st.countRevoked.get()!.n;
  }

  async issuerProgress(issuerId: string, now: Date): Promise<IssuerProgress> {
    this.assertOpen();
    this.progressStatement ??= this.db.prepare(ISSUER_PROGRESS_SQL.replace(/\$\d/g, "?"));
    return progressFrom(this.progressStatement.get(issuerId, now.getTime()) as ProgressRow);
  }

  /** `revoked` counts every revoked certificate, expired or not, as `issued` counts every one. */
  async counts(now: Date): Promise<CertificateCounts> {
    this.assertOpen();
    return this.readSnapshot(() => ({
      issued: this.st.countIssued.get()!.n,
      unexpired: this.st.countUnexpired.get(now.getTime())!.n,
      revoked: this.st.countRevoked.get()!.n,
    }));
  }

  appendAudit(event: AuditEvent): Promise<AuditRecord> {
    return this.write((tail) => this.appendAuditIn(tail, event));
  }

  async expiryTimeline(from: Date, to: Date, bucketMs: number): Promise<ExpiryBucket[]> {
    const rows = this.consoleQuery<{ bucket: number; n: number }>(EXPIRY_TIMELINE_SQL, [
      from.getTime(),
      to.getTime(),
      bucketMs,
    ]);
    return rows.map((r) => ({ start: new Date(from.getTime() + r.bucket * bucketMs), count: r.n }));
  }

  async expiredUnrenewed(since: Date, now: Date, limit: number): Promise<CertificateRecord[]> {
    const sql = expiredUnrenewedSql(CERT_COLUMNS);
    return this.consoleQuery<CertificateRow>(sql, [since.getTime(), now.getTime(), limit]).map(
      certificateFromRow,
    );
  }

  async lateRenewals(
    since: Date,
    now: Date,
    windowEndPercent: number,
    limit: number,
  ): Promise<LateRenewals[]> {
    const params = [since.getTime(), now.getTime(), Math.round(windowEndPercent), limit];
    return this.consoleQuery<LateRenewalRow>(LATE_RENEWALS_SQL, params).map(lateRenewalsFromRow);
  }

  async listJoinTokens(now: Date, limit: number): Promise<JoinTokenSummary[]> {
    return this.consoleQuery<JoinTokenRow>(JOIN_TOKENS_SQL, [now.getTime(), limit]).map(joinTokenFromRow);
  }

  async searchAudit(q: AuditQuery): Promise<AuditRecord[]> {
    const { sql, params } = auditSearchSql(AUDIT_COLUMNS, q);
    return this.consoleQuery<AuditRow>(sql, params).map(auditFromRow);
  }

  /** The console's shared SQL (console-rows.ts), prepared once per shape. */
  private consoleStatement(text: string, params: unknown[]) {
    this.assertOpen();
    const { sql, named } = sqliteNamed(text, params);
    let stmt = this.consoleStatements.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare<Record<string, unknown>, unknown>(sql);
      this.consoleStatements.set(sql, stmt);
    }
    return { stmt, named };
  }

  private consoleQuery<R>(text: string, params: unknown[]): R[] {
    const { stmt, named } = this.consoleStatement(text, params);
    return stmt.all(named) as R[];
  }

  private consoleRun(text: string, params: unknown[]): void {
    const { stmt, named } = this.consoleStatement(text, params);
    stmt.run(named);
  }

  putConsoleGrant(grant: ConsoleGrant, now: Date): Promise<void> {
    return this.write(() => {
      this.consoleRun(CONSOLE_GRANT_SQL.dropExpired, [now.getTime()]);
      this.consoleRun(CONSOLE_GRANT_SQL.dropOverflow, [MAX_CONSOLE_GRANTS - 1, grant.kind]);
      this.consoleRun(CONSOLE_GRANT_SQL.insert, consoleGrantParams(grant));
    });
  }

  takeConsoleCode(hash: string, now: Date): Promise<ConsoleGrant | null> {
    return this.write(() =>
      liveConsoleGrant(this.consoleQuery<ConsoleGrantRow>(CONSOLE_GRANT_SQL.take, [hash, "code"])[0], now),
    );
  }

  async findConsoleSession(hash: string, now: Date): Promise<ConsoleGrant | null> {
    return liveConsoleGrant(
      this.consoleQuery<ConsoleGrantRow>(CONSOLE_GRANT_SQL.find, [hash, "session"])[0],
      now,
    );
  }

  deleteConsoleSession(hash: string): Promise<void> {
    return this.write(() => this.consoleRun(CONSOLE_GRANT_SQL.delete, [hash, "session"]));
  }

  async listAudit(afterSeq: number, limit: number): Promise<AuditRecord[]> {
    this.assertOpen();
    return this.st.listAudit.all(afterSeq, limit).map(auditFromRow);
  }

  /** Commits every write already queued, then closes; later calls reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.writes.drain();
    this.db.close();
  }

  private write<T>(op: WriteOp<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`store ${this.path} is closed`));
    return this.writes.enqueue(op);
  }

  /** Runs inside a write: chains onto the tail that transaction sees and advances it. */
  private appendAuditIn(tail: AuditTail, event: AuditEvent): AuditRecord {
    const rec = chainRecord(tail.seq + 1, tail.hash, event);
    this.st.insertAudit.run(auditParams(rec));
    tail.seq = rec.seq;
    tail.hash = rec.hash;
    return rec;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`store ${this.path} is closed`);
  }
}
