//! The relay as an MLS delivery service (RFC 9420 §4, docs/PROTOCOL.md 8): per group,
//! its epoch, its members and a log of the commits that made each epoch; one upload
//! queued for every other member.
//!
//! [`apply_group_write`] is the one place the rules live; each engine gives it its
//! tables through [`GroupTables`], inside the transaction of the batch, so two commits
//! for one epoch are ordered by the store itself, whichever relay received them.

use bytes::Bytes;
use e2ee_protocol::group::{fan_out_id, MAX_GROUP_MEMBERS};

use super::{stored_size, IdentityBytes, MsgId, NewMessage, Quota, Quotas, StoreError, Usage, WriteResult};

/// How many commits a group's log keeps (older entries are dropped as new ones come):
/// enough to recognise any commit a client could still be resending.
pub const GROUP_LOG_KEPT: u64 = 1000;

/// A group as the relay keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group's current epoch: the next commit must be made in it.
    pub epoch: u64,
    /// Every member's identity, in the order the last commit gave.
    pub members: Vec<IdentityBytes>,
}

impl GroupRecord {
    /// `epoch u64be || members (32 bytes each)`: how engines that keep one value per
    /// group store it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.members.len());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        for member in &self.members {
            out.extend_from_slice(member);
        }
        out
    }

    /// The inverse of [`GroupRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let (epoch, members) = bytes
            .split_first_chunk::<8>()
            .ok_or(StoreError::Corrupt("group record shorter than its epoch"))?;
        if members.len() % 32 != 0 {
            return Err(StoreError::Corrupt("group record members not whole keys"));
        }
        Ok(Self {
            epoch: u64::from_be_bytes(*epoch),
            members: members
                .chunks_exact(32)
                .map(|m| {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(m);
                    key
                })
                .collect(),
        })
    }
}

/// What a commit changes, besides moving the group to the next epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitChange {
    /// Every member after the commit (the committer included).
    pub members: Vec<IdentityBytes>,
    /// The members the commit adds; exactly those of `members` not in the group before.
    pub added: Vec<IdentityBytes>,
    /// The Deliver payload of the Welcome for `added` (`None` when nobody is added).
    pub welcome: Option<Bytes>,
}

/// One upload to a group: an application message or proposal (`commit: None`), or a
/// commit.
#[derive(Debug, Clone)]
pub struct GroupWrite {
    /// The group id, as the message's MLS header gives it.
    pub group_id: Vec<u8>,
    /// The authenticated uploader.
    pub sender: IdentityBytes,
    /// The uploader's message id; each member's copy is queued under
    /// [`fan_out_id`]`(msg_id, member)`.
    pub msg_id: MsgId,
    /// The epoch in the message's MLS header.
    pub epoch: u64,
    /// Receive time (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The Deliver payload every other member gets (`MSG_TYPE_MLS || MLSMessage`).
    pub message: Bytes,
    /// For a commit: the members it leaves and the Welcome for those it adds.
    pub commit: Option<CommitChange>,
}

/// One member's copy of an upload, as queued (pushed to the member if connected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The member.
    pub recipient: IdentityBytes,
    /// The copy's message id ([`fan_out_id`]).
    pub msg_id: MsgId,
    /// Its store sequence number.
    pub seq: u64,
    /// Its Deliver payload.
    pub payload: Bytes,
}

/// What a [`GroupWrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupResult {
    /// Queued for every other member (copies queued before, by a resent upload, are not
    /// listed again); `epoch` is the group's epoch now.
    Stored {
        /// The group's epoch after this write.
        epoch: u64,
        /// The copies queued now.
        queued: Vec<Queued>,
    },
    /// The same commit (sender and id) made this epoch before: nothing changed.
    Duplicate,
    /// The group is at another epoch: nothing was stored.
    Stale {
        /// The group's current epoch.
        epoch: u64,
    },
    /// The uploader is not a member of the group.
    NotMember,
    /// No such group (only a commit made in epoch 0 creates one).
    UnknownGroup,
    /// The commit's member lists do not fit the group.
    Invalid(&'static str),
    /// Its copies together would break this bound; nothing was stored (the uploader
    /// may send it again later).
    QuotaExceeded(Quota),
}

