//! The per-peer ratchet rows: the current session (sealed), the archived earlier
//! sessions (sealed) and the recently received message ids.
//!
//! Received ids are one row each, so recording one costs the same whatever the
//! history: the id is inserted with the next sequence number of its peer and kind, and
//! the row that falls out of the window (`seq <= new - keep`) is deleted.

use rusqlite::{params, OptionalExtension};
use zeroize::Zeroizing;

use super::error::StoreError;
use super::state_db::{row_key, sql_count, sql_u64, u64_of, Key32, MsgId, Rows, Tx};

const SESSIONS: &str = "sessions";
const ARCHIVED: &str = "archived_sessions";

/// Which id of a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// The relay's message id (not authenticated; tells redeliveries apart).
    Relay,
    /// The end-to-end message id inside the decrypted payload.
    Payload,
}

impl IdKind {
    fn code(self) -> i64 {
        match self {
            Self::Relay => 0,
            Self::Payload => 1,
        }
    }
}

/// A peer and its current session state (opened).
pub type PeerSession = (Key32, Zeroizing<Vec<u8>>);

/// An archived session.
pub struct ArchivedSession {
    /// Its number among the peer's archived sessions (higher is newer).
    pub seq: u64,
    /// The session state as the caller stored it (opened).
    pub state: Zeroizing<Vec<u8>>,
}

fn seq_key(peer: &Key32, seq: i64) -> Vec<u8> {
    row_key(peer, &seq.to_be_bytes())
}

