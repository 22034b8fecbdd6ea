//! The state database's schema, as an ordered list of [`Migration`]s.
//!
//! `PRAGMA user_version` holds the version a database has reached; each migration
//! brings it from `version - 1` to `version` in one transaction (its statements and the
//! new `user_version` commit together, or none of them). A database whose version is
//! higher than this release knows is refused untouched ([`StoreError::NewerSchema`]).
//! `PRAGMA application_id` marks the file as an agent state, so another SQLite file
//! (a relay's `relay.db`) is refused rather than migrated.
//!
//! Sealed columns (see `seal`) are marked `-- sealed`; their AAD is the table name and
//! the row key named in the comment. Times are ms since the Unix epoch; keys and
//! identities are 32 raw bytes, message ids 16.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::error::StoreError;

/// `PRAGMA application_id` of an agent state database ("E2EA").
pub const APPLICATION_ID: i32 = 0x4532_4541;

/// One step of the schema.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// The `user_version` this step brings the database to (the previous one plus 1).
    pub version: u32,
    /// What it does, for logs.
    pub description: &'static str,
    /// The statements (run with `execute_batch` inside the step's transaction).
    pub sql: &'static str,
}

/// The schema of this release, oldest step first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "agent state v2: identity, prekeys, sessions, pins, held, outbox, send log, history",
        sql: V1,
    },
    Migration {
        version: 2,
        description: "received texts committed but not shown yet (unshown)",
        sql: V2,
    },
    Migration {
        version: 3,
        description: "correspondents: the peers written to (receipts go only to them)",
        sql: V3,
    },
    Migration {
        version: 4,
        description: "groups: the MLS storage, our groups, the group outbox, group deliveries read",
        sql: V4,
    },
];

/// The version a database has after all of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = 4;

