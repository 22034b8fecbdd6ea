//! [`CommandTags`]: which bot command an event answers (docs/AGENT.md 4.1). A command's
//! id is current while the agent handles it (its direct answers: `peers`, `history`,
//! `status`, `safety_number`, errors), and stays with each message it sent, so the
//! message's later events (`sent`, `deferred`, `send_failed`, `delivered`, `expired`)
//! carry it too.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

/// How many sent messages keep their command's id (the oldest is forgotten first).
const REMEMBERED: usize = 4096;

/// Command ids: the current one, and those of messages sent.
#[derive(Debug, Default)]
pub struct CommandTags {
    current: Option<Value>,
    by_msg: HashMap<String, Value>,
    order: VecDeque<String>,
}

impl CommandTags {
    /// The id of the command being handled, if any.
    pub fn current(&self) -> Option<&Value> {
        self.current.as_ref()
    }

    /// Handling the command `id` starts (`None`: a typed command, or none).
    pub fn begin(&mut self, id: Option<Value>) {
        self.current = id;
    }

    /// Handling the current command ends.
    pub fn end(&mut self) {
        self.current = None;
    }

    /// Message `msg_id` (hex) was sent for the command `id`.
    pub fn sent(&mut self, msg_id: String, id: Value) {
        if self.order.len() >= REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.by_msg.remove(&old);
            }
        }
        self.order.push_back(msg_id.clone());
        self.by_msg.insert(msg_id, id);
    }

    /// The id of the command that sent message `msg_id` (hex), if known.
    pub fn of_message(&self, msg_id: &str) -> Option<&Value> {
        self.by_msg.get(msg_id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_keep_their_command_id_within_the_bound() {
        let mut tags = CommandTags::default();
        tags.begin(Some(json!(1)));
        assert_eq!(tags.current(), Some(&json!(1)));
        tags.end();
        assert_eq!(tags.current(), None);
        for n in 0..REMEMBERED + 1 {
            tags.sent(format!("{n:032x}"), json!(n));
        }
        assert_eq!(
            tags.of_message(&format!("{:032x}", 0)),
            None,
            "the oldest is forgotten"
        );
        assert_eq!(tags.of_message(&format!("{:032x}", 1)), Some(&json!(1)));
        assert_eq!(tags.by_msg.len(), REMEMBERED);
    }
}
