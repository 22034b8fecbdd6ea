//! The group tables (docs/PROTOCOL.md 8): the OpenMLS storage (`mls_storage`, every value
//! sealed: it holds the groups' secrets), our groups by local name (`groups`), the group
//! outbox (`group_outbox`: uploads not yet stored by the relay, one group's in order;
//! the intent is sealed, it may hold a text) and the deliveries already read
//! (`group_received`).

use std::collections::{BTreeMap, HashMap};

use rusqlite::params;

use super::error::StoreError;
use super::state_db::{sql_count, Key32, MsgId, Rows, Tx};

/// How many read group deliveries are remembered (a redelivery of an older one is read
/// again, and OpenMLS refuses it as a replay).
pub const GROUP_RECEIVED_KEPT: usize = 10_000;

/// An upload in the group outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupOutboxRow {
    /// Its message id.
    pub msg_id: MsgId,
    /// The group.
    pub group_id: Vec<u8>,
    /// What it is for (opened; serialized by the caller).
    pub intent: Vec<u8>,
    /// The frame made for it, once made (the exact bytes sent again after a restart).
    pub frame: Option<Vec<u8>>,
}

impl std::fmt::Debug for GroupOutboxRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupOutboxRow")
            .field("msg_id", &hex::encode(self.msg_id))
            .field("group_id", &hex::encode(&self.group_id))
            .field("frame", &self.frame.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl Rows<'_> {
    /// The OpenMLS storage: every key and its (opened) value.
    pub fn mls_storage(&self) -> Result<HashMap<Vec<u8>, Vec<u8>>, StoreError> {
        let fail = self.fail("read the MLS storage");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM mls_storage")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(&fail)?;
        let mut out = HashMap::new();
        for row in rows {
            let (key, sealed) = row.map_err(&fail)?;
            let value = self.open("mls_storage", &key, &sealed)?;
            out.insert(key, value.to_vec());
        }
        Ok(out)
    }

    /// Our groups: id → local name.
    pub fn groups(&self) -> Result<BTreeMap<Vec<u8>, String>, StoreError> {
        let fail = self.fail("read the groups");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT group_id, name FROM groups")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// The group outbox, oldest first.
    pub fn group_outbox(&self) -> Result<Vec<GroupOutboxRow>, StoreError> {
        let fail = self.fail("read the group outbox");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT msg_id, group_id, intent, frame FROM group_outbox ORDER BY seq")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, Option<Vec<u8>>>(3)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (msg_id, group_id, sealed, frame) = row.map_err(&fail)?;
            let msg_id: MsgId = self.fixed(msg_id, "group_outbox.msg_id")?;
            out.push(GroupOutboxRow {
                intent: self.open("group_outbox", &msg_id, &sealed)?.to_vec(),
                msg_id,
                group_id,
                frame,
            });
        }
        Ok(out)
    }

    /// Whether the group delivery (sender, id) was read already.
    pub fn group_received(&self, sender: &Key32, msg_id: &MsgId) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM group_received WHERE sender = ?1 AND msg_id = ?2")
            .and_then(|mut s| s.exists(params![&sender[..], &msg_id[..]]))
            .map_err(self.fail("read group deliveries"))
    }
}

impl Tx<'_> {
    /// Writes the MLS storage changes: values to put and keys to delete.
    pub fn put_mls_storage(&self, put: &[(Vec<u8>, Vec<u8>)], deleted: &[Vec<u8>]) -> Result<(), StoreError> {
        let fail = self.fail("write the MLS storage");
        let mut insert = self
            .conn
            .prepare_cached("INSERT OR REPLACE INTO mls_storage (key, value) VALUES (?1, ?2)")
            .map_err(&fail)?;
        for (key, value) in put {
            insert
                .execute(params![key, self.seal("mls_storage", key, value)?])
                .map_err(&fail)?;
        }
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM mls_storage WHERE key = ?1")
            .map_err(&fail)?;
        for key in deleted {
            delete.execute(params![key]).map_err(&fail)?;
        }
        Ok(())
    }

    /// Replaces the groups table with `groups` (id → local name).
    pub fn put_groups(&self, groups: &BTreeMap<Vec<u8>, String>) -> Result<(), StoreError> {
        let fail = self.fail("write the groups");
        self.conn.execute("DELETE FROM groups", []).map_err(&fail)?;
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO groups (group_id, name) VALUES (?1, ?2)")
            .map_err(&fail)?;
        for (id, name) in groups {
            insert.execute(params![id, name]).map_err(&fail)?;
        }
        Ok(())
    }

    /// Adds an upload at the end of the group outbox, or updates its frame.
    pub fn put_group_outbox(&self, row: &GroupOutboxRow) -> Result<(), StoreError> {
        let sealed = self.seal("group_outbox", &row.msg_id, &row.intent)?;
        self.conn
            .prepare_cached(
                "INSERT INTO group_outbox (msg_id, group_id, intent, frame) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (msg_id) DO UPDATE SET intent = excluded.intent, frame = excluded.frame",
            )
            .and_then(|mut s| s.execute(params![&row.msg_id[..], &row.group_id, sealed, row.frame]))
            .map(|_| ())
            .map_err(self.fail("write the group outbox"))
    }

    /// Removes an upload from the group outbox.
    pub fn remove_group_outbox(&self, msg_id: &MsgId) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM group_outbox WHERE msg_id = ?1")
            .and_then(|mut s| s.execute(params![&msg_id[..]]))
            .map(|_| ())
            .map_err(self.fail("remove from the group outbox"))
    }

    /// Records a group delivery as read (keeping the last [`GROUP_RECEIVED_KEPT`]).
    pub fn put_group_received(&self, sender: &Key32, msg_id: &MsgId) -> Result<(), StoreError> {
        let fail = self.fail("record a group delivery");
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO group_received (sender, msg_id) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![&sender[..], &msg_id[..]]))
            .map_err(&fail)?;
        self.conn
            .prepare_cached(
                "DELETE FROM group_received WHERE seq <= (SELECT MAX(seq) FROM group_received) - ?1",
            )
            .and_then(|mut s| s.execute(params![sql_count(GROUP_RECEIVED_KEPT)]))
            .map_err(&fail)?;
        Ok(())
    }
}
