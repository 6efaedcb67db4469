import type pg from "pg";
import { StintError } from "../../common/errors";
import { pgCode } from "./postgres-rows";
import { STORE_FORMAT, STORE_FORMAT_KEY } from "./sqlite-migrations";

/**
 * The PostgreSQL schema, as an ordered list of migrations: the same logical
 * schema as SQLite's. To change it, append a migration with the next
 * version; never edit one that has shipped.
 */
export interface Migration {
  version: number;
  description: string;
  sql: string;
}

/**
 * Advisory lock keys (database-scoped): one serializes schema migration
 * between replicas starting together, one the audit chain's writers.
 * The high 32 bits spell "Stin", so they will not meet another app's keys by chance
 * (decimal: PostgreSQL 15 has no hex literals).
 */
export const MIGRATION_LOCK = "6013547323613773825"; // 0x5374696e_00000001
export const AUDIT_LOCK = "6013547323613773826"; // 0x5374696e_00000002

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "meta, issuers, certificates, audit log",
    sql: `
      CREATE TABLE meta (
        key   text PRIMARY KEY,
        value text NOT NULL
      );
      INSERT INTO meta (key, value) VALUES ('${STORE_FORMAT_KEY}', '${STORE_FORMAT}');

      -- COLLATE "C": ids and serials sort bytewise, as in SQLite and JavaScript, whatever the database locale.
      CREATE TABLE issuers (
        id            text COLLATE "C" NOT NULL,
        kind          text NOT NULL CHECK (kind IN ('root', 'intermediate')),
        parent_id     text COLLATE "C",
        state         text NOT NULL CHECK (state IN ('prepared', 'active', 'retired', 'tainted')),
        subject       text NOT NULL,
        cert_der      bytea NOT NULL,
        key_path      text,
        not_before    bigint NOT NULL,
        not_after     bigint NOT NULL,
        created_at    bigint NOT NULL,
        -- high-water mark for reserveSequences: every number below it has been handed out
        next_sequence bigint NOT NULL DEFAULT 1 CHECK (next_sequence >= 1),
        CONSTRAINT issuers_pkey PRIMARY KEY (id),
        CONSTRAINT issuers_parent_fkey FOREIGN KEY (parent_id) REFERENCES issuers (id)
      );

      CREATE TABLE certificates (
        serial            text COLLATE "C" NOT NULL,
        issuer_id         text COLLATE "C" NOT NULL,
        sequence          bigint NOT NULL,
        spiffe_id         text,
        dns_names         text[] NOT NULL,
        ip_addresses      text[] NOT NULL,
        not_before        bigint NOT NULL,
        not_after         bigint NOT NULL,
        der               bytea NOT NULL,
        revoked_at        bigint,
        revocation_reason integer,
        CONSTRAINT certificates_pkey PRIMARY KEY (serial),
        CONSTRAINT certificates_issuer_fkey FOREIGN KEY (issuer_id) REFERENCES issuers (id),
        CONSTRAINT certificates_issuer_sequence_key UNIQUE (issuer_id, sequence),
        CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
      );
      -- (spiffe_id, serial) so per-identity listings page in serial order without a sort
      CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, serial);
      CREATE INDEX certificates_not_after ON certificates (not_after);
      -- Partial: costs nothing per issuance, and the revoked set (feed, CRL, counts) stays an index scan.
      CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;

      -- json (not jsonb) keeps the text exactly as written: the canonical form that was hashed.
      CREATE TABLE audit_log (
        seq       bigint PRIMARY KEY,
        at        bigint NOT NULL,
        actor     text NOT NULL,
        action    text NOT NULL,
        subject   text NOT NULL,
        details   json NOT NULL,
        prev_hash text NOT NULL,
        hash      text NOT NULL
      );
      -- The hash chain detects edits; these make the ordinary SQL path refuse them too.
      -- TRUNCATE skips row triggers, so it gets a statement trigger of its own.
      CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
      CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
      CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
      CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
    `,
  },
  {
    version: 2,
    description: "ACME accounts, orders, authorizations, registration entries, join tokens",
    sql: `
      -- json, not jsonb: nothing queries inside these values, and jsonb refuses some valid JSON (NUL escapes).
      CREATE TABLE accounts (
        id         text COLLATE "C" NOT NULL,
        thumbprint text COLLATE "C" NOT NULL,
        jwk        json NOT NULL,
        status     text NOT NULL CHECK (status IN ('valid', 'deactivated', 'revoked')),
        contact    text[] NOT NULL,
        created_at bigint NOT NULL,
        CONSTRAINT accounts_pkey PRIMARY KEY (id),
        CONSTRAINT accounts_thumbprint_key UNIQUE (thumbprint)
      );

      CREATE TABLE orders (
        id                 text COLLATE "C" NOT NULL,
        account_id         text COLLATE "C" NOT NULL,
        status             text NOT NULL CHECK (status IN ('pending', 'ready', 'processing', 'valid', 'invalid')),
        identifiers        json NOT NULL,
        authorization_ids  text[] NOT NULL,
        expires            bigint NOT NULL,
        certificate_serial text COLLATE "C",
        replaces           text COLLATE "C",
        error              json,
        created_at         bigint NOT NULL,
        CONSTRAINT orders_pkey PRIMARY KEY (id),
        CONSTRAINT orders_account_fkey FOREIGN KEY (account_id) REFERENCES accounts (id)
      );
      -- Unique: revocation by account trusts that one certificate came from one order.
      CREATE UNIQUE INDEX orders_certificate_serial ON orders (certificate_serial)
        WHERE certificate_serial IS NOT NULL;

      -- entry_id has no foreign key: deleting an entry must not be blocked by the authorizations it once matched.
      CREATE TABLE authorizations (
        id         text COLLATE "C" NOT NULL,
        account_id text COLLATE "C" NOT NULL,
        identifier json NOT NULL,
        status     text NOT NULL
                   CHECK (status IN ('pending', 'valid', 'invalid', 'deactivated', 'expired', 'revoked')),
        expires    bigint NOT NULL,
        challenges json NOT NULL,
        entry_id   text COLLATE "C",
        selectors  text[] NOT NULL,
        CONSTRAINT authorizations_pkey PRIMARY KEY (id),
        CONSTRAINT authorizations_account_fkey FOREIGN KEY (account_id) REFERENCES accounts (id)
      );

      CREATE TABLE entries (
        id         text COLLATE "C" NOT NULL,
        spiffe_id  text COLLATE "C" NOT NULL,
        selectors  text[] NOT NULL,
        dns_names  text[] NOT NULL,
        ttl_ms     bigint CHECK (ttl_ms > 0),
        created_at bigint NOT NULL,
        CONSTRAINT entries_pkey PRIMARY KEY (id)
      );
      -- In listing order, so both the full listing and one SPIFFE ID's entries come without a sort.
      CREATE INDEX entries_spiffe_id ON entries (spiffe_id, created_at, id);

      CREATE TABLE join_tokens (
        id         text COLLATE "C" NOT NULL,
        hash       text COLLATE "C" NOT NULL,
        spiffe_id  text COLLATE "C" NOT NULL,
        expires_at bigint NOT NULL,
        used_at    bigint,
        created_at bigint NOT NULL,
        CONSTRAINT join_tokens_pkey PRIMARY KEY (id),
        CONSTRAINT join_tokens_hash_key UNIQUE (hash)
      );
    `,
  },
  {
    version: 3,
    description: "an index for each account's list of orders",
    sql: `
      CREATE INDEX orders_account ON orders (account_id, created_at, id);
    `,
  },
  {
    version: 4,
    description: "attestations, and each certificate's binding to its entry and attestation",
    sql: `
      ALTER TABLE authorizations ADD COLUMN attestation_id text COLLATE "C";

      CREATE TABLE attestations (
        id               text COLLATE "C" NOT NULL,
        at               bigint NOT NULL,
        account_id       text COLLATE "C" NOT NULL,
        authorization_id text COLLATE "C" NOT NULL,
        method           text NOT NULL,
        spiffe_id        text COLLATE "C" NOT NULL,
        selectors        text[] NOT NULL,
        evidence         text NOT NULL,
        entry_id         text COLLATE "C" NOT NULL,
        entry_selectors  text[] NOT NULL,
        entry_hash       text NOT NULL,
        CONSTRAINT attestations_pkey PRIMARY KEY (id),
        CONSTRAINT attestations_account_fkey FOREIGN KEY (account_id) REFERENCES accounts (id)
      );

      -- entry_id has no foreign key: deleting an entry must not be blocked by what it once authorized.
      CREATE TABLE certificate_bindings (
        serial         text COLLATE "C" NOT NULL,
        entry_id       text COLLATE "C" NOT NULL,
        entry_hash     text NOT NULL,
        attestation_id text COLLATE "C" NOT NULL,
        renews         text COLLATE "C",
        CONSTRAINT certificate_bindings_pkey PRIMARY KEY (serial),
        CONSTRAINT certificate_bindings_serial_fkey FOREIGN KEY (serial) REFERENCES certificates (serial),
        CONSTRAINT certificate_bindings_attestation_fkey FOREIGN KEY (attestation_id) REFERENCES attestations (id)
      );
      -- An entry's certificates, for revoking them when it is deleted.
      CREATE INDEX certificate_bindings_entry ON certificate_bindings (entry_id, serial);

      -- Like the audit log: the record of who attested what is written once.
      CREATE FUNCTION stint_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;
      CREATE TRIGGER attestations_no_update BEFORE UPDATE ON attestations
        FOR EACH ROW EXECUTE FUNCTION stint_append_only();
      CREATE TRIGGER attestations_no_delete BEFORE DELETE ON attestations
        FOR EACH ROW EXECUTE FUNCTION stint_append_only();
      CREATE TRIGGER attestations_no_truncate BEFORE TRUNCATE ON attestations
        FOR EACH STATEMENT EXECUTE FUNCTION stint_append_only();
      CREATE TRIGGER certificate_bindings_no_update BEFORE UPDATE ON certificate_bindings
        FOR EACH ROW EXECUTE FUNCTION stint_append_only();
      CREATE TRIGGER certificate_bindings_no_delete BEFORE DELETE ON certificate_bindings
        FOR EACH ROW EXECUTE FUNCTION stint_append_only();
      CREATE TRIGGER certificate_bindings_no_truncate BEFORE TRUNCATE ON certificate_bindings
        FOR EACH STATEMENT EXECUTE FUNCTION stint_append_only();

      -- What earlier versions kept is recovered, as in the SQLite migration (see there).
      INSERT INTO attestations (id, at, account_id, authorization_id, method, spiffe_id, selectors, evidence,
                                entry_id, entry_selectors, entry_hash)
      SELECT 'pre4-' || a.id,
             coalesce((SELECT max((c ->> 'validated')::bigint) FROM json_array_elements(a.challenges) AS c), 0),
             a.account_id, a.id, 'unknown', a.identifier ->> 'value', a.selectors,
             'recorded before store schema 4', a.entry_id, coalesce(e.selectors, '{}'), ''
      FROM authorizations AS a LEFT JOIN entries AS e ON e.id = a.entry_id
      WHERE a.status = 'valid' AND a.entry_id IS NOT NULL AND a.identifier ->> 'type' = 'spiffe';
      UPDATE authorizations AS a SET attestation_id = t.id FROM attestations AS t WHERE t.authorization_id = a.id;

      INSERT INTO certificate_bindings (serial, entry_id, entry_hash, attestation_id, renews)
      SELECT o.certificate_serial, t.entry_id, '', t.id, NULL
      FROM orders AS o CROSS JOIN LATERAL unnest(o.authorization_ids) AS j (id)
      JOIN attestations AS t ON t.authorization_id = j.id
      WHERE o.certificate_serial IN (SELECT serial FROM certificates);

      CREATE TEMP TABLE pre4_renewals (serial text COLLATE "C" PRIMARY KEY, prev text COLLATE "C" NOT NULL)
        ON COMMIT DROP;
      INSERT INTO pre4_renewals (serial, prev)
      SELECT subject, substr(actor, 7) FROM audit_log WHERE action = 'cert.issue' AND actor LIKE 'renew:%'
      ON CONFLICT DO NOTHING;
      CREATE INDEX ON pre4_renewals (prev);
      WITH RECURSIVE chain (serial, entry_id, attestation_id, renews) AS (
        SELECT serial, entry_id, attestation_id, NULL::text COLLATE "C" FROM certificate_bindings
        UNION ALL
        SELECT r.serial, c.entry_id, c.attestation_id, c.serial
        FROM pre4_renewals AS r JOIN chain AS c ON r.prev = c.serial
      )
      INSERT INTO certificate_bindings (serial, entry_id, entry_hash, attestation_id, renews)
      SELECT serial, entry_id, '', attestation_id, renews FROM chain
      WHERE renews IS NOT NULL AND serial IN (SELECT serial FROM certificates);
    `,
  },
  {
    version: 5,
    description:
      "orders: an index of those left processing, and (SQLite) an error CHECK that sqlite3 before 3.45 reads alike",
    sql: `
      -- Partial: a crash mid-finalize leaves orders processing, and the recovery sweep finds them without a scan.
      CREATE INDEX orders_processing ON orders (created_at, id) WHERE status = 'processing';
    `,
  },
  {
    version: 6,
    description: "registration entries: the node agent (parent) allowed to obtain them",
    sql: `
      ALTER TABLE entries ADD COLUMN parent text;
      -- Partial: the agent API lists one agent's entries; ordinary entries have no parent and cost nothing.
      CREATE INDEX entries_parent ON entries (parent, spiffe_id, created_at, id) WHERE parent IS NOT NULL;
    `,
  },
  {
    version: 7,
    description: "certificates by notBefore, and by SPIFFE ID and notBefore, for the console's late renewals",
    sql: `
      -- The renewals issued in a period are a range of the first; each one's predecessor (the ID's
      -- certificate issued just before it) is one probe of the second.
      CREATE INDEX certificates_not_before ON certificates (not_before);
      CREATE INDEX certificates_spiffe_id_not_before ON certificates (spiffe_id, not_before);
    `,
  },
  {
    version: 8,
    description:
      "certificate bindings: the node agent that obtained a certificate for a workload (agent API), instead of an attestation",
    sql: `
      ALTER TABLE certificate_bindings ALTER COLUMN attestation_id DROP NOT NULL;
      ALTER TABLE certificate_bindings ADD COLUMN requested_by text COLLATE "C";
      -- Either the holder attested (ACME), or its node agent asked for it: never both, never neither.
      ALTER TABLE certificate_bindings ADD CONSTRAINT certificate_bindings_source
        CHECK ((attestation_id IS NULL) <> (requested_by IS NULL));
    `,
  },
  {
    version: 9,
    description: "console login codes and sessions, by the SHA-256 of their secret, shared by every replica",
    sql: `
      CREATE TABLE console_grants (
        hash       text COLLATE "C" NOT NULL,
        kind       text NOT NULL CHECK (kind IN ('code', 'session')),
        user_name  text NOT NULL,
        expires_at bigint NOT NULL,
        CONSTRAINT console_grants_pkey PRIMARY KEY (hash)
      );
      CREATE INDEX console_grants_expires ON console_grants (expires_at);
    `,
  },
];

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

