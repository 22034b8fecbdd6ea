//! KeyPackages: ours kept stocked at the relay, and others' fetched to add them.

use super::*;

/// Ask the relay for one KeyPackage of an identity; answers the receiver of the relay's
/// `KeyPackage` (`None`: it has none, or the connection went).
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Option<Vec<u8>>>")]
struct FetchKeyPackage(IdentityKey);

impl Handler<FetchKeyPackage> for AgentActor {
    type Result = actix::MessageResult<FetchKeyPackage>;

    fn handle(&mut self, msg: FetchKeyPackage, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.connected {
            let request_id = self.request_id();
            self.group.fetches.insert(request_id, tx);
            self.to_relay(Frame::FetchKeyPackage {
                request_id,
                identity: *msg.0.as_bytes(),
            });
        } else {
            let _ = tx.send(None);
        }
        actix::MessageResult(rx)
    }
}

/// A KeyPackage of `identity`, asked again every [`KEY_PACKAGE_RETRY`] while the relay
/// has none (a peer that just came online publishes its first ones a moment after its
/// name), for at most [`KEY_PACKAGE_TIMEOUT`].
pub(super) async fn fetch_key_package(agent: &Addr<AgentActor>, identity: IdentityKey) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + KEY_PACKAGE_TIMEOUT;
    loop {
        let answer = agent.send(FetchKeyPackage(identity)).await.ok()?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(Ok(Some(package))) = tokio::time::timeout(left, answer).await {
            return Some(package);
        }
        if tokio::time::Instant::now() + KEY_PACKAGE_RETRY >= deadline {
            return None;
        }
        tokio::time::sleep(KEY_PACKAGE_RETRY).await;
    }
}

impl AgentActor {
    /// On connecting: ask how many KeyPackages the relay holds, and send the group
    /// outbox again (the relay answers a resent upload it stored as stored).
    pub(in crate::agent_actor) fn groups_on_connected(&mut self) {
        self.group.sent.clear();
        // Held deliveries were not acknowledged: the relay delivers them again.
        self.group.held.clear();
        self.group.naming.clear();
        for event in std::mem::take(&mut self.group.deferred) {
            let event = self.group_event(event);
            self.emit_group(event);
        }
        for (_, tx) in self.group.fetches.drain() {
            let _ = tx.send(None);
        }
        self.to_relay(Frame::PublishKeyPackages {
            packages: Vec::new(),
            last_resort: None,
        });
        self.pump_groups();
    }

    /// `KeyPackageCount`: publishes more one-time KeyPackages (and a new last-resort
    /// one) when the relay holds fewer than [`KEY_PACKAGES_LOW`].
    pub(in crate::agent_actor) fn on_key_package_count(&mut self, remaining: u32) {
        if remaining >= KEY_PACKAGES_LOW {
            return;
        }
        let count = (KEY_PACKAGES_KEPT - remaining) as usize;
        let made = self.state.with_groups(
            |book| Ok((book.key_packages(count, false)?, book.key_packages(1, true)?)),
            |_| Vec::new(),
        );
        match made {
            Ok((packages, mut last_resort)) => {
                self.to_relay(Frame::PublishKeyPackages {
                    packages,
                    last_resort: last_resort.pop(),
                });
            }
            Err(err) => self.emit(Event::error(format!("cannot make KeyPackages: {err}"))),
        }
    }

    /// `KeyPackage`: the answer to a fetch.
    pub(in crate::agent_actor) fn on_key_package(&mut self, request_id: u32, package: Option<Vec<u8>>) {
        if let Some(tx) = self.group.fetches.remove(&request_id) {
            let _ = tx.send(package);
        }
    }
}
