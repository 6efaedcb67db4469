import type Database from "better-sqlite3";
import { StintError } from "../../common/errors";
import type { AuditEvent } from "../store";
import type {
  AccountRecord,
  AccountStatus,
  AcmeStateStore,
  AttestationRecord,
  AuthorizationRecord,
  AuthorizationStatus,
  ChallengeRecord,
  EntryRecord,
  JoinTokenRecord,
  JoinTokenSpend,
  JoinTokenUse,
  OrderRecord,
  OrderStatus,
} from "../store-acme";
import {
  AUTHORIZATION_COLUMNS,
  attestedPatch,
  authorizationPatchColumns,
  type ColumnValues,
  checkTokenAudit,
  ORDER_COLUMNS,
  orderPatchColumns,
  refusedToken,
  spentAudit,
  tokenNotTaken,
  tokenState,
  UNCLAIMED_CERTIFICATE_SQL,
} from "./acme-common";
import {
  type AcmeStatements,
  type AuthorizationRow,
  accountFromRow,
  accountParams,
  attestationFromRow,
  attestationParams,
  authorizationFromRow,
  authorizationParams,
  entryFromRow,
  entryParams,
  joinTokenParams,
  type OrderRow,
  orderFromRow,
  orderParams,
  prepareAcmeStatements,
} from "./sqlite-acme-rows";
import type { WriteOp } from "./sqlite-batch";
import { type AuditTail, rethrowConstraint } from "./sqlite-rows";

/** What the ACME state borrows from the SqliteStore it belongs to. */
export interface SqliteHost {
  /** Queues a write for the next group commit. */
  write<T>(op: WriteOp<T>): Promise<T>;
  /** Appends an audit record inside the running write. */
  audit(tail: AuditTail, event: AuditEvent): void;
  assertOpen(): void;
}

/**
 * The ACME state half of SqliteStore. Every write goes through the store's
 * group commit, so each runs in an IMMEDIATE transaction: checks and the
 * writes that depend on them see no other writer in between.
 */
export class SqliteAcmeState implements AcmeStateStore {
  private readonly st: AcmeStatements;
  /** Patch statements, one per set of columns (at most 8 + 16), prepared once. */
  private readonly patchStatements = new Map<string, Database.Statement<unknown[], unknown>>();

  constructor(
    private readonly db: Database.Database,
    private readonly host: SqliteHost,
  ) {
    this.st = prepareAcmeStatements(db);
  }

  createAccount(
    account: AccountRecord,
    audit: AuditEvent,
  ): Promise<{ account: AccountRecord; created: boolean }> {
    return this.host.write((tail) => {
      let row: ReturnType<AcmeStatements["insertAccount"]["get"]>;
      try {
        row = this.st.insertAccount.get(accountParams(account));
      } catch (err) {
        rethrowConstraint(err, {
          SQLITE_CONSTRAINT_PRIMARYKEY: ["ERR_STORE_CONFLICT", `account ${account.id} already exists`],
        });
      }
      if (row === undefined) {
        // The key already has an account; newAccount returns it, whatever its status.
        const existing = this.st.getAccountByThumbprint.get(account.thumbprint)!;
        return { account: accountFromRow(existing), created: false };
      }
      this.host.audit(tail, audit);
      return { account: accountFromRow(row), created: true };
    });
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    this.host.assertOpen();
    const row = this.st.getAccount.get(id);
    return row === undefined ? null : accountFromRow(row);
  }

  async getAccountByThumbprint(thumbprint: string): Promise<AccountRecord | null> {
    this.host.assertOpen();
    const row = this.st.getAccountByThumbprint.get(thumbprint);
    return row === undefined ? null : accountFromRow(row);
  }

  updateAccount(
    id: string,
    patch: { status?: AccountStatus; contact?: string[] },
    audit: AuditEvent,
  ): Promise<AccountRecord> {
    return this.host.write((tail) => {
      const contact = patch.contact === undefined ? null : JSON.stringify(patch.contact);
      const row = this.st.updateAccount.get(patch.status ?? null, contact, id);
      if (row === undefined) throw new StintError("ERR_NOT_FOUND", `account ${id} does not exist`);
      this.host.audit(tail, audit);
      return accountFromRow(row);
    });
  }

