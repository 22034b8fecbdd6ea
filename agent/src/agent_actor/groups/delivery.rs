//! Group deliveries: read in arrival order once their sender and new members are named
//! (the registry's answers, or their timeout), each read committed with its id before it
//! is acknowledged, and reported as events.

use e2ee_protocol::group::MSG_TYPE_MLS;

use super::*;

/// A group delivery kept unread for a while.
pub(super) struct KeptGroupDelivery {
    sender: [u8; 32],
    msg_id: [u8; 16],
    wire: Vec<u8>,
}

/// Group deliveries held while members are named, at most; past it they are read at
/// once, shown by fingerprint.
pub(super) const GROUP_HELD_LIMIT: usize = 256;

impl AgentActor {
    /// A delivery that carries a group message (`MSG_TYPE_MLS || MLSMessage`): read in
    /// arrival order, after the names of its sender and of new members are known (the
    /// registry's answers, or their timeout). Pins do not hold group messages: MLS
    /// membership, not the pin, decides who is in a group.
    pub(in crate::agent_actor) fn on_group_payload(
        &mut self,
        sender: [u8; 32],
        msg_id: [u8; 16],
        wire: &[u8],
    ) {
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
    pub(in crate::agent_actor) fn group_member_named(&mut self, identity: &IdentityKey) {
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
    pub(in crate::agent_actor) fn read_held_group_deliveries(&mut self, all: bool) {
        while let Some(kept) = self.group.held.pop_front() {
            self.on_group_delivery(kept.sender, kept.msg_id, &kept.wire[1..]);
            if !all && !self.group.naming.is_empty() {
                break;
            }
        }
    }

    /// A delivery that carries an MLS message (`MSG_TYPE_MLS || MLSMessage`).
    pub(in crate::agent_actor) fn on_group_delivery(
        &mut self,
        sender: [u8; 32],
        msg_id: [u8; 16],
        message: &[u8],
    ) {
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

    pub(in crate::agent_actor) fn on_group_event(&mut self, event: GroupEvent) {
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
    pub(in crate::agent_actor) fn name_members(&mut self, members: &[IdentityKey]) {
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
    pub(in crate::agent_actor) fn group_event(&self, event: GroupEvent) -> Event {
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
    pub(in crate::agent_actor) fn emit_group(&mut self, event: Event) {
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

    /// Whether a delivered payload is a group message.
    pub(in crate::agent_actor) fn is_group_payload(payload: &[u8]) -> bool {
        payload.first() == Some(&MSG_TYPE_MLS)
    }
}
