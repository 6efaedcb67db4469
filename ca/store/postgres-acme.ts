import type pg from "pg";
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
  ACCOUNT_COLUMNS,
  ATTESTATION_COLUMNS,
  AUTHORIZATION_COLUMNS,
  attestedPatch,
  authorizationPatchColumns,
  type ColumnValues,
  checkTokenAudit,
  ENTRY_COLUMNS,
  JOIN_TOKEN_COLUMNS,
  ORDER_COLUMNS,
  orderPatchColumns,
  refusedToken,
  spentAudit,
  tokenNotTaken,
  tokenState,
  UNCLAIMED_CERTIFICATE_SQL,
} from "./acme-common";
import {
  type AccountRow,
  type AttestationRow,
  type AuthorizationRow,
  accountFromRow,
  accountParams,
  attestationFromRow,
  attestationParams,
  authorizationFromRow,
  authorizationParams,
  CONSUME_JOIN_TOKEN_SQL,
  type ConsumeRow,
  type EntryRow,
  entryFromRow,
  entryParams,
  joinTokenParams,
  type OrderRow,
  orderFromRow,
  orderParams,
  placeholders,
} from "./postgres-acme-rows";
import type { BatchTx, WriteOp } from "./postgres-batch";
import { mapConstraint } from "./postgres-rows";

/** What the ACME state borrows from the PostgresStore it belongs to. */
export interface PostgresHost {
  /** Queues a write for the next batch: one transaction holding the audit-chain lock. */
  write<T>(op: WriteOp<T>): Promise<T>;
  /** One statement on a pooled connection, autocommitted. */
  run<R extends pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<R[]>;
}

/**
 * The ACME state half of PostgresStore. Writes with an audit record, and
 * createOrder's several inserts, go through the store's batches; the
 * compare-and-set updates are single statements, made atomic across
 * connections and replicas by PostgreSQL's row locks.
 */
export class PostgresAcmeState implements AcmeStateStore {
  constructor(private readonly host: PostgresHost) {}

