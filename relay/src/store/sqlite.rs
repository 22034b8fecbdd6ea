//! The durable store: embedded SQLite in WAL mode. A batch of writes is one transaction,
//! so a whole batch costs one fsync (group commit).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{
    IdentityBytes, NewMessage, Store, StoreError, StoredBundle, StoredMessage, WriteOp, WriteResult,
};

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
    name     TEXT PRIMARY KEY,
    identity BLOB NOT NULL,
    claim    BLOB NOT NULL
);
";

/// A recipient's queue length (through the partial index of unacknowledged messages).
const QUEUE_LEN_SQL: &str = "SELECT COUNT(*) FROM messages WHERE recipient = ?1 AND acked = 0";

/// A page of a recipient's queue (through the partial index of unacknowledged messages).
const PENDING_SQL: &str = "SELECT seq, sender, msg_id, ts, payload FROM messages
     WHERE recipient = ?1 AND acked = 0 AND seq > ?2 AND ts >= ?3
     ORDER BY seq LIMIT ?4";

/// SQLite-backed store.
pub struct SqliteStore {
    conn: Connection,
    /// Unacknowledged messages per recipient, loaded on first use.
    queue_lens: HashMap<IdentityBytes, u64>,
}

fn key32(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("key is not 32 bytes"))
}

fn id16(bytes: Vec<u8>) -> Result<[u8; 16], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("message id is not 16 bytes"))
}

impl SqliteStore {
    /// Opens (or creates) the database `relay.db` in `dir`.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("relay.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn,
            queue_lens: HashMap::new(),
        })
    }

    fn queue_len_in(
        tx: &Transaction<'_>,
        lens: &mut HashMap<IdentityBytes, u64>,
        recipient: &IdentityBytes,
    ) -> Result<u64, StoreError> {
        if let Some(len) = lens.get(recipient) {
            return Ok(*len);
        }
        let len: i64 = tx.query_row(QUEUE_LEN_SQL, params![&recipient[..]], |row| row.get(0))?;
        let len = u64::try_from(len).unwrap_or(0);
        lens.insert(*recipient, len);
        Ok(len)
    }

    fn append(
        tx: &Transaction<'_>,
        lens: &mut HashMap<IdentityBytes, u64>,
        m: &NewMessage,
        quota: u64,
    ) -> Result<WriteResult, StoreError> {
        let exists = tx
            .prepare_cached("SELECT 1 FROM messages WHERE sender = ?1 AND msg_id = ?2")?
            .exists(params![&m.sender[..], &m.msg_id[..]])?;
        if exists {
            return Ok(WriteResult::Duplicate);
        }
        let len = Self::queue_len_in(tx, lens, &m.recipient)?;
        if len >= quota {
            return Ok(WriteResult::QuotaExceeded);
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
        lens.insert(m.recipient, len + 1);
        Ok(WriteResult::Appended {
            seq: u64::try_from(tx.last_insert_rowid()).unwrap_or(0),
        })
    }

    fn apply(
        tx: &Transaction<'_>,
        lens: &mut HashMap<IdentityBytes, u64>,
        op: &WriteOp,
        quota: u64,
    ) -> Result<WriteResult, StoreError> {
        match op {
            WriteOp::Append(m) => Self::append(tx, lens, m, quota),
            WriteOp::Ack {
                recipient,
                sender,
                msg_id,
            } => {
                let changed = tx
                    .prepare_cached(
                        "UPDATE messages SET acked = 1, payload = NULL
                         WHERE sender = ?1 AND msg_id = ?2 AND recipient = ?3 AND acked = 0",
                    )?
                    .execute(params![&sender[..], &msg_id[..], &recipient[..]])?;
                if changed > 0 {
                    if let Some(len) = lens.get_mut(recipient) {
                        *len = len.saturating_sub(1);
                    }
                }
                Ok(WriteResult::Acked(changed > 0))
            }
            WriteOp::Expire {
                before_ms,
                acked_before_ms,
            } => {
                let before = i64::try_from(*before_ms).unwrap_or(i64::MAX);
                let acked_before = i64::try_from(*acked_before_ms).unwrap_or(i64::MAX);
                let expired: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM messages WHERE ts < ?1 AND acked = 0",
                    params![before],
                    |row| row.get(0),
                )?;
                tx.execute("DELETE FROM messages WHERE ts < ?1", params![before])?;
                tx.execute(
                    "DELETE FROM messages WHERE acked = 1 AND ts < ?1",
                    params![acked_before],
                )?;
                lens.clear();
                Ok(WriteResult::Expired(u64::try_from(expired).unwrap_or(0)))
            }
        }
    }
}

