//! Group chats (MLS, docs/PROTOCOL.md 8, docs/AGENT.md 2.3): the `/group` commands, the
//! group outbox on the wire (one upload per group at a time, made again on a new epoch
//! after `GroupEpoch`), deliveries of group messages, and the KeyPackages kept at the
//! relay.

use std::collections::{HashMap, HashSet, VecDeque};

use e2ee_protocol::group::MSG_TYPE_MLS;

use super::*;
use crate::command::GroupCommand;
use crate::event::GroupLine;
use crate::group::{GroupBook, GroupError, GroupEvent};
use crate::state::{GroupEdit, GroupIntent, GroupOutboxEntry, IntentMember};

/// One-time KeyPackages the agent keeps at the relay; it publishes more when the
/// relay holds fewer than [`KEY_PACKAGES_LOW`].
const KEY_PACKAGES_KEPT: u32 = 20;
/// See [`KEY_PACKAGES_KEPT`].
const KEY_PACKAGES_LOW: u32 = 10;
/// Reverse lookups of unnamed members one group event asks for, at most.
const MEMBER_LOOKUPS: usize = 32;
/// How long an upload refused for a later epoch waits for the commits up to it.
const GROUP_CATCH_UP: Duration = Duration::from_secs(10);
/// How long to wait before asking again for a KeyPackage the relay did not have.
const KEY_PACKAGE_RETRY: Duration = Duration::from_millis(500);
/// How long a KeyPackage fetch may take, retries included.
const KEY_PACKAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// The group uploads and requests on the current connection.
#[derive(Default)]
pub(super) struct GroupFlight {
    /// KeyPackage fetches in flight: request id → who waits.
    fetches: HashMap<u32, oneshot::Sender<Option<Vec<u8>>>>,
    /// Uploads written on this connection and not answered yet.
    sent: HashSet<[u8; 16]>,
    /// Uploads refused for an epoch the group had moved past: made again once our
    /// group reaches it.
    waiting: HashMap<[u8; 16], u64>,
    /// A KeyPackage publication is unanswered.
    publishing: bool,
    /// Members and senders whose names are being asked for: group deliveries wait
    /// behind them, in arrival order (`held`), so that they are shown named and in the
    /// group's order.
    naming: HashSet<IdentityKey>,
    /// Group deliveries waiting for `naming`, in arrival order (unacknowledged).
    held: VecDeque<KeptGroupDelivery>,
    /// Events of deliveries read (and acknowledged) whose members are being named:
    /// reported once they are.
    deferred: Vec<GroupEvent>,
}

/// A group delivery kept unread for a while.
struct KeptGroupDelivery {
    sender: [u8; 32],
    msg_id: [u8; 16],
    wire: Vec<u8>,
}

/// Group deliveries held while members are named, at most; past it they are read at
/// once, shown by fingerprint.
const GROUP_HELD_LIMIT: usize = 256;

/// Run a `/group` command; answers once its upload is made and queued (or why not).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct GroupOp(pub GroupCommand);

/// Send a text to a group (`/g`).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SendGroupText {
    /// The group's local name.
    pub group: String,
    /// The text.
    pub text: String,
}

/// Show the groups (`/groups`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListGroups;

/// Wait until we are in `group` with exactly `members` members (0: not in it).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct WaitGroup {
    /// The group's local name.
    pub group: String,
    /// The member count to wait for (us included), 0 for "not a member".
    pub members: usize,
    /// How long to wait.
    pub timeout_ms: u64,
}

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
async fn fetch_key_package(agent: &Addr<AgentActor>, identity: IdentityKey) -> Option<Vec<u8>> {
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

impl Handler<SendGroupText> for AgentActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: SendGroupText, _: &mut Context<Self>) -> Self::Result {
        let group_id = self.group_id(&msg.group)?;
        if msg.text.len() > e2ee_protocol::payload::MAX_BODY_LEN {
            return Err(format!(
                "a group message is at most {} bytes",
                e2ee_protocol::payload::MAX_BODY_LEN
            ));
        }
        self.queue_group(group_id, GroupIntent::Text { text: msg.text })
    }
}