/// Peers with a session when this step runs count as written to: the conversations
/// of a state made before it go on with their receipts.
const V3: &str = "
CREATE TABLE correspondents (
    peer     BLOB PRIMARY KEY,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO correspondents (peer, since_ms) SELECT peer, 0 FROM sessions;
";

/// Group chats over MLS (docs/PROTOCOL.md 8).
const V4: &str = "
-- OpenMLS's key-value storage: group states, secrets, KeyPackage private keys.
CREATE TABLE mls_storage (
    key   BLOB PRIMARY KEY,
    value BLOB NOT NULL -- sealed, row key: key
) WITHOUT ROWID;
CREATE TABLE groups (
    group_id BLOB PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE
) WITHOUT ROWID;
CREATE TABLE group_outbox (
    seq      INTEGER PRIMARY KEY,
    msg_id   BLOB NOT NULL UNIQUE,
    group_id BLOB NOT NULL,
    intent   BLOB NOT NULL, -- sealed, row key: msg_id
    frame    BLOB
);
CREATE TABLE group_received (
    seq    INTEGER PRIMARY KEY,
    sender BLOB NOT NULL,
    msg_id BLOB NOT NULL,
    UNIQUE (sender, msg_id)
);
";

const V1: &str = "
PRAGMA application_id = 1160922433;

-- Store bookkeeping (key source, KDF spec, key check: 'store.*') and the agent's own
-- small values ('agent.*').
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE identity (
    id                     INTEGER PRIMARY KEY CHECK (id = 1),
    name                   TEXT    NOT NULL,
    seed                   BLOB    NOT NULL,          -- sealed, row key 'identity'
    name_release_ms        INTEGER,                   -- NULL: the name is claimed
    name_release_confirmed INTEGER NOT NULL DEFAULT 0
);

-- The current signed prekey has retired_ms NULL (at most one); retired ones are kept
-- for PreKey messages in flight until their grace period ends.
CREATE TABLE signed_prekeys (
    public     BLOB    PRIMARY KEY,
    secret     BLOB    NOT NULL,                      -- sealed, row key public
    signature  BLOB    NOT NULL,
    created_ms INTEGER NOT NULL,
    retired_ms INTEGER,
    published  INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX signed_prekeys_current ON signed_prekeys ((retired_ms IS NULL))
    WHERE retired_ms IS NULL;

-- Unused one-time prekeys in the order they were made (seq), when the relay was first
-- found to have handed each out, and whether the relay confirmed storing it.
CREATE TABLE one_time_prekeys (
    seq           INTEGER PRIMARY KEY,
    public        BLOB    NOT NULL UNIQUE,
    secret        BLOB    NOT NULL,                   -- sealed, row key public
    handed_out_ms INTEGER,
    published     INTEGER NOT NULL DEFAULT 0
);

-- Base keys of accepted handshakes, kept as long as their signed prekey exists.
CREATE TABLE base_keys (
    signed_prekey BLOB NOT NULL REFERENCES signed_prekeys (public) ON DELETE CASCADE,
    base_key      BLOB NOT NULL,
    PRIMARY KEY (signed_prekey, base_key)
) WITHOUT ROWID;

CREATE TABLE sessions (
    peer  BLOB PRIMARY KEY,
    state BLOB NOT NULL                               -- sealed, row key peer
);

-- Earlier sessions per peer, newest = highest seq.
CREATE TABLE archived_sessions (
    peer  BLOB    NOT NULL,
    seq   INTEGER NOT NULL,
    state BLOB    NOT NULL,                           -- sealed, row key peer || seq (i64 BE)
    PRIMARY KEY (peer, seq)
);

-- Recently received ids per peer and kind (0 relay msg_id, 1 end-to-end message_id);
-- seq counts up per (peer, kind), the oldest are deleted past the bound.
CREATE TABLE received_ids (
    peer BLOB    NOT NULL,
    kind INTEGER NOT NULL,
    id   BLOB    NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (peer, kind, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX received_ids_order ON received_ids (peer, kind, seq);

CREATE TABLE pins (
    name          TEXT    PRIMARY KEY,
    identity      BLOB    NOT NULL,
    verified      INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL
);
CREATE TABLE pending_pins (
    seq      INTEGER PRIMARY KEY,
    name     TEXT NOT NULL,
    identity BLOB NOT NULL,
    UNIQUE (name, identity)
);
CREATE TABLE rejected_pins (
    seq      INTEGER PRIMARY KEY,
    name     TEXT NOT NULL,
    identity BLOB NOT NULL,
    UNIQUE (name, identity)
);

-- Undecrypted messages of pending identity changes, in arrival order.
CREATE TABLE held (
    seq     INTEGER PRIMARY KEY,
    name    TEXT    NOT NULL,
    sender  BLOB    NOT NULL,
    msg_id  BLOB    NOT NULL,
    wire    BLOB    NOT NULL,                         -- sealed, row key sender || msg_id
    held_ms INTEGER NOT NULL,
    UNIQUE (sender, msg_id)
);
CREATE INDEX held_name ON held (name);

-- Sent messages the relay has not acknowledged, in order. The wire bytes are the
-- end-to-end ciphertext the relay receives anyway: not sealed again.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY,
    msg_id     BLOB    NOT NULL UNIQUE,
    recipient  BLOB    NOT NULL,
    wire       BLOB    NOT NULL,
    is_text    INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);

-- Recently sent plaintexts per peer (for re-sending after a new session), bounded by
-- count per peer and by age.
CREATE TABLE send_log (
    peer    BLOB    NOT NULL,
    seq     INTEGER NOT NULL,
    msg_id  BLOB    NOT NULL,
    plaintext BLOB  NOT NULL,                         -- sealed, row key peer || msg_id
    sent_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, seq),
    UNIQUE (peer, msg_id)
);
CREATE INDEX send_log_age ON send_log (sent_ms);

-- Conversation history per peer (direction 0 received, 1 sent), the newest kept.
CREATE TABLE history (
    peer      BLOB    NOT NULL,
    seq       INTEGER NOT NULL,
    direction INTEGER NOT NULL,
    msg_id    BLOB    NOT NULL,
    text      BLOB    NOT NULL,                       -- sealed, row key peer || seq (i64 BE)
    at_ms     INTEGER NOT NULL,
    PRIMARY KEY (peer, seq)
);
";

const V2: &str = "
-- Received texts committed in their message's transaction and not shown yet: a text is
-- deleted once its event is printed, and shown at the next start if the agent stopped
-- in between (the message's key and id are already used up, so it cannot come again).
CREATE TABLE unshown (
    seq           INTEGER PRIMARY KEY,
    peer          BLOB    NOT NULL,
    msg_id        BLOB    NOT NULL,                   -- the end-to-end message id
    payload       BLOB    NOT NULL,                   -- sealed, row key peer || msg_id
    newly_skipped INTEGER NOT NULL,
    late          INTEGER NOT NULL,
    UNIQUE (peer, msg_id)
);
";

/// The database's `user_version`.
pub fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Checks that `conn` (the database `path`) is an agent state this release can open,
/// changing nothing, and returns its version: 0 for an empty database, which
/// [`migrate`] will set up.
///
/// Errors: [`StoreError::NewerSchema`] for a version past [`SCHEMA_VERSION`],
/// [`StoreError::NotAStateDb`] for another application's database.
pub fn check(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    check_against(conn, path, SCHEMA_VERSION)
}

fn check_against(conn: &Connection, path: &Path, supported: u32) -> Result<u32, StoreError> {
    let fail = |e| StoreError::sqlite(path, "read the schema version", e);
    let version = user_version(conn).map_err(fail)?;
    let application_id: i32 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(fail)?;
    let foreign = if version == 0 {
        // An empty database has no tables yet; anything else is someone else's.
        application_id != 0
            || conn
                .query_row("SELECT 1 FROM sqlite_master LIMIT 1", [], |_| Ok(()))
                .optional()
                .map_err(fail)?
                .is_some()
    } else {
        application_id != APPLICATION_ID
    };
    if foreign {
        return Err(StoreError::NotAStateDb {
            path: path.to_path_buf(),
            application_id,
        });
    }
    if version > supported {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported,
        });
    }
    Ok(version)
}

/// Brings the database to [`SCHEMA_VERSION`], one transaction per step. Returns the
/// version it had. A failed step leaves the database at the version before it.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    apply(conn, path, MIGRATIONS)
}

