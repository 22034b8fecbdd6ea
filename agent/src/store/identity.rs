//! The `identity` row: the agent's name, its identity key seed (sealed) and the release
//! of its name (`/release-name`).

use rusqlite::{params, OptionalExtension};
use zeroize::Zeroizing;

use super::error::StoreError;
use super::state_db::{sql_u64, u64_of, Rows, Tx};

const TABLE: &str = "identity";
/// The row key the seed is sealed under (the table has one row).
const ROW: &[u8] = b"1";

/// The stored identity.
pub struct StoredIdentity {
    /// The agent's name.
    pub name: String,
    /// The identity key seed as the caller stored it (opened).
    pub seed: Zeroizing<Vec<u8>>,
    /// The release of the name, if one was issued and not taken back.
    pub name_release: Option<NameReleaseRow>,
}

impl std::fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredIdentity")
            .field("name", &self.name)
            .field("name_release", &self.name_release)
            .finish_non_exhaustive()
    }
}

/// A release of the agent's own name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameReleaseRow {
    /// The `issued_ms` signed into the release, ms since the Unix epoch.
    pub issued_ms: u64,
    /// True once the relay confirmed it binds no name to us.
    pub confirmed: bool,
}

impl Rows<'_> {
    /// The stored identity, `None` before [`Tx::put_identity`].
    pub fn identity(&self) -> Result<Option<StoredIdentity>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT name, seed, name_release_ms, name_release_confirmed FROM identity WHERE id = 1",
                [],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                        row.get::<_, bool>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(self.fail("read identity"))?;
        let Some((name, sealed, release_ms, confirmed)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredIdentity {
            name,
            seed: self.open(TABLE, ROW, &sealed)?,
            name_release: release_ms.map(|ms| NameReleaseRow {
                issued_ms: u64_of(ms),
                confirmed,
            }),
        }))
    }
}

impl Tx<'_> {
    /// Stores the identity (name and seed, sealed), replacing any, with no name release.
    pub fn put_identity(&self, name: &str, seed: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal(TABLE, ROW, seed)?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO identity (id, name, seed, name_release_ms, name_release_confirmed)
                 VALUES (1, ?1, ?2, NULL, 0)",
                params![name, sealed],
            )
            .map(|_| ())
            .map_err(self.fail("put identity"))
    }

    /// Records a release of the name (or, with `None`, that it is claimed again).
    /// Errors with [`StoreError::Corrupt`] if no identity is stored.
    pub fn set_name_release(&self, release: Option<NameReleaseRow>) -> Result<(), StoreError> {
        let (ms, confirmed) = match release {
            Some(r) => (Some(sql_u64(r.issued_ms)), r.confirmed),
            None => (None, false),
        };
        let changed = self
            .conn
            .execute(
                "UPDATE identity SET name_release_ms = ?1, name_release_confirmed = ?2 WHERE id = 1",
                params![ms, confirmed],
            )
            .map_err(self.fail("set name release"))?;
        if changed == 0 {
            return Err(self.corrupt("no identity to record a name release for"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;
    use super::*;

    #[test]
    fn identity_round_trips_with_its_name_release() {
        let (_dir, mut db) = test_db();
        assert!(db.rows().identity().expect("read").is_none());
        db.transaction(|tx| tx.put_identity("alice", &[7; 32]))
            .expect("put");
        let stored = db.rows().identity().expect("read").expect("stored");
        assert_eq!(stored.name, "alice");
        assert_eq!(&stored.seed[..], &[7; 32]);
        assert_eq!(stored.name_release, None);
        assert!(!format!("{stored:?}").contains('7'));

        let release = NameReleaseRow {
            issued_ms: 1_700_000_000_000,
            confirmed: true,
        };
        db.transaction(|tx| tx.set_name_release(Some(release)))
            .expect("release");
        let stored = db.rows().identity().expect("read").expect("stored");
        assert_eq!(stored.name_release, Some(release));
        db.transaction(|tx| tx.set_name_release(None)).expect("claim");
        let stored = db.rows().identity().expect("read").expect("stored");
        assert_eq!(stored.name_release, None);
    }

    #[test]
    fn a_name_release_needs_an_identity() {
        let (_dir, mut db) = test_db();
        let err = db
            .transaction(|tx| tx.set_name_release(None))
            .expect_err("no identity");
        assert!(matches!(err, StoreError::Corrupt { .. }));
    }
}