  changeAccountKey(
    id: string,
    oldThumbprint: string,
    jwk: Record<string, unknown>,
    thumbprint: string,
    audit: AuditEvent,
  ): Promise<AccountRecord> {
    return this.host.write((tail) => {
      let row: ReturnType<AcmeStatements["changeAccountKey"]["get"]>;
      try {
        row = this.st.changeAccountKey.get(JSON.stringify(jwk), thumbprint, id, oldThumbprint);
      } catch (err) {
        rethrowConstraint(err, {
          SQLITE_CONSTRAINT_UNIQUE: ["ERR_STORE_CONFLICT", "the new key already belongs to an account"],
        });
      }
      if (row === undefined) {
        if (this.st.accountExists.get(id) === undefined) {
          throw new StintError("ERR_NOT_FOUND", `account ${id} does not exist`);
        }
        throw new StintError("ERR_STORE_CONFLICT", `the key of account ${id} was changed meanwhile`);
      }
      this.host.audit(tail, audit);
      return accountFromRow(row);
    });
  }

  createOrder(order: OrderRecord, authorizations: AuthorizationRecord[]): Promise<void> {
    return this.host.write(() => {
      try {
        this.st.insertOrder.run(orderParams(order));
      } catch (err) {
        rethrowConstraint(err, {
          SQLITE_CONSTRAINT_PRIMARYKEY: ["ERR_STORE_CONFLICT", `order ${order.id} already exists`],
          SQLITE_CONSTRAINT_FOREIGNKEY: ["ERR_NOT_FOUND", `account ${order.accountId} does not exist`],
        });
      }
      for (const authz of authorizations) {
        try {
          this.st.insertAuthorization.run(authorizationParams(authz));
        } catch (err) {
          rethrowConstraint(err, {
            SQLITE_CONSTRAINT_PRIMARYKEY: ["ERR_STORE_CONFLICT", `authorization ${authz.id} already exists`],
            SQLITE_CONSTRAINT_FOREIGNKEY: ["ERR_NOT_FOUND", `account ${authz.accountId} does not exist`],
          });
        }
      }
    });
  }

  async getOrder(id: string): Promise<OrderRecord | null> {
    this.host.assertOpen();
    const row = this.st.getOrder.get(id);
    return row === undefined ? null : orderFromRow(row);
  }

  async listAccountOrders(
    accountId: string,
    page: { after?: string; limit: number },
  ): Promise<OrderRecord[]> {
    this.host.assertOpen();
    const after = page.after ?? null;
    return this.st.listAccountOrders.all(accountId, after, after, page.limit).map(orderFromRow);
  }

  updateOrder(
    id: string,
    expect: OrderStatus,
    patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
  ): Promise<OrderRecord> {
    return this.host.write(() => this.updateOrderIn(id, expect, patch));
  }

  /** updateOrder inside a write already running (the certificate insert that completes an order). */
  updateOrderIn(
    id: string,
    expect: OrderStatus,
    patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
  ): OrderRecord {
    let row: OrderRow | undefined;
    try {
      row = this.compareAndSet<OrderRow>("orders", ORDER_COLUMNS, orderPatchColumns(patch), id, expect);
    } catch (err) {
      rethrowConstraint(err, {
        SQLITE_CONSTRAINT_UNIQUE: [
          "ERR_STORE_CONFLICT",
          `certificate ${String(patch.certificateSerial)} already belongs to another order`,
        ],
      });
    }
    if (row !== undefined) return orderFromRow(row);
    const current = this.st.orderStatus.get(id);
    if (current === undefined) throw new StintError("ERR_NOT_FOUND", `order ${id} does not exist`);
    throw new StintError("ERR_STORE_CONFLICT", `order ${id} is ${current.status}, not ${expect}`);
  }

  async listProcessingOrders(limit: number): Promise<OrderRecord[]> {
    this.host.assertOpen();
    return this.statement<[number], OrderRow>(
      `SELECT ${ORDER_COLUMNS} FROM orders WHERE status = 'processing' ORDER BY created_at, id LIMIT ?`,
    )
      .all(limit)
      .map(orderFromRow);
  }

