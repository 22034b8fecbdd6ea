//! The `unshown` rows: a received text committed in its message's transaction (with
//! the advanced session and the received ids) and not shown yet. The row is deleted
//! when the text's event is printed; a row left by a crash in between is shown at the
//! next start. So a text whose message key is used up is never lost, and since the
//! redelivery of its message is a recognised duplicate, it is not shown twice either.

use rusqlite::params;
use zeroize::Zeroizing;

use super::error::StoreError;
use super::state_db::{row_key, u64_of, Key32, MsgId, Rows, Tx};

const TABLE: &str = "unshown";

/// A received text not shown yet.
pub struct UnshownRow {
    /// The sender.
    pub peer: Key32,
    /// The end-to-end message id.
    pub msg_id: MsgId,
    /// The payload as decrypted (opened).
    pub payload: Zeroizing<Vec<u8>>,
    /// Message keys the ratchet skipped to reach it.
    pub newly_skipped: u32,
    /// True if it arrived after later messages (a skipped key was used).
    pub late: bool,
}

impl Rows<'_> {
    /// Every received text not shown yet, in the order they were committed.
    pub fn unshown(&self) -> Result<Vec<UnshownRow>, StoreError> {
        let fail = self.fail("read the unshown messages");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT peer, msg_id, payload, newly_skipped, late FROM unshown ORDER BY seq")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (peer, msg_id, sealed, newly_skipped, late) = row.map_err(&fail)?;
            let peer: Key32 = self.fixed(peer, "unshown.peer")?;
            let msg_id: MsgId = self.fixed(msg_id, "unshown.msg_id")?;
            out.push(UnshownRow {
                payload: self.open(TABLE, &row_key(&peer, &msg_id), &sealed)?,
                peer,
                msg_id,
                newly_skipped: u32::try_from(u64_of(newly_skipped)).unwrap_or(u32::MAX),
                late: late != 0,
            });
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Records a received text to show (its payload sealed); a second record of the same
    /// `(peer, msg_id)` changes nothing.
    pub fn put_unshown(
        &self,
        peer: &Key32,
        msg_id: &MsgId,
        payload: &[u8],
        newly_skipped: u32,
        late: bool,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(TABLE, &row_key(peer, msg_id), payload)?;
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO unshown (peer, msg_id, payload, newly_skipped, late)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    &peer[..],
                    &msg_id[..],
                    sealed,
                    i64::from(newly_skipped),
                    i64::from(late)
                ])
            })
            .map(|_| ())
            .map_err(self.fail("record an unshown message"))
    }

    /// Deletes the record of a text once shown; true if it was there.
    pub fn remove_unshown(&self, peer: &Key32, msg_id: &MsgId) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM unshown WHERE peer = ?1 AND msg_id = ?2")
            .and_then(|mut s| s.execute(params![&peer[..], &msg_id[..]]))
            .map(|n| n > 0)
            .map_err(self.fail("delete a shown message"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;

    const BOB: [u8; 32] = [0xb0; 32];

    #[test]
    fn keeps_texts_in_order_until_shown() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            tx.put_unshown(&BOB, &[2; 16], b"second", 0, false)?;
            tx.put_unshown(&BOB, &[1; 16], b"first?", 3, true)?;
            tx.put_unshown(&BOB, &[2; 16], b"again", 0, false)
        })
        .expect("put");
        let rows = db.rows().unshown().expect("read");
        let shape: Vec<_> = (rows.iter())
            .map(|r| (r.msg_id[0], r.payload.to_vec(), r.newly_skipped, r.late))
            .collect();
        assert_eq!(
            shape,
            [
                (2, b"second".to_vec(), 0, false),
                (1, b"first?".to_vec(), 3, true)
            ]
        );
        assert_eq!(
            db.transaction(|tx| tx.remove_unshown(&BOB, &[2; 16])).ok(),
            Some(true)
        );
        assert_eq!(
            db.transaction(|tx| tx.remove_unshown(&BOB, &[2; 16])).ok(),
            Some(false)
        );
        assert_eq!(db.rows().unshown().map(|r| r.len()).ok(), Some(1));
    }
}
