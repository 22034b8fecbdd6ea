//! The group commands: `/group create|add|remove|leave|update`, `/g`, `/groups`, the
//! `wait-group` step, and adding members by name (pinned identity, fetched KeyPackage).

use super::key_packages::fetch_key_package;
use super::*;

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
    pub(in crate::agent_actor) fn group_id(&self, group: &str) -> Result<Vec<u8>, String> {
        self.state
            .groups()
            .id_of(group)
            .ok_or_else(|| format!("no group named {group} (see /groups)"))
    }

    /// Members we show by their pinned name, others by fingerprint; us by our name.
    pub(in crate::agent_actor) fn member_name(&self, identity: &IdentityKey) -> String {
        if identity == self.state.identity().public() {
            self.state.name().to_owned()
        } else {
            self.display_name(identity)
        }
    }

    pub(in crate::agent_actor) fn group_size(&self, group: &str) -> usize {
        self.state
            .groups()
            .id_of(group)
            .map_or(0, |id| self.state.groups().members_of(&id).len())
    }

    /// Adds (or, with `group_id` `None`, creates the group with) `peers`: each must be
    /// known by its pinned identity, without an identity change pending; their
    /// KeyPackages are fetched from the relay and must bind those identities.
    pub(in crate::agent_actor) fn add_members(
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
    pub(in crate::agent_actor) fn pinned_members(
        &self,
        peers: &[String],
    ) -> Result<Vec<(String, IdentityKey)>, String> {
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
}