const BOOKKEEPING = `
  CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    applied_at bigint NOT NULL
  )`;

/** Every user table in the database, so a database holding anything else is never written to. */
const LIST_TABLES = `
  SELECT schemaname || '.' || tablename AS name FROM pg_catalog.pg_tables
  WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY schemaname, tablename`;

export type OpenOutcome = { kind: "opened"; from: number; to: number } | { kind: "empty" };

/**
 * Checks what the database holds and brings its schema up to
 * LATEST_VERSION, all in one transaction under an advisory lock, so a second
 * replica starting at once waits and then finds nothing to do. A database
 * that is foreign, too new, or empty without `create` is refused by a
 * rollback: nothing is written to it. Returns "empty" for that last case.
 */
export async function migrate(
  client: pg.ClientBase,
  where: string,
  create: boolean,
  now: Date,
): Promise<OpenOutcome> {
  await client.query(`BEGIN; SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
  try {
    const outcome = await inspectAndMigrate(client, where, create, now);
    await client.query(outcome.kind === "opened" && outcome.from < outcome.to ? "COMMIT" : "ROLLBACK");
    return outcome;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

async function inspectAndMigrate(
  client: pg.ClientBase,
  where: string,
  create: boolean,
  now: Date,
): Promise<OpenOutcome> {
  const tables = (await client.query<{ name: string }>(LIST_TABLES)).rows.map((r) => r.name);
  if (tables.length === 0) {
    if (!create) return { kind: "empty" };
    return applyFrom(client, 0, now);
  }

  if ((await storeFormat(client)) !== STORE_FORMAT) {
    const shown = tables.slice(0, 5).join(", ") + (tables.length > 5 ? ", …" : "");
    throw new StintError(
      "ERR_STORE_FOREIGN",
      `PostgreSQL database ${where} is not a Stint store (it has tables: ${shown}); ` +
        "point store.url at a Stint database, or at a new empty one",
    );
  }
  const found = await client.query<{ present: boolean }>(
    "SELECT to_regclass('schema_migrations') IS NOT NULL AS present",
  );
  if (!found.rows[0].present) {
    throw new StintError(
      "ERR_STORE_CORRUPT",
      `PostgreSQL database ${where} is damaged (schema_migrations is missing); restore it from backup`,
    );
  }
  const version = (
    await client.query<{ v: number | null }>("SELECT max(version) AS v FROM schema_migrations")
  ).rows[0].v;
  if (version === null || version < 1) {
    throw new StintError(
      "ERR_STORE_CORRUPT",
      `PostgreSQL database ${where} is damaged (no schema version); restore it from backup`,
    );
  }
  if (version > LATEST_VERSION) {
    throw new StintError(
      "ERR_STORE_VERSION",
      `PostgreSQL database ${where} was written by a newer Stint (store schema version ${version}; ` +
        `this build knows up to ${LATEST_VERSION}); upgrade Stint, or restore a backup made by this version`,
    );
  }
  return applyFrom(client, version, now);
}

/** The meta marker, or undefined when there is no meta table of our shape (someone else's). */
async function storeFormat(client: pg.ClientBase): Promise<string | undefined> {
  await client.query("SAVEPOINT probe");
  try {
    const rows = (
      await client.query<{ value: unknown }>("SELECT value FROM meta WHERE key = $1", [STORE_FORMAT_KEY])
    ).rows;
    await client.query("RELEASE SAVEPOINT probe");
    return typeof rows[0]?.value === "string" ? rows[0].value : undefined;
  } catch (err) {
    // 42…: no meta table, or one with other columns. The transaction lives on from the savepoint.
    if (!pgCode(err)?.startsWith("42")) throw err;
    await client.query("ROLLBACK TO SAVEPOINT probe");
    return undefined;
  }
}

async function applyFrom(client: pg.ClientBase, from: number, now: Date): Promise<OpenOutcome> {
  if (from < LATEST_VERSION) await client.query(BOOKKEEPING);
  for (const m of MIGRATIONS) {
    if (m.version <= from) continue;
    await client.query(m.sql);
    await client.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", [
      m.version,
      now.getTime(),
    ]);
  }
  return { kind: "opened", from, to: LATEST_VERSION };
}