  async unclaimedCertificate(attestationId: string): Promise<string | null> {
    this.host.assertOpen();
    const row = this.statement<[string], { serial: string }>(
      UNCLAIMED_CERTIFICATE_SQL.replace("$1", "?"),
    ).get(attestationId);
    return row?.serial ?? null;
  }

  async accountOfCertificate(serial: string): Promise<string | null> {
    this.host.assertOpen();
    return this.st.accountOfCertificate.get(serial)?.account_id ?? null;
  }

  async getAuthorization(id: string): Promise<AuthorizationRecord | null> {
    this.host.assertOpen();
    const row = this.st.getAuthorization.get(id);
    return row === undefined ? null : authorizationFromRow(row);
  }

  updateAuthorization(
    id: string,
    expect: AuthorizationStatus,
    patch: Partial<Pick<AuthorizationRecord, "status" | "challenges" | "entryId" | "selectors">>,
  ): Promise<AuthorizationRecord> {
    const columns = authorizationPatchColumns(patch, JSON.stringify);
    return this.host.write(() => {
      const row = this.compareAndSet<AuthorizationRow>(
        "authorizations",
        AUTHORIZATION_COLUMNS,
        columns,
        id,
        expect,
      );
      if (row !== undefined) return authorizationFromRow(row);
      const current = this.st.authorizationStatus.get(id);
      if (current === undefined) throw new StintError("ERR_NOT_FOUND", `authorization ${id} does not exist`);
      throw new StintError("ERR_STORE_CONFLICT", `authorization ${id} is ${current.status}, not ${expect}`);
    });
  }

  recordAttestation(
    attestation: AttestationRecord,
    expect: AuthorizationStatus,
    challenges: ChallengeRecord[],
    audit: AuditEvent,
    token?: JoinTokenSpend,
  ): Promise<AuthorizationRecord> {
    const columns = authorizationPatchColumns(attestedPatch(attestation, challenges), JSON.stringify);
    return this.host.write((tail) => {
      const id = attestation.authorizationId;
      const row = this.compareAndSet<AuthorizationRow>(
        "authorizations",
        AUTHORIZATION_COLUMNS,
        columns,
        id,
        expect,
      );
      if (row === undefined) {
        const current = this.st.authorizationStatus.get(id);
        if (current === undefined)
          throw new StintError("ERR_NOT_FOUND", `authorization ${id} does not exist`);
        throw new StintError("ERR_STORE_CONFLICT", `authorization ${id} is ${current.status}, not ${expect}`);
      }
      if (token) {
        const use = this.takeToken(tail, token.hash, token.now, token.spend);
        if (use?.outcome !== "taken") throw tokenNotTaken(use);
      }
      try {
        this.st.insertAttestation.run(attestationParams(attestation));
      } catch (err) {
        rethrowConstraint(err, {
          SQLITE_CONSTRAINT_PRIMARYKEY: [
            "ERR_STORE_CONFLICT",
            `attestation ${attestation.id} already exists`,
          ],
          SQLITE_CONSTRAINT_FOREIGNKEY: ["ERR_NOT_FOUND", `account ${attestation.accountId} does not exist`],
        });
      }
      this.host.audit(tail, audit);
      return authorizationFromRow(row);
    });
  }

  async getAttestation(id: string): Promise<AttestationRecord | null> {
    this.host.assertOpen();
    const row = this.st.getAttestation.get(id);
    return row === undefined ? null : attestationFromRow(row);
  }

  createEntry(entry: EntryRecord, audit: AuditEvent): Promise<void> {
    return this.host.write((tail) => {
      try {
        this.st.insertEntry.run(entryParams(entry));
      } catch (err) {
        rethrowConstraint(err, {
          SQLITE_CONSTRAINT_PRIMARYKEY: ["ERR_STORE_CONFLICT", `entry ${entry.id} already exists`],
        });
      }
      this.host.audit(tail, audit);
    });
  }

  async getEntry(id: string): Promise<EntryRecord | null> {
    this.host.assertOpen();
    const row = this.st.getEntry.get(id);
    return row === undefined ? null : entryFromRow(row);
  }

