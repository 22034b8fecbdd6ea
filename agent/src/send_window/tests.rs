use super::*;

fn id(n: u16) -> MsgId {
    let mut id = [0u8; 16];
    id[..2].copy_from_slice(&n.to_be_bytes());
    id
}

fn ids(range: std::ops::Range<u16>) -> Vec<MsgId> {
    range.map(id).collect()
}

#[test]
fn sends_in_outbox_order_within_the_window() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(ids(0..300));
    assert_eq!(w.next_batch(now), ids(0..SEND_WINDOW as u16));
    assert!(w.next_batch(now).is_empty(), "the window is full");
    assert!(w.answered(&id(0)));
    assert!(!w.answered(&id(0)), "answered once");
    assert_eq!(w.next_batch(now), vec![id(SEND_WINDOW as u16)]);
    assert_eq!(w.in_flight(), SEND_WINDOW);
    assert_eq!(w.waiting(), 300 - SEND_WINDOW - 1);
}

#[test]
fn a_refusal_pauses_everything_and_the_refused_go_first_in_their_order() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(ids(0..10));
    assert_eq!(w.next_batch(now), ids(0..10));
    w.push(id(10));
    // 3 and 5 refused (in that order), the others stored.
    let until = w.rate_limited(id(3), now, Duration::from_millis(100));
    assert_eq!(until, now + Duration::from_millis(100));
    w.rate_limited(id(5), now, Duration::from_millis(50));
    for n in [0, 1, 2, 4, 6, 7, 8, 9] {
        assert!(w.answered(&id(n)));
    }
    assert!(
        w.next_batch(now + Duration::from_millis(99)).is_empty(),
        "paused for the longest delay"
    );
    assert_eq!(w.next_batch(until), vec![id(3), id(5), id(10)]);
}

#[test]
fn a_refusal_for_an_id_not_in_flight_only_pauses() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(ids(0..2));
    w.rate_limited(id(9), now, Duration::from_millis(10));
    assert_eq!(w.waiting(), 2);
    assert_eq!(w.next_batch(now + Duration::from_millis(10)), ids(0..2));
}

#[test]
fn again_resends_before_the_unsent_and_never_twice_in_flight() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(ids(0..3));
    assert_eq!(w.next_batch(now), ids(0..3));
    w.push(id(3));
    w.again(id(1)); // still in flight: nothing
    assert!(w.answered(&id(1)));
    w.again(id(1));
    w.again(id(1));
    assert_eq!(w.next_batch(now), vec![id(1), id(3)]);
}

#[test]
fn restart_forgets_what_was_in_flight_and_the_pause() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(ids(0..4));
    w.next_batch(now);
    w.rate_limited(id(0), now, Duration::from_secs(60));
    w.restart(ids(0..4));
    assert_eq!(w.in_flight(), 0);
    assert_eq!(w.next_batch(now), ids(0..4));
}
