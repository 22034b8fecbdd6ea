//! Events: JSON field names and round trips, readable lines, escaping of peer text.

use serde_json::{json, Value};

use super::*;

const IK: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const ID: &str = "0f0e0d0c0b0a09080706050403020100";

fn all_events() -> Vec<Event> {
    vec![
        Event::Started {
            name: "alice".into(),
            identity: IK.into(),
        },
        Event::Connection {
            state: ConnectionState::Reconnecting,
            relay: "127.0.0.1:7300".into(),
            next_relay: None,
            attempt: Some(2),
            retry_in_ms: None,
            reason: None,
        },
        Event::Connection {
            state: ConnectionState::Connected,
            relay: "127.0.0.1:7300".into(),
            next_relay: None,
            attempt: None,
            retry_in_ms: None,
            reason: None,
        },
        Event::Message {
            from: "bob".into(),
            from_identity: IK.into(),
            text: "hello".into(),
            msg_id: ID.into(),
            timestamp_ms: 7,
            newly_skipped: 2,
            late: false,
        },
        Event::Sent {
            to: "bob".into(),
            msg_id: ID.into(),
        },
        Event::Delivered {
            to: "bob".into(),
            msg_id: ID.into(),
        },
        Event::SendFailed {
            to: "bob".into(),
            msg_id: ID.into(),
            reason: "quota exceeded".into(),
            code: None,
        },
        Event::DecryptFailure {
            from: "bob".into(),
            from_identity: IK.into(),
            class: FailureClass::Tampered,
            detail: "authentication failed".into(),
        },
        Event::IdentityChanged {
            peer: "bob".into(),
            previous: IK.into(),
            current: IK.into(),
            policy: IdentityPolicy::Block,
            pinned_verified: true,
            action: IdentityAction::Held,
        },
        Event::PeerVerified {
            peer: "bob".into(),
            identity: IK.into(),
            safety_number: "1".repeat(60),
        },
        Event::PeerPinned {
            peer: "bob".into(),
            identity: IK.into(),
        },
        Event::SafetyNumber {
            peer: "bob".into(),
            key: "pinned".into(),
            identity: IK.into(),
            digits: "1".repeat(60),
            grouped: "11111 11111 11111 11111\n11111 11111 11111 11111\n11111 11111 11111 11111".into(),
            scannable: hex::encode([1u8; 65]),
        },
        Event::Peers {
            peers: vec![PeerInfo {
                name: "bob".into(),
                identity: IK.into(),
                verified: true,
                has_session: true,
                first_seen_ms: 5,
                pending_change: true,
                held: 2,
                unread: 3,
                last_activity_ms: Some(1_000),
            }],
        },
        Event::error("boom"),
        Event::ScriptStep {
            line: 3,
            step: "send bob hi".into(),
        },
        Event::ScriptDone { ok: true },
        Event::info("hello"),
        Event::Redelivered {
            from: "bob".into(),
            from_identity: IK.into(),
            msg_id: ID.into(),
        },
        Event::SessionReset {
            peer: "bob".into(),
            peer_identity: IK.into(),
            side: "restarted".into(),
            reason: "reused_position".into(),
            resent: Some(3),
        },
        Event::SessionReset {
            peer: "bob".into(),
            peer_identity: IK.into(),
            side: "requested".into(),
            reason: "unauthenticated".into(),
            resent: None,
        },
        Event::Expired {
            to: "bob".into(),
            msg_id: ID.into(),
        },
        Event::MessagesLost {
            from: "bob".into(),
            from_identity: IK.into(),
            count: 1010,
        },
        Event::MessageHeld {
            from: "bob".into(),
            from_identity: IK.into(),
            msg_id: ID.into(),
        },
        Event::HeldDiscarded {
            from: "bob".into(),
            from_identity: IK.into(),
            msg_id: ID.into(),
            held: 1000,
        },
        Event::IdentityRejected {
            peer: "bob".into(),
            identities: vec![IK.into()],
            discarded: 3,
        },
        Event::NameReleased { name: "alice".into() },
        Event::RecipientAway {
            peer: "bob".into(),
            identity: IK.into(),
            away_days: Some(45),
        },
        Event::RecipientAway {
            peer: "bob".into(),
            identity: IK.into(),
            away_days: None,
        },
        Event::NameClaimed { name: "alice".into() },
        Event::SendFailed {
            to: "bob".into(),
            msg_id: ID.into(),
            reason: "the recipient is not a valid identity key".into(),
            code: Some("invalid_recipient".into()),
        },
    ]
}

