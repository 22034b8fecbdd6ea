//! [`SentRequests`]: the requests written on one relay connection, by their position
//! (`request_seq`, docs/PROTOCOL.md 1.11), so that a `Refused` frame can be matched to
//! the request it refuses even when the client pipelines.

use std::collections::{HashMap, VecDeque};

use e2ee_protocol::frame::Frame;

/// How many requests are remembered per connection. A refusal comes soon after its
/// request (the relay answers in the order it handles them); one older than this many
/// later requests is reported unmatched.
const REMEMBERED: usize = 16 * 1024;

/// A request as far as its refusal needs to say which one it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentRequest {
    /// The frame kind (`send`, `fetch_bundle`, …, [`Frame::kind`]).
    pub kind: &'static str,
    /// A `Send`'s message id.
    pub msg_id: Option<[u8; 16]>,
    /// The `request_id` of a request that has one.
    pub request_id: Option<u32>,
}

impl SentRequest {
    /// The request `frame` is, if it is one ([`Frame::is_request`]).
    pub fn of(frame: &Frame) -> Option<Self> {
        if !frame.is_request() {
            return None;
        }
        let (msg_id, request_id) = match frame {
            Frame::Send { msg_id, .. }
            | Frame::GroupSend { msg_id, .. }
            | Frame::GroupCommit { msg_id, .. } => (Some(*msg_id), None),
            Frame::FetchBundle { request_id, .. }
            | Frame::FetchKeyPackage { request_id, .. }
            | Frame::LookupName { request_id, .. }
            | Frame::LookupIdentity { request_id, .. }
            | Frame::ReleaseName { request_id, .. }
            | Frame::QueryAway { request_id, .. } => (None, Some(*request_id)),
            _ => (None, None),
        };
        Some(Self {
            kind: frame.kind(),
            msg_id,
            request_id,
        })
    }
}

/// The frames written on one connection: counted from the `Auth` (0), requests kept.
#[derive(Debug)]
pub struct SentRequests {
    next: u32,
    by_seq: HashMap<u32, SentRequest>,
    order: VecDeque<u32>,
}

impl Default for SentRequests {
    fn default() -> Self {
        Self::new()
    }
}

impl SentRequests {
    /// After the `Auth`, which is frame 0.
    pub fn new() -> Self {
        Self {
            next: 1,
            by_seq: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// `frame` is written now (every frame counts, requests or not).
    pub fn sent(&mut self, frame: &Frame) {
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        let Some(request) = SentRequest::of(frame) else {
            return;
        };
        if self.order.len() >= REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.by_seq.remove(&old);
            }
        }
        self.order.push_back(seq);
        self.by_seq.insert(seq, request);
    }

    /// The request written as frame `seq`, forgotten now (it has its one answer), or
    /// `None` if it is unknown (not a request, or too old).
    pub fn answered(&mut self, seq: u32) -> Option<SentRequest> {
        self.by_seq.remove(&seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(n: u8) -> Frame {
        Frame::Send {
            recipient: [1; 32],
            msg_id: [n; 16],
            payload: vec![],
        }
    }

    #[test]
    fn frames_are_counted_from_the_auth_and_only_requests_are_kept() {
        let mut sent = SentRequests::new();
        sent.sent(&Frame::Features { flags: 1 }); // 1
        sent.sent(&send(7)); // 2
        sent.sent(&Frame::Ping { nonce: 1 }); // 3
        sent.sent(&Frame::QueryAway {
            request_id: 9,
            identity: [2; 32],
        }); // 4
        assert_eq!(sent.answered(1), None, "Features is not a request");
        assert_eq!(sent.answered(3), None, "a Ping is not a request");
        let refused = sent.answered(2).expect("the Send");
        assert_eq!((refused.kind, refused.msg_id), ("send", Some([7; 16])));
        assert_eq!(sent.answered(2), None, "one answer per request");
        assert_eq!(sent.answered(4).and_then(|r| r.request_id), Some(9));
    }

    #[test]
    fn the_oldest_requests_are_forgotten_past_the_limit() {
        let mut sent = SentRequests::new();
        for _ in 0..REMEMBERED + 10 {
            sent.sent(&Frame::QueryQuota);
        }
        assert_eq!(sent.by_seq.len(), REMEMBERED);
        assert_eq!(sent.answered(1), None);
        assert!(sent.answered(11).is_some());
        assert!(sent
            .answered(u32::try_from(REMEMBERED + 10).expect("small"))
            .is_some());
    }
}
