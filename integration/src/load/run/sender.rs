//! One pair's sending half: paced Sends, SentAck accounting, reconnection under churn.

use super::*;

pub(super) enum SenderStep {
    Stop,
    Churn,
    Event(Event),
    Due,
    Permit,
    Tick,
}

pub(super) struct Sender {
    pub(super) shared: Arc<Shared>,
    pub(super) pair: usize,
    pub(super) identity: IdentityKeyPair,
    pub(super) to: Address,
    pub(super) crypto: Option<SenderCrypto>,
    /// Relay only: sent, not yet acknowledged; resent after a reconnect.
    pub(super) unacked: BTreeMap<u64, Bytes>,
    pub(super) next: u64,
    /// How late each message of the current batch left, after its intended time (µs).
    pub(super) lags: Vec<u64>,
}

impl Sender {
    pub(super) fn payload(&mut self, seq: u64, intended_ns: u64) -> anyhow::Result<Bytes> {
        let plain = Probe {
            pair: self.pair as u32,
            seq,
            intended_ns,
        }
        .encode(self.shared.cfg.size);
        Ok(Bytes::from(match &mut self.crypto {
            Some(crypto) => crypto.encrypt(&plain)?,
            None => plain,
        }))
    }

    pub(super) async fn send_one(&mut self, link: &mut Link, intended_ns: u64) -> anyhow::Result<()> {
        let seq = self.next;
        self.next += 1;
        let payload = self.payload(seq, intended_ns)?;
        let ps = &self.shared.pairs[self.pair];
        if ps.ledger.lock().map(|mut l| l.sent(seq)).unwrap_or(false) {
            Counters::add(&self.shared.counters.sent, 1);
        }
        if self.shared.endpoint.kind == Kind::Relay {
            self.unacked.insert(seq, payload.clone());
        }
        link.feed_message(&self.to, seq, self.pair as u32, payload).await
    }

    pub(super) fn on_event(&mut self, event: Event) -> bool {
        let shared = &self.shared;
        let ps = &shared.pairs[self.pair];
        match event {
            Event::Acked(seq) => {
                self.unacked.remove(&seq);
                if ps.ledger.lock().map(|mut l| l.acked(seq)).unwrap_or(false) {
                    Counters::add(&shared.counters.acked, 1);
                }
            }
            Event::Refused { seq, kind } => {
                shared.error(kind);
                Counters::add(&shared.counters.refused, 1);
                if let Some(seq) = seq {
                    self.unacked.remove(&seq);
                    if let Ok(mut l) = ps.ledger.lock() {
                        l.refused(seq);
                    }
                }
                if shared.cfg.rate.is_none() {
                    ps.window.add_permits(1);
                }
            }
            Event::Delivered { .. } => shared.error("delivery_to_sender"),
            Event::Notice(kind) => shared.error(kind),
            Event::Closed(kind) => {
                shared.error(kind);
                return false;
            }
        }
        true
    }

    pub(super) async fn run(mut self, mut link: Option<Link>, mut stop: watch::Receiver<bool>) {
        let shared = self.shared.clone();
        let cfg = &shared.cfg;
        let ps = &shared.pairs[self.pair];
        let pace = Pace::new(cfg, self.pair);
        let send_end = shared.send_end();
        let far = shared.epoch + Duration::from_secs(86_400);
        let mut dropped_at = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let Some(active) = link.as_mut() else {
                let index = 2 * self.pair;
                link = shared
                    .reconnect(index, &self.identity, None, dropped_at, &mut stop)
                    .await;
                if let Some(active) = link.as_mut() {
                    if self.retransmit(active).await.is_err() {
                        shared.error("write_failed");
                        link = None;
                        dropped_at = Instant::now();
                    }
                }
                continue;
            };
            let sending = Instant::now() < send_end && pace.is_none_or(|p| self.next < p.total);
            let due = match pace {
                Some(p) if sending => shared.epoch + Duration::from_nanos(p.due_ns(self.next)),
                _ => far,
            };
            let step = tokio::select! {
                biased;
                _ = stop.changed() => SenderStep::Stop,
                _ = ps.churn_sender.notified(), if shared.churning() => SenderStep::Churn,
                event = active.next_event() => SenderStep::Event(event),
                _ = tokio::time::sleep_until(due.into()), if sending && pace.is_some() => SenderStep::Due,
                permit = ps.window.acquire(), if sending && pace.is_none() => {
                    if let Ok(p) = permit { p.forget(); }
                    SenderStep::Permit
                }
                _ = tokio::time::sleep_until(send_end.into()), if sending => SenderStep::Tick,
            };
            let ok = match step {
                SenderStep::Stop | SenderStep::Tick => true,
                SenderStep::Churn => {
                    Counters::add(&shared.counters.drops, 1);
                    false
                }
                SenderStep::Event(event) => self.on_event(event),
                SenderStep::Due => match pace {
                    Some(p) => self.send_due(active, p).await.is_ok(),
                    None => true,
                },
                SenderStep::Permit => self.send_window(active).await.is_ok(),
            };
            if !ok {
                link = None;
                dropped_at = Instant::now();
            }
        }
    }

    pub(super) async fn send_due(&mut self, link: &mut Link, pace: Pace) -> anyhow::Result<()> {
        let now_ns = self.shared.ns_since_epoch(Instant::now());
        let warm_ns = self.shared.cfg.warmup.as_nanos() as u64;
        let mut n = 0;
        while self.next < pace.total && n < SEND_BATCH {
            let due = pace.due_ns(self.next);
            if due > now_ns {
                break;
            }
            if due >= warm_ns {
                self.lags.push((now_ns - due) / 1000);
            }
            self.send_one(link, due).await?;
            n += 1;
        }
        if !self.lags.is_empty() {
            if let Ok(mut r) = self.shared.recorder.lock() {
                for &lag in &self.lags {
                    let _ = r.send_lag.record(lag.max(1));
                }
            }
            self.lags.clear();
        }
        link.flush().await
    }

    pub(super) async fn send_window(&mut self, link: &mut Link) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        let ps_window = &shared.pairs[self.pair].window;
        let mut n = 1;
        let now_ns = self.shared.ns_since_epoch(Instant::now());
        self.send_one(link, now_ns).await?;
        while n < SEND_BATCH {
            let Ok(permit) = ps_window.try_acquire() else {
                break;
            };
            permit.forget();
            self.send_one(link, now_ns).await?;
            n += 1;
        }
        link.flush().await
    }

    pub(super) async fn retransmit(&mut self, link: &mut Link) -> anyhow::Result<()> {
        if self.unacked.is_empty() {
            return Ok(());
        }
        let pending: Vec<(u64, Bytes)> = self.unacked.iter().map(|(s, p)| (*s, p.clone())).collect();
        Counters::add(&self.shared.counters.retransmitted, pending.len() as u64);
        for (seq, payload) in pending {
            link.feed_message(&self.to, seq, self.pair as u32, payload)
                .await?;
        }
        link.flush().await
    }
}
