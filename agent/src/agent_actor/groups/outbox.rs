//! The group outbox on the wire: one upload per group at a time, made on the group's
//! current epoch, sent again after a reconnect, made again after `GroupEpoch`; and the
//! relay's answers (`SentAck`, `GroupEpoch`, refusals).

use super::*;

impl AgentActor {
    /// Creates the group (its state written with the outbox entry of its first commit).
    pub(in crate::agent_actor) fn create_group(
        &mut self,
        group: &str,
        members: Vec<IntentMember>,
    ) -> Result<(), String> {
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
    pub(in crate::agent_actor) fn read_packages(
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
    pub(in crate::agent_actor) fn queue_group(
        &mut self,
        group_id: Vec<u8>,
        intent: GroupIntent,
    ) -> Result<(), String> {
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
    pub(in crate::agent_actor) fn pump_groups(&mut self) {
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
    pub(in crate::agent_actor) fn make_upload(&mut self, entry: &GroupOutboxEntry) -> Option<Frame> {
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
    pub(in crate::agent_actor) fn drop_group_upload(&mut self, entry: &GroupOutboxEntry, reason: &str) {
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

    pub(in crate::agent_actor) fn group_label(&self, group_id: &[u8]) -> String {
        self.state
            .groups()
            .name_of(group_id)
            .map_or_else(|| hex::encode(group_id), str::to_owned)
    }

    pub(in crate::agent_actor) fn group_entry(&self, msg_id: &[u8; 16]) -> Option<GroupOutboxEntry> {
        self.state
            .group_outbox()
            .iter()
            .find(|e| e.msg_id == *msg_id)
            .cloned()
    }

    /// `SentAck` of a group upload: a commit is merged, a leave forgets the group, a
    /// text is reported sent. False if `msg_id` is not a group upload.
    pub(in crate::agent_actor) fn on_group_stored(&mut self, msg_id: &[u8; 16]) -> bool {
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
    pub(in crate::agent_actor) fn on_group_epoch(
        &mut self,
        msg_id: [u8; 16],
        epoch: u64,
        ctx: &mut Context<Self>,
    ) {
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
    pub(in crate::agent_actor) fn on_group_refused(
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

    /// Tags the upload with the bot command being handled, for its later events.
    pub(in crate::agent_actor) fn track_group_upload(&mut self, msg_id: &[u8; 16]) {
        if let Some(id) = self.tags.current().cloned() {
            self.tags.sent(msg_id_hex(msg_id), id);
        }
    }
}
