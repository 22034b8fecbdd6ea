//! The Connection's group requests: uploads to a group (application messages, proposals,
//! commits with their Welcome) and the KeyPackage directory; docs/PROTOCOL.md 8.
//!
//! The relay reads only the plaintext MLS header of an upload (group id, epoch, content
//! type); the store orders uploads per group and queues one copy per member.

use e2ee_protocol::group::{self, ContentType, WireFormat};

use super::*;
use crate::store::group::{CommitChange, GroupResult, GroupWrite, KEY_PACKAGES_LOW, MAX_KEY_PACKAGES_HELD};
use crate::store_actor::{PublishKeyPackages, TakeKeyPackage};

/// An upload to a group being stored, and what answering it takes.
pub(super) struct GroupUpload {
    pub(super) msg_id: MsgId,
    pub(super) request: RequestRef,
}

impl Connection {
    /// Refuses the current request when the store keeps no groups; true if it did.
    fn groups_unsupported(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.relay.groups {
            return false;
        }
        self.refuse_current(
            ErrorCode::GroupsUnsupported,
            "this relay's store engine keeps no groups or KeyPackages",
            ctx,
        );
        true
    }

    /// `GroupSend`: an application message or proposal for every other member.
    pub(super) fn on_group_send(
        &mut self,
        me: IdentityBytes,
        msg_id: MsgId,
        message: Vec<u8>,
        ctx: &mut Context<Self>,
    ) {
        if self.groups_unsupported(ctx) {
            return;
        }
        if let Err(wait) = self.take_token(|r| &mut r.sends) {
            let request = self.requests.current();
            return self.rate_limited(request, Some(msg_id), wait, ctx);
        }
        let header = match group::read_header(&message) {
            Ok(header) if header.content_type != ContentType::Commit => header,
            Ok(_) => return self.invalid_group_message("a commit goes in GroupCommit", ctx),
            Err(err) => return self.invalid_group_message(&format!("MLS header: {err}"), ctx),
        };
        self.upload(me, msg_id, header, message, None, ctx);
    }

    /// `GroupCommit`: a commit for the group's current epoch, with its member lists and
    /// the Welcome for the members it adds.
    pub(super) fn on_group_commit(&mut self, me: IdentityBytes, commit: Frame, ctx: &mut Context<Self>) {
        let Frame::GroupCommit {
            msg_id,
            commit,
            welcome,
            members,
            added,
        } = commit
        else {
            return;
        };
        if self.groups_unsupported(ctx) {
            return;
        }
        if let Err(wait) = self.take_token(|r| &mut r.sends) {
            let request = self.requests.current();
            return self.rate_limited(request, Some(msg_id), wait, ctx);
        }
        let header = match group::read_header(&commit) {
            Ok(header) if header.content_type == ContentType::Commit => header,
            Ok(_) => return self.invalid_group_message("GroupCommit holds no commit", ctx),
            Err(err) => return self.invalid_group_message(&format!("MLS header: {err}"), ctx),
        };
        if let Some(welcome) = &welcome {
            if group::wire_format(welcome) != Ok(WireFormat::Welcome) {
                return self.invalid_group_message("the Welcome is not an MLS Welcome", ctx);
            }
        }
        if let Some(bad) = members.iter().find(|m| !self.recipients.is_valid(m)) {
            let reason = format!("member {} is not a valid identity key", hex::encode(bad));
            return self.invalid_group_message(&reason, ctx);
        }
        let change = CommitChange {
            members,
            added,
            welcome: welcome.map(|w| group::mls_payload(&w).into()),
        };
        self.upload(me, msg_id, header, commit, Some(change), ctx);
    }

    fn upload(
        &mut self,
        me: IdentityBytes,
        msg_id: MsgId,
        header: group::MlsHeader,
        message: Vec<u8>,
        commit: Option<CommitChange>,
        ctx: &mut Context<Self>,
    ) {
        let op = WriteOp::Group(GroupWrite {
            group_id: header.group_id,
            sender: me,
            msg_id,
            epoch: header.epoch,
            timestamp_ms: crate::now_ms(),
            message: group::mls_payload(&message).into(),
            commit,
        });
        let request = self.requests.current();
        self.write(op, Written::Group(GroupUpload { msg_id, request }), ctx);
    }

    fn invalid_group_message(&mut self, reason: &str, ctx: &mut Context<Self>) {
        self.relay.metrics.reject(ErrorCode::InvalidGroupMessage);
        self.refuse_current(ErrorCode::InvalidGroupMessage, reason, ctx);
    }

