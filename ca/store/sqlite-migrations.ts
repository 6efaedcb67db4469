import type Database from "better-sqlite3";
import { StintError } from "../../common/errors";

/**
 * The SQLite schema, as an ordered list of migrations. To change the schema,
 * append a migration with the next version; never edit one that has shipped,
 * because stores in the field have already applied it.
 */
export interface Migration {
  version: number;
  description: string;
  sql: string;
}

/** Written by the first migration; a database without it is not ours. */
export const STORE_FORMAT_KEY = "store_format";
export const STORE_FORMAT = "stint";

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "meta, issuers, certificates, audit log",
    sql: `
      CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;
      INSERT INTO meta (key, value) VALUES ('${STORE_FORMAT_KEY}', '${STORE_FORMAT}');

      CREATE TABLE issuers (
        id            TEXT PRIMARY KEY,
        kind          TEXT NOT NULL CHECK (kind IN ('root', 'intermediate')),
        parent_id     TEXT REFERENCES issuers (id),
        state         TEXT NOT NULL CHECK (state IN ('prepared', 'active', 'retired', 'tainted')),
        subject       TEXT NOT NULL,
        cert_der      BLOB NOT NULL,
        key_path      TEXT,
        not_before    INTEGER NOT NULL,
        not_after     INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        -- high-water mark for reserveSequences: every number below it has been handed out
        next_sequence INTEGER NOT NULL DEFAULT 1 CHECK (next_sequence >= 1)
      ) STRICT;

      CREATE TABLE certificates (
        serial            TEXT PRIMARY KEY,
        issuer_id         TEXT NOT NULL REFERENCES issuers (id),
        sequence          INTEGER NOT NULL,
        spiffe_id         TEXT,
        dns_names         TEXT NOT NULL,
        ip_addresses      TEXT NOT NULL,
        not_before        INTEGER NOT NULL,
        not_after         INTEGER NOT NULL,
        der               BLOB NOT NULL,
        revoked_at        INTEGER,
        revocation_reason INTEGER,
        UNIQUE (issuer_id, sequence),
        CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
      ) STRICT;
      -- (spiffe_id, serial) so per-identity listings page in serial order without a sort
      CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, serial);
      CREATE INDEX certificates_not_after ON certificates (not_after);
      -- Partial: costs nothing per issuance, and the revoked set (feed, CRL, counts) stays an index scan.
      CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;

      CREATE TABLE audit_log (
        seq       INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        subject   TEXT NOT NULL,
        details   TEXT NOT NULL CHECK (json_valid(details)),
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
      ) STRICT;
      -- The hash chain detects edits; these make the ordinary SQL path refuse them too.
      CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
      CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    `,
  },
  {
    version: 2,
    description: "ACME accounts, orders, authorizations, registration entries, join tokens",
    sql: `
      CREATE TABLE accounts (
        id         TEXT PRIMARY KEY,
        thumbprint TEXT NOT NULL UNIQUE,
        jwk        TEXT NOT NULL CHECK (json_valid(jwk)),
        status     TEXT NOT NULL CHECK (status IN ('valid', 'deactivated', 'revoked')),
        contact    TEXT NOT NULL CHECK (json_valid(contact)),
        created_at INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE orders (
        id                 TEXT PRIMARY KEY,
        account_id         TEXT NOT NULL REFERENCES accounts (id),
        status             TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'processing', 'valid', 'invalid')),
        identifiers        TEXT NOT NULL CHECK (json_valid(identifiers)),
        authorization_ids  TEXT NOT NULL CHECK (json_valid(authorization_ids)),
        expires            INTEGER NOT NULL,
        certificate_serial TEXT,
        replaces           TEXT,
        error              TEXT CHECK (json_valid(error)),
        created_at         INTEGER NOT NULL
      ) STRICT;
      -- Unique: revocation by account trusts that one certificate came from one order.
      CREATE UNIQUE INDEX orders_certificate_serial ON orders (certificate_serial)
        WHERE certificate_serial IS NOT NULL;

      -- entry_id has no foreign key: deleting an entry must not be blocked by the authorizations it once matched.
      CREATE TABLE authorizations (
        id         TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts (id),
        identifier TEXT NOT NULL CHECK (json_valid(identifier)),
        status     TEXT NOT NULL
                   CHECK (status IN ('pending', 'valid', 'invalid', 'deactivated', 'expired', 'revoked')),
        expires    INTEGER NOT NULL,
        challenges TEXT NOT NULL CHECK (json_valid(challenges)),
        entry_id   TEXT,
        selectors  TEXT NOT NULL CHECK (json_valid(selectors))
      ) STRICT;

      CREATE TABLE entries (
        id         TEXT PRIMARY KEY,
        spiffe_id  TEXT NOT NULL,
        selectors  TEXT NOT NULL CHECK (json_valid(selectors)),
        dns_names  TEXT NOT NULL CHECK (json_valid(dns_names)),
        ttl_ms     INTEGER CHECK (ttl_ms > 0),
        created_at INTEGER NOT NULL
      ) STRICT;
      -- In listing order, so both the full listing and one SPIFFE ID's entries come without a sort.
      CREATE INDEX entries_spiffe_id ON entries (spiffe_id, created_at, id);

      CREATE TABLE join_tokens (
        id         TEXT PRIMARY KEY,
        hash       TEXT NOT NULL UNIQUE,
        spiffe_id  TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER,
        created_at INTEGER NOT NULL
      ) STRICT;
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
      -- No foreign key: SQLite cannot add one to an existing table (entry_id has none either).
      ALTER TABLE authorizations ADD COLUMN attestation_id TEXT;

      CREATE TABLE attestations (
        id               TEXT PRIMARY KEY,
        at               INTEGER NOT NULL,
        account_id       TEXT NOT NULL REFERENCES accounts (id),
        authorization_id TEXT NOT NULL,
        method           TEXT NOT NULL,
        spiffe_id        TEXT NOT NULL,
        selectors        TEXT NOT NULL CHECK (json_valid(selectors)),
        evidence         TEXT NOT NULL,
        entry_id         TEXT NOT NULL,
        entry_selectors  TEXT NOT NULL CHECK (json_valid(entry_selectors)),
        entry_hash       TEXT NOT NULL
      ) STRICT;

      -- entry_id has no foreign key: deleting an entry must not be blocked by what it once authorized.
      CREATE TABLE certificate_bindings (
        serial         TEXT PRIMARY KEY REFERENCES certificates (serial),
        entry_id       TEXT NOT NULL,
        entry_hash     TEXT NOT NULL,
        attestation_id TEXT NOT NULL REFERENCES attestations (id),
        renews         TEXT
      ) STRICT;
      -- An entry's certificates, for revoking them when it is deleted.
      CREATE INDEX certificate_bindings_entry ON certificate_bindings (entry_id, serial);

      -- Like the audit log: the record of who attested what is written once.
      CREATE TRIGGER attestations_no_update BEFORE UPDATE ON attestations
        BEGIN SELECT RAISE(ABORT, 'attestations is append-only'); END;
      CREATE TRIGGER attestations_no_delete BEFORE DELETE ON attestations
        BEGIN SELECT RAISE(ABORT, 'attestations is append-only'); END;
      CREATE TRIGGER certificate_bindings_no_update BEFORE UPDATE ON certificate_bindings
        BEGIN SELECT RAISE(ABORT, 'certificate_bindings is append-only'); END;
      CREATE TRIGGER certificate_bindings_no_delete BEFORE DELETE ON certificate_bindings
        BEGIN SELECT RAISE(ABORT, 'certificate_bindings is append-only'); END;

      -- What earlier versions kept is recovered, so certificates issued before the upgrade still renew
      -- under their own entry: each valid SPIFFE authorization's entry and selectors become an attestation
      -- (its method and evidence were not recorded), bound to its order's certificate and, through the
      -- audit log's "renew:<serial>" actors, to every renewal of it.
      INSERT INTO attestations (id, at, account_id, authorization_id, method, spiffe_id, selectors, evidence,
                                entry_id, entry_selectors, entry_hash)
      SELECT 'pre4-' || a.id,
             coalesce((SELECT max(json_extract(c.value, '$.validated')) FROM json_each(a.challenges) AS c), 0),
             a.account_id, a.id, 'unknown', json_extract(a.identifier, '$.value'), a.selectors,
             'recorded before store schema 4', a.entry_id, coalesce(e.selectors, '[]'), ''
      FROM authorizations AS a LEFT JOIN entries AS e ON e.id = a.entry_id
      WHERE a.status = 'valid' AND a.entry_id IS NOT NULL AND json_extract(a.identifier, '$.type') = 'spiffe';
      UPDATE authorizations SET attestation_id = 'pre4-' || id
      WHERE id IN (SELECT authorization_id FROM attestations);

      INSERT INTO certificate_bindings (serial, entry_id, entry_hash, attestation_id, renews)
      SELECT o.certificate_serial, t.entry_id, '', t.id, NULL
      FROM orders AS o, json_each(o.authorization_ids) AS j JOIN attestations AS t ON t.authorization_id = j.value
      WHERE o.certificate_serial IN (SELECT serial FROM certificates);

      CREATE TEMP TABLE pre4_renewals (serial TEXT PRIMARY KEY, prev TEXT NOT NULL);
      INSERT OR IGNORE INTO pre4_renewals (serial, prev)
      SELECT subject, substr(actor, 7) FROM audit_log WHERE action = 'cert.issue' AND actor LIKE 'renew:%';
      CREATE INDEX temp.pre4_renewals_prev ON pre4_renewals (prev);
      WITH RECURSIVE chain (serial, entry_id, attestation_id, renews) AS (
        SELECT serial, entry_id, attestation_id, NULL FROM certificate_bindings
        UNION ALL
        SELECT r.serial, c.entry_id, c.attestation_id, c.serial
        FROM pre4_renewals AS r JOIN chain AS c ON r.prev = c.serial
      )
      INSERT INTO certificate_bindings (serial, entry_id, entry_hash, attestation_id, renews)
      SELECT serial, entry_id, '', attestation_id, renews FROM chain
      WHERE renews IS NOT NULL AND serial IN (SELECT serial FROM certificates);
      DROP TABLE temp.pre4_renewals;
    `,
  },
  {
    version: 5,
    description:
      "orders: an index of those left processing, and (SQLite) an error CHECK that sqlite3 before 3.45 reads alike",
    sql: `
      -- json_valid(NULL) is NULL (the CHECK passes) since SQLite 3.45 but 0 before, so Debian's sqlite3 3.40
      -- reported every order without an error as failing its CHECK. A column's CHECK cannot be altered:
      -- the table is rebuilt (SQLite's recipe; migrate() turns foreign keys off meanwhile).
      CREATE TABLE orders_v5 (
        id                 TEXT PRIMARY KEY,
        account_id         TEXT NOT NULL REFERENCES accounts (id),
        status             TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'processing', 'valid', 'invalid')),
        identifiers        TEXT NOT NULL CHECK (json_valid(identifiers)),
        authorization_ids  TEXT NOT NULL CHECK (json_valid(authorization_ids)),
        expires            INTEGER NOT NULL,
        certificate_serial TEXT,
        replaces           TEXT,
        error              TEXT CHECK (error IS NULL OR json_valid(error)),
        created_at         INTEGER NOT NULL
      ) STRICT;
      INSERT INTO orders_v5 (id, account_id, status, identifiers, authorization_ids, expires,
                             certificate_serial, replaces, error, created_at)
      SELECT id, account_id, status, identifiers, authorization_ids, expires,
             certificate_serial, replaces, error, created_at FROM orders;
      DROP TABLE orders;
      ALTER TABLE orders_v5 RENAME TO orders;
      CREATE UNIQUE INDEX orders_certificate_serial ON orders (certificate_serial)
        WHERE certificate_serial IS NOT NULL;
      CREATE INDEX orders_account ON orders (account_id, created_at, id);
      -- Partial: a crash mid-finalize leaves orders processing, and the recovery sweep finds them without a scan.
      CREATE INDEX orders_processing ON orders (created_at, id) WHERE status = 'processing';
    `,
  },
  {
    version: 6,
    description: "registration entries: the node agent (parent) allowed to obtain them",
    sql: `
      ALTER TABLE entries ADD COLUMN parent TEXT;
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
      -- A column's NOT NULL cannot be dropped: the table is rebuilt (as orders in version 5). DROP TABLE
      -- fires no triggers, so the append-only ones go with the old table and are made again below.
      CREATE TABLE certificate_bindings_v8 (
        serial         TEXT PRIMARY KEY REFERENCES certificates (serial),
        entry_id       TEXT NOT NULL,
        entry_hash     TEXT NOT NULL,
        attestation_id TEXT REFERENCES attestations (id),
        renews         TEXT,
        requested_by   TEXT,
        -- Either the holder attested (ACME), or its node agent asked for it: never both, never neither.
        CHECK ((attestation_id IS NULL) <> (requested_by IS NULL))
      ) STRICT;
      INSERT INTO certificate_bindings_v8 (serial, entry_id, entry_hash, attestation_id, renews)
      SELECT serial, entry_id, entry_hash, attestation_id, renews FROM certificate_bindings;
      DROP TABLE certificate_bindings;
      ALTER TABLE certificate_bindings_v8 RENAME TO certificate_bindings;
      CREATE INDEX certificate_bindings_entry ON certificate_bindings (entry_id, serial);
      CREATE TRIGGER certificate_bindings_no_update BEFORE UPDATE ON certificate_bindings
        BEGIN SELECT RAISE(ABORT, 'certificate_bindings is append-only'); END;
      CREATE TRIGGER certificate_bindings_no_delete BEFORE DELETE ON certificate_bindings
        BEGIN SELECT RAISE(ABORT, 'certificate_bindings is append-only'); END;
    `,
  },
  {
    version: 9,
    description: "console login codes and sessions, by the SHA-256 of their secret, shared by every replica",
    sql: `
      CREATE TABLE console_grants (
        hash       TEXT PRIMARY KEY,
        kind       TEXT NOT NULL CHECK (kind IN ('code', 'session')),
        user_name  TEXT NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX console_grants_expires ON console_grants (expires_at);
    `,
  },
];

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

