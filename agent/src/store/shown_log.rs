//! [`ShownLog`]: `state.shown` in the state directory, the record that a received text
//! was printed, written just before its print.
//!
//! A received text waits in the `unshown` table from the commit of its message until it
//! is printed. Deleting its row with an SQLite commit just before the print left a
//! window after the commit's WAL write (the rest of the commit: index, locks) in which
//! a `kill -9` lost the text's display; with a burst of texts printed one after the
//! other that window was hit a quarter of the time. Here the record is one `write(2)` of
//! 48 bytes (`peer || msg_id`) to a file opened for appending, made after the line to
//! print is ready: only the return from that write and the start of the print's write
//! lie between the two.
//!
//! The rows of the recorded texts are deleted in one transaction after the burst
//! ([`ShownLog::entries`], then [`ShownLog::clear`]); at start the same is done before
//! the texts still unshown are shown. A record survives a crash of the process (it is
//! in the page cache), not a power loss (the text is then shown again, with its
//! `msg_id`). The file holds identity keys and message ids, no secret, and is 0600.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::private_files::{check_private, exists, FILE_MODE};
use super::state_db::{Key32, MsgId};

/// The file name, in the state directory.
pub const SHOWN_FILE: &str = "state.shown";
/// One record: the sender's identity key, then the message id.
const RECORD_LEN: usize = 32 + 16;

/// The open log.
#[derive(Debug)]
pub struct ShownLog {
    file: File,
    path: PathBuf,
}

impl ShownLog {
    /// Opens (or creates, 0600) `dir/state.shown`. An existing file that other users
    /// can read is refused, as for the database.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(SHOWN_FILE);
        if exists(&path)? {
            check_private(&path, false)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| StoreError::io(&path, "open", e))?;
        Ok(Self { file, path })
    }

    /// Records that the text `msg_id` from `peer` is about to be printed: one write.
    pub fn record(&mut self, peer: &Key32, msg_id: &MsgId) -> Result<(), StoreError> {
        let mut record = [0u8; RECORD_LEN];
        record[..32].copy_from_slice(peer);
        record[32..].copy_from_slice(msg_id);
        self.file
            .write_all(&record)
            .map_err(|e| StoreError::io(&self.path, "append to", e))
    }

    /// Every complete record, oldest first (a partial last record, from a write cut
    /// short by a full disk, is ignored).
    pub fn entries(&mut self) -> Result<Vec<(Key32, MsgId)>, StoreError> {
        let mut bytes = Vec::new();
        let mut reader = File::open(&self.path).map_err(|e| StoreError::io(&self.path, "open", e))?;
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(&self.path, "read", e))?;
        Ok(bytes
            .chunks_exact(RECORD_LEN)
            .map(|r| {
                let mut peer = [0u8; 32];
                let mut id = [0u8; 16];
                peer.copy_from_slice(&r[..32]);
                id.copy_from_slice(&r[32..]);
                (peer, id)
            })
            .collect())
    }

    /// Empties the log (after the rows of its entries were deleted).
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .map_err(|e| StoreError::io(&self.path, "truncate", e))
    }

    /// True if nothing is recorded.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let len = (self.file.metadata())
            .map_err(|e| StoreError::io(&self.path, "read the size of", e))?
            .len();
        Ok(len < RECORD_LEN as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_in_order_and_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = ShownLog::open(dir.path()).expect("open");
        assert!(log.is_empty().expect("size"));
        log.record(&[1; 32], &[2; 16]).expect("record");
        log.record(&[3; 32], &[4; 16]).expect("record");
        assert_eq!(
            log.entries().expect("entries"),
            vec![([1; 32], [2; 16]), ([3; 32], [4; 16])]
        );
        // A partial record (a write cut short) is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(SHOWN_FILE))
            .and_then(|mut f| f.write_all(&[9; 10]))
            .expect("partial");
        assert_eq!(log.entries().expect("entries").len(), 2);
        log.clear().expect("clear");
        assert!(log.is_empty().expect("size"));
        log.record(&[5; 32], &[6; 16]).expect("record after clear");
        assert_eq!(log.entries().expect("entries"), vec![([5; 32], [6; 16])]);
        drop(log);
        let reopened = ShownLog::open(dir.path()).expect("reopen");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(SHOWN_FILE))
                .expect("meta")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        drop(reopened);
    }
}
