//! The durable store: embedded SQLite in WAL mode. A batch of writes is one transaction,
//! so a whole batch costs one fsync (group commit).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use e2ee_protocol::frame::ExpiredNotice;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

mod groups;

use self::groups::SqliteGroups;
use super::group::apply_group_write;
use super::{
    release_of, stored_size, ClaimOutcome, IdentityBytes, NewMessage, Quotas, ReleaseOutcome, Store,
    StoreError, StoredBundle, StoredMessage, TakenKeyPackage, Usage, WriteOp, WriteResult,
};
use crate::lease::Lease;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient BLOB    NOT NULL,
    sender    BLOB    NOT NULL,
    msg_id    BLOB    NOT NULL,
    ts        INTEGER NOT NULL,
    payload   BLOB,
    acked     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sender, msg_id)
);
DROP INDEX IF EXISTS messages_queue;
CREATE INDEX IF NOT EXISTS messages_unacked ON messages (recipient, seq) WHERE acked = 0;
CREATE INDEX IF NOT EXISTS messages_unacked_sender ON messages (sender) WHERE acked = 0;
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
CREATE TABLE IF NOT EXISTS bundles (
    identity BLOB PRIMARY KEY,
    spk      BLOB NOT NULL,
    sig      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS one_time_prekeys (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    identity BLOB NOT NULL,
    opk      BLOB NOT NULL,
    UNIQUE (identity, opk)
);
CREATE TABLE IF NOT EXISTS claims (
    name         TEXT PRIMARY KEY,
    identity     BLOB NOT NULL,
    claim        BLOB NOT NULL,
    stored_ms    INTEGER NOT NULL DEFAULT 0,
    last_auth_ms INTEGER
);
CREATE INDEX IF NOT EXISTS claims_identity ON claims (identity);
CREATE TABLE IF NOT EXISTS last_seen (
    identity BLOB PRIMARY KEY,
    seen_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expired_notices (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    sender    BLOB    NOT NULL,
    recipient BLOB    NOT NULL,
    msg_id    BLOB    NOT NULL,
    ts        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS expired_notices_sender ON expired_notices (sender, seq);
CREATE INDEX IF NOT EXISTS expired_notices_ts ON expired_notices (ts);
CREATE TABLE IF NOT EXISTS groups (
    group_id BLOB PRIMARY KEY,
    record   BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_log (
    group_id BLOB    NOT NULL,
    epoch    INTEGER NOT NULL,
    sender   BLOB    NOT NULL,
    msg_id   BLOB    NOT NULL,
    commit_message BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_packages (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    identity BLOB NOT NULL,
    package  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS key_packages_identity ON key_packages (identity, id);
CREATE TABLE IF NOT EXISTS last_resort_key_packages (
    identity BLOB PRIMARY KEY,
    package  BLOB NOT NULL
) WITHOUT ROWID;
";

/// Expiry notices for the unacknowledged messages an expiry drops (?1: its cut-off), in
/// store order.
const NOTICES_OF_EXPIRING_SQL: &str = "INSERT INTO expired_notices (sender, recipient, msg_id, ts)
     SELECT sender, recipient, msg_id, ts FROM messages WHERE ts < ?1 AND acked = 0 ORDER BY seq";

/// A page of a sender's expiry notices.
const NOTICES_SQL: &str = "SELECT seq, recipient, msg_id FROM expired_notices
     WHERE sender = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// Columns that databases from before name leases lack, added on open. A claim stored
/// before then counts as stored at the time of the upgrade, so no lease has run out
/// the moment the relay starts.
const CLAIM_LEASE_COLUMNS: &str = "
ALTER TABLE claims ADD COLUMN stored_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE claims ADD COLUMN last_auth_ms INTEGER;
";

/// Records a seen time, unless the one recorded is less than the precision (?3) older.
/// An upsert whose condition fails changes no row and writes nothing.
const RECORD_SEEN_SQL: &str = "INSERT INTO last_seen (identity, seen_ms) VALUES (?1, ?2)
     ON CONFLICT (identity) DO UPDATE SET seen_ms = excluded.seen_ms
     WHERE seen_ms < excluded.seen_ms - ?3";

/// A database from before `last_seen` gets every identity it holds a bundle or a claim
/// of counted as seen at the upgrade (?1): the relay does not know better, and no
/// identity is reported away (or never seen) because of the upgrade.
const SEED_LAST_SEEN_SQL: &str = "INSERT OR IGNORE INTO last_seen (identity, seen_ms)
     SELECT identity, ?1 FROM bundles UNION SELECT identity, ?1 FROM claims";

/// The reverse lookup: the claim an identity stored last (a claim stored again gets a
/// new rowid), through the index on `identity`.
const CLAIM_OF_SQL: &str = "SELECT claim FROM claims WHERE identity = ?1 ORDER BY rowid DESC LIMIT 1";

/// A recipient's queue length (through the partial index of unacknowledged messages).
const QUEUE_LEN_SQL: &str = "SELECT COUNT(*) FROM messages WHERE recipient = ?1 AND acked = 0";

/// A page of a recipient's queue (through the partial index of unacknowledged messages).
const PENDING_SQL: &str = "SELECT seq, sender, msg_id, ts, payload FROM messages
     WHERE recipient = ?1 AND acked = 0 AND seq > ?2 AND ts >= ?3
     ORDER BY seq LIMIT ?4";

/// A sender's unacknowledged messages and their payload bytes (through the partial
/// index of unacknowledged messages by sender: what a sender holds, not what it ever
/// sent).
const SENDER_USAGE_SQL: &str = "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages
     WHERE sender = ?1 AND acked = 0";

/// Every unacknowledged message and their payload bytes.
const STORED_USAGE_SQL: &str =
    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE acked = 0";

/// The unacknowledged messages an expiry drops, and their payload bytes.
const EXPIRING_SQL: &str = "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages
     WHERE ts < ?1 AND acked = 0";

/// The message an acknowledgement applies to, with its payload length.
const ACKED_SQL: &str = "SELECT seq, LENGTH(payload) FROM messages
     WHERE sender = ?1 AND msg_id = ?2 AND recipient = ?3 AND acked = 0";

/// Identities whose counts are cached at most; past it the cache starts again (the
/// counts are read again from the indexes as they are needed).
const COUNTS_CACHED: usize = 65_536;

/// What the quota checks count, cached so that a Send costs no counting query: loaded
/// from the database on first use, kept up to date by each write, and dropped when a
/// commit fails (the transaction rolled back, so the counts may be off) or an expiry
/// runs.
#[derive(Default)]
struct Counts {
    /// Unacknowledged messages per recipient.
    queue_lens: HashMap<IdentityBytes, u64>,
    /// Unacknowledged messages per sender.
    senders: HashMap<IdentityBytes, Usage>,
    /// All unacknowledged messages.
    stored: Option<Usage>,
}

impl Counts {
    fn clear(&mut self) {
        self.queue_lens.clear();
        self.senders.clear();
        self.stored = None;
    }

    fn queue_len(&mut self, tx: &Transaction<'_>, recipient: &IdentityBytes) -> Result<u64, StoreError> {
        if let Some(len) = self.queue_lens.get(recipient) {
            return Ok(*len);
        }
        let len: i64 = tx.query_row(QUEUE_LEN_SQL, params![&recipient[..]], |row| row.get(0))?;
        let len = u64::try_from(len).unwrap_or(0);
        if self.queue_lens.len() >= COUNTS_CACHED {
            self.queue_lens.clear();
        }
        self.queue_lens.insert(*recipient, len);
        Ok(len)
    }

    fn sender(&mut self, tx: &Transaction<'_>, sender: &IdentityBytes) -> Result<Usage, StoreError> {
        if let Some(usage) = self.senders.get(sender) {
            return Ok(*usage);
        }
        let usage = usage_of(
            tx.prepare_cached(SENDER_USAGE_SQL)?
                .query_row(params![&sender[..]], usage_row)?,
        );
        if self.senders.len() >= COUNTS_CACHED {
            self.senders.clear();
        }
        self.senders.insert(*sender, usage);
        Ok(usage)
    }

    fn stored(&mut self, tx: &Transaction<'_>) -> Result<Usage, StoreError> {
        if let Some(usage) = self.stored {
            return Ok(usage);
        }
        let usage = usage_of(tx.query_row(STORED_USAGE_SQL, [], usage_row)?);
        self.stored = Some(usage);
        Ok(usage)
    }

    /// Counts a message stored (its counts were loaded by the quota check).
    fn appended(&mut self, m: &NewMessage) {
        let size = stored_size(m.payload.len());
        if let Some(len) = self.queue_lens.get_mut(&m.recipient) {
            *len += 1;
        }
        if let Some(usage) = self.senders.get_mut(&m.sender) {
            usage.add(size);
        }
        if let Some(usage) = &mut self.stored {
            usage.add(size);
        }
    }

    /// Counts a message acknowledged.
    fn acked(&mut self, recipient: &IdentityBytes, sender: &IdentityBytes, size: u64) {
        if let Some(len) = self.queue_lens.get_mut(recipient) {
            *len = len.saturating_sub(1);
        }
        if let Some(usage) = self.senders.get_mut(sender) {
            usage.remove(size);
        }
        if let Some(usage) = &mut self.stored {
            usage.remove(size);
        }
    }
}

/// (count, payload bytes) as a counting query returns them.
fn usage_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64)> {
    Ok((row.get(0)?, row.get(1)?))
}

fn usage_of((messages, bytes): (i64, i64)) -> Usage {
    Usage::of(
        u64::try_from(messages).unwrap_or(0),
        u64::try_from(bytes).unwrap_or(0),
    )
}

/// SQLite-backed store.
pub struct SqliteStore {
    conn: Connection,
    counts: Counts,
    path: PathBuf,
}

fn key32(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("key is not 32 bytes"))
}

/// A time in ms as SQLite stores it.
fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A time in ms as SQLite returned it.
fn ms_of(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

fn id16(bytes: Vec<u8>) -> Result<[u8; 16], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("message id is not 16 bytes"))
}

impl SqliteStore {
    /// Opens (or creates, owner-only) the database `relay.db` in `dir`; an error names
    /// the file ([`StoreError::Open`]).
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        let path = dir.join(crate::data_dir::DB_FILE);
        Self::open_file(&path, fsync).map_err(|err| StoreError::Open {
            reason: err.reason(),
            path,
        })
    }

    fn open_file(path: &Path, fsync: bool) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Created 0600 before SQLite sees it: SQLite would create it 0644, and gives the
        // -wal and -shm files the database's mode.
        crate::data_dir::create_private_file(path)?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        let had_last_seen = conn
            .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'last_seen'")?
            .exists([])?;
        conn.execute_batch(SCHEMA)?;
        Self::add_claim_lease_columns(&conn, crate::now_ms())?;
        if !had_last_seen {
            conn.execute(SEED_LAST_SEEN_SQL, params![sql_ms(crate::now_ms())])?;
        }
        // The storage budget's count, read here in one pass over the unacknowledged
        // messages rather than in the first commit, which would stall every writer.
        let stored = usage_of(conn.query_row(STORED_USAGE_SQL, [], usage_row)?);
        Ok(Self {
            conn,
            counts: Counts {
                stored: Some(stored),
                ..Counts::default()
            },
            path: path.to_path_buf(),
        })
    }

    /// Gives a database from before name leases the columns they need, each claim counted
    /// as stored at `now_ms`.
    fn add_claim_lease_columns(conn: &Connection, now_ms: u64) -> Result<(), StoreError> {
        let has_stored_ms = conn
            .prepare("SELECT 1 FROM pragma_table_info('claims') WHERE name = 'stored_ms'")?
            .exists([])?;
        if has_stored_ms {
            return Ok(());
        }
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(CLAIM_LEASE_COLUMNS)?;
        tx.execute("UPDATE claims SET stored_ms = ?1", params![sql_ms(now_ms)])?;
        tx.commit()?;
        Ok(())
    }

    fn append(
        tx: &Transaction<'_>,
        counts: &mut Counts,
        m: &NewMessage,
        quotas: &Quotas,
    ) -> Result<WriteResult, StoreError> {
        let earlier: Option<Vec<u8>> = tx
            .prepare_cached("SELECT recipient FROM messages WHERE sender = ?1 AND msg_id = ?2")?
            .query_row(params![&m.sender[..], &m.msg_id[..]], |row| row.get(0))
            .optional()?;
        if let Some(recipient) = earlier {
            return Ok(if recipient[..] == m.recipient[..] {
                WriteResult::Duplicate
            } else {
                WriteResult::IdReused
            });
        }
        let queue_len = counts.queue_len(tx, &m.recipient)?;
        let sender = counts.sender(tx, &m.sender)?;
        let stored = counts.stored(tx)?;
        if let Err(quota) = quotas.check(queue_len, sender, stored, stored_size(m.payload.len())) {
            return Ok(WriteResult::QuotaExceeded(quota));
        }
        tx.prepare_cached(
            "INSERT INTO messages (recipient, sender, msg_id, ts, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            &m.recipient[..],
            &m.sender[..],
            &m.msg_id[..],
            i64::try_from(m.timestamp_ms).unwrap_or(i64::MAX),
            &m.payload[..]
        ])?;
        counts.appended(m);
        Ok(WriteResult::Appended {
            seq: u64::try_from(tx.last_insert_rowid()).unwrap_or(0),
        })
    }

    fn apply(
        tx: &Transaction<'_>,
        counts: &mut Counts,
        op: &WriteOp,
        quotas: &Quotas,
    ) -> Result<WriteResult, StoreError> {
        match op {
            WriteOp::Append(m) => Self::append(tx, counts, m, quotas),
            WriteOp::Ack {
                recipient,
                sender,
                msg_id,
            } => {
                let acked = tx
                    .prepare_cached(ACKED_SQL)?
                    .query_row(params![&sender[..], &msg_id[..], &recipient[..]], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?))
                    })
                    .optional()?;
                let Some((seq, len)) = acked else {
                    return Ok(WriteResult::Acked(false));
                };
                tx.prepare_cached("UPDATE messages SET acked = 1, payload = NULL WHERE seq = ?1")?
                    .execute(params![seq])?;
                let len = usize::try_from(len.unwrap_or(0)).unwrap_or(0);
                counts.acked(recipient, sender, stored_size(len));
                Ok(WriteResult::Acked(true))
            }
            WriteOp::AckExpired { sender, through } => {
                let removed = tx
                    .prepare_cached("DELETE FROM expired_notices WHERE sender = ?1 AND seq <= ?2")?
                    .execute(params![&sender[..], i64::try_from(*through).unwrap_or(i64::MAX)])?;
                Ok(WriteResult::NoticesAcked(removed as u64))
            }
            WriteOp::Expire {
                before_ms,
                acked_before_ms,
                notices_before_ms,
            } => {
                let before = i64::try_from(*before_ms).unwrap_or(i64::MAX);
                let acked_before = i64::try_from(*acked_before_ms).unwrap_or(i64::MAX);
                let expired = usage_of(tx.query_row(EXPIRING_SQL, params![before], usage_row)?);
                tx.prepare_cached(NOTICES_OF_EXPIRING_SQL)?
                    .execute(params![before])?;
                tx.execute(
                    "DELETE FROM expired_notices WHERE ts < ?1",
                    params![i64::try_from(*notices_before_ms).unwrap_or(i64::MAX)],
                )?;
                tx.execute("DELETE FROM messages WHERE ts < ?1", params![before])?;
                tx.execute(
                    "DELETE FROM messages WHERE acked = 1 AND ts < ?1",
                    params![acked_before],
                )?;
                // Recipients' and senders' counts are read again as they are needed; the
                // total, read in one pass over every message, is kept.
                let stored = counts.stored.map(|mut stored| {
                    stored.subtract(expired);
                    stored
                });
                counts.clear();
                counts.stored = stored;
                Ok(WriteResult::Expired(expired.messages))
            }
            WriteOp::Group(write) => Ok(WriteResult::Group(apply_group_write(
                &mut SqliteGroups { tx, counts },
                write,
                quotas,
            )?)),
            WriteOp::Seen {
                identity,
                at_ms,
                precision_ms,
            } => {
                tx.prepare_cached(RECORD_SEEN_SQL)?.execute(params![
                    &identity[..],
                    sql_ms(*at_ms),
                    sql_ms(*precision_ms)
                ])?;
                Ok(WriteResult::Seen)
            }
        }
    }
}

