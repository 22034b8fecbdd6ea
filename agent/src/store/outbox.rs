//! The `outbox` rows: sent messages the relay has not acknowledged, in the order they
//! were written. The wire bytes are the end-to-end ciphertext the relay gets anyway, so
//! they are stored as they are; the entry commits in the same transaction as the
//! advanced sending chain, before the ciphertext leaves.

use rusqlite::params;

use super::error::StoreError;
use super::state_db::{sql_u64, u64_of, Key32, MsgId, Rows, Tx};

/// A sent, unacknowledged message.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The relay message id (the payload's message id).
    pub msg_id: MsgId,
    /// The recipient's identity.
    pub recipient: Key32,
    /// The exact encrypted bytes to send (and to resend after a restart).
    pub wire: Vec<u8>,
    /// True for a text message, false for a receipt or control message.
    pub is_text: bool,
    /// When the message was written, ms since the Unix epoch.
    pub created_ms: u64,
}

impl std::fmt::Debug for OutboxRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRow")
            .field("msg_id", &hex::encode(self.msg_id))
            .field("wire_len", &self.wire.len())
            .field("is_text", &self.is_text)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

impl Rows<'_> {
    /// The unacknowledged messages, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let fail = self.fail("read the outbox");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT msg_id, recipient, wire, is_text, created_ms FROM outbox ORDER BY seq")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, bool>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (msg_id, recipient, wire, is_text, created_ms) = row.map_err(&fail)?;
            out.push(OutboxRow {
                msg_id: self.fixed(msg_id, "outbox.msg_id")?,
                recipient: self.fixed(recipient, "outbox.recipient")?,
                wire,
                is_text,
                created_ms: u64_of(created_ms),
            });
        }
        Ok(out)
    }

    /// True if `msg_id` is waiting in the outbox.
    pub fn outbox_contains(&self, msg_id: &MsgId) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM outbox WHERE msg_id = ?1")
            .and_then(|mut s| s.exists([&msg_id[..]]))
            .map_err(self.fail("read the outbox"))
    }
}

impl Tx<'_> {
    /// Appends a sent message. False, with nothing written, if its id is already in
    /// the outbox.
    pub fn outbox_put(&self, entry: &OutboxRow) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox (msg_id, recipient, wire, is_text, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    &entry.msg_id[..],
                    &entry.recipient[..],
                    entry.wire,
                    entry.is_text,
                    sql_u64(entry.created_ms)
                ])
            })
            .map(|n| n > 0)
            .map_err(self.fail("put an outbox entry"))
    }

    /// Removes an acknowledged message; false if it was not there.
    pub fn outbox_remove(&self, msg_id: &MsgId) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM outbox WHERE msg_id = ?1")
            .and_then(|mut s| s.execute([&msg_id[..]]))
            .map(|n| n > 0)
            .map_err(self.fail("remove an outbox entry"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;
    use super::*;

    fn entry(n: u8) -> OutboxRow {
        OutboxRow {
            msg_id: [n; 16],
            recipient: [0xb0; 32],
            wire: vec![n; 40],
            is_text: n & 1 == 0,
            created_ms: u64::from(n) * 10,
        }
    }

    #[test]
    fn keeps_unacknowledged_messages_in_order_once_each() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            for n in [3, 1, 2] {
                assert!(tx.outbox_put(&entry(n))?);
            }
            assert!(!tx.outbox_put(&entry(1))?, "same id");
            Ok(())
        })
        .expect("put");
        assert_eq!(db.rows().outbox().expect("read"), [entry(3), entry(1), entry(2)]);
        assert!(db.transaction(|tx| tx.outbox_remove(&[1; 16])).expect("ack"));
        assert!(!db.transaction(|tx| tx.outbox_remove(&[1; 16])).expect("again"));
        assert!(!db.rows().outbox_contains(&[1; 16]).expect("read"));
        assert_eq!(db.rows().outbox().expect("read"), [entry(3), entry(2)]);
    }
}
