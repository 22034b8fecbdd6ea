//! The pin rows (`crate::pins::PinBook` as tables): the identity pinned per name, the
//! pending identity changes per name (oldest first) and the rejected identities.
//! Nothing here is secret: names and identities are stored as they are.

use rusqlite::params;

use super::error::StoreError;
use super::state_db::{sql_u64, u64_of, Key32, Rows, Tx};

/// A pinned identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinRow {
    /// The pinned identity.
    pub identity: Key32,
    /// True once the user compared safety numbers.
    pub verified: bool,
    /// When the identity was first seen for the name, ms since the Unix epoch.
    pub first_seen_ms: u64,
}

/// Which list of identities per name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinList {
    /// Identity changes waiting for the user's decision (`pending_pins`).
    Pending,
    /// Identities the user rejected (`rejected_pins`).
    Rejected,
}

impl PinList {
    fn table(self) -> &'static str {
        match self {
            Self::Pending => "pending_pins",
            Self::Rejected => "rejected_pins",
        }
    }
}

impl Rows<'_> {
    /// Every pin, by name.
    pub fn pins(&self) -> Result<Vec<(String, PinRow)>, StoreError> {
        let fail = self.fail("read pins");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, identity, verified, first_seen_ms FROM pins ORDER BY name")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, bool>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (name, identity, verified, first_seen_ms) = row.map_err(&fail)?;
            out.push((
                name,
                PinRow {
                    identity: self.fixed(identity, "pins.identity")?,
                    verified,
                    first_seen_ms: u64_of(first_seen_ms),
                },
            ));
        }
        Ok(out)
    }

    /// Every `(name, identity)` of a list, by name, each name's oldest first.
    pub fn pin_list(&self, list: PinList) -> Result<Vec<(String, Key32)>, StoreError> {
        let fail = self.fail("read pin lists");
        let sql = format!("SELECT name, identity FROM {} ORDER BY name, seq", list.table());
        let mut stmt = self.conn.prepare_cached(&sql).map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (name, identity) = row.map_err(&fail)?;
            out.push((name, self.fixed(identity, "pin list identity")?));
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Pins `name` to an identity, replacing its pin.
    pub fn put_pin(&self, name: &str, pin: &PinRow) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO pins (name, identity, verified, first_seen_ms) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![name, &pin.identity[..], pin.verified, sql_u64(pin.first_seen_ms)]))
            .map(|_| ())
            .map_err(self.fail("put a pin"))
    }

    /// Deletes the pin of `name`; false if absent.
    pub fn remove_pin(&self, name: &str) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM pins WHERE name = ?1", [name])
            .map(|n| n > 0)
            .map_err(self.fail("remove a pin"))
    }

    /// Adds an identity to a list of `name` (as its newest); false if already listed.
    pub fn add_to_pin_list(&self, list: PinList, name: &str, identity: &Key32) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT OR IGNORE INTO {} (name, identity) VALUES (?1, ?2)",
            list.table()
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.execute(params![name, &identity[..]]))
            .map(|n| n > 0)
            .map_err(self.fail("add to a pin list"))
    }

    /// Deletes an identity (or, with `None`, every identity) from a list of `name`;
    /// returns how many were deleted.
    pub fn remove_from_pin_list(
        &self,
        list: PinList,
        name: &str,
        identity: Option<&Key32>,
    ) -> Result<usize, StoreError> {
        let fail = self.fail("remove from a pin list");
        match identity {
            Some(identity) => {
                let sql = format!("DELETE FROM {} WHERE name = ?1 AND identity = ?2", list.table());
                self.conn
                    .execute(&sql, params![name, &identity[..]])
                    .map_err(fail)
            }
            None => {
                let sql = format!("DELETE FROM {} WHERE name = ?1", list.table());
                self.conn.execute(&sql, [name]).map_err(fail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;
    use super::*;

    fn pin(byte: u8, verified: bool) -> PinRow {
        PinRow {
            identity: [byte; 32],
            verified,
            first_seen_ms: u64::from(byte) * 1000,
        }
    }

    #[test]
    fn pins_are_replaced_and_removed_by_name() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            tx.put_pin("bob", &pin(2, false))?;
            tx.put_pin("alice", &pin(1, false))?;
            tx.put_pin("bob", &pin(3, true))
        })
        .expect("put");
        let pins = db.rows().pins().expect("read");
        assert_eq!(
            pins,
            [
                ("alice".to_owned(), pin(1, false)),
                ("bob".to_owned(), pin(3, true))
            ]
        );
        assert!(db.transaction(|tx| tx.remove_pin("alice")).expect("remove"));
        assert!(!db.transaction(|tx| tx.remove_pin("alice")).expect("again"));
        assert_eq!(db.rows().pins().map(|p| p.len()).ok(), Some(1));
    }

    #[test]
    fn pending_and_rejected_lists_keep_arrival_order_per_name() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            assert!(tx.add_to_pin_list(PinList::Pending, "bob", &[9; 32])?);
            assert!(tx.add_to_pin_list(PinList::Pending, "alice", &[5; 32])?);
            assert!(tx.add_to_pin_list(PinList::Pending, "bob", &[7; 32])?);
            assert!(!tx.add_to_pin_list(PinList::Pending, "bob", &[9; 32])?);
            assert!(tx.add_to_pin_list(PinList::Rejected, "bob", &[9; 32])?);
            Ok(())
        })
        .expect("add");
        let pending = db.rows().pin_list(PinList::Pending).expect("read");
        let shape: Vec<_> = pending.iter().map(|(n, i)| (n.as_str(), i[0])).collect();
        assert_eq!(shape, [("alice", 5), ("bob", 9), ("bob", 7)]);
        let removed = db
            .transaction(|tx| tx.remove_from_pin_list(PinList::Pending, "bob", None))
            .expect("clear");
        assert_eq!(removed, 2);
        let removed = db
            .transaction(|tx| tx.remove_from_pin_list(PinList::Pending, "alice", Some(&[5; 32])))
            .expect("remove");
        assert_eq!(removed, 1);
        assert!(db.rows().pin_list(PinList::Pending).expect("read").is_empty());
        assert_eq!(db.rows().pin_list(PinList::Rejected).expect("read").len(), 1);
    }
}
