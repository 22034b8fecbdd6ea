//! The `held` rows: messages of pending identity changes, kept undecrypted in arrival
//! order until the user decides (`crate::held`). The delivered bytes are sealed under
//! `sender || msg_id`.

use rusqlite::params;
use zeroize::Zeroizing;

use super::error::StoreError;
use super::state_db::{row_key, sql_u64, u64_of, Key32, MsgId, Rows, Tx};

const TABLE: &str = "held";

/// A message to hold.
#[derive(Clone, Copy)]
pub struct NewHeld<'a> {
    /// The name whose pending change sent it.
    pub name: &'a str,
    /// The sender identity (the pending one).
    pub sender: &'a Key32,
    /// The relay message id.
    pub msg_id: &'a MsgId,
    /// The message as delivered (sealed at rest).
    pub wire: &'a [u8],
    /// When it was held, ms since the Unix epoch.
    pub held_ms: u64,
}

/// A held message.
pub struct HeldRow {
    /// The name whose pending change sent it.
    pub name: String,
    /// The sender identity.
    pub sender: Key32,
    /// The relay message id.
    pub msg_id: MsgId,
    /// The message as delivered (opened).
    pub wire: Zeroizing<Vec<u8>>,
    /// When it was held, ms since the Unix epoch.
    pub held_ms: u64,
}

/// What [`Tx::push_held`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldOutcome {
    /// Stored.
    Held,
    /// Already held (same sender and message id): nothing written.
    AlreadyHeld,
    /// The name holds its limit already: nothing written (leave the message
    /// unacknowledged at the relay).
    Full,
}

impl Rows<'_> {
    /// The held messages in arrival order, all or only those from `sender`.
    pub fn held(&self, sender: Option<&Key32>) -> Result<Vec<HeldRow>, StoreError> {
        let fail = self.fail("read held messages");
        let sql = "SELECT name, sender, msg_id, wire, held_ms FROM held
                   WHERE ?1 IS NULL OR sender = ?1 ORDER BY seq";
        let mut stmt = self.conn.prepare_cached(sql).map_err(&fail)?;
        let rows = stmt
            .query_map([sender.map(|s| &s[..])], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (name, sender, msg_id, sealed, held_ms) = row.map_err(&fail)?;
            let sender: Key32 = self.fixed(sender, "held.sender")?;
            let msg_id: MsgId = self.fixed(msg_id, "held.msg_id")?;
            out.push(HeldRow {
                wire: self.open(TABLE, &row_key(&sender, &msg_id), &sealed)?,
                name,
                sender,
                msg_id,
                held_ms: u64_of(held_ms),
            });
        }
        Ok(out)
    }

    /// How many messages are held for `name`.
    pub fn held_count(&self, name: &str) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM held WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |row| row.get(0)))
            .map_err(self.fail("count held messages"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

impl Tx<'_> {
    /// Holds a message unless it is already held or its name holds `per_name`
    /// messages (`crate::held::HELD_PER_NAME`).
    pub fn push_held(&self, message: NewHeld<'_>, per_name: usize) -> Result<HeldOutcome, StoreError> {
        let fail = self.fail("hold a message");
        let known = self
            .conn
            .prepare_cached("SELECT 1 FROM held WHERE sender = ?1 AND msg_id = ?2")
            .and_then(|mut s| s.exists([&message.sender[..], &message.msg_id[..]]))
            .map_err(&fail)?;
        if known {
            return Ok(HeldOutcome::AlreadyHeld);
        }
        if self.held_count(message.name)? >= per_name {
            return Ok(HeldOutcome::Full);
        }
        let sealed = self.seal(TABLE, &row_key(message.sender, message.msg_id), message.wire)?;
        self.conn
            .prepare_cached(
                "INSERT INTO held (name, sender, msg_id, wire, held_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    message.name,
                    &message.sender[..],
                    &message.msg_id[..],
                    sealed,
                    sql_u64(message.held_ms)
                ])
            })
            .map_err(&fail)?;
        Ok(HeldOutcome::Held)
    }

    /// Deletes one held message (processed); false if absent.
    pub fn remove_held(&self, sender: &Key32, msg_id: &MsgId) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM held WHERE sender = ?1 AND msg_id = ?2",
                [&sender[..], &msg_id[..]],
            )
            .map(|n| n > 0)
            .map_err(self.fail("remove a held message"))
    }

    /// Deletes every message held from `sender` (rejected); returns how many.
    pub fn remove_held_from(&self, sender: &Key32) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM held WHERE sender = ?1", [&sender[..]])
            .map_err(self.fail("remove held messages"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;
    use super::*;

    const EVE: Key32 = [0xee; 32];

    fn held<'a>(name: &'a str, msg_id: &'a MsgId) -> NewHeld<'a> {
        NewHeld {
            name,
            sender: &EVE,
            msg_id,
            wire: b"ciphertext as delivered",
            held_ms: 42,
        }
    }

    #[test]
    fn holds_in_arrival_order_up_to_the_limit_per_name() {
        let (_dir, mut db) = test_db();
        let ids: Vec<MsgId> = (0..4u8).map(|n| [n; 16]).collect();
        let outcomes = db
            .transaction(|tx| {
                let mut out = Vec::new();
                for id in &ids {
                    out.push(tx.push_held(held("bob", id), 3)?);
                }
                out.push(tx.push_held(held("bob", &ids[0]), 3)?);
                out.push(tx.push_held(held("carol", &ids[3]), 3)?);
                Ok(out)
            })
            .expect("hold");
        use HeldOutcome::*;
        assert_eq!(outcomes, [Held, Held, Held, Full, AlreadyHeld, Held]);
        assert_eq!(db.rows().held_count("bob").ok(), Some(3));
        let rows = db.rows().held(Some(&EVE)).expect("read");
        let shape: Vec<_> = rows.iter().map(|r| (r.name.as_str(), r.msg_id[0])).collect();
        assert_eq!(shape, [("bob", 0), ("bob", 1), ("bob", 2), ("carol", 3)]);
        assert_eq!(&rows[0].wire[..], b"ciphertext as delivered");
        assert_eq!(rows[0].held_ms, 42);
        assert!(db.rows().held(Some(&[1; 32])).expect("read").is_empty());

        assert!(db
            .transaction(|tx| tx.remove_held(&EVE, &ids[1]))
            .expect("remove"));
        assert_eq!(db.transaction(|tx| tx.remove_held_from(&EVE)).ok(), Some(3));
        assert!(db.rows().held(None).expect("read").is_empty());
    }
}