#[test]
fn json_lines_are_tagged_objects_that_parse_back() {
    for event in all_events() {
        let line = event.to_json_line();
        assert!(!line.contains('\n'), "{line}");
        let value: Value = serde_json::from_str(&line).expect("valid JSON");
        assert!(value.get("event").and_then(Value::as_str).is_some(), "{line}");
        let back: Event = serde_json::from_str(&line).expect("parses back");
        assert_eq!(back, event);
    }
}

#[test]
fn json_field_names_are_the_documented_ones() {
    let event = &all_events()[3];
    let value: Value = serde_json::from_str(&event.to_json_line()).expect("json");
    assert_eq!(
        value,
        json!({"event": "message", "from": "bob", "from_identity": IK, "text": "hello",
               "msg_id": ID, "timestamp_ms": 7, "newly_skipped": 2, "late": false})
    );
    let failure: Value = serde_json::from_str(&all_events()[7].to_json_line()).expect("json");
    assert_eq!(failure["event"], "decrypt_failure");
    assert_eq!(failure["class"], "tampered");
    let changed: Value = serde_json::from_str(&all_events()[8].to_json_line()).expect("json");
    assert_eq!(
        (changed["policy"].as_str(), changed["action"].as_str()),
        (Some("block"), Some("held"))
    );
    let refused = all_events().pop().expect("events");
    let refused: Value = serde_json::from_str(&refused.to_json_line()).expect("json");
    assert_eq!(
        refused,
        json!({"event": "send_failed", "to": "bob", "msg_id": ID,
               "reason": "the recipient is not a valid identity key", "code": "invalid_recipient"})
    );
    let connected: Value = serde_json::from_str(&all_events()[2].to_json_line()).expect("json");
    assert_eq!(
        connected,
        json!({"event": "connection", "state": "connected", "relay": "127.0.0.1:7300"})
    );
}

#[test]
fn recipient_away_reads_days_or_never() {
    let events = all_events();
    let away = |days: Option<u32>| {
        events
            .iter()
            .find(|e| matches!(e, Event::RecipientAway { away_days, .. } if *away_days == days))
            .expect("in all_events")
    };
    let days: Value = serde_json::from_str(&away(Some(45)).to_json_line()).expect("json");
    assert_eq!(
        days,
        json!({"event": "recipient_away", "peer": "bob", "identity": IK, "away_days": 45})
    );
    let never: Value = serde_json::from_str(&away(None).to_json_line()).expect("json");
    assert_eq!(
        never,
        json!({"event": "recipient_away", "peer": "bob", "identity": IK, "away_days": null})
    );
    assert_eq!(
        away(Some(45)).to_human(),
        "! bob has not connected to the relay for 45 days; your messages wait there until the \
         relay's message lifetime ends"
    );
    assert!(away(None)
        .to_human()
        .starts_with("! bob has never connected to this relay"));

    use e2ee_protocol::identity::IdentityKeyPair;
    let bob = *IdentityKeyPair::from_seed(&[7; 32]).public();
    assert_eq!(Event::recipient_away("bob", &bob, 0), None, "present");
    assert_eq!(
        Event::recipient_away("bob", &bob, 1),
        Some(Event::RecipientAway {
            peer: "bob".into(),
            identity: identity_hex(&bob),
            away_days: Some(1),
        })
    );
    assert!(matches!(
        Event::recipient_away("bob", &bob, AWAY_NEVER),
        Some(Event::RecipientAway { away_days: None, .. })
    ));
}

