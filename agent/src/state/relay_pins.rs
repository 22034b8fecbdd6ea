//! The relay keys the agent pinned (trust on first use of each relay address), kept as
//! plain `meta` values `relay_pin:<address>` (a pin is public: the SHA-256 of a public
//! key).

use e2ee_net::RelayPin;

use super::error::StateError;
use super::AgentState;

fn key(relay: &str) -> String {
    format!("relay_pin:{relay}")
}

impl AgentState {
    /// The key pinned for the relay at `relay` (`host:port` as configured), if any.
    pub fn relay_pin(&self, relay: &str) -> Result<Option<RelayPin>, StateError> {
        let Some(bytes) = self.db.rows().meta(&key(relay))? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.parse::<RelayPin>()
            .map(Some)
            .map_err(|err| StateError::Corrupt {
                path: self.db.path().to_path_buf(),
                detail: format!("relay pin of {relay}: {err}"),
            })
    }

    /// Pins `pin` for the relay at `relay`.
    pub fn set_relay_pin(&mut self, relay: &str, pin: RelayPin) -> Result<(), StateError> {
        let text = pin.to_string();
        self.db.transaction_with(|tx| -> Result<(), StateError> {
            Ok(tx.put_meta(&key(relay), text.as_bytes())?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::open;

    #[test]
    fn a_pin_is_kept_per_relay_address_across_restarts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("alice");
        let mut state = open(&dir, "alice");
        assert_eq!(state.relay_pin("127.0.0.1:7300").expect("read"), None);
        let pin: e2ee_net::RelayPin = format!("sha256:{}", "ab".repeat(32)).parse().expect("pin");
        state.set_relay_pin("127.0.0.1:7300", pin).expect("save");
        drop(state);
        let state = open(&dir, "alice");
        assert_eq!(state.relay_pin("127.0.0.1:7300").expect("read"), Some(pin));
        assert_eq!(
            state.relay_pin("127.0.0.1:7301").expect("read"),
            None,
            "another relay"
        );
    }
}
