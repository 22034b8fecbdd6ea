//! The prekey tables: signed prekeys (current and retired), one-time prekeys and the
//! base keys of accepted handshakes, as rows, so that consuming one one-time prekey or
//! remembering one base key is one row operation in the message's transaction
//! (`protocol::prekey::PreKeyStore` is the in-memory form they mirror).
//!
//! Secrets are sealed under the public key of their row; public keys, signatures and
//! base keys are stored as they are.

use rusqlite::{params, OptionalExtension};
use zeroize::Zeroizing;

use super::error::StoreError;
use super::state_db::{sql_u64, u64_of, Key32, Rows, Tx};

const SIGNED: &str = "signed_prekeys";
const ONE_TIME: &str = "one_time_prekeys";

/// A stored signed prekey.
pub struct SignedPreKeyRow {
    /// Its public key.
    pub public: Key32,
    /// Its private key, as the caller stored it (opened).
    pub secret: Zeroizing<Vec<u8>>,
    /// The identity's signature over it.
    pub signature: Vec<u8>,
    /// When it was made, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it stopped being current; `None` for the current one.
    pub retired_ms: Option<u64>,
    /// True once the relay confirmed storing it.
    pub published: bool,
}

/// A signed prekey to store.
#[derive(Clone, Copy)]
pub struct NewSignedPreKey<'a> {
    /// Its public key.
    pub public: &'a Key32,
    /// Its private key bytes (sealed).
    pub secret: &'a [u8],
    /// The identity's signature over it.
    pub signature: &'a [u8],
    /// When it was made, ms since the Unix epoch.
    pub created_ms: u64,
    /// `None` to store it as the current one (there must be none).
    pub retired_ms: Option<u64>,
    /// True if the relay already stores it (an import).
    pub published: bool,
}

/// A stored one-time prekey.
pub struct OneTimePreKeyRow {
    /// Its public key.
    pub public: Key32,
    /// Its private key, as the caller stored it (opened).
    pub secret: Zeroizing<Vec<u8>>,
    /// When the relay was first found to have handed it out, ms since the Unix epoch.
    pub handed_out_ms: Option<u64>,
    /// True once the relay confirmed storing it.
    pub published: bool,
}

