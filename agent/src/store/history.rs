//! The `history` rows: the conversation with each peer as shown (texts sealed), the
//! newest `history.keep` per peer kept (0 keeps none). Each push deletes the entry that
//! falls out of the peer's window, so its cost does not grow with the history.

use rusqlite::params;
use zeroize::Zeroizing;

use super::error::StoreError;
use super::state_db::{row_key, sql_count, sql_u64, u64_of, Key32, MsgId, Rows, Tx};

const TABLE: &str = "history";

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the peer.
    Received,
    /// To the peer.
    Sent,
}

impl Direction {
    fn code(self) -> i64 {
        match self {
            Self::Received => 0,
            Self::Sent => 1,
        }
    }
}

/// A history entry.
pub struct HistoryRow {
    /// Its number in the peer's history (higher is newer).
    pub seq: u64,
    /// Which way it went.
    pub direction: Direction,
    /// The message id.
    pub msg_id: MsgId,
    /// The text (opened).
    pub text: Zeroizing<Vec<u8>>,
    /// When it was sent or received, ms since the Unix epoch.
    pub at_ms: u64,
}

fn seq_key(peer: &Key32, seq: i64) -> Vec<u8> {
    row_key(peer, &seq.to_be_bytes())
}

impl Rows<'_> {
    /// The newest `limit` entries with `peer`, oldest first.
    pub fn history(&self, peer: &Key32, limit: usize) -> Result<Vec<HistoryRow>, StoreError> {
        let fail = self.fail("read the history");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, direction, msg_id, text, at_ms FROM
                 (SELECT * FROM history WHERE peer = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map(params![&peer[..], sql_count(limit)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, direction, msg_id, sealed, at_ms) = row.map_err(&fail)?;
            let direction = match direction {
                0 => Direction::Received,
                1 => Direction::Sent,
                other => return Err(self.corrupt(format!("history.direction is {other}"))),
            };
            out.push(HistoryRow {
                seq: u64_of(seq),
                direction,
                msg_id: self.fixed(msg_id, "history.msg_id")?,
                text: self.open(TABLE, &seq_key(peer, seq), &sealed)?,
                at_ms: u64_of(at_ms),
            });
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Appends an entry to the history with `peer`, keeping the newest `keep`. Returns
    /// its number, or `None` (nothing written) if `keep` is 0.
    pub fn history_push(
        &self,
        peer: &Key32,
        direction: Direction,
        msg_id: &MsgId,
        text: &[u8],
        at_ms: u64,
        keep: usize,
    ) -> Result<Option<u64>, StoreError> {
        if keep == 0 {
            return Ok(None);
        }
        let fail = self.fail("add to the history");
        let seq: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM history WHERE peer = ?1")
            .and_then(|mut s| s.query_row([&peer[..]], |row| row.get(0)))
            .map_err(&fail)?;
        let sealed = self.seal(TABLE, &seq_key(peer, seq), text)?;
        self.conn
            .prepare_cached(
                "INSERT INTO history (peer, seq, direction, msg_id, text, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    &peer[..],
                    seq,
                    direction.code(),
                    &msg_id[..],
                    sealed,
                    sql_u64(at_ms)
                ])
            })
            .map_err(&fail)?;
        self.conn
            .prepare_cached("DELETE FROM history WHERE peer = ?1 AND seq <= ?2")
            .and_then(|mut s| s.execute(params![&peer[..], seq.saturating_sub(sql_count(keep))]))
            .map_err(&fail)?;
        Ok(Some(u64_of(seq)))
    }

    /// Deletes the history with `peer`; returns how many entries.
    pub fn history_clear(&self, peer: &Key32) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM history WHERE peer = ?1", [&peer[..]])
            .map_err(self.fail("clear the history"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;
    use super::*;

    const BOB: Key32 = [0xb0; 32];
    const CAROL: Key32 = [0xc0; 32];

    #[test]
    fn keeps_the_newest_entries_per_peer() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            for n in 1..=5u8 {
                let direction = if n & 1 == 0 {
                    Direction::Sent
                } else {
                    Direction::Received
                };
                tx.history_push(&BOB, direction, &[n; 16], &[b'a' + n], u64::from(n), 3)?;
            }
            tx.history_push(&CAROL, Direction::Sent, &[9; 16], b"hi", 9, 3)
        })
        .expect("push");
        let rows = db.rows().history(&BOB, 10).expect("read");
        let shape: Vec<_> = (rows.iter())
            .map(|r| (r.seq, r.direction, r.msg_id[0], r.text[0], r.at_ms))
            .collect();
        assert_eq!(
            shape,
            [
                (3, Direction::Received, 3, b'd', 3),
                (4, Direction::Sent, 4, b'e', 4),
                (5, Direction::Received, 5, b'f', 5)
            ]
        );
        let last: Vec<u64> = (db.rows().history(&BOB, 2).expect("read").iter())
            .map(|r| r.seq)
            .collect();
        assert_eq!(last, [4, 5]);
        assert_eq!(db.rows().history(&CAROL, 10).map(|r| r.len()).ok(), Some(1));
    }

    #[test]
    fn keep_zero_records_nothing_and_clear_empties_a_peer() {
        let (_dir, mut db) = test_db();
        let none = db
            .transaction(|tx| tx.history_push(&BOB, Direction::Sent, &[1; 16], b"x", 1, 0))
            .expect("push");
        assert_eq!(none, None);
        db.transaction(|tx| {
            tx.history_push(&BOB, Direction::Sent, &[1; 16], b"x", 1, 10)?;
            tx.history_push(&BOB, Direction::Sent, &[2; 16], b"y", 2, 10)
        })
        .expect("push");
        assert_eq!(db.transaction(|tx| tx.history_clear(&BOB)).ok(), Some(2));
        assert!(db.rows().history(&BOB, 10).expect("read").is_empty());
    }
}
