//! The `correspondents` rows: the peers this agent has written a text to. Automatic
//! replies (end-to-end receipts) go only to them, so an identity the user never wrote
//! to cannot make the agent spend its own relay storage quota (docs/AGENT.md 6).

use rusqlite::params;

use super::error::StoreError;
use super::state_db::{sql_u64, Key32, Rows, Tx};

impl Rows<'_> {
    /// Every correspondent.
    pub fn correspondents(&self) -> Result<Vec<Key32>, StoreError> {
        let fail = self.fail("read the correspondents");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT peer FROM correspondents")
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| row.get::<_, Vec<u8>>(0))
            .map_err(&fail)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(self.fixed(row.map_err(&fail)?, "correspondents.peer")?);
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Records `peer` as a correspondent since `since_ms` (ms since the Unix epoch).
    /// Returns false if it already was one.
    pub fn add_correspondent(&self, peer: &Key32, since_ms: u64) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO correspondents (peer, since_ms) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![&peer[..], sql_u64(since_ms)]))
            .map_err(self.fail("record a correspondent"))?;
        Ok(changed == 1)
    }
}