  createAccount(
    account: AccountRecord,
    audit: AuditEvent,
  ): Promise<{ account: AccountRecord; created: boolean }> {
    return this.host.write(async (tx) => {
      let inserted: pg.QueryResult<AccountRow>;
      try {
        inserted = await tx.query<AccountRow>(
          `INSERT INTO accounts (${ACCOUNT_COLUMNS}) VALUES (${placeholders(6)})
           ON CONFLICT (thumbprint) DO NOTHING RETURNING ${ACCOUNT_COLUMNS}`,
          accountParams(account),
        );
      } catch (err) {
        throw mapConstraint(err, {
          accounts_pkey: ["ERR_STORE_CONFLICT", `account ${account.id} already exists`],
        });
      }
      if (inserted.rows.length === 0) {
        // The key already has an account; newAccount returns it, whatever its status.
        const existing = await tx.query<AccountRow>(
          `SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE thumbprint = $1`,
          [account.thumbprint],
        );
        return { account: accountFromRow(existing.rows[0]), created: false };
      }
      tx.appendAudit(audit);
      return { account: accountFromRow(inserted.rows[0]), created: true };
    });
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    const rows = await this.host.run<AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE id = $1`, [
      id,
    ]);
    return rows.length === 0 ? null : accountFromRow(rows[0]);
  }

  async getAccountByThumbprint(thumbprint: string): Promise<AccountRecord | null> {
    const rows = await this.host.run<AccountRow>(
      `SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE thumbprint = $1`,
      [thumbprint],
    );
    return rows.length === 0 ? null : accountFromRow(rows[0]);
  }

  updateAccount(
    id: string,
    patch: { status?: AccountStatus; contact?: string[] },
    audit: AuditEvent,
  ): Promise<AccountRecord> {
    return this.host.write(async (tx) => {
      const res = await tx.query<AccountRow>(
        `UPDATE accounts SET status = coalesce($1, status), contact = coalesce($2, contact) WHERE id = $3
         RETURNING ${ACCOUNT_COLUMNS}`,
        [patch.status ?? null, patch.contact ?? null, id],
      );
      if (res.rows.length === 0) throw new StintError("ERR_NOT_FOUND", `account ${id} does not exist`);
      tx.appendAudit(audit);
      return accountFromRow(res.rows[0]);
    });
  }

  changeAccountKey(
    id: string,
    oldThumbprint: string,
    jwk: Record<string, unknown>,
    thumbprint: string,
    audit: AuditEvent,
  ): Promise<AccountRecord> {
    return this.host.write(async (tx) => {
      let res: pg.QueryResult<AccountRow>;
      try {
        res = await tx.query<AccountRow>(
          `UPDATE accounts SET jwk = $1, thumbprint = $2 WHERE id = $3 AND thumbprint = $4
           RETURNING ${ACCOUNT_COLUMNS}`,
          [JSON.stringify(jwk), thumbprint, id, oldThumbprint],
        );
      } catch (err) {
        throw mapConstraint(err, {
          accounts_thumbprint_key: ["ERR_STORE_CONFLICT", "the new key already belongs to an account"],
        });
      }
      if (res.rows.length === 0) {
        const found = await tx.query("SELECT 1 FROM accounts WHERE id = $1", [id]);
        if (found.rowCount === 0) throw new StintError("ERR_NOT_FOUND", `account ${id} does not exist`);
        throw new StintError("ERR_STORE_CONFLICT", `the key of account ${id} was changed meanwhile`);
      }
      tx.appendAudit(audit);
      return accountFromRow(res.rows[0]);
    });
  }

  createOrder(order: OrderRecord, authorizations: AuthorizationRecord[]): Promise<void> {
    return this.host.write(async (tx) => {
      try {
        await tx.query(
          `INSERT INTO orders (${ORDER_COLUMNS}) VALUES (${placeholders(10)})`,
          orderParams(order),
        );
      } catch (err) {
        throw mapConstraint(err, {
          orders_pkey: ["ERR_STORE_CONFLICT", `order ${order.id} already exists`],
          orders_account_fkey: ["ERR_NOT_FOUND", `account ${order.accountId} does not exist`],
        });
      }
      for (const authz of authorizations) {
        try {
          await tx.query(
            `INSERT INTO authorizations (${AUTHORIZATION_COLUMNS}) VALUES (${placeholders(9)})`,
            authorizationParams(authz),
          );
        } catch (err) {
          throw mapConstraint(err, {
            authorizations_pkey: ["ERR_STORE_CONFLICT", `authorization ${authz.id} already exists`],
            authorizations_account_fkey: ["ERR_NOT_FOUND", `account ${authz.accountId} does not exist`],
          });
        }
      }
    });
  }

  async getOrder(id: string): Promise<OrderRecord | null> {
    const rows = await this.host.run<OrderRow>(`SELECT ${ORDER_COLUMNS} FROM orders WHERE id = $1`, [id]);
    return rows.length === 0 ? null : orderFromRow(rows[0]);
  }

  async listAccountOrders(
    accountId: string,
    page: { after?: string; limit: number },
  ): Promise<OrderRecord[]> {
    const rows = await this.host.run<OrderRow>(
      `SELECT ${ORDER_COLUMNS} FROM orders
       WHERE account_id = $1 AND status <> 'invalid'
         AND ($2::text IS NULL OR (created_at, id) > (SELECT created_at, id FROM orders WHERE id = $2))
       ORDER BY created_at, id LIMIT $3`,
      [accountId, page.after ?? null, page.limit],
    );
    return rows.map(orderFromRow);
  }

  async updateOrder(
    id: string,
    expect: OrderStatus,
    patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
  ): Promise<OrderRecord> {
    return this.updateOrderWith(this.host.run, id, expect, patch);
  }

  /** updateOrder inside a batch already running (the certificate insert that completes an order). */
  updateOrderIn(
    tx: BatchTx,
    id: string,
    expect: OrderStatus,
    patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
  ): Promise<OrderRecord> {
    return this.updateOrderWith(
      async <R extends pg.QueryResultRow>(sql: string, params?: unknown[]) =>
        (await tx.query<R>(sql, params)).rows,
      id,
      expect,
      patch,
    );
  }

  /** `run`: autocommitted on the pool, or a statement of the batch transaction. */
  private async updateOrderWith(
    run: PostgresHost["run"],
    id: string,
    expect: OrderStatus,
    patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
  ): Promise<OrderRecord> {
    let rows: OrderRow[];
    try {
      rows = await this.compareAndSet<OrderRow>(
        run,
        "orders",
        ORDER_COLUMNS,
        orderPatchColumns(patch),
        id,
        expect,
      );
    } catch (err) {
      throw mapConstraint(err, {
        orders_certificate_serial: [
          "ERR_STORE_CONFLICT",
          `certificate ${String(patch.certificateSerial)} already belongs to another order`,
        ],
      });
    }
    if (rows.length > 0) return orderFromRow(rows[0]);
    const current = await run<{ status: string }>("SELECT status FROM orders WHERE id = $1", [id]);
    if (current.length === 0) throw new StintError("ERR_NOT_FOUND", `order ${id} does not exist`);
    throw new StintError("ERR_STORE_CONFLICT", `order ${id} is ${current[0].status}, not ${expect}`);
  }

  async listProcessingOrders(limit: number): Promise<OrderRecord[]> {
    const rows = await this.host.run<OrderRow>(
      `SELECT ${ORDER_COLUMNS} FROM orders WHERE status = 'processing' ORDER BY created_at, id LIMIT $1`,
      [limit],
    );
    return rows.map(orderFromRow);
  }

  async unclaimedCertificate(attestationId: string): Promise<string | null> {
    const rows = await this.host.run<{ serial: string }>(UNCLAIMED_CERTIFICATE_SQL, [attestationId]);
    return rows[0]?.serial ?? null;
  }

  async accountOfCertificate(serial: string): Promise<string | null> {
    const rows = await this.host.run<{ account_id: string }>(
      "SELECT account_id FROM orders WHERE certificate_serial = $1",
      [serial],
    );
    return rows[0]?.account_id ?? null;
  }

  async getAuthorization(id: string): Promise<AuthorizationRecord | null> {
    const rows = await this.host.run<AuthorizationRow>(
      `SELECT ${AUTHORIZATION_COLUMNS} FROM authorizations WHERE id = $1`,
      [id],
    );
    return rows.length === 0 ? null : authorizationFromRow(rows[0]);
  }

  async updateAuthorization(
    id: string,
    expect: AuthorizationStatus,
    patch: Partial<Pick<AuthorizationRecord, "status" | "challenges" | "entryId" | "selectors">>,
  ): Promise<AuthorizationRecord> {
    const columns = authorizationPatchColumns(patch, (values) => values);
    const rows = await this.compareAndSet<AuthorizationRow>(
      this.host.run,
      "authorizations",
      AUTHORIZATION_COLUMNS,
      columns,
      id,
      expect,
    );
    if (rows.length > 0) return authorizationFromRow(rows[0]);
    const current = await this.host.run<{ status: string }>(
      "SELECT status FROM authorizations WHERE id = $1",
      [id],
    );
    if (current.length === 0) throw new StintError("ERR_NOT_FOUND", `authorization ${id} does not exist`);
    throw new StintError("ERR_STORE_CONFLICT", `authorization ${id} is ${current[0].status}, not ${expect}`);
  }

  recordAttestation(
    attestation: AttestationRecord,
    expect: AuthorizationStatus,
    challenges: ChallengeRecord[],
    audit: AuditEvent,
    token?: JoinTokenSpend,
  ): Promise<AuthorizationRecord> {
    const columns = authorizationPatchColumns(attestedPatch(attestation, challenges), (values) => values);
    const id = attestation.authorizationId;
    return this.host.write(async (tx) => {
      const sets = columns.map(([c], i) => `${c} = $${i + 1}`).join(", ");
      const n = columns.length;
      const updated = await tx.query<AuthorizationRow>(
        `UPDATE authorizations SET ${sets} WHERE id = $${n + 1} AND status = $${n + 2}
         RETURNING ${AUTHORIZATION_COLUMNS}`,
        [...columns.map(([, v]) => v), id, expect],
      );
      if (updated.rows.length === 0) {
        const current = await tx.query<{ status: string }>(
          "SELECT status FROM authorizations WHERE id = $1",
          [id],
        );
        if (current.rows.length === 0)
          throw new StintError("ERR_NOT_FOUND", `authorization ${id} does not exist`);
        throw new StintError(
          "ERR_STORE_CONFLICT",
          `authorization ${id} is ${current.rows[0].status}, not ${expect}`,
        );
      }
      if (token) {
        const use = await takeToken(tx, token.hash, token.now, token.spend);
        if (use?.outcome !== "taken") throw tokenNotTaken(use);
      }
      try {
        await tx.query(
          `INSERT INTO attestations (${ATTESTATION_COLUMNS}) VALUES (${placeholders(11)})`,
          attestationParams(attestation),
        );
      } catch (err) {
        throw mapConstraint(err, {
          attestations_pkey: ["ERR_STORE_CONFLICT", `attestation ${attestation.id} already exists`],
          attestations_account_fkey: ["ERR_NOT_FOUND", `account ${attestation.accountId} does not exist`],
        });
      }
      tx.appendAudit(audit);
      return authorizationFromRow(updated.rows[0]);
    });
  }

  async getAttestation(id: string): Promise<AttestationRecord | null> {
    const rows = await this.host.run<AttestationRow>(
      `SELECT ${ATTESTATION_COLUMNS} FROM attestations WHERE id = $1`,
      [id],
    );
    return rows.length === 0 ? null : attestationFromRow(rows[0]);
  }

  createEntry(entry: EntryRecord, audit: AuditEvent): Promise<void> {
    return this.host.write(async (tx) => {
      try {
        await tx.query(
          `INSERT INTO entries (${ENTRY_COLUMNS}) VALUES (${placeholders(7)})`,
          entryParams(entry),
        );
      } catch (err) {
        throw mapConstraint(err, {
          entries_pkey: ["ERR_STORE_CONFLICT", `entry ${entry.id} already exists`],
        });
      }
      tx.appendAudit(audit);
    });
  }

  async getEntry(id: string): Promise<EntryRecord | null> {
    const rows = await this.host.run<EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM entries WHERE id = $1`, [id]);
    return rows.length === 0 ? null : entryFromRow(rows[0]);
  }

  async listEntries(filter: { spiffeId?: string; parent?: string }): Promise<EntryRecord[]> {
    const [where, params] =
      filter.parent !== undefined
        ? [" WHERE parent = $1", [filter.parent]]
        : filter.spiffeId === undefined
          ? ["", []]
          : [" WHERE spiffe_id = $1", [filter.spiffeId]];
    const rows = await this.host.run<EntryRow>(
      `SELECT ${ENTRY_COLUMNS} FROM entries${where} ORDER BY spiffe_id, created_at, id`,
      params,
    );
    return rows.map(entryFromRow);
  }

  deleteEntry(id: string, audit: AuditEvent): Promise<void> {
    return this.host.write(async (tx) => {
      const res = await tx.query("DELETE FROM entries WHERE id = $1", [id]);
      if (res.rowCount === 0) throw new StintError("ERR_NOT_FOUND", `entry ${id} does not exist`);
      tx.appendAudit(audit);
    });
  }

  async createJoinToken(token: JoinTokenRecord, audit: AuditEvent): Promise<void> {
    checkTokenAudit(token, audit);
    return this.host.write(async (tx) => {
      try {
        await tx.query(
          `INSERT INTO join_tokens (${JOIN_TOKEN_COLUMNS}) VALUES (${placeholders(6)})`,
          joinTokenParams(token),
        );
      } catch (err) {
        throw mapConstraint(err, {
          join_tokens_pkey: ["ERR_STORE_CONFLICT", `join token ${token.id} already exists`],
          // Not the hash itself: it is what redeems the token.
          join_tokens_hash_key: ["ERR_STORE_CONFLICT", `join token ${token.id} repeats another token's hash`],
        });
      }
      tx.appendAudit(audit);
    });
  }

  /** In a batch, so the audit record of a spend commits with it (and is chained under the audit lock). */
  consumeJoinToken(
    hash: string,
    now: Date,
    spend: (token: { id: string; spiffeId: string }) => AuditEvent,
  ): Promise<JoinTokenUse | null> {
    return this.host.write((tx) => takeToken(tx, hash, now, spend));
  }

  async findJoinToken(hash: string, now: Date): Promise<JoinTokenUse | null> {
    const rows = await this.host.run<{
      id: string;
      spiffe_id: string;
      used_at: number | null;
      expires_at: number;
    }>("SELECT id, spiffe_id, used_at, expires_at FROM join_tokens WHERE hash = $1", [hash]);
    if (rows.length === 0) return null;
    const r = rows[0];
    return { outcome: tokenState(r.used_at, Number(r.expires_at), now), id: r.id, spiffeId: r.spiffe_id };
  }

  /** UPDATE … WHERE id AND status = expect, returning the new row, or nothing when nothing matched. */
  private compareAndSet<R extends pg.QueryResultRow>(
    run: PostgresHost["run"],
    table: string,
    returning: string,
    columns: ColumnValues,
    id: string,
    expect: string,
  ): Promise<R[]> {
    // An empty patch still checks the status, and returns the row as it is.
    const sets =
      columns.length === 0 ? "status = status" : columns.map(([c], i) => `${c} = $${i + 1}`).join(", ");
    const n = columns.length;
    return run<R>(
      `UPDATE ${table} SET ${sets} WHERE id = $${n + 1} AND status = $${n + 2} RETURNING ${returning}`,
      [...columns.map(([, v]) => v), id, expect],
    );
  }
}

/** Inside a batch: takes the token and appends its spend record, or says why it could not. */
async function takeToken(
  tx: BatchTx,
  hash: string,
  now: Date,
  spend: (token: { id: string; spiffeId: string }) => AuditEvent,
): Promise<JoinTokenUse | null> {
  const rows = (await tx.query<ConsumeRow>(CONSUME_JOIN_TOKEN_SQL, [hash, now.getTime()])).rows;
  if (rows.length === 0) return null;
  const r = rows[0];
  const token = { id: r.id, spiffeId: r.spiffe_id };
  if (!r.taken) return { outcome: refusedToken(r.used_at, r.expires_at!, now), ...token };
  tx.appendAudit(spentAudit(spend, token, hash));
  return { outcome: "taken", ...token };
}