#[test]
fn human_lines_read_well() {
    let events = all_events();
    assert_eq!(
        events[3].to_human(),
        "[bob] hello\n  (2 earlier messages from bob not received yet)"
    );
    assert_eq!(
        events[7].to_human(),
        "! decrypt failure from bob: tampered (authentication failed)"
    );
    assert_eq!(
        events[1].to_human(),
        "* reconnecting to relay 127.0.0.1:7300 (attempt 2)"
    );
    assert_eq!(events[4].to_human(), "  -> sent to bob (msg 0f0e0d0c0b0a0908)");
    assert!(events[8]
        .to_human()
        .starts_with("! identity of bob changed: 0011223344556677 -> "));
    assert!(events[8].to_human().contains("(policy block: held)"));
    assert!(events[8].to_human().contains("/reject bob"));
    let sn = events[11].to_human();
    assert!(
        sn.starts_with("safety number with bob (pinned key 0011223344556677):\n  11111 11111 11111 11111\n"),
        "{sn}"
    );
    assert!(sn.ends_with("/trust bob <digits>"), "{sn}");
    assert!(events[12].to_human().contains("identity change pending (2 held)"));
    let redelivered = events[17].to_human();
    assert_eq!(
        redelivered,
        "  (a message from bob came again from the relay, msg 0f0e0d0c0b0a0908: already shown, dropped)"
    );
    for event in &events {
        assert!(!event.to_human().is_empty());
    }
}

#[test]
fn constructors_fill_every_field() {
    use e2ee_protocol::identity::IdentityKeyPair;
    use e2ee_protocol::payload::Payload;

    let bob = *IdentityKeyPair::from_seed(&[7; 32]).public();
    let incoming = Incoming {
        payload: Payload::text([1; 16], 99, "hey"),
        newly_skipped: 1,
        late: true,
        new_session: false,
        given_up: 0,
    };
    assert_eq!(
        Event::message("bob", &bob, &[1; 16], &incoming),
        Some(Event::Message {
            from: "bob".into(),
            from_identity: identity_hex(&bob),
            text: "hey".into(),
            msg_id: "01".repeat(16),
            timestamp_ms: 99,
            newly_skipped: 1,
            late: true,
        })
    );
    let receipt = Incoming {
        payload: Payload::receipt([2; 16], 5, [1; 16]),
        ..incoming
    };
    assert_eq!(Event::message("bob", &bob, &[2; 16], &receipt), None);
    let failure = DecryptFailure::new(FailureClass::SkipLimit, "too far");
    assert!(matches!(
        Event::decrypt_failure("bob", &bob, &failure),
        Event::DecryptFailure {
            class: FailureClass::SkipLimit,
            ..
        }
    ));
    let sn = SafetyNumber::compute(&[1; 32], b"a", &[2; 32], b"b");
    let Event::SafetyNumber {
        digits,
        grouped,
        scannable,
        ..
    } = Event::safety_number("bob", "pinned", &bob, &sn)
    else {
        panic!("a safety number event");
    };
    assert_eq!(digits, sn.digits());
    assert_eq!(grouped, sn.display_groups());
    assert_eq!(scannable.len(), 130);
}

#[test]
fn human_output_escapes_peer_text() {
    let event = Event::Message {
        from: "bob".into(),
        from_identity: IK.into(),
        text: "hi\u{1b}[2J\r\nthere\u{202e}".into(),
        msg_id: ID.into(),
        timestamp_ms: 0,
        newly_skipped: 0,
        late: true,
    };
    assert_eq!(
        event.to_human(),
        "[bob] hi\\u{1b}[2J\\r\\nthere\\u{202e}  (arrived late)"
    );
}

#[test]
fn a_failover_names_both_relays_and_one_relay_reads_as_before() {
    let failover = Event::Connection {
        state: ConnectionState::Reconnecting,
        relay: "127.0.0.1:7300".into(),
        next_relay: Some("127.0.0.1:7301".into()),
        attempt: Some(1),
        retry_in_ms: Some(0),
        reason: Some("connection refused".into()),
    };
    let value: Value = serde_json::from_str(&failover.to_json_line()).expect("json");
    assert_eq!(
        value,
        json!({"event": "connection", "state": "reconnecting", "relay": "127.0.0.1:7300",
               "next_relay": "127.0.0.1:7301", "attempt": 1, "retry_in_ms": 0,
               "reason": "connection refused"})
    );
    assert_eq!(
        serde_json::from_value::<Event>(value).expect("round trip"),
        failover
    );
    assert_eq!(
        failover.to_human(),
        "* reconnecting to relay 127.0.0.1:7301 (attempt 1 in 0 s), relay 127.0.0.1:7300 failed: connection refused"
    );
    let single: Value = serde_json::from_str(&all_events()[1].to_json_line()).expect("json");
    assert!(single.get("next_relay").is_none(), "{single}");
}
