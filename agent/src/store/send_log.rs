//! The `send_log` rows: the plaintexts recently sent to each peer (sealed), so that a
//! session that must be established again can re-send them. Bounded per peer by count
//! and overall by age ([`SendLogBounds`]); each push prunes in constant time (the
//! count window by sequence number, the age through the `sent_ms` index).

use rusqlite::params;
use zeroize::Zeroizing;

use super::error::StoreError;
use super::state_db::{row_key, sql_count, sql_u64, u64_of, Key32, MsgId, Rows, Tx};

const TABLE: &str = "send_log";

/// How much of the send log is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendLogBounds {
    /// At most this many entries per peer (the newest; 0 keeps none).
    pub keep: usize,
    /// Entries older than this (ms, relative to the newest push) are deleted.
    pub max_age_ms: u64,
}

/// A logged sent message.
pub struct SentRow {
    /// The message id.
    pub msg_id: MsgId,
    /// The plaintext as the caller logged it (opened), e.g. the encoded payload.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// When it was sent, ms since the Unix epoch.
    pub sent_ms: u64,
}

impl Rows<'_> {
    /// The messages logged for `peer`, oldest first.
    pub fn send_log(&self, peer: &Key32) -> Result<Vec<SentRow>, StoreError> {
        let fail = self.fail("read the send log");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT msg_id, plaintext, sent_ms FROM send_log WHERE peer = ?1 ORDER BY seq")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([&peer[..]], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (msg_id, sealed, sent_ms) = row.map_err(&fail)?;
            let msg_id: MsgId = self.fixed(msg_id, "send_log.msg_id")?;
            out.push(SentRow {
                plaintext: self.open(TABLE, &row_key(peer, &msg_id), &sealed)?,
                msg_id,
                sent_ms: u64_of(sent_ms),
            });
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Logs a message sent to `peer` at `sent_ms`, then deletes what falls outside
    /// `bounds`: the peer's entries past `keep`, and every entry older than
    /// `sent_ms - max_age_ms`. Returns false (nothing written) if the id is already
    /// logged for the peer or `keep` is 0.
    pub fn send_log_push(
        &self,
        peer: &Key32,
        msg_id: &MsgId,
        plaintext: &[u8],
        sent_ms: u64,
        bounds: SendLogBounds,
    ) -> Result<bool, StoreError> {
        if bounds.keep == 0 {
            return Ok(false);
        }
        let fail = self.fail("log a sent message");
        let seq: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM send_log WHERE peer = ?1")
            .and_then(|mut s| s.query_row([&peer[..]], |row| row.get(0)))
            .map_err(&fail)?;
        let sealed = self.seal(TABLE, &row_key(peer, msg_id), plaintext)?;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO send_log (peer, seq, msg_id, plaintext, sent_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![&peer[..], seq, &msg_id[..], sealed, sql_u64(sent_ms)]))
            .map_err(&fail)?;
        if inserted == 0 {
            return Ok(false);
        }
        self.conn
            .prepare_cached("DELETE FROM send_log WHERE peer = ?1 AND seq <= ?2")
            .and_then(|mut s| s.execute(params![&peer[..], seq.saturating_sub(sql_count(bounds.keep))]))
            .map_err(&fail)?;
        self.send_log_expire(sent_ms, bounds.max_age_ms)?;
        Ok(true)
    }

    /// Deletes every entry older than `now_ms - max_age_ms`; returns how many.
    pub fn send_log_expire(&self, now_ms: u64, max_age_ms: u64) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM send_log WHERE sent_ms < ?1")
            .and_then(|mut s| s.execute([sql_u64(now_ms.saturating_sub(max_age_ms))]))
            .map_err(self.fail("expire the send log"))
    }

    /// Deletes one entry (its message was re-sent or is known delivered); false if
    /// absent.
    pub fn send_log_remove(&self, peer: &Key32, msg_id: &MsgId) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM send_log WHERE peer = ?1 AND msg_id = ?2",
                [&peer[..], &msg_id[..]],
            )
            .map(|n| n > 0)
            .map_err(self.fail("remove a send log entry"))
    }

    /// Deletes every entry for `peer`; returns how many.
    pub fn send_log_clear(&self, peer: &Key32) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM send_log WHERE peer = ?1", [&peer[..]])
            .map_err(self.fail("clear the send log"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;
    use super::*;

    const BOB: Key32 = [0xb0; 32];
    const CAROL: Key32 = [0xc0; 32];
    const DAY: u64 = 86_400_000;

    fn ids(db: &super::super::StateDb, peer: &Key32) -> Vec<u8> {
        (db.rows().send_log(peer).expect("read").iter())
            .map(|r| r.msg_id[0])
            .collect()
    }

    #[test]
    fn keeps_the_newest_per_peer() {
        let (_dir, mut db) = test_db();
        let bounds = SendLogBounds {
            keep: 3,
            max_age_ms: DAY,
        };
        db.transaction(|tx| {
            for n in 0..6u8 {
                assert!(tx.send_log_push(&BOB, &[n; 16], &[n; 5], 1000 + u64::from(n), bounds)?);
            }
            assert!(!tx.send_log_push(&BOB, &[5; 16], b"again", 2000, bounds)?);
            tx.send_log_push(&CAROL, &[9; 16], b"hi carol", 1000, bounds)
        })
        .expect("push");
        assert_eq!(ids(&db, &BOB), [3, 4, 5]);
        assert_eq!(ids(&db, &CAROL), [9]);
        let rows = db.rows().send_log(&BOB).expect("read");
        assert_eq!((&rows[0].plaintext[..], rows[0].sent_ms), (&[3u8; 5][..], 1003));
    }

    #[test]
    fn drops_entries_past_the_age_for_every_peer() {
        let (_dir, mut db) = test_db();
        let bounds = SendLogBounds {
            keep: 100,
            max_age_ms: DAY,
        };
        db.transaction(|tx| {
            tx.send_log_push(&CAROL, &[1; 16], b"old", 0, bounds)?;
            tx.send_log_push(&BOB, &[2; 16], b"old", DAY / 2, bounds)?;
            tx.send_log_push(&BOB, &[3; 16], b"new", DAY + 1, bounds)
        })
        .expect("push");
        assert_eq!(ids(&db, &CAROL), Vec::<u8>::new());
        assert_eq!(ids(&db, &BOB), [2, 3]);
        assert_eq!(
            db.transaction(|tx| tx.send_log_expire(2 * DAY, DAY)).ok(),
            Some(1)
        );
        assert_eq!(ids(&db, &BOB), [3]);
    }

    #[test]
    fn entries_are_removed_one_by_one_or_per_peer() {
        let (_dir, mut db) = test_db();
        let bounds = SendLogBounds {
            keep: 10,
            max_age_ms: DAY,
        };
        db.transaction(|tx| {
            for n in 0..3u8 {
                tx.send_log_push(&BOB, &[n; 16], b"x", 10, bounds)?;
            }
            assert!(tx.send_log_remove(&BOB, &[1; 16])?);
            assert!(!tx.send_log_remove(&BOB, &[1; 16])?);
            Ok(())
        })
        .expect("remove");
        assert_eq!(ids(&db, &BOB), [0, 2]);
        assert_eq!(db.transaction(|tx| tx.send_log_clear(&BOB)).ok(), Some(2));
        let none = SendLogBounds { keep: 0, ..bounds };
        assert!(!db
            .transaction(|tx| tx.send_log_push(&BOB, &[7; 16], b"x", 10, none))
            .expect("keep 0"));
        assert!(ids(&db, &BOB).is_empty());
    }
}
