//! One pair's receiving half: Deliver accounting, acknowledgements, latency samples.

use super::*;

pub(super) enum ReceiverStep {
    Stop,
    Churn,
    Event(Event),
}

pub(super) struct Receiver {
    pub(super) shared: Arc<Shared>,
    pub(super) pair: usize,
    pub(super) identity: IdentityKeyPair,
    pub(super) subscribe: Option<String>,
    pub(super) crypto: Option<ReceiverCrypto>,
    pub(super) latencies: Vec<u64>,
    pub(super) measured: Vec<u64>,
}

impl Receiver {
    pub(super) async fn run(mut self, mut link: Option<Link>, mut stop: watch::Receiver<bool>) {
        let shared = self.shared.clone();
        let ps = &shared.pairs[self.pair];
        let mut dropped_at = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let Some(active) = link.as_mut() else {
                let index = 2 * self.pair + 1;
                link = shared
                    .reconnect(
                        index,
                        &self.identity,
                        self.subscribe.as_deref(),
                        dropped_at,
                        &mut stop,
                    )
                    .await;
                continue;
            };
            let step = tokio::select! {
                biased;
                _ = stop.changed() => ReceiverStep::Stop,
                _ = ps.churn_receiver.notified(), if shared.churning() => ReceiverStep::Churn,
                event = active.next_event() => ReceiverStep::Event(event),
            };
            let ok = match step {
                ReceiverStep::Stop => true,
                ReceiverStep::Churn => {
                    Counters::add(&shared.counters.drops, 1);
                    false
                }
                ReceiverStep::Event(event) => self.on_batch(active, event).await,
            };
            if !ok {
                link = None;
                dropped_at = Instant::now();
            }
        }
    }

    /// Handles one event and whatever else is already readable, then flushes the acks.
    pub(super) async fn on_batch(&mut self, link: &mut Link, first: Event) -> bool {
        let mut open = self.on_event(link, first).await;
        let mut n = 1;
        while open && n < RECEIVE_BATCH {
            let Some(event) = link.next_event().now_or_never() else {
                break;
            };
            open = self.on_event(link, event).await;
            n += 1;
        }
        if open && link.flush().await.is_err() {
            self.shared.error("write_failed");
            open = false;
        }
        self.record();
        open
    }

    pub(super) fn record(&mut self) {
        if self.latencies.is_empty() && self.measured.is_empty() {
            return;
        }
        if let Ok(mut r) = self.shared.recorder.lock() {
            r.record(&self.latencies, false);
            r.record(&self.measured, true);
        }
        self.latencies.clear();
        self.measured.clear();
    }

    pub(super) async fn on_event(&mut self, link: &mut Link, event: Event) -> bool {
        let shared = self.shared.clone();
        match event {
            Event::Delivered { payload, ack } => {
                if let Some((sender, msg_id)) = ack {
                    if link.feed_ack(sender, msg_id).await.is_err() {
                        shared.error("write_failed");
                        return false;
                    }
                }
                self.on_delivered(&payload, ack.map(|(_, id)| probe::seq_of(&id)));
                true
            }
            Event::Closed(kind) => {
                shared.error(kind);
                false
            }
            Event::Notice(kind) => {
                shared.error(kind);
                true
            }
            Event::Acked(_) | Event::Refused { .. } => {
                shared.error("unexpected_reply");
                true
            }
        }
    }

    pub(super) fn first_delivery(&self, seq: u64) -> bool {
        let first = self.shared.pairs[self.pair]
            .ledger
            .lock()
            .map(|mut l| l.delivered(seq))
            .unwrap_or(false);
        if !first {
            Counters::add(&self.shared.counters.duplicates, 1);
        }
        first
    }

    pub(super) fn on_delivered(&mut self, payload: &[u8], seq_hint: Option<u64>) {
        let arrived = Instant::now();
        if let Some(seq) = seq_hint {
            if !self.first_delivery(seq) {
                return;
            }
        }
        let plain;
        let bytes = match &mut self.crypto {
            Some(crypto) => match crypto.decrypt(payload) {
                Ok(p) => {
                    plain = p;
                    &plain[..]
                }
                Err(_) => return self.shared.error("decrypt_failed"),
            },
            None => payload,
        };
        let Some(probe) = Probe::decode(bytes) else {
            return self.shared.error("bad_payload");
        };
        if probe.pair as usize != self.pair {
            return self.shared.error("wrong_recipient");
        }
        if seq_hint.is_none() && !self.first_delivery(probe.seq) {
            return;
        }
        let shared = &self.shared;
        Counters::add(&shared.counters.delivered, 1);
        if shared.cfg.rate.is_none() {
            shared.pairs[self.pair].window.add_permits(1);
        }
        let now_ns = shared.ns_since_epoch(arrived);
        let us = now_ns.saturating_sub(probe.intended_ns) / 1000;
        if probe.intended_ns >= shared.cfg.warmup.as_nanos() as u64
            && probe.intended_ns < shared.cfg.duration.as_nanos() as u64
        {
            self.measured.push(us);
        } else {
            self.latencies.push(us);
        }
    }
}