/// Applies the steps of `migrations` past the database's version, in order.
fn apply(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<u32, StoreError> {
    let supported = migrations.last().map_or(0, |m| m.version);
    let from = check_against(conn, path, supported)?;
    for step in migrations.iter().filter(|m| m.version > from) {
        let fail = |e| StoreError::sqlite(path, "migrate the schema", e);
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(step.sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", step.version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "state.db";

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .expect("prepare");
        let names = stmt.query_map([], |row| row.get(0)).expect("query");
        names.collect::<Result<_, _>>().expect("rows")
    }

    fn memory() -> Connection {
        Connection::open_in_memory().expect("open")
    }

    #[test]
    fn versions_are_consecutive_from_one() {
        for (index, step) in MIGRATIONS.iter().enumerate() {
            assert_eq!(step.version as usize, index + 1, "{}", step.description);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    #[test]
    fn migrates_an_empty_database_from_version_zero() {
        let mut conn = memory();
        assert_eq!(check(&conn, Path::new(PATH)).ok(), Some(0));
        assert_eq!(migrate(&mut conn, Path::new(PATH)).ok(), Some(0));
        assert_eq!(user_version(&conn).ok(), Some(SCHEMA_VERSION));
        let id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .expect("id");
        assert_eq!(id, APPLICATION_ID);
        let expected = [
            "archived_sessions",
            "base_keys",
            "correspondents",
            "group_outbox",
            "group_received",
            "groups",
            "held",
            "history",
            "identity",
            "meta",
            "mls_storage",
            "one_time_prekeys",
            "outbox",
            "pending_pins",
            "pins",
            "received_ids",
            "rejected_pins",
            "send_log",
            "sessions",
            "signed_prekeys",
            "unshown",
        ];
        assert_eq!(tables(&conn), expected);
        // Migrating again is a no-op.
        assert_eq!(migrate(&mut conn, Path::new(PATH)).ok(), Some(SCHEMA_VERSION));
    }

    const STEP_2: Migration = Migration {
        version: 2,
        description: "test: a column",
        sql: "ALTER TABLE meta RENAME TO meta_old; CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB, note TEXT); \
              INSERT INTO meta (key, value) SELECT key, value FROM meta_old; DROP TABLE meta_old;",
    };

    #[test]
    fn applies_only_the_steps_past_the_stored_version() {
        let mut conn = memory();
        apply(&mut conn, Path::new(PATH), &MIGRATIONS[..1]).expect("v1");
        conn.execute("INSERT INTO meta (key, value) VALUES ('agent.x', x'01')", [])
            .expect("insert");
        let steps = [MIGRATIONS[0], STEP_2];
        assert_eq!(apply(&mut conn, Path::new(PATH), &steps).ok(), Some(1));
        assert_eq!(user_version(&conn).ok(), Some(2));
        let kept: Vec<u8> = conn
            .query_row("SELECT value FROM meta WHERE key = 'agent.x'", [], |r| r.get(0))
            .expect("kept");
        assert_eq!(kept, [1]);
    }

    #[test]
    fn a_failing_step_leaves_the_previous_version_whole() {
        let mut conn = memory();
        apply(&mut conn, Path::new(PATH), &MIGRATIONS[..1]).expect("v1");
        let broken = Migration {
            version: 2,
            description: "test: fails half way",
            sql: "CREATE TABLE extra (x); INSERT INTO no_such_table VALUES (1);",
        };
        let err = apply(&mut conn, Path::new(PATH), &[MIGRATIONS[0], broken]).expect_err("must fail");
        assert!(matches!(
            err,
            StoreError::Sqlite {
                op: "migrate the schema",
                ..
            }
        ));
        assert_eq!(user_version(&conn).ok(), Some(1));
        assert!(!tables(&conn).contains(&"extra".to_owned()));
    }

    #[test]
    fn refuses_a_newer_database_untouched() {
        let mut conn = memory();
        migrate(&mut conn, Path::new(PATH)).expect("migrate");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        let before = tables(&conn);
        let err = migrate(&mut conn, Path::new(PATH)).expect_err("must refuse");
        assert!(matches!(
            err,
            StoreError::NewerSchema { found, supported: SCHEMA_VERSION, .. } if found == SCHEMA_VERSION + 1
        ));
        assert!(err.to_string().contains("newer than this release"), "{err}");
        assert_eq!(tables(&conn), before);
        assert_eq!(user_version(&conn).ok(), Some(SCHEMA_VERSION + 1));
    }

    #[test]
    fn refuses_another_applications_database() {
        let mut conn = memory();
        conn.execute_batch("CREATE TABLE messages (seq INTEGER PRIMARY KEY)")
            .expect("create");
        assert!(matches!(
            migrate(&mut conn, Path::new(PATH)),
            Err(StoreError::NotAStateDb {
                application_id: 0,
                ..
            })
        ));
        let mut other = memory();
        other
            .execute_batch("PRAGMA application_id = 7; PRAGMA user_version = 1;")
            .expect("mark");
        assert!(matches!(
            migrate(&mut other, Path::new(PATH)),
            Err(StoreError::NotAStateDb {
                application_id: 7,
                ..
            })
        ));
    }
}