/// The tables a [`GroupWrite`] reads and writes, inside the engine's transaction.
pub trait GroupTables {
    /// The group's record.
    fn group(&mut self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError>;
    /// Replaces (or creates) the group's record.
    fn put_group(&mut self, group_id: &[u8], record: &GroupRecord) -> Result<(), StoreError>;
    /// The (sender, msg_id) of the commit made in `epoch`, if the log still has it.
    fn logged_commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<Option<(IdentityBytes, MsgId)>, StoreError>;
    /// Logs the commit made in `epoch` (and drops entries older than
    /// [`GROUP_LOG_KEPT`] epochs).
    fn log_commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
        sender: &IdentityBytes,
        msg_id: &MsgId,
        commit: &[u8],
    ) -> Result<(), StoreError>;
    /// Queues one member's copy (its quotas were checked for all copies at once by
    /// [`apply_group_write`]).
    fn append(&mut self, message: &NewMessage) -> Result<WriteResult, StoreError>;
    /// Unacknowledged messages queued for `recipient`.
    fn queue_len(&mut self, recipient: &IdentityBytes) -> Result<u64, StoreError>;
    /// `sender`'s unacknowledged messages.
    fn sender_usage(&mut self, sender: &IdentityBytes) -> Result<Usage, StoreError>;
    /// All unacknowledged messages.
    fn stored_usage(&mut self) -> Result<Usage, StoreError>;
}

/// The first bound the copies of one upload would break together, if any. Every copy
/// counts for its uploader and for the storage budget, so a member list of identities
/// that never read cannot make one upload take more than the uploader's quota. A
/// commit's copies (and its Welcome) are not held to the recipients' queue bound nor
/// to the uploader's message count: a member that missed a commit could not read the
/// group again; its bytes still count (docs/PROTOCOL.md 8.4).
fn copies_exceed(
    tables: &mut impl GroupTables,
    sender: &IdentityBytes,
    copies: &[(IdentityBytes, &Bytes)],
    commit: bool,
    quotas: &Quotas,
) -> Result<Option<Quota>, StoreError> {
    let count = copies.len() as u64;
    let bytes: u64 = copies.iter().map(|(_, p)| stored_size(p.len())).sum();
    if !commit {
        for (recipient, _) in copies {
            if tables.queue_len(recipient)? >= quotas.queue {
                return Ok(Some(Quota::RecipientQueue));
            }
        }
    }
    let usage = tables.sender_usage(sender)?;
    if !commit && usage.messages.saturating_add(count) > quotas.sender_messages {
        return Ok(Some(Quota::SenderMessages));
    }
    if usage.bytes.saturating_add(bytes) > quotas.sender_bytes {
        return Ok(Some(Quota::SenderBytes));
    }
    if tables.stored_usage()?.bytes.saturating_add(bytes) > quotas.stored_bytes {
        return Ok(Some(Quota::StorageBudget));
    }
    Ok(None)
}