impl Store for SqliteStore {
    fn publish_key_packages(
        &mut self,
        owner: &IdentityBytes,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_held: u32,
    ) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        let held = groups::publish_key_packages(&tx, owner, packages, last_resort, max_held)?;
        tx.commit()?;
        Ok(held)
    }

    fn take_key_package(
        &mut self,
        owner: &IdentityBytes,
        one_time: bool,
    ) -> Result<Option<TakenKeyPackage>, StoreError> {
        let tx = self.conn.transaction()?;
        let taken = groups::take_key_package(&tx, owner, one_time)?;
        tx.commit()?;
        Ok(taken)
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn commit(&mut self, ops: &[WriteOp], quotas: &Quotas) -> Result<Vec<WriteResult>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match Self::apply(&tx, &mut self.counts, op, quotas) {
                Ok(result) => results.push(result),
                Err(err) => {
                    // The transaction rolls back on drop; cached counts may be off.
                    self.counts.clear();
                    return Err(err);
                }
            }
        }
        if let Err(err) = tx.commit() {
            self.counts.clear();
            return Err(err.into());
        }
        Ok(results)
    }

    fn sender_usage(&mut self, sender: &IdentityBytes) -> Result<Usage, StoreError> {
        Ok(usage_of(
            self.conn
                .prepare_cached(SENDER_USAGE_SQL)?
                .query_row(params![&sender[..]], usage_row)?,
        ))
    }

    fn stored_usage(&mut self) -> Result<Usage, StoreError> {
        Ok(usage_of(self.conn.query_row(STORED_USAGE_SQL, [], usage_row)?))
    }

    fn expired_notices(
        &mut self,
        sender: &IdentityBytes,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ExpiredNotice)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(NOTICES_SQL)?;
        let rows = stmt.query_map(
            params![
                &sender[..],
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, recipient, msg_id) = row?;
            let msg_id: [u8; 16] = msg_id
                .try_into()
                .map_err(|_| StoreError::Corrupt("expiry notice id is not 16 bytes"))?;
            out.push((
                u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative seq"))?,
                ExpiredNotice {
                    recipient: key32(recipient)?,
                    msg_id,
                },
            ));
        }
        Ok(out)
    }

    fn pending(
        &mut self,
        recipient: &IdentityBytes,
        after: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut stmt = self.conn.prepare_cached(PENDING_SQL)?;
        let rows = stmt.query_map(
            params![
                &recipient[..],
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(not_before_ms).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Option<Vec<u8>>>(4)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, sender, msg_id, ts, payload) = row?;
            out.push(StoredMessage {
                seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative seq"))?,
                sender: key32(sender)?,
                msg_id: id16(msg_id)?,
                timestamp_ms: u64::try_from(ts).unwrap_or(0),
                payload: payload
                    .ok_or(StoreError::Corrupt("unacknowledged message without payload"))?
                    .into(),
            });
        }
        Ok(out)
    }

    fn queue_len(&mut self, recipient: &IdentityBytes) -> Result<u64, StoreError> {
        let len: i64 = self
            .conn
            .query_row(QUEUE_LEN_SQL, params![&recipient[..]], |row| row.get(0))?;
        Ok(u64::try_from(len).unwrap_or(0))
    }

    fn publish_prekeys(
        &mut self,
        owner: &IdentityBytes,
        signed_prekey: &[u8; 32],
        signature: &[u8],
        one_time: &[[u8; 32]],
        max_prekeys: u32,
    ) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO bundles (identity, spk, sig) VALUES (?1, ?2, ?3)
             ON CONFLICT (identity) DO UPDATE SET spk = excluded.spk, sig = excluded.sig",
            params![&owner[..], &signed_prekey[..], signature],
        )?;
        let count = |tx: &Transaction<'_>| -> Result<u32, StoreError> {
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE identity = ?1",
                params![&owner[..]],
                |row| row.get(0),
            )?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        let mut held = count(&tx)?;
        {
            let mut insert =
                tx.prepare_cached("INSERT OR IGNORE INTO one_time_prekeys (identity, opk) VALUES (?1, ?2)")?;
            for opk in one_time {
                if held >= max_prekeys {
                    break;
                }
                held += u32::try_from(insert.execute(params![&owner[..], &opk[..]])?).unwrap_or(0);
            }
        }
        tx.commit()?;
        Ok(held)
    }

    fn fetch_bundle(
        &mut self,
        owner: &IdentityBytes,
        take_one_time: bool,
    ) -> Result<Option<StoredBundle>, StoreError> {
        let tx = self.conn.transaction()?;
        let Some((spk, sig)) = tx
            .query_row(
                "SELECT spk, sig FROM bundles WHERE identity = ?1",
                params![&owner[..]],
                |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let opk = if take_one_time {
            tx.query_row(
                "SELECT id, opk FROM one_time_prekeys WHERE identity = ?1 ORDER BY id LIMIT 1",
                params![&owner[..]],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?
        } else {
            None
        };
        let one_time_prekey = match opk {
            Some((id, opk)) => {
                tx.execute("DELETE FROM one_time_prekeys WHERE id = ?1", params![id])?;
                Some(key32(opk)?)
            }
            None => None,
        };
        let remaining: i64 = tx.query_row(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE identity = ?1",
            params![&owner[..]],
            |row| row.get(0),
        )?;
        tx.commit()?;
        Ok(Some(StoredBundle {
            signed_prekey: key32(spk)?,
            signature: sig,
            one_time_prekey,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        }))
    }

    fn prekey_count(&mut self, owner: &IdentityBytes) -> Result<Option<u32>, StoreError> {
        let has_bundle = self
            .conn
            .prepare_cached("SELECT 1 FROM bundles WHERE identity = ?1")?
            .exists(params![&owner[..]])?;
        if !has_bundle {
            return Ok(None);
        }
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE identity = ?1",
            params![&owner[..]],
            |row| row.get(0),
        )?;
        Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
    }

    fn record_auth(&mut self, identity: &IdentityBytes, at_ms: u64) -> Result<(), StoreError> {
        // Touches no row (and writes nothing) for an identity that holds no name.
        self.conn
            .prepare_cached(
                "UPDATE claims SET last_auth_ms = ?1
                 WHERE identity = ?2 AND (last_auth_ms IS NULL OR last_auth_ms < ?1)",
            )?
            .execute(params![sql_ms(at_ms), &identity[..]])?;
        Ok(())
    }

    fn last_seen(&mut self, identity: &IdentityBytes) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT seen_ms FROM last_seen WHERE identity = ?1")?
            .query_row(params![&identity[..]], |row| row.get::<_, i64>(0))
            .optional()?
            .map(ms_of))
    }

    fn put_claim(
        &mut self,
        name: &str,
        owner: &IdentityBytes,
        claim: &[u8],
        now_ms: u64,
        lease: Lease,
    ) -> Result<ClaimOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let held = tx
            .query_row(
                "SELECT identity, stored_ms, last_auth_ms FROM claims WHERE name = ?1",
                params![name],
                |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?;
        let (outcome, last_auth) = match held {
            None => (ClaimOutcome::Stored, None),
            Some((holder, _, last_auth)) if holder[..] == owner[..] => (ClaimOutcome::Stored, last_auth),
            Some((holder, stored_ms, last_auth)) => {
                if !lease.expired(now_ms, ms_of(stored_ms), last_auth.map(ms_of)) {
                    return Ok(ClaimOutcome::HeldByAnother);
                }
                (ClaimOutcome::TakenOver { from: key32(holder)? }, None)
            }
        };
        // One name per identity: a claim of another name frees the previous one.
        tx.execute(
            "DELETE FROM claims WHERE identity = ?1 AND name != ?2",
            params![&owner[..], name],
        )?;
        // REPLACE deletes the old row and inserts a new one, with a new rowid: the
        // reverse lookup's order of storage.
        tx.execute(
            "INSERT OR REPLACE INTO claims (name, identity, claim, stored_ms, last_auth_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, &owner[..], claim, sql_ms(now_ms), last_auth],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    fn get_claim(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT claim FROM claims WHERE name = ?1", params![name], |row| {
                row.get(0)
            })
            .optional()?)
    }

    fn claim_of(&mut self, identity: &IdentityBytes) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(CLAIM_OF_SQL)?
            .query_row(params![&identity[..]], |row| row.get(0))
            .optional()?)
    }

    fn release_claim(
        &mut self,
        name: &str,
        owner: &IdentityBytes,
        issued_ms: u64,
    ) -> Result<ReleaseOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let held = tx
            .query_row(
                "SELECT claim FROM claims WHERE name = ?1 AND identity = ?2",
                params![name, &owner[..]],
                |row| row.get::<_, Vec<u8>>(0),
            )
            .optional()?;
        let Some(claim) = held else {
            return Ok(ReleaseOutcome::NotHeld);
        };
        let outcome = release_of(&claim, issued_ms)?;
        if outcome == ReleaseOutcome::Released {
            tx.execute("DELETE FROM claims WHERE name = ?1", params![name])?;
            tx.commit()?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