    /// The outcome of a group upload: `SentAck`, `GroupEpoch`, or a refusal.
    pub(super) fn on_group_stored(
        &mut self,
        outcome: WriteOutcome,
        upload: GroupUpload,
        ctx: &mut Context<Self>,
    ) {
        let GroupUpload { msg_id, request } = upload;
        let result = match outcome {
            Ok(WriteResult::Group(result)) => result,
            Ok(_) | Err(_) => {
                return self.close(
                    ErrorCode::Internal,
                    "group message not stored; resend it after reconnecting",
                    ctx,
                )
            }
        };
        let (code, reason) = match result {
            GroupResult::Stored { queued, epoch } => {
                self.relay.metrics.group_uploads.inc();
                self.relay.metrics.messages_stored.add(queued.len() as u64);
                let id = slog::FnValue(move |_: &slog::Record| hex::encode(msg_id));
                debug!(self.log, "group upload stored"; "msg_id" => id, "copies" => queued.len(), "epoch" => epoch);
                self.send(Frame::SentAck { msg_id }, ctx);
                return;
            }
            GroupResult::Duplicate => {
                self.send(Frame::SentAck { msg_id }, ctx);
                return;
            }
            GroupResult::Stale { epoch } => {
                self.relay.metrics.group_epoch_refusals.inc();
                self.send(Frame::GroupEpoch { msg_id, epoch }, ctx);
                return;
            }
            GroupResult::NotMember => (ErrorCode::NotGroupMember, "not a member of this group".to_owned()),
            GroupResult::UnknownGroup => (
                ErrorCode::UnknownGroup,
                "no such group (a commit made in epoch 0 creates one)".to_owned(),
            ),
            GroupResult::Invalid(reason) => (ErrorCode::InvalidGroupMessage, reason.to_owned()),
            GroupResult::QuotaExceeded(quota) => {
                self.relay.metrics.sender_quota_exceeded.inc();
                let me = self.identity().unwrap_or_default();
                return self.quota_exceeded(request, msg_id, me, quota, ctx);
            }
        };
        self.relay.metrics.reject(code);
        self.refuse(request, code, &reason, ctx);
    }

    /// `PublishKeyPackages`: adds the client's KeyPackages to the directory.
    pub(super) fn on_publish_key_packages(
        &mut self,
        me: IdentityBytes,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        ctx: &mut Context<Self>,
    ) {
        if self.groups_unsupported(ctx) {
            return;
        }
        for package in packages.iter().chain(&last_resort) {
            if group::wire_format(package) != Ok(WireFormat::KeyPackage) {
                return self.invalid_group_message("not an MLS KeyPackage", ctx);
            }
        }
        let published = packages.len();
        let publish = PublishKeyPackages {
            owner: me,
            packages,
            last_resort,
            max_held: MAX_KEY_PACKAGES_HELD,
        };
        ctx.spawn(
            self.relay
                .store
                .send(publish)
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(remaining)) => {
                        if published > 0 {
                            info!(act.log, "key packages published"; "added" => published, "held" => remaining);
                        }
                        act.send(Frame::KeyPackageCount { remaining }, ctx);
                    }
                    _ => act.close(ErrorCode::Internal, "store failure", ctx),
                }),
        );
    }

    /// `FetchKeyPackage`: hands out one of `owner`'s KeyPackages, and tells the owner when
    /// its one-time ones run low.
    pub(super) fn on_fetch_key_package(
        &mut self,
        request_id: u32,
        owner: IdentityBytes,
        ctx: &mut Context<Self>,
    ) {
        if self.groups_unsupported(ctx) {
            return;
        }
        // One-time KeyPackages are handed out within a bucket per owner, as one-time
        // prekeys are: past it, fetches get the last-resort KeyPackage and the owner's
        // one-time ones stay.
        let read_at = self.last_seen;
        let one_time = self.relay.kp_handouts.try_take(&owner, read_at);
        if !one_time {
            self.relay.metrics.kp_handouts_limited.inc();
        }
        ctx.spawn(
            self.relay
                .store
                .send(TakeKeyPackage { owner, one_time })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let taken = match res {
                        Ok(Ok(taken)) => taken,
                        _ => return act.close(ErrorCode::Internal, "store failure", ctx),
                    };
                    let handed_out = taken.as_ref().is_some_and(|t| t.one_time);
                    if one_time && !handed_out {
                        act.relay.kp_handouts.give_back(&owner, read_at);
                    }
                    if let Some(taken) = &taken {
                        if taken.one_time && taken.remaining < KEY_PACKAGES_LOW {
                            act.relay.router.do_send(Notify {
                                identity: owner,
                                frame: Frame::KeyPackageCount {
                                    remaining: taken.remaining,
                                },
                            });
                        }
                    }
                    let package = taken.map(|t| t.package);
                    act.send(Frame::KeyPackage { request_id, package }, ctx);
                }),
        );
    }
}