/// Applies one upload to a group: checks membership, epoch and the quotas of all its
/// copies, queues the copies, and for a commit moves the group to the next epoch and
/// logs it (docs/PROTOCOL.md 8.4). Nothing is written unless it is `Stored`.
pub fn apply_group_write(
    tables: &mut impl GroupTables,
    write: &GroupWrite,
    quotas: &Quotas,
) -> Result<GroupResult, StoreError> {
    let record = match tables.group(&write.group_id)? {
        Some(record) => record,
        // A group is made by its creator's first commit, in epoch 0.
        None if write.commit.is_some() && write.epoch == 0 => GroupRecord {
            epoch: 0,
            members: vec![write.sender],
        },
        None => return Ok(GroupResult::UnknownGroup),
    };
    if !record.members.contains(&write.sender) {
        return Ok(GroupResult::NotMember);
    }
    if record.epoch != write.epoch {
        if write.commit.is_some()
            && write.epoch < record.epoch
            && tables.logged_commit(&write.group_id, write.epoch)? == Some((write.sender, write.msg_id))
        {
            return Ok(GroupResult::Duplicate);
        }
        return Ok(GroupResult::Stale { epoch: record.epoch });
    }
    if let Some(change) = &write.commit {
        if let Err(reason) = check_change(&record, &write.sender, change) {
            return Ok(GroupResult::Invalid(reason));
        }
    }
    let mut copies: Vec<(IdentityBytes, &Bytes)> = record
        .members
        .iter()
        .filter(|m| **m != write.sender)
        .map(|m| (*m, &write.message))
        .collect();
    if let Some(CommitChange {
        added,
        welcome: Some(welcome),
        ..
    }) = &write.commit
    {
        copies.extend(added.iter().map(|m| (*m, welcome)));
    }
    if let Some(quota) = copies_exceed(tables, &write.sender, &copies, write.commit.is_some(), quotas)? {
        return Ok(GroupResult::QuotaExceeded(quota));
    }
    let mut queued = Vec::with_capacity(copies.len());
    for (recipient, payload) in copies {
        let copy = NewMessage {
            recipient,
            sender: write.sender,
            msg_id: fan_out_id(&write.msg_id, &recipient),
            timestamp_ms: write.timestamp_ms,
            payload: payload.clone(),
        };
        match tables.append(&copy)? {
            WriteResult::Appended { seq } => queued.push(Queued {
                recipient,
                msg_id: copy.msg_id,
                seq,
                payload: copy.payload,
            }),
            // Queued by an earlier upload of the same message.
            WriteResult::Duplicate => {}
            _ => {
                return Err(StoreError::Corrupt(
                    "a group copy was neither stored nor a duplicate",
                ))
            }
        }
    }
    let epoch = match &write.commit {
        Some(change) => {
            let next = record.epoch + 1;
            tables.put_group(
                &write.group_id,
                &GroupRecord {
                    epoch: next,
                    members: change.members.clone(),
                },
            )?;
            tables.log_commit(
                &write.group_id,
                record.epoch,
                &write.sender,
                &write.msg_id,
                &write.message,
            )?;
            next
        }
        None => record.epoch,
    };
    Ok(GroupResult::Stored { epoch, queued })
}

/// Whether a commit's member lists fit the group: the committer stays, no one is listed
/// twice, the added are exactly the new members, and a Welcome comes with them.
fn check_change(
    record: &GroupRecord,
    sender: &IdentityBytes,
    change: &CommitChange,
) -> Result<(), &'static str> {
    if change.members.len() > MAX_GROUP_MEMBERS {
        return Err("more members than a group may have");
    }
    if !change.members.contains(sender) {
        return Err("the committer is not among the members after its commit");
    }
    let mut seen = std::collections::HashSet::with_capacity(change.members.len());
    if !change.members.iter().all(|m| seen.insert(*m)) {
        return Err("a member is listed twice");
    }
    let new: std::collections::HashSet<_> = change
        .members
        .iter()
        .filter(|m| !record.members.contains(m))
        .collect();
    let added: std::collections::HashSet<_> = change.added.iter().collect();
    if added.len() != change.added.len() || new != added {
        return Err("the added members are not exactly the new ones");
    }
    if change.added.is_empty() != change.welcome.is_none() {
        return Err("a Welcome comes exactly with added members");
    }
    Ok(())
}

/// The relay tells an owner whose one-time KeyPackages fall below this many.
pub const KEY_PACKAGES_LOW: u32 = 10;
/// Most one-time KeyPackages held per identity.
pub const MAX_KEY_PACKAGES_HELD: u32 = 100;
