//! The SQLite engine's groups (docs/PROTOCOL.md 8.4: [`GroupTables`] inside a batch's
//! transaction) and KeyPackage directory (8.2), in the tables `groups`, `group_log`,
//! `key_packages` and `last_resort_key_packages`.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{id16, key32, sql_ms, Counts, SqliteStore};
use crate::store::group::{GroupRecord, GroupTables, GROUP_LOG_KEPT};
use crate::store::{
    IdentityBytes, MsgId, NewMessage, Quotas, StoreError, TakenKeyPackage, Usage, WriteResult,
};

/// The group tables inside a batch's transaction.
pub(super) struct SqliteGroups<'a, 'c> {
    pub(super) tx: &'a Transaction<'c>,
    pub(super) counts: &'a mut Counts,
}

impl GroupTables for SqliteGroups<'_, '_> {
    fn group(&mut self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError> {
        let record: Option<Vec<u8>> = self
            .tx
            .prepare_cached("SELECT record FROM groups WHERE group_id = ?1")?
            .query_row(params![group_id], |row| row.get(0))
            .optional()?;
        record.map(|r| GroupRecord::decode(&r)).transpose()
    }

    fn put_group(&mut self, group_id: &[u8], record: &GroupRecord) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO groups (group_id, record) VALUES (?1, ?2)
                 ON CONFLICT (group_id) DO UPDATE SET record = excluded.record",
            )?
            .execute(params![group_id, record.encode()])?;
        Ok(())
    }

    fn logged_commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<Option<(IdentityBytes, MsgId)>, StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .tx
            .prepare_cached("SELECT sender, msg_id FROM group_log WHERE group_id = ?1 AND epoch = ?2")?
            .query_row(params![group_id, sql_ms(epoch)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        row.map(|(sender, msg_id)| Ok((key32(sender)?, id16(msg_id)?)))
            .transpose()
    }

    fn log_commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
        sender: &IdentityBytes,
        msg_id: &MsgId,
        commit: &[u8],
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO group_log (group_id, epoch, sender, msg_id, commit_message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![group_id, sql_ms(epoch), &sender[..], &msg_id[..], commit])?;
        self.tx
            .prepare_cached("DELETE FROM group_log WHERE group_id = ?1 AND epoch < ?2")?
            .execute(params![
                group_id,
                sql_ms(epoch.saturating_sub(GROUP_LOG_KEPT - 1))
            ])?;
        Ok(())
    }

    fn append(&mut self, message: &NewMessage) -> Result<WriteResult, StoreError> {
        SqliteStore::append(self.tx, self.counts, message, &Quotas::UNLIMITED)
    }

    fn queue_len(&mut self, recipient: &IdentityBytes) -> Result<u64, StoreError> {
        self.counts.queue_len(self.tx, recipient)
    }

    fn sender_usage(&mut self, sender: &IdentityBytes) -> Result<Usage, StoreError> {
        self.counts.sender(self.tx, sender)
    }

    fn stored_usage(&mut self) -> Result<Usage, StoreError> {
        self.counts.stored(self.tx)
    }
}

/// One-time KeyPackages held for `owner`.
fn key_packages_held(tx: &Transaction<'_>, owner: &IdentityBytes) -> Result<u32, StoreError> {
    let n: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM key_packages WHERE identity = ?1")?
        .query_row(params![&owner[..]], |row| row.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Adds `owner`'s one-time KeyPackages (up to `max_held`) and replaces its last-resort one
/// when given; the one-time KeyPackages now held.
pub(super) fn publish_key_packages(
    tx: &Transaction<'_>,
    owner: &IdentityBytes,
    packages: &[Vec<u8>],
    last_resort: Option<&[u8]>,
    max_held: u32,
) -> Result<u32, StoreError> {
    let mut held = key_packages_held(tx, owner)?;
    {
        let mut insert = tx.prepare_cached("INSERT INTO key_packages (identity, package) VALUES (?1, ?2)")?;
        for package in packages {
            if held >= max_held {
                break;
            }
            insert.execute(params![&owner[..], package])?;
            held += 1;
        }
    }
    if let Some(package) = last_resort {
        tx.execute(
            "INSERT INTO last_resort_key_packages (identity, package) VALUES (?1, ?2)
             ON CONFLICT (identity) DO UPDATE SET package = excluded.package",
            params![&owner[..], package],
        )?;
    }
    Ok(held)
}

/// Takes `owner`'s oldest one-time KeyPackage when `one_time` and one is left, else a
/// copy of its last-resort one.
pub(super) fn take_key_package(
    tx: &Transaction<'_>,
    owner: &IdentityBytes,
    one_time: bool,
) -> Result<Option<TakenKeyPackage>, StoreError> {
    let first: Option<(i64, Vec<u8>)> = if one_time {
        tx.query_row(
            "SELECT id, package FROM key_packages WHERE identity = ?1 ORDER BY id LIMIT 1",
            params![&owner[..]],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?
    } else {
        None
    };
    let taken = match first {
        Some((id, package)) => {
            tx.execute("DELETE FROM key_packages WHERE id = ?1", params![id])?;
            Some((package, true))
        }
        None => tx
            .query_row(
                "SELECT package FROM last_resort_key_packages WHERE identity = ?1",
                params![&owner[..]],
                |row| row.get(0),
            )
            .optional()?
            .map(|package| (package, false)),
    };
    let remaining = key_packages_held(tx, owner)?;
    Ok(taken.map(|(package, one_time)| TakenKeyPackage {
        package,
        one_time,
        remaining,
    }))
}
