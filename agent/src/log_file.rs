//! The agent's log file in the state directory (`agent.log`, owner only), used when the
//! line editor owns the terminal: logs written to stderr would land between the chat
//! lines.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Its name in the state directory.
pub const LOG_FILE: &str = "agent.log";

/// Opens `<state_dir>/agent.log` for appending, mode 0600 (the directory is created
/// 0700 if it does not exist yet, as the state does). Returns the file and its path.
pub fn open_log_file(state_dir: &Path) -> io::Result<(File, PathBuf)> {
    DirBuilder::new().recursive(true).mode(0o700).create(state_dir)?;
    let path = state_dir.join(LOG_FILE);
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)?;
    // An older file keeps its mode when opened: make it owner only, whatever it was.
    file.set_permissions(Permissions::from_mode(0o600))?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn log_file_is_owner_only_and_appended() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let (mut file, path) = open_log_file(&dir).expect("open");
        io::Write::write_all(&mut file, b"one\n").expect("write");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        let (mut again, _) = open_log_file(&dir).expect("open again");
        io::Write::write_all(&mut again, b"two\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).expect("stat").mode() & 0o777, 0o700);
    }
}