impl Rows<'_> {
    /// The signed prekeys: the current one first, then the retired ones, newest first.
    pub fn signed_prekeys(&self) -> Result<Vec<SignedPreKeyRow>, StoreError> {
        let fail = self.fail("read signed prekeys");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT public, secret, signature, created_ms, retired_ms, published FROM signed_prekeys
                 ORDER BY retired_ms IS NOT NULL, retired_ms DESC, created_ms DESC",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                    row.get::<_, bool>(5)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (public, sealed, signature, created_ms, retired_ms, published) = row.map_err(&fail)?;
            let public: Key32 = self.fixed(public, "signed_prekeys.public")?;
            out.push(SignedPreKeyRow {
                secret: self.open(SIGNED, &public, &sealed)?,
                public,
                signature,
                created_ms: u64_of(created_ms),
                retired_ms: retired_ms.map(u64_of),
                published,
            });
        }
        Ok(out)
    }

    /// The unused one-time prekeys, oldest first.
    pub fn one_time_prekeys(&self) -> Result<Vec<OneTimePreKeyRow>, StoreError> {
        let fail = self.fail("read one-time prekeys");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT public, secret, handed_out_ms, published FROM one_time_prekeys ORDER BY seq",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, bool>(3)?,
                ))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (public, sealed, handed_out_ms, published) = row.map_err(&fail)?;
            let public: Key32 = self.fixed(public, "one_time_prekeys.public")?;
            out.push(OneTimePreKeyRow {
                secret: self.open(ONE_TIME, &public, &sealed)?,
                public,
                handed_out_ms: handed_out_ms.map(u64_of),
                published,
            });
        }
        Ok(out)
    }

    /// The private key of an unused one-time prekey.
    pub fn one_time_prekey(&self, public: &Key32) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT secret FROM one_time_prekeys WHERE public = ?1")
            .and_then(|mut s| s.query_row([&public[..]], |row| row.get(0)).optional())
            .map_err(self.fail("read a one-time prekey"))?;
        sealed.map(|s| self.open(ONE_TIME, public, &s)).transpose()
    }

    /// How many unused one-time prekeys are held.
    pub fn one_time_count(&self) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM one_time_prekeys", [], |row| row.get(0))
            .map_err(self.fail("count one-time prekeys"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// True if a handshake with `base_key` was accepted under `signed_prekey`.
    pub fn has_base_key(&self, signed_prekey: &Key32, base_key: &Key32) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM base_keys WHERE signed_prekey = ?1 AND base_key = ?2")
            .and_then(|mut s| s.exists([&signed_prekey[..], &base_key[..]]))
            .map_err(self.fail("read base keys"))
    }

    /// Every remembered `(signed prekey, base key)` pair (loaded once at start).
    pub fn base_keys(&self) -> Result<Vec<(Key32, Key32)>, StoreError> {
        let fail = self.fail("read base keys");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT signed_prekey, base_key FROM base_keys")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            let (spk, base) = row.map_err(&fail)?;
            out.push((
                self.fixed(spk, "base_keys.signed_prekey")?,
                self.fixed(base, "base_keys.base_key")?,
            ));
        }
        Ok(out)
    }

    /// How many base keys are remembered under `signed_prekey`.
    pub fn base_key_count(&self, signed_prekey: &Key32) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM base_keys WHERE signed_prekey = ?1")
            .and_then(|mut s| s.query_row([&signed_prekey[..]], |row| row.get(0)))
            .map_err(self.fail("count base keys"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

impl Tx<'_> {
    /// Stores a signed prekey. A second current one (`retired_ms: None`) is refused by
    /// the schema: retire the current one first ([`Tx::retire_signed_prekey`]).
    pub fn put_signed_prekey(&self, key: NewSignedPreKey<'_>) -> Result<(), StoreError> {
        let sealed = self.seal(SIGNED, key.public, key.secret)?;
        self.conn
            .execute(
                "INSERT INTO signed_prekeys (public, secret, signature, created_ms, retired_ms, published)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    &key.public[..],
                    sealed,
                    key.signature,
                    sql_u64(key.created_ms),
                    key.retired_ms.map(sql_u64),
                    key.published
                ],
            )
            .map(|_| ())
            .map_err(self.fail("put a signed prekey"))
    }

    /// Retires the current signed prekey at `now_ms`; false if there was none.
    pub fn retire_signed_prekey(&self, now_ms: u64) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "UPDATE signed_prekeys SET retired_ms = ?1 WHERE retired_ms IS NULL",
                [sql_u64(now_ms)],
            )
            .map(|n| n > 0)
            .map_err(self.fail("retire the signed prekey"))
    }

    /// Deletes a signed prekey and the base keys accepted under it; false if absent.
    pub fn delete_signed_prekey(&self, public: &Key32) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM signed_prekeys WHERE public = ?1", [&public[..]])
            .map(|n| n > 0)
            .map_err(self.fail("delete a signed prekey"))
    }

    /// Records that the relay stores the current signed prekey.
    pub fn mark_signed_published(&self) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE signed_prekeys SET published = 1 WHERE retired_ms IS NULL",
                [],
            )
            .map(|_| ())
            .map_err(self.fail("mark the signed prekey published"))
    }

    /// Appends a one-time prekey (the newest). False, with nothing written, if its
    /// public key is already stored.
    pub fn add_one_time_prekey(
        &self,
        public: &Key32,
        secret: &[u8],
        handed_out_ms: Option<u64>,
        published: bool,
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(ONE_TIME, public, secret)?;
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO one_time_prekeys (public, secret, handed_out_ms, published)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    &public[..],
                    sealed,
                    handed_out_ms.map(sql_u64),
                    published
                ])
            })
            .map(|n| n > 0)
            .map_err(self.fail("add a one-time prekey"))
    }

    /// Deletes a one-time prekey and returns its private key (a PreKey message used
    /// it): `None` if it is not (or no longer) held.
    pub fn take_one_time_prekey(&self, public: &Key32) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let secret = self.one_time_prekey(public)?;
        if secret.is_some() {
            self.delete_one_time_prekey(public)?;
        }
        Ok(secret)
    }

    /// Deletes a one-time prekey (aged out, or used); false if absent.
    pub fn delete_one_time_prekey(&self, public: &Key32) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM one_time_prekeys WHERE public = ?1")
            .and_then(|mut s| s.execute([&public[..]]))
            .map(|n| n > 0)
            .map_err(self.fail("delete a one-time prekey"))
    }

    /// Records when the relay was first found to have handed `public` out (kept if
    /// already set); false if the key is absent or already marked.
    pub fn mark_handed_out(&self, public: &Key32, now_ms: u64) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "UPDATE one_time_prekeys SET handed_out_ms = ?2 WHERE public = ?1 AND handed_out_ms IS NULL",
                params![&public[..], sql_u64(now_ms)],
            )
            .map(|n| n > 0)
            .map_err(self.fail("mark a one-time prekey handed out"))
    }

    /// Records that the relay stores every one-time prekey held; returns how many
    /// were newly marked.
    pub fn mark_one_time_published(&self) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE one_time_prekeys SET published = 1 WHERE published = 0",
                [],
            )
            .map_err(self.fail("mark one-time prekeys published"))
    }

    /// Remembers the base key of a handshake accepted under `signed_prekey` (which must
    /// be stored). Returns false if it was already remembered: a replayed PreKey
    /// message, which must not be accepted.
    pub fn record_base_key(&self, signed_prekey: &Key32, base_key: &Key32) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO base_keys (signed_prekey, base_key) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute([&signed_prekey[..], &base_key[..]]))
            .map(|n| n > 0)
            .map_err(self.fail("record a base key"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_db::test_db;
    use super::*;

    fn signed(public: &Key32, created_ms: u64) -> NewSignedPreKey<'_> {
        NewSignedPreKey {
            public,
            secret: &[0xee; 32],
            signature: &[0x51; 64],
            created_ms,
            retired_ms: None,
            published: false,
        }
    }

    #[test]
    fn signed_prekeys_rotate_and_take_their_base_keys_with_them() {
        let (_dir, mut db) = test_db();
        let (first, second) = ([1u8; 32], [2u8; 32]);
        db.transaction(|tx| {
            tx.put_signed_prekey(signed(&first, 10))?;
            tx.mark_signed_published()?;
            assert!(tx.record_base_key(&first, &[9; 32])?);
            assert!(!tx.record_base_key(&first, &[9; 32])?, "a replay is refused");
            Ok(())
        })
        .expect("first");
        // A second current signed prekey is refused; rotation retires the first.
        assert!(db
            .transaction(|tx| tx.put_signed_prekey(signed(&second, 20)))
            .is_err());
        db.transaction(|tx| {
            assert!(tx.retire_signed_prekey(20)?);
            tx.put_signed_prekey(signed(&second, 20))
        })
        .expect("rotate");
        let keys = db.rows().signed_prekeys().expect("read");
        let shape: Vec<_> = keys
            .iter()
            .map(|k| (k.public[0], k.retired_ms, k.published))
            .collect();
        assert_eq!(shape, [(2, None, false), (1, Some(20), true)]);
        assert_eq!(&keys[0].secret[..], &[0xee; 32]);
        assert_eq!(keys[0].signature, [0x51; 64]);
        assert!(db.rows().has_base_key(&first, &[9; 32]).expect("read"));

        db.transaction(|tx| tx.delete_signed_prekey(&first))
            .expect("expire");
        assert!(!db.rows().has_base_key(&first, &[9; 32]).expect("read"));
        assert_eq!(db.rows().base_key_count(&first).ok(), Some(0));
        // A base key needs its signed prekey.
        assert!(db.transaction(|tx| tx.record_base_key(&first, &[8; 32])).is_err());
    }

    #[test]
    fn one_time_prekeys_keep_their_order_and_are_taken_once() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            for n in 1..=3u8 {
                assert!(tx.add_one_time_prekey(&[n; 32], &[n + 100; 32], None, false)?);
            }
            assert!(!tx.add_one_time_prekey(&[1; 32], &[0; 32], None, false)?);
            Ok(())
        })
        .expect("add");
        assert_eq!(db.rows().one_time_count().ok(), Some(3));
        let taken = db
            .transaction(|tx| tx.take_one_time_prekey(&[2; 32]))
            .expect("take");
        assert_eq!(taken.as_deref().map(|s| s.to_vec()), Some(vec![102; 32]));
        let again = db
            .transaction(|tx| tx.take_one_time_prekey(&[2; 32]))
            .expect("take again");
        assert!(again.is_none());
        db.transaction(|tx| {
            assert!(tx.mark_handed_out(&[1; 32], 50)?);
            assert!(!tx.mark_handed_out(&[1; 32], 60)?, "the first mark stays");
            assert_eq!(tx.mark_one_time_published()?, 2);
            Ok(())
        })
        .expect("mark");
        let keys = db.rows().one_time_prekeys().expect("read");
        let shape: Vec<_> = keys
            .iter()
            .map(|k| (k.public[0], k.secret[0], k.handed_out_ms, k.published))
            .collect();
        assert_eq!(shape, [(1, 101, Some(50), true), (3, 103, None, true)]);
    }

    #[test]
    fn a_one_time_secret_does_not_open_under_another_public_key() {
        let (_dir, mut db) = test_db();
        db.transaction(|tx| {
            tx.add_one_time_prekey(&[1; 32], &[11; 32], None, false)?;
            tx.add_one_time_prekey(&[2; 32], &[22; 32], None, false)
        })
        .expect("add");
        // Swap the sealed secrets of the two rows behind the store's back.
        db.conn_for_test()
            .execute_batch(
                "UPDATE one_time_prekeys SET secret = (SELECT secret FROM one_time_prekeys WHERE seq = 2)
                 WHERE seq = 1",
            )
            .expect("swap");
        let err = db.rows().one_time_prekey(&[1; 32]).expect_err("must not open");
        assert!(matches!(err, StoreError::Corrupt { .. }));
        assert!(err.to_string().contains("one_time_prekeys"), "{err}");
    }
}