const BOOKKEEPING = `
  CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL
  ) STRICT`;

/** The highest applied version, or 0 for a database with no schema yet. */
export function schemaVersion(db: Database.Database): number {
  const table = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'");
  if (table.get() === undefined) return 0;
  const row = db.prepare("SELECT max(version) AS v FROM schema_migrations").get() as { v: number | null };
  return row.v ?? 0;
}

/**
 * Brings the schema up to LATEST_VERSION in one immediate transaction, so a
 * second process opening the store at the same time waits and then finds
 * nothing to do. Foreign keys are off meanwhile (SQLite's recipe for table
 * rebuilds) and checked before commit.
 */
export function migrate(db: Database.Database, path: string, now: Date): { from: number; to: number } {
  db.pragma("foreign_keys = OFF");
  try {
    return db
      .transaction(() => {
        db.exec(BOOKKEEPING);
        const from = schemaVersion(db);
        if (from > LATEST_VERSION) throw newerVersionError(path, from);
        const record = db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)");
        for (const m of MIGRATIONS) {
          if (m.version <= from) continue;
          db.exec(m.sql);
          record.run(m.version, now.getTime());
        }
        const broken = db.pragma("foreign_key_check") as unknown[];
        if (broken.length > 0) {
          throw new StintError(
            "ERR_STORE_CORRUPT",
            `${path}: schema migration left ${broken.length} dangling references`,
          );
        }
        return { from, to: LATEST_VERSION };
      })
      .immediate();
  } finally {
    db.pragma("foreign_keys = ON");
  }
}

export function newerVersionError(path: string, version: number): StintError {
  return new StintError(
    "ERR_STORE_VERSION",
    `${path} was written by a newer Stint (store schema version ${version}; this build knows up to ${LATEST_VERSION}); ` +
      "upgrade Stint, or restore a backup made by this version",
  );
}