  async listEntries(filter: { spiffeId?: string; parent?: string }): Promise<EntryRecord[]> {
    this.host.assertOpen();
    const rows =
      filter.parent !== undefined
        ? this.st.listEntriesByParent.all(filter.parent)
        : filter.spiffeId === undefined
          ? this.st.listEntries.all()
          : this.st.listEntriesOf.all(filter.spiffeId);
    return rows.map(entryFromRow);
  }

  deleteEntry(id: string, audit: AuditEvent): Promise<void> {
    return this.host.write((tail) => {
      if (this.st.deleteEntry.run(id).changes === 0) {
        throw new StintError("ERR_NOT_FOUND", `entry ${id} does not exist`);
      }
      this.host.audit(tail, audit);
    });
  }

  async createJoinToken(token: JoinTokenRecord, audit: AuditEvent): Promise<void> {
    checkTokenAudit(token, audit);
    return this.host.write((tail) => {
      try {
        this.st.insertJoinToken.run(joinTokenParams(token));
      } catch (err) {
        rethrowConstraint(err, {
          SQLITE_CONSTRAINT_PRIMARYKEY: ["ERR_STORE_CONFLICT", `join token ${token.id} already exists`],
          // Not the hash itself: it is what redeems the token.
          SQLITE_CONSTRAINT_UNIQUE: [
            "ERR_STORE_CONFLICT",
            `join token ${token.id} repeats another token's hash`,
          ],
        });
      }
      this.host.audit(tail, audit);
    });
  }

  consumeJoinToken(
    hash: string,
    now: Date,
    spend: (token: { id: string; spiffeId: string }) => AuditEvent,
  ): Promise<JoinTokenUse | null> {
    return this.host.write((tail) => this.takeToken(tail, hash, now, spend));
  }

  async findJoinToken(hash: string, now: Date): Promise<JoinTokenUse | null> {
    this.host.assertOpen();
    const state = this.st.joinTokenState.get(hash);
    if (state === undefined) return null;
    return {
      outcome: tokenState(state.used_at, state.expires_at, now),
      id: state.id,
      spiffeId: state.spiffe_id,
    };
  }

  /** Inside a write: takes the token and appends its spend record, or says why it could not. */
  private takeToken(
    tail: AuditTail,
    hash: string,
    now: Date,
    spend: (token: { id: string; spiffeId: string }) => AuditEvent,
  ): JoinTokenUse | null {
    const taken = this.st.takeJoinToken.get({ hash, now: now.getTime() });
    if (taken !== undefined) {
      const token = { id: taken.id, spiffeId: taken.spiffe_id };
      this.host.audit(tail, spentAudit(spend, token, hash));
      return { outcome: "taken", ...token };
    }
    const state = this.st.joinTokenState.get(hash);
    if (state === undefined) return null;
    return {
      outcome: refusedToken(state.used_at, state.expires_at, now),
      id: state.id,
      spiffeId: state.spiffe_id,
    };
  }

  /** Prepared on first use, so a store still at an older schema prepares what it can. */
  private statement<P extends unknown[], R>(sql: string): Database.Statement<P, R> {
    let stmt = this.patchStatements.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare<unknown[], unknown>(sql);
      this.patchStatements.set(sql, stmt);
    }
    return stmt as unknown as Database.Statement<P, R>;
  }

  /** UPDATE … WHERE id AND status = expect, returning the new row, or undefined when nothing matched. */
  private compareAndSet<R>(
    table: string,
    returning: string,
    columns: ColumnValues,
    id: string,
    expect: string,
  ): R | undefined {
    // An empty patch still checks the status, and returns the row as it is.
    const sets = columns.length === 0 ? "status = status" : columns.map(([c]) => `${c} = ?`).join(", ");
    const sql = `UPDATE ${table} SET ${sets} WHERE id = ? AND status = ? RETURNING ${returning}`;
    let stmt = this.patchStatements.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare<unknown[], unknown>(sql);
      this.patchStatements.set(sql, stmt);
    }
    return stmt.get(...columns.map(([, v]) => v), id, expect) as R | undefined;
  }
}