impl Store for SqliteStore {
    fn commit(&mut self, ops: &[WriteOp], queue_quota: u64) -> Result<Vec<WriteResult>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match Self::apply(&tx, &mut self.queue_lens, op, queue_quota) {
                Ok(result) => results.push(result),
                Err(err) => {
                    // The transaction rolls back on drop; cached lengths may be off.
                    self.queue_lens.clear();
                    return Err(err);
                }
            }
        }
        if let Err(err) = tx.commit() {
            self.queue_lens.clear();
            return Err(err.into());
        }
        Ok(results)
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

    fn fetch_bundle(&mut self, owner: &IdentityBytes) -> Result<Option<StoredBundle>, StoreError> {
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
        let opk = tx
            .query_row(
                "SELECT id, opk FROM one_time_prekeys WHERE identity = ?1 ORDER BY id LIMIT 1",
                params![&owner[..]],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
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

    fn put_claim(&mut self, name: &str, owner: &IdentityBytes, claim: &[u8]) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "INSERT INTO claims (name, identity, claim) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET claim = excluded.claim WHERE claims.identity = excluded.identity",
            params![name, &owner[..], claim],
        )?;
        Ok(changed > 0)
    }

    fn get_claim(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT claim FROM claims WHERE name = ?1", params![name], |row| {
                row.get(0)
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_store_meets_the_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(dir.path(), false).expect("open");
        super::super::contract::check(&mut store);
    }

    #[test]
    fn queue_reads_use_the_index_of_unacknowledged_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path(), false).expect("open");
        let key = &[0u8; 32][..];
        let plans = [
            (QUEUE_LEN_SQL, plan(&store.conn, QUEUE_LEN_SQL, params![key])),
            (PENDING_SQL, plan(&store.conn, PENDING_SQL, params![key, 0, 0, 1])),
        ];
        for (sql, plan) in plans {
            assert!(
                plan.iter().any(|step| step.contains("messages_unacked")),
                "{sql}: {plan:?}"
            );
        }
    }

    /// The steps of SQLite's plan for `sql`.
    fn plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("plan");
        stmt.query_map(params, |row| row.get::<_, String>(3))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn an_old_database_gets_the_new_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let old_schema = SCHEMA.replace(
                "DROP INDEX IF EXISTS messages_queue;\nCREATE INDEX IF NOT EXISTS messages_unacked ON messages (recipient, seq) WHERE acked = 0;",
                "CREATE INDEX messages_queue ON messages (recipient, acked, seq);",
            );
            assert_ne!(old_schema, SCHEMA, "the schema before the partial index");
            let conn = Connection::open(dir.path().join("relay.db")).expect("open");
            conn.execute_batch(&old_schema).expect("old schema");
            conn.execute(
                "INSERT INTO messages (recipient, sender, msg_id, ts, payload) VALUES (?1, ?2, ?3, 5, ?4)",
                params![&[1u8; 32][..], &[2u8; 32][..], &[3u8; 16][..], &b"kept"[..]],
            )
            .expect("a queued message");
        }
        let mut store = SqliteStore::open(dir.path(), false).expect("reopen");
        assert_eq!(store.queue_len(&[1; 32]).expect("len"), 1);
        let queued = store.pending(&[1; 32], 0, 10, 0).expect("pending");
        assert_eq!(queued.len(), 1);
        assert_eq!(&queued[0].payload[..], b"kept");
        let names: Vec<String> = store
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(names.iter().any(|n| n == "messages_unacked"), "{names:?}");
        assert!(!names.iter().any(|n| n == "messages_queue"), "{names:?}");
    }

    #[test]
    fn committed_messages_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = SqliteStore::open(dir.path(), true).expect("open");
            let op = WriteOp::Append(NewMessage {
                recipient: [1; 32],
                sender: [2; 32],
                msg_id: [3; 16],
                timestamp_ms: 10,
                payload: b"ciphertext".to_vec().into(),
            });
            store.commit(&[op], 10).expect("commit");
        }
        let mut store = SqliteStore::open(dir.path(), true).expect("reopen");
        let pending = store.pending(&[1; 32], 0, 10, 0).expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].payload, &b"ciphertext"[..]);
    }
}