impl Handler<ListGroups> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: ListGroups, _: &mut Context<Self>) {
        let outbox = self.state.group_outbox();
        let groups = (self.state.groups().summaries().into_iter())
            .map(|g| GroupLine {
                pending: outbox.iter().filter(|e| e.group_id == g.group_id).count(),
                group: g.name,
                epoch: g.epoch,
                members: g.members.iter().map(|m| self.member_name(m)).collect(),
            })
            .collect();
        self.emit(Event::Groups { groups });
    }
}

impl Handler<WaitGroup> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: WaitGroup, ctx: &mut Context<Self>) -> Self::Result {
        if self.group_size(&msg.group) == msg.members {
            return Box::pin(async { Ok(()) });
        }
        let describe = format!("group {} to have {} members", msg.group, msg.members);
        self.wait(
            WaitFor::GroupSize {
                group: msg.group,
                members: msg.members,
            },
            msg.timeout_ms,
            describe,
            ctx,
        )
    }
}

impl Handler<GroupOp> for AgentActor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: GroupOp, ctx: &mut Context<Self>) -> Self::Result {
        let ready = |r: Result<(), String>| -> Self::Result { Box::pin(actix::fut::ready(r)) };
        match msg.0 {
            GroupCommand::Leave { group } => ready(
                self.group_id(&group)
                    .and_then(|id| self.queue_group(id, GroupIntent::Leave)),
            ),
            GroupCommand::Update { group } => ready(
                self.group_id(&group)
                    .and_then(|id| self.queue_group(id, GroupIntent::Update)),
            ),
            GroupCommand::Remove { group, peers } => {
                let id = match self.group_id(&group) {
                    Ok(id) => id,
                    Err(err) => return ready(Err(err)),
                };
                let mut members = Vec::with_capacity(peers.len());
                for peer in peers {
                    // A member is named as `/groups` shows it: its name, or its `#` label.
                    let identity = (self.state.groups().members_of(&id).into_iter())
                        .filter(|m| m != self.state.identity().public())
                        .find(|m| self.member_name(m) == peer);
                    match identity {
                        Some(identity) => members.push(IntentMember {
                            name: peer,
                            identity: identity_hex(&identity),
                            key_package: String::new(),
                        }),
                        None => return ready(Err(format!("{peer} is not in group {group}"))),
                    }
                }
                ready(self.queue_group(id, GroupIntent::Remove { members }))
            }
            GroupCommand::Create { group, peers } => {
                if let Err(err) = crate::group::validate_group_name(&group) {
                    return ready(Err(err.to_string()));
                }
                if self.state.groups().id_of(&group).is_some() {
                    return ready(Err(format!("a group named {group} exists already")));
                }
                self.add_members(None, group, peers, ctx)
            }
            GroupCommand::Add { group, peers } => match self.group_id(&group) {
                Ok(id) => {
                    let members: Vec<String> = (self.state.groups().members_of(&id).iter())
                        .map(|m| self.member_name(m))
                        .collect();
                    if let Some(peer) = peers.iter().find(|p| members.contains(p)) {
                        return ready(Err(format!("{peer} is in group {group} already")));
                    }
                    self.add_members(Some(id), group, peers, ctx)
                }
                Err(err) => ready(Err(err)),
            },
        }
    }
}

impl AgentActor {
    fn group_id(&self, group: &str) -> Result<Vec<u8>, String> {
        self.state
            .groups()
            .id_of(group)
            .ok_or_else(|| format!("no group named {group} (see /groups)"))
    }

    /// Members we show by their pinned name, others by fingerprint; us by our name.
    fn member_name(&self, identity: &IdentityKey) -> String {
        if identity == self.state.identity().public() {
            self.state.name().to_owned()
        } else {
            self.display_name(identity)
        }
    }

    fn group_size(&self, group: &str) -> usize {
        self.state
            .groups()
            .id_of(group)
            .map_or(0, |id| self.state.groups().members_of(&id).len())
    }