impl Rows<'_> {
    /// The current session with `peer`.
    pub fn session(&self, peer: &Key32) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT state FROM sessions WHERE peer = ?1")
            .and_then(|mut s| s.query_row([&peer[..]], |row| row.get(0)).optional())
            .map_err(self.fail("read a session"))?;
        sealed.map(|s| self.open(SESSIONS, peer, &s)).transpose()
    }

    /// Every current session, by peer.
    pub fn sessions(&self) -> Result<Vec<PeerSession>, StoreError> {
        let fail = self.fail("read sessions");
        let mut stmt = self
            .conn
            .prepare("SELECT peer, state FROM sessions ORDER BY peer")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (peer, sealed) = row.map_err(&fail)?;
            let peer: Key32 = self.fixed(peer, "sessions.peer")?;
            out.push((peer, self.open(SESSIONS, &peer, &sealed)?));
        }
        Ok(out)
    }

    /// The archived sessions with `peer`, newest first.
    pub fn archived_sessions(&self, peer: &Key32) -> Result<Vec<ArchivedSession>, StoreError> {
        let fail = self.fail("read archived sessions");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, state FROM archived_sessions WHERE peer = ?1 ORDER BY seq DESC")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([&peer[..]], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, sealed) = row.map_err(&fail)?;
            out.push(ArchivedSession {
                seq: u64_of(seq),
                state: self.open(ARCHIVED, &seq_key(peer, seq), &sealed)?,
            });
        }
        Ok(out)
    }

    /// True if `id` is among the ids of this kind recently received from `peer`.
    pub fn has_received(&self, peer: &Key32, kind: IdKind, id: &MsgId) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM received_ids WHERE peer = ?1 AND kind = ?2 AND id = ?3")
            .and_then(|mut s| s.exists(params![&peer[..], kind.code(), &id[..]]))
            .map_err(self.fail("read received ids"))
    }

    /// The ids of this kind recently received from `peer`, oldest first.
    pub fn received_ids(&self, peer: &Key32, kind: IdKind) -> Result<Vec<MsgId>, StoreError> {
        let fail = self.fail("read received ids");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM received_ids WHERE peer = ?1 AND kind = ?2 ORDER BY seq")
            .map_err(&fail)?;
        let rows = stmt
            .query_map(params![&peer[..], kind.code()], |row| row.get::<_, Vec<u8>>(0))
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(self.fixed(row.map_err(&fail)?, "received_ids.id")?);
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Stores the current session with `peer` (sealed), replacing the previous state.
    pub fn put_session(&self, peer: &Key32, state: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal(SESSIONS, peer, state)?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO sessions (peer, state) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![&peer[..], sealed]))
            .map(|_| ())
            .map_err(self.fail("put a session"))
    }

    /// Archives a session with `peer` as the newest, keeping the `keep` newest (the
    /// oldest beyond are deleted). Returns its number, or `None` if `keep` is 0.
    pub fn archive_session(
        &self,
        peer: &Key32,
        state: &[u8],
        keep: usize,
    ) -> Result<Option<u64>, StoreError> {
        if keep == 0 {
            return Ok(None);
        }
        let fail = self.fail("archive a session");
        let seq: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM archived_sessions WHERE peer = ?1",
                [&peer[..]],
                |row| row.get(0),
            )
            .map_err(&fail)?;
        let sealed = self.seal(ARCHIVED, &seq_key(peer, seq), state)?;
        self.conn
            .execute(
                "INSERT INTO archived_sessions (peer, seq, state) VALUES (?1, ?2, ?3)",
                params![&peer[..], seq, sealed],
            )
            .map_err(&fail)?;
        // At most a handful per peer: keeping by count is cheap and exact.
        self.conn
            .execute(
                "DELETE FROM archived_sessions WHERE peer = ?1 AND seq NOT IN
                 (SELECT seq FROM archived_sessions WHERE peer = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![&peer[..], sql_count(keep)],
            )
            .map_err(&fail)?;
        Ok(Some(u64_of(seq)))
    }

    /// Rewrites the archived session `seq` of `peer` with `state`; false if absent.
    pub fn rewrite_archived_session(&self, peer: &Key32, seq: u64, state: &[u8]) -> Result<bool, StoreError> {
        let sealed = self.seal(
            ARCHIVED,
            &seq_key(peer, i64::try_from(seq).unwrap_or(i64::MAX)),
            state,
        )?;
        self.conn
            .execute(
                "UPDATE archived_sessions SET state = ?3 WHERE peer = ?1 AND seq = ?2",
                params![&peer[..], sql_u64(seq), sealed],
            )
            .map(|n| n > 0)
            .map_err(self.fail("rewrite an archived session"))
    }

    /// Deletes one archived session (promoted to current); false if absent.
    pub fn remove_archived_session(&self, peer: &Key32, seq: u64) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM archived_sessions WHERE peer = ?1 AND seq = ?2",
                params![&peer[..], sql_u64(seq)],
            )
            .map(|n| n > 0)
            .map_err(self.fail("remove an archived session"))
    }

    /// Deletes everything of the ratchet with `peer`: the session, the archived ones
    /// and the received ids. Returns true if there was a current session.
    pub fn delete_peer_sessions(&self, peer: &Key32) -> Result<bool, StoreError> {
        let fail = self.fail("delete a peer's sessions");
        let had = self
            .conn
            .execute("DELETE FROM sessions WHERE peer = ?1", [&peer[..]])
            .map_err(&fail)?;
        for table in [
            "DELETE FROM archived_sessions WHERE peer = ?1",
            "DELETE FROM received_ids WHERE peer = ?1",
        ] {
            self.conn.execute(table, [&peer[..]]).map_err(&fail)?;
        }
        Ok(had > 0)
    }

    /// Records an id received from `peer`, keeping the `keep` most recent of its kind.
    /// Returns false (nothing written) if the id is already recorded.
    pub fn record_received(
        &self,
        peer: &Key32,
        kind: IdKind,
        id: &MsgId,
        keep: usize,
    ) -> Result<bool, StoreError> {
        if keep == 0 {
            return Ok(false);
        }
        let fail = self.fail("record a received id");
        let seq: i64 = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM received_ids WHERE peer = ?1 AND kind = ?2",
            )
            .and_then(|mut s| s.query_row(params![&peer[..], kind.code()], |row| row.get(0)))
            .map_err(&fail)?;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO received_ids (peer, kind, id, seq) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![&peer[..], kind.code(), &id[..], seq]))
            .map_err(&fail)?;
        if inserted == 0 {
            return Ok(false);
        }
        self.conn
            .prepare_cached("DELETE FROM received_ids WHERE peer = ?1 AND kind = ?2 AND seq <= ?3")
            .and_then(|mut s| {
                s.execute(params![
                    &peer[..],
                    kind.code(),
                    seq.saturating_sub(sql_count(keep))
                ])
            })
            .map_err(&fail)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;
    use super::*;

    const ALICE: Key32 = [0xa1; 32];
    const BOB: Key32 = [0xb0; 32];

    fn id(n: u32) -> MsgId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn sessions_are_stored_per_peer_and_replaced() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            tx.put_session(&ALICE, b"alice v1")?;
            tx.put_session(&BOB, b"bob v1")?;
            tx.put_session(&ALICE, b"alice v2")
        })
        .expect("put");
        let alice = db.rows().session(&ALICE).expect("read");
        assert_eq!(alice.as_deref().map(|s| s.to_vec()), Some(b"alice v2".to_vec()));
        let all: Vec<_> = (db.rows().sessions().expect("all").into_iter())
            .map(|(peer, state)| (peer[0], state.to_vec()))
            .collect();
        assert_eq!(all, [(0xa1, b"alice v2".to_vec()), (0xb0, b"bob v1".to_vec())]);
        assert!(db.rows().session(&[0; 32]).expect("read").is_none());
    }

    #[test]
    fn archived_sessions_keep_the_newest() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            for n in 1..=4u8 {
                tx.archive_session(&ALICE, &[n], 3)?;
            }
            tx.archive_session(&BOB, b"bob", 3)
        })
        .expect("archive");
        let states = |db: &super::super::StateDb| -> Vec<(u64, Vec<u8>)> {
            (db.rows().archived_sessions(&ALICE).expect("read").into_iter())
                .map(|a| (a.seq, a.state.to_vec()))
                .collect()
        };
        assert_eq!(states(&db), [(4, vec![4]), (3, vec![3]), (2, vec![2])]);
        // Promoting the middle one, then archiving the old current: three remain.
        db.transaction(|tx| {
            assert!(tx.remove_archived_session(&ALICE, 3)?);
            tx.archive_session(&ALICE, &[5], 3)
        })
        .expect("promote");
        assert_eq!(states(&db), [(5, vec![5]), (4, vec![4]), (2, vec![2])]);
        assert_eq!(db.rows().archived_sessions(&BOB).map(|a| a.len()).ok(), Some(1));
    }

    #[test]
    fn received_ids_are_bounded_per_peer_and_kind() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            for n in 0..10 {
                assert!(tx.record_received(&ALICE, IdKind::Relay, &id(n), 4)?);
            }
            assert!(
                !tx.record_received(&ALICE, IdKind::Relay, &id(9), 4)?,
                "already there"
            );
            tx.record_received(&ALICE, IdKind::Payload, &id(0), 4)?;
            tx.record_received(&BOB, IdKind::Relay, &id(0), 4)
        })
        .expect("record");
        let relay = db.rows().received_ids(&ALICE, IdKind::Relay).expect("read");
        assert_eq!(relay, [id(6), id(7), id(8), id(9)]);
        assert!(!db
            .rows()
            .has_received(&ALICE, IdKind::Relay, &id(5))
            .expect("read"));
        assert!(db
            .rows()
            .has_received(&ALICE, IdKind::Payload, &id(0))
            .expect("read"));
        assert!(db.rows().has_received(&BOB, IdKind::Relay, &id(0)).expect("read"));
        let count: i64 = db
            .conn_for_test()
            .query_row("SELECT COUNT(*) FROM received_ids", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 6);
    }

    #[test]
    fn deleting_a_peer_takes_its_ratchet_and_ids_only() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            for peer in [ALICE, BOB] {
                tx.put_session(&peer, b"s")?;
                tx.archive_session(&peer, b"old", 3)?;
                tx.record_received(&peer, IdKind::Relay, &id(1), 10)?;
            }
            Ok(())
        })
        .expect("fill");
        assert!(db
            .transaction(|tx| tx.delete_peer_sessions(&ALICE))
            .expect("delete"));
        assert!(db.rows().session(&ALICE).expect("read").is_none());
        assert!(db.rows().archived_sessions(&ALICE).expect("read").is_empty());
        assert!(db
            .rows()
            .received_ids(&ALICE, IdKind::Relay)
            .expect("read")
            .is_empty());
        assert!(db.rows().session(&BOB).expect("read").is_some());
        assert_eq!(
            db.rows().received_ids(&BOB, IdKind::Relay).expect("read"),
            [id(1)]
        );
    }

    #[test]
    fn a_session_moved_to_another_peer_does_not_open() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| tx.put_session(&ALICE, b"alice's ratchet"))
            .expect("put");
        db.conn_for_test()
            .execute("UPDATE sessions SET peer = ?1", [&BOB[..]])
            .expect("move");
        assert!(matches!(db.rows().session(&BOB), Err(StoreError::Corrupt { .. })));
    }
}
