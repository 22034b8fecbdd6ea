//! Agent names: 1..=64 bytes of `[a-z0-9._-]` (so ASCII, lowercase), the names that
//! signed name claims and releases carry (docs/PROTOCOL.md 5).

use thiserror::Error;

use crate::frame::MAX_NAME_LEN;

/// Why a name is not a valid agent name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameClaimError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {len} bytes, over the limit of {MAX_NAME_LEN}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[a-z0-9._-]`.
    #[error("name contains {ch:?}: only lowercase a-z, digits 0-9, '.', '_' and '-' are allowed")]
    InvalidChar {
        /// The first character that is not allowed.
        ch: char,
    },
}

/// Checks that `name` is a valid agent name: 1..=64 bytes of `[a-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), NameClaimError> {
    if name.is_empty() {
        return Err(NameClaimError::Empty);
    }
    if let Some(ch) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(NameClaimError::InvalidChar { ch });
    }
    // Every allowed character is one byte, so this is also the character count.
    if name.len() > MAX_NAME_LEN {
        return Err(NameClaimError::TooLong { len: name.len() });
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}