    /// Adds (or, with `group_id` `None`, creates the group with) `peers`: each must be
    /// known by its pinned identity, without an identity change pending; their
    /// KeyPackages are fetched from the relay and must bind those identities.
    fn add_members(
        &mut self,
        group_id: Option<Vec<u8>>,
        group: String,
        peers: Vec<String>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<(), String>> {
        if !self.connected {
            let reason = "not connected to the relay: adding members needs their KeyPackages".to_owned();
            return Box::pin(actix::fut::ready(Err(reason)));
        }
        let mut unique = Vec::new();
        for peer in peers {
            if peer == self.state.name() {
                return Box::pin(actix::fut::ready(Err("you are a member already".into())));
            }
            if !unique.contains(&peer) {
                unique.push(peer);
            }
        }
        let timeout_ms = self.settings.expect_timeout_ms;
        let unknown: Vec<String> = (unique.iter())
            .filter(|peer| self.state.pin(peer).is_none())
            .cloned()
            .collect();
        let waits: Vec<_> = (unknown.into_iter())
            .map(|peer| {
                self.resolve(&peer, ctx);
                let describe = format!("peer {peer} to be known");
                self.wait(WaitFor::Peer { peer }, timeout_ms, describe, ctx)
            })
            .collect();
        let fetch = async move { futures_util::future::join_all(waits).await };
        let me = ctx.address();
        Box::pin(fetch.into_actor(self).then(move |waited, act, _| {
            let pinned = waited
                .into_iter()
                .collect::<Result<Vec<()>, String>>()
                .and_then(|_| act.pinned_members(&unique));
            async move {
                let members = pinned?;
                let mut packages = Vec::with_capacity(members.len());
                for (name, identity) in members {
                    let package = fetch_key_package(&me, identity).await.ok_or_else(|| {
                        format!(
                            "no KeyPackage of {name} at the relay after {} s (has it connected with a version that has groups?)",
                            KEY_PACKAGE_TIMEOUT.as_secs()
                        )
                    })?;
                    packages.push(IntentMember {
                        name,
                        identity: identity_hex(&identity),
                        key_package: hex::encode(package),
                    });
                }
                Ok(packages)
            }
            .into_actor(act)
            .map(move |packages: Result<Vec<IntentMember>, String>, act, _| {
                let members = packages?;
                match group_id {
                    Some(id) => act.queue_group(id, GroupIntent::Add { members }),
                    None => act.create_group(&group, members),
                }
            })
        }))
    }

    /// The pinned identities of `peers`; refuses a peer whose identity change is pending.
    fn pinned_members(&self, peers: &[String]) -> Result<Vec<(String, IdentityKey)>, String> {
        peers
            .iter()
            .map(|peer| {
                if !self.state.pending_changes(peer).is_empty() {
                    return Err(format!(
                        "{peer} has an identity change pending: /verify {peer}, then /trust or /reject first"
                    ));
                }
                let pin = self
                    .state
                    .pin(peer)
                    .ok_or_else(|| format!("{peer} is not known"))?;
                Ok((peer.clone(), pin.identity))
            })
            .collect()
    }

    /// Creates the group (its state written with the outbox entry of its first commit).
    fn create_group(&mut self, group: &str, members: Vec<IntentMember>) -> Result<(), String> {
        let packages = self.read_packages(&members)?;
        let msg_id = random_id();
        let intent = GroupIntent::Create { members };
        let made = self.state.with_groups(
            |book| book.create(group, msg_id, packages),
            |(group_id, frame)| {
                vec![GroupEdit::Put(GroupOutboxEntry {
                    msg_id,
                    group_id: group_id.clone(),
                    intent: intent.clone(),
                    frame: Some(frame.clone()),
                })]
            },
        );
        made.map_err(|err| err.to_string())?;
        self.track_group_upload(&msg_id);
        self.pump_groups();
        Ok(())
    }

    /// The KeyPackages of `members`, checked against their identities.
    fn read_packages(
        &self,
        members: &[IntentMember],
    ) -> Result<Vec<(IdentityKey, openmls::prelude::KeyPackage)>, String> {
        members
            .iter()
            .map(|m| {
                let identity = identity_of_hex(&m.identity)?;
                let bytes = hex::decode(&m.key_package).map_err(|e| e.to_string())?;
                let package = (self.state.groups())
                    .read_key_package(&m.name, &identity, &bytes)
                    .map_err(|e| e.to_string())?;
                Ok((identity, package))
            })
            .collect()
    }

    /// Adds an upload to the group outbox (written before anything is sent) and sends
    /// what may go now.
    fn queue_group(&mut self, group_id: Vec<u8>, intent: GroupIntent) -> Result<(), String> {
        let msg_id = random_id();
        let entry = GroupOutboxEntry {
            msg_id,
            group_id,
            intent,
            frame: None,
        };
        self.state
            .with_groups(|_| Ok(()), |_| vec![GroupEdit::Put(entry)])
            .map_err(|e| e.to_string())?;
        self.track_group_upload(&msg_id);
        self.pump_groups();
        Ok(())
    }

    /// Sends the first upload of every group that has none on the wire, making it
    /// first if needed (on the group's current epoch).
    pub(super) fn pump_groups(&mut self) {
        if !self.connected {
            return;
        }
        let mut heads: Vec<GroupOutboxEntry> = Vec::new();
        for entry in self.state.group_outbox() {
            if !heads.iter().any(|h| h.group_id == entry.group_id) {
                heads.push(entry.clone());
            }
        }
        for head in heads {
            if self.group.sent.contains(&head.msg_id) {
                continue;
            }
            if let Some(epoch) = self.group.waiting.get(&head.msg_id) {
                if self.state.groups().epoch_of(&head.group_id).unwrap_or(u64::MAX) < *epoch {
                    continue;
                }
                self.group.waiting.remove(&head.msg_id);
            }
            let frame = match head.frame.clone() {
                Some(frame) => frame,
                None => match self.make_upload(&head) {
                    Some(frame) => frame,
                    None => continue,
                },
            };
            self.group.sent.insert(head.msg_id);
            self.to_relay(frame);
        }
    }

    /// Makes the upload of `entry` on the group's current epoch and writes it with the
    /// group state; an intent that no longer applies (members added or removed
    /// meanwhile) or fails is dropped, and reported.
    fn make_upload(&mut self, entry: &GroupOutboxEntry) -> Option<Frame> {
        let group_id = entry.group_id.clone();
        let msg_id = entry.msg_id;
        let members = self.state.groups().members_of(&group_id);
        let packages = match &entry.intent {
            GroupIntent::Create { members: add } | GroupIntent::Add { members: add } => {
                let fresh: Vec<IntentMember> = (add.iter())
                    .filter(|m| identity_of_hex(&m.identity).is_ok_and(|id| !members.contains(&id)))
                    .cloned()
                    .collect();
                match self.read_packages(&fresh) {
                    Ok(packages) => packages,
                    Err(reason) => {
                        self.drop_group_upload(entry, &reason);
                        return None;
                    }
                }
            }
            _ => Vec::new(),
        };
        let intent = entry.intent.clone();
        let made = self.state.with_groups(
            |book: &mut GroupBook| -> Result<Option<Frame>, GroupError> {
                match &intent {
                    GroupIntent::Text { text } => book.send(&group_id, msg_id, text).map(Some),
                    GroupIntent::Leave => book.leave(&group_id, msg_id).map(Some),
                    GroupIntent::Update => book.update(&group_id, msg_id).map(Some),
                    GroupIntent::Create { .. } | GroupIntent::Add { .. } if packages.is_empty() => Ok(None),
                    GroupIntent::Create { .. } | GroupIntent::Add { .. } => {
                        book.add(&group_id, msg_id, packages).map(Some)
                    }
                    GroupIntent::Remove { members: gone } => {
                        let gone: Vec<IdentityKey> = (gone.iter())
                            .filter_map(|m| identity_of_hex(&m.identity).ok())
                            .filter(|id| members.contains(id))
                            .collect();
                        if gone.is_empty() {
                            return Ok(None);
                        }
                        book.remove(&group_id, msg_id, &gone).map(Some)
                    }
                }
            },
            |frame| match frame {
                Some(frame) => vec![GroupEdit::Put(GroupOutboxEntry {
                    frame: Some(frame.clone()),
                    ..entry.clone()
                })],
                None => vec![GroupEdit::Remove(msg_id)],
            },
        );
        match made {
            Ok(frame) => frame,
            Err(err) if err.is_retryable() => {
                self.emit(Event::error(format!("cannot save group state: {err}")));
                None
            }
            Err(err) => {
                self.drop_group_upload(entry, &err.to_string());
                None
            }
        }
    }

    /// Drops an upload from the group outbox and reports why.
    fn drop_group_upload(&mut self, entry: &GroupOutboxEntry, reason: &str) {
        let group = self.group_label(&entry.group_id);
        let group_id = entry.group_id.clone();
        let discarded = self.state.with_groups(
            |book| book.discard_pending(&group_id),
            |_| vec![GroupEdit::Remove(entry.msg_id)],
        );
        if let Err(err) = discarded {
            self.emit(Event::error(format!("cannot update the group outbox: {err}")));
        }
        self.group.sent.remove(&entry.msg_id);
        self.emit(Event::GroupFailed {
            group,
            reason: reason.to_owned(),
        });
    }

    fn group_label(&self, group_id: &[u8]) -> String {
        self.state
            .groups()
            .name_of(group_id)
            .map_or_else(|| hex::encode(group_id), str::to_owned)
    }

    fn group_entry(&self, msg_id: &[u8; 16]) -> Option<GroupOutboxEntry> {
        self.state
            .group_outbox()
            .iter()
            .find(|e| e.msg_id == *msg_id)
            .cloned()
    }

    /// `SentAck` of a group upload: a commit is merged, a leave forgets the group, a
    /// text is reported sent. False if `msg_id` is not a group upload.
    pub(super) fn on_group_stored(&mut self, msg_id: &[u8; 16]) -> bool {
        let Some(entry) = self.group_entry(msg_id) else {
            return false;
        };
        self.group.sent.remove(msg_id);
        let group = self.group_label(&entry.group_id);
        let group_id = entry.group_id.clone();
        let others: Vec<[u8; 16]> = (self.state.group_outbox().iter())
            .filter(|e| e.group_id == group_id && e.msg_id != *msg_id)
            .map(|e| e.msg_id)
            .collect();
        let result = match &entry.intent {
            GroupIntent::Leave => self
                .state
                .with_groups(
                    |book| {
                        book.forget(&group_id);
                        Ok(None::<GroupEvent>)
                    },
                    |_| {
                        let mut edits = vec![GroupEdit::Remove(*msg_id)];
                        edits.extend(others.iter().map(|id| GroupEdit::Remove(*id)));
                        edits
                    },
                )
                .map(|_| {
                    Some(Event::GroupRemoved {
                        group: group.clone(),
                        by: self.state.name().to_owned(),
                    })
                }),
            GroupIntent::Text { .. } => self
                .state
                .with_groups(|_| Ok(()), |_| vec![GroupEdit::Remove(*msg_id)])
                .map(|_| {
                    Some(Event::GroupSent {
                        group: group.clone(),
                        msg_id: msg_id_hex(msg_id),
                    })
                }),
            GroupIntent::Create { .. }
            | GroupIntent::Add { .. }
            | GroupIntent::Remove { .. }
            | GroupIntent::Update => self
                .state
                .with_groups(
                    |book| book.commit_stored(&group_id),
                    |_| vec![GroupEdit::Remove(*msg_id)],
                )
                .map(|event| {
                    let created = matches!(entry.intent, GroupIntent::Create { .. });
                    event.map(|event| match event {
                        GroupEvent::Members { .. } if created => Event::GroupJoined {
                            group: group.clone(),
                            by: self.state.name().to_owned(),
                            members: (self.state.groups().members_of(&group_id).iter())
                                .map(|m| self.member_name(m))
                                .collect(),
                        },
                        other => self.group_event(other),
                    })
                }),
        };
        match result {
            Ok(Some(event)) => self.emit_group(event),
            Ok(None) => {}
            Err(err) => self.emit(Event::error(format!("cannot save group state: {err}"))),
        }
        self.pump_groups();
        true
    }

    /// `GroupEpoch`: another commit took the epoch of our upload. Our commit is dropped;
    /// the upload is made again once we have read the group's commits up to `epoch`.
    pub(super) fn on_group_epoch(&mut self, msg_id: [u8; 16], epoch: u64, ctx: &mut Context<Self>) {
        let Some(entry) = self.group_entry(&msg_id) else {
            return;
        };
        self.group.sent.remove(&msg_id);
        let group_id = entry.group_id.clone();
        let redo = GroupOutboxEntry { frame: None, ..entry };
        let saved = self.state.with_groups(
            |book| book.discard_pending(&group_id),
            |_| vec![GroupEdit::Put(redo.clone())],
        );
        if let Err(err) = saved {
            self.emit(Event::error(format!("cannot save group state: {err}")));
            return;
        }
        debug!(self.log, "group upload refused for a later epoch; made again once there";
               "group" => self.group_label(&group_id), "epoch" => epoch);
        self.group.waiting.insert(msg_id, epoch);
        // The commits that took the group to `epoch` are in our queue, normally: if
        // they never come (a state restored from an older copy, a commit we refused),
        // this state cannot follow the group any more; say so rather than wait.
        ctx.run_later(GROUP_CATCH_UP, move |act, _| {
            let behind = act.group.waiting.get(&msg_id) == Some(&epoch);
            let ours = act.state.groups().epoch_of(&group_id);
            if let (true, Some(ours), Some(entry)) = (behind, ours, act.group_entry(&msg_id)) {
                if ours < epoch {
                    act.group.waiting.remove(&msg_id);
                    let reason = format!(
                        "this state is behind the group (epoch {ours}, the group is at {epoch}) and \
                         the commits between did not arrive: was it restored from an older copy? A \
                         member must remove you and add you again; the message was not sent"
                    );
                    act.drop_group_upload(&entry, &reason);
                    act.pump_groups();
                }
            }
        });
        self.pump_groups();
    }

    /// A refusal of a group upload: a retryable one is sent again later, another drops
    /// it. False if `msg_id` is not a group upload.
    pub(super) fn on_group_refused(
        &mut self,
        msg_id: [u8; 16],
        code: ErrorCode,
        retry_after_ms: u32,
        reason: &str,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some(entry) = self.group_entry(&msg_id) else {
            return false;
        };
        if code.is_retryable() {
            let wait = Duration::from_millis(u64::from(retry_after_ms).max(MIN_RETRY_MS));
            ctx.run_later(wait, move |act, _| {
                act.group.sent.remove(&msg_id);
                act.pump_groups();
            });
        } else {
            self.drop_group_upload(
                &entry,
                &format!("the relay refused it: {}: {reason}", code.name()),
            );
            self.pump_groups();
        }
        true
    }

    /// A delivery that carries a group message (`MSG_TYPE_MLS || MLSMessage`): read in
    /// arrival order, after the names of its sender and of new members are known (the
    /// registry's answers, or their timeout). Pins do not hold group messages: MLS
    /// membership, not the pin, decides who is in a group.
    pub(super) fn on_group_payload(&mut self, sender: [u8; 32], msg_id: [u8; 16], wire: &[u8]) {
        if let Ok(identity) = IdentityKey::from_bytes(sender) {
            self.name_members(&[identity]);
        }
        let kept = KeptGroupDelivery {
            sender,
            msg_id,
            wire: wire.to_vec(),
        };
        if !self.group.naming.is_empty() && self.group.held.len() < GROUP_HELD_LIMIT {
            self.group.held.push_back(kept);
            return;
        }
        self.group.held.push_back(kept);
        self.read_held_group_deliveries(true);
    }

    /// A name asked for a member or sender is answered (or timed out).
    pub(super) fn group_member_named(&mut self, identity: &IdentityKey) {
        if self.group.naming.remove(identity) && self.group.naming.is_empty() {
            for event in std::mem::take(&mut self.group.deferred) {
                let event = self.group_event(event);
                self.emit_group(event);
            }
            self.read_held_group_deliveries(false);
        }
    }

    /// Reads held group deliveries in order, until one of them starts naming someone
    /// (unless `all`).
    fn read_held_group_deliveries(&mut self, all: bool) {
        while let Some(kept) = self.group.held.pop_front() {
            self.on_group_delivery(kept.sender, kept.msg_id, &kept.wire[1..]);
            if !all && !self.group.naming.is_empty() {
                break;
            }
        }
    }

    /// A delivery that carries an MLS message (`MSG_TYPE_MLS || MLSMessage`).
    pub(super) fn on_group_delivery(&mut self, sender: [u8; 32], msg_id: [u8; 16], message: &[u8]) {
        let ack = Frame::DeliveryAck { sender, msg_id };
        match self.state.group_received(&sender, &msg_id) {
            Ok(true) => return self.to_relay(ack),
            Ok(false) => {}
            Err(err) => return self.emit(Event::error(format!("cannot read group state: {err}"))),
        }
        let read = self.state.with_groups(
            |book| book.receive(message),
            |_| vec![GroupEdit::Received(sender, msg_id)],
        );
        match read {
            Ok(events) => {
                for event in events {
                    self.on_group_event(event);
                }
                self.pump_groups();
                self.to_relay(ack);
            }
            Err(err) if err.is_retryable() => {
                // Not acknowledged: the relay delivers it again.
                self.emit(Event::error(format!("cannot save group state: {err}")));
            }
            Err(StateError::Group(GroupError::NotInGroup)) => {
                // A group we left or were removed from (its last messages), or copies a
                // member list sends us by mistake or in spite: nothing to show.
                debug!(self.log, "a group message of a group we are not in"; "sender" => hex::encode(&sender[..8]));
                if let Err(err) = self
                    .state
                    .with_groups(|_| Ok(()), |_| vec![GroupEdit::Received(sender, msg_id)])
                {
                    return self.emit(Event::error(format!("cannot save group state: {err}")));
                }
                self.to_relay(ack);
            }
            Err(err) => {
                let from = IdentityKey::from_bytes(sender)
                    .map_or_else(|_| hex::encode(sender), |id| self.display_name(&id));
                self.emit(Event::GroupFailed {
                    group: "?".into(),
                    reason: format!("a group message from {from} could not be read: {err}"),
                });
                if let Err(err) = self
                    .state
                    .with_groups(|_| Ok(()), |_| vec![GroupEdit::Received(sender, msg_id)])
                {
                    return self.emit(Event::error(format!("cannot save group state: {err}")));
                }
                self.to_relay(ack);
            }
        }
    }

    fn on_group_event(&mut self, event: GroupEvent) {
        if let GroupEvent::LeaveAsked {
            group,
            who,
            commit_it,
        } = &event
        {
            let name = self.member_name(who);
            self.emit(Event::info(format!("{name} asks to leave group {group}")));
            if *commit_it {
                if let Some(id) = self.state.groups().id_of(group) {
                    let member = IntentMember {
                        name,
                        identity: identity_hex(who),
                        key_package: String::new(),
                    };
                    if let Err(err) = self.queue_group(
                        id,
                        GroupIntent::Remove {
                            members: vec![member],
                        },
                    ) {
                        self.emit(Event::error(format!("cannot remove a leaving member: {err}")));
                    }
                }
            }
            return;
        }
        if let GroupEvent::Removed { .. } = &event {
            // Uploads to a group we are no longer in cannot be stored.
            let orphaned: Vec<[u8; 16]> = (self.state.group_outbox().iter())
                .filter(|e| self.state.groups().name_of(&e.group_id).is_none())
                .map(|e| e.msg_id)
                .collect();
            if !orphaned.is_empty() {
                let edits = orphaned.iter().map(|id| GroupEdit::Remove(*id)).collect();
                if let Err(err) = self.state.with_groups(|_| Ok(()), |_| edits) {
                    self.emit(Event::error(format!("cannot update the group outbox: {err}")));
                }
            }
        }
        match &event {
            GroupEvent::Joined { members, .. } => self.name_members(&members.clone()),
            GroupEvent::Members { added, .. } => self.name_members(&added.clone()),
            _ => {}
        }
        if !self.group.naming.is_empty() {
            // Reported once its members are named; what follows waits behind it.
            self.group.deferred.push(event);
            return;
        }
        let event = self.group_event(event);
        self.emit_group(event);
    }

    /// Asks the registry for the names of members we know by fingerprint only (at most
    /// [`MEMBER_LOOKUPS`] per event), so that later events and `/groups` name them.
    fn name_members(&mut self, members: &[IdentityKey]) {
        let unnamed: Vec<IdentityKey> = (members.iter())
            .filter(|m| *m != self.state.identity().public())
            .filter(|m| self.state.name_of(m).is_none() && !self.anonymous.contains(*m))
            .filter(|m| !self.group.naming.contains(*m))
            .take(MEMBER_LOOKUPS)
            .copied()
            .collect();
        if self.connected {
            for member in unnamed {
                self.group.naming.insert(member);
                self.ask_name_of(member);
            }
        }
    }

    /// The event to report for what the book did.
    fn group_event(&self, event: GroupEvent) -> Event {
        let names = |ids: &[IdentityKey]| ids.iter().map(|m| self.member_name(m)).collect::<Vec<_>>();
        match event {
            GroupEvent::Joined { group, by, members } => Event::GroupJoined {
                group,
                by: self.member_name(&by),
                members: names(&members),
            },
            GroupEvent::Message { group, from, text } => Event::GroupMessage {
                group,
                from: self.member_name(&from),
                from_identity: identity_hex(&from),
                text,
            },
            GroupEvent::Members {
                group,
                by,
                epoch,
                added,
                removed,
            } => Event::GroupMembers {
                group,
                by: self.member_name(&by),
                epoch,
                added: names(&added),
                removed: names(&removed),
            },
            GroupEvent::Removed { group, by } => Event::GroupRemoved {
                group,
                by: self.member_name(&by),
            },
            GroupEvent::LeaveAsked { group, who, .. } => {
                Event::info(format!("{} asks to leave group {group}", self.member_name(&who)))
            }
        }
    }

    /// Reports a group event and wakes the script steps waiting for it.
    fn emit_group(&mut self, event: Event) {
        match &event {
            Event::GroupMessage {
                group, from, text, ..
            } => {
                let from = format!("{group}/{from}");
                let text = text.clone();
                let matched = self.resolve_first(
                    |what| matches!(what, WaitFor::Message { peer, text: t } if *peer == from && text.contains(t.as_str())),
                );
                if !matched {
                    self.remember_text(from, text);
                }
            }
            Event::GroupJoined { .. } | Event::GroupMembers { .. } | Event::GroupRemoved { .. } => {}
            _ => {}
        }
        self.emit(event);
        let sizes: Vec<(String, usize)> = (self.state.groups().summaries().into_iter())
            .map(|g| (g.name, g.members.len()))
            .collect();
        self.resolve_waiters(|what| match what {
            WaitFor::GroupSize { group, members } => {
                sizes.iter().find(|(g, _)| g == group).map_or(0, |(_, n)| *n) == *members
            }
            _ => false,
        });
    }

    /// On connecting: ask how many KeyPackages the relay holds, and send the group
    /// outbox again (the relay answers a resent upload it stored as stored).
    pub(super) fn groups_on_connected(&mut self) {
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
        self.group.publishing = true;
        self.to_relay(Frame::PublishKeyPackages {
            packages: Vec::new(),
            last_resort: None,
        });
        self.pump_groups();
    }

    /// `KeyPackageCount`: publishes more one-time KeyPackages (and a new last-resort
    /// one) when the relay holds fewer than [`KEY_PACKAGES_LOW`].
    pub(super) fn on_key_package_count(&mut self, remaining: u32) {
        self.group.publishing = false;
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
                self.group.publishing = true;
                self.to_relay(Frame::PublishKeyPackages {
                    packages,
                    last_resort: last_resort.pop(),
                });
            }
            Err(err) => self.emit(Event::error(format!("cannot make KeyPackages: {err}"))),
        }
    }

    /// `KeyPackage`: the answer to a fetch.
    pub(super) fn on_key_package(&mut self, request_id: u32, package: Option<Vec<u8>>) {
        if let Some(tx) = self.group.fetches.remove(&request_id) {
            let _ = tx.send(package);
        }
    }

    /// Tags the upload with the bot command being handled, for its later events.
    fn track_group_upload(&mut self, msg_id: &[u8; 16]) {
        if let Some(id) = self.tags.current().cloned() {
            self.tags.sent(msg_id_hex(msg_id), id);
        }
    }

    /// Whether a delivered payload is a group message.
    pub(super) fn is_group_payload(payload: &[u8]) -> bool {
        payload.first() == Some(&MSG_TYPE_MLS)
    }
}

fn identity_of_hex(hex_identity: &str) -> Result<IdentityKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_identity)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("a member identity is not 32 bytes of hex")?;
    IdentityKey::from_bytes(bytes).map_err(|e| e.to_string())
}
