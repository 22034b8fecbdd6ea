use super::*;

const BOB: Recipient = [1; 32];
const CAROL: Recipient = [2; 32];

fn id(n: u16) -> MsgId {
    let mut id = [0u8; 16];
    id[..2].copy_from_slice(&n.to_be_bytes());
    id
}

fn to(recipient: Recipient, range: std::ops::Range<u16>) -> Vec<(MsgId, Recipient)> {
    range.map(|n| (id(n), recipient)).collect()
}

#[test]
fn sends_in_outbox_order_within_the_window() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(to(BOB, 0..300));
    assert_eq!(w.next_batch(now), to(BOB, 0..SEND_WINDOW as u16));
    assert!(w.next_batch(now).is_empty(), "the window is full");
    assert!(w.answered(&id(0)));
    assert!(!w.answered(&id(0)), "answered once");
    assert_eq!(w.next_batch(now), to(BOB, 256..257));
    assert_eq!(w.in_flight(), SEND_WINDOW);
    assert_eq!(w.waiting(), 300 - SEND_WINDOW - 1);
}

#[test]
fn a_rate_limit_pauses_everything_then_opens_from_one_entry_refused_first() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(to(BOB, 0..10));
    assert_eq!(w.next_batch(now), to(BOB, 0..10));
    w.push(id(10), BOB);
    w.push(id(20), CAROL);
    // 5 then 3 refused (refusals may come out of order), the others stored.
    let until = w.rate_limited(id(5), now, Duration::from_millis(100));
    assert_eq!(until, now + Duration::from_millis(100));
    w.rate_limited(id(3), now, Duration::from_millis(50));
    for n in [0, 1, 2, 4, 6, 7, 8, 9] {
        assert!(w.answered(&id(n)));
    }
    assert_eq!(w.next_resume(), Some(until));
    assert!(
        w.next_batch(now + Duration::from_millis(99)).is_empty(),
        "paused for the longest delay"
    );
    assert!(
        w.holds_back(&CAROL, now),
        "nothing goes around the window during a pause"
    );
    // The window grew back by the 8 answers after the refusals: 1 + 8 = 9 slots.
    let batch = w.next_batch(until);
    let bob: Vec<MsgId> = batch.iter().filter(|(_, r)| *r == BOB).map(|(i, _)| *i).collect();
    assert_eq!(bob, vec![id(3), id(5), id(10)], "refused first, in outbox order");
    assert!(batch.contains(&(id(20), CAROL)));
    assert_eq!(w.next_resume(), None);
}

#[test]
fn after_a_rate_limit_the_window_opens_one_entry_per_answer() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(to(BOB, 0..50));
    assert_eq!(w.next_batch(now).len(), 50);
    for n in 0..50 {
        w.rate_limited(id(n), now, Duration::from_millis(10));
    }
    let later = now + Duration::from_millis(10);
    assert_eq!(w.next_batch(later), to(BOB, 0..1), "one probe first");
    assert!(w.next_batch(later).is_empty());
    assert!(w.answered(&id(0)));
    assert_eq!(w.next_batch(later), to(BOB, 1..3), "two after one answer");
    assert!(w.answered(&id(1)));
    assert!(w.answered(&id(2)));
    assert_eq!(w.next_batch(later), to(BOB, 3..7));
}

#[test]
fn a_full_queue_pauses_only_its_recipient() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(to(BOB, 0..3));
    w.push(id(10), CAROL);
    assert_eq!(w.next_batch(now).len(), 4);
    w.push(id(3), BOB);
    w.push(id(11), CAROL);
    let until = w
        .quota_exceeded(id(1), now, Duration::from_secs(30))
        .expect("in flight");
    assert!(w.answered(&id(2)));
    assert_eq!(
        w.quota_exceeded(id(99), now, Duration::from_secs(30)),
        None,
        "not in flight"
    );
    assert_eq!(
        w.next_batch(now),
        vec![(id(11), CAROL)],
        "carol goes on, bob waits"
    );
    assert_eq!(w.next_resume(), Some(until));
    assert_eq!(w.next_batch(until), vec![(id(1), BOB), (id(3), BOB)]);
}

#[test]
fn a_pause_that_ends_after_the_last_batch_is_still_to_resume() {
    // A timer fires, the batch finds bob paused a little longer (a later refusal moved
    // the end), and the pause ends before the next timer is set: it must still be set,
    // or the refused wait for good.
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(to(BOB, 0..2));
    assert_eq!(w.next_batch(now), to(BOB, 0..2));
    let until = w
        .quota_exceeded(id(0), now, Duration::from_millis(200))
        .expect("in flight");
    assert!(w.answered(&id(1)));
    assert!(w.next_batch(until - Duration::from_millis(1)).is_empty());
    assert_eq!(w.next_resume(), Some(until), "even once `until` has passed");
    assert_eq!(w.next_batch(until), to(BOB, 0..1));
    assert_eq!(w.next_resume(), None);
}

#[test]
fn an_ended_pause_is_lifted_even_with_no_room() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(to(BOB, 0..SEND_WINDOW as u16));
    assert_eq!(w.next_batch(now).len(), SEND_WINDOW);
    let until = w
        .quota_exceeded(id(0), now, Duration::from_millis(200))
        .expect("in flight");
    w.push(id(1000), CAROL);
    assert_eq!(w.next_batch(now), vec![(id(1000), CAROL)], "carol takes the slot");
    assert!(w.next_batch(until).is_empty(), "the window is full");
    assert_eq!(w.next_resume(), None, "no timer to spin on: an answer makes room");
    assert!(w.answered(&id(1)));
    assert_eq!(w.next_batch(until), to(BOB, 0..1), "then the refused go first");
}

#[test]
fn recipients_take_turns() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(to(BOB, 0..3).into_iter().chain(to(CAROL, 10..13)));
    let order: Vec<MsgId> = w.next_batch(now).into_iter().map(|(i, _)| i).collect();
    assert_eq!(order, vec![id(0), id(10), id(1), id(11), id(2), id(12)]);
}

#[test]
fn restart_forgets_what_was_in_flight_and_the_pauses() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    w.restart(to(BOB, 0..4));
    w.next_batch(now);
    w.rate_limited(id(0), now, Duration::from_secs(60));
    w.quota_exceeded(id(1), now, Duration::from_secs(60));
    w.restart(to(BOB, 0..4));
    assert_eq!(w.in_flight(), 0);
    assert_eq!(w.next_resume(), None);
    assert_eq!(w.next_batch(now), to(BOB, 0..4));
}

#[test]
fn holds_back_sees_queued_refused_and_paused() {
    let now = Instant::now();
    let mut w = SendWindow::default();
    assert!(!w.holds_back(&BOB, now));
    w.push(id(0), BOB);
    assert!(w.holds_back(&BOB, now));
    w.next_batch(now);
    assert!(!w.holds_back(&BOB, now), "in flight is ahead, not waiting");
    w.quota_exceeded(id(0), now, Duration::from_secs(1));
    assert!(w.holds_back(&BOB, now));
    assert!(!w.holds_back(&CAROL, now));
}
