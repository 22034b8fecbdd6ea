//! [`GroupBook`]: the agent's MLS groups (RFC 9420, through OpenMLS), without IO.
//!
//! It makes the uploads the relay orders (docs/PROTOCOL.md 8.3): `GroupCommit` for
//! creating a group, adding and removing members, `GroupSend` for texts and for the
//! proposal that asks to leave; and it reads what members deliver: Welcomes, commits,
//! proposals and application messages. Every member's credential must bind its MLS key
//! to its e2ee-chat identity ([`super::credential`]).
//!
//! One upload per group is in flight at a time (the agent's group outbox): a commit
//! stays pending until the relay stores it (`SentAck`, then [`GroupBook::commit_stored`])
//! or refuses it for an epoch taken by another commit (`GroupEpoch`, then
//! [`GroupBook::discard_pending`] and the operation is made again on the new epoch).

use std::collections::{BTreeMap, HashMap};

use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls::treesync::LeafNodeParameters;
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::types::SignatureScheme;
use openmls_traits::OpenMlsProvider;
use rand_core::{OsRng, RngCore};
use thiserror::Error;

use super::credential::{bound_credential, verify_credential, CredentialError};
use super::provider::{GroupProvider, StorageChanges};

/// The one ciphersuite of groups: X25519, ChaCha20-Poly1305, SHA-256, Ed25519
/// (RFC 9420 §17.1, 0x0003), the pairwise protocol's primitives.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;
/// The group context extension holding the group's name (UTF-8), private use range
/// (RFC 9420 §17.3); every member's leaf lists it among its capabilities.
pub const GROUP_NAME_EXTENSION: u16 = 0xF2EE;
/// The longest group name, in UTF-8 bytes.
pub const MAX_GROUP_NAME_LEN: usize = 64;
/// Epochs whose secrets are kept after moving on, for messages made in them that arrive
/// after our own commit was merged (the relay's order makes one enough but for two own
/// commits merged in a row before the backlog is read). Each kept epoch costs every
/// message sent about 1.1 ms at 1 000 members (docs/PERFORMANCE.md 14.2).
const PAST_EPOCHS: usize = 1;
/// Application messages are padded to a multiple of this many bytes.
const PADDING: usize = 64;

/// Why a group operation or a delivery failed.
#[derive(Debug, Error)]
pub enum GroupError {
    /// No group of that name.
    #[error("no group named {0}")]
    UnknownGroup(String),
    /// A group of that name exists.
    #[error("a group named {0} exists already")]
    NameTaken(String),
    /// The name is empty, too long or has characters other than letters, digits, `-`,
    /// `_` and `.`.
    #[error("invalid group name {0:?}: 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidName(String),
    /// A member to remove is not in the group, or one to add is in it already.
    #[error("{0}")]
    Membership(String),
    /// A KeyPackage is malformed, of another ciphersuite, or does not verify.
    #[error("invalid KeyPackage of {who}: {reason}")]
    InvalidKeyPackage {
        /// The member it was fetched for.
        who: String,
        /// What is wrong.
        reason: String,
    },
    /// A member's credential does not bind its MLS key to an identity.
    #[error("member credential refused: {0}")]
    Credential(#[from] CredentialError),
    /// A delivered MLS message that cannot be read.
    #[error("unreadable group message: {0}")]
    Unreadable(String),
    /// A delivered message of a group we are not in (left, removed, or never added).
    #[error("a message of a group we are not in")]
    NotInGroup,
    /// OpenMLS refused the operation.
    #[error("MLS: {0}")]
    Mls(String),
}

fn mls(err: impl std::fmt::Display) -> GroupError {
    GroupError::Mls(err.to_string())
}

/// Checks a group name: 1 to [`MAX_GROUP_NAME_LEN`] bytes of letters, digits, `-`, `_`
/// and `.`.
pub fn validate_group_name(name: &str) -> Result<(), GroupError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_GROUP_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(GroupError::InvalidName(name.to_owned()))
    }
}

/// What reading a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// We joined a group by its Welcome.
    Joined {
        /// The local group name.
        group: String,
        /// Who added us.
        by: IdentityKey,
        /// Every member, us included.
        members: Vec<IdentityKey>,
    },
    /// A text from a member.
    Message {
        /// The local group name.
        group: String,
        /// The sender.
        from: IdentityKey,
        /// The text.
        text: String,
    },
    /// A commit changed the members (another member's, or our own once stored).
    Members {
        /// The local group name.
        group: String,
        /// The committer.
        by: IdentityKey,
        /// The epoch the group is in now.
        epoch: u64,
        /// Members added.
        added: Vec<IdentityKey>,
        /// Members removed.
        removed: Vec<IdentityKey>,
    },
    /// We are no longer a member (removed by `by`, or our leave was committed).
    Removed {
        /// The local group name (the group is forgotten).
        group: String,
        /// Who removed us.
        by: IdentityKey,
    },
    /// A member asked to leave; `commit_it` is true when this agent is the member that
    /// commits the removal (the remaining member with the lowest leaf index).
    LeaveAsked {
        /// The local group name.
        group: String,
        /// The member leaving.
        who: IdentityKey,
        /// Whether this agent removes it.
        commit_it: bool,
    },
}

/// One of our groups.
struct Joined {
    name: String,
    group: MlsGroup,
}

/// A group's public view, for `/groups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The local name.
    pub name: String,
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The current epoch.
    pub epoch: u64,
    /// The members' identities, in leaf order.
    pub members: Vec<IdentityKey>,
}

/// The agent's groups and its MLS signing key.
pub struct GroupBook {
    provider: GroupProvider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    identity: IdentityKey,
    groups: HashMap<Vec<u8>, Joined>,
    /// The groups' names as last persisted (they change only when a group is made,
    /// joined or forgotten: not written again for every message).
    persisted_names: BTreeMap<Vec<u8>, String>,
}

impl GroupBook {
    /// The book of `identity` over the storage as persisted (`values`), its signature key
    /// (`signature_public`, `None` for a new one) and its groups (`groups`: id → local
    /// name). Errors: a group or the key that the storage does not hold.
    pub fn open(
        identity: &IdentityKeyPair,
        values: HashMap<Vec<u8>, Vec<u8>>,
        signature_public: Option<&[u8]>,
        groups: &BTreeMap<Vec<u8>, String>,
    ) -> Result<Self, GroupError> {
        let provider = GroupProvider::from_values(values);
        let signer = match signature_public {
            Some(public) => SignatureKeyPair::read(provider.storage(), public, SignatureScheme::ED25519)
                .ok_or_else(|| GroupError::Mls("the MLS signature key is missing from the state".into()))?,
            None => {
                let signer = SignatureKeyPair::new(SignatureScheme::ED25519).map_err(mls)?;
                signer.store(provider.storage()).map_err(mls)?;
                signer
            }
        };
        let credential = CredentialWithKey {
            credential: bound_credential(identity, signer.public()),
            signature_key: signer.to_public_vec().into(),
        };
        let mut book = Self {
            provider,
            signer,
            credential,
            identity: *identity.public(),
            groups: HashMap::new(),
            persisted_names: groups.clone(),
        };
        for (id, name) in groups {
            let group = MlsGroup::load(book.provider.storage(), &GroupId::from_slice(id))
                .map_err(mls)?
                .ok_or_else(|| GroupError::Mls(format!("group {name} is missing from the state")))?;
            book.groups.insert(
                id.clone(),
                Joined {
                    name: name.clone(),
                    group,
                },
            );
        }
        Ok(book)
    }

    /// The public half of the MLS signature key (kept by the caller to open the book).
    pub fn signature_public(&self) -> Vec<u8> {
        self.signer.to_public_vec()
    }

    /// Storage changes to persist (see [`GroupProvider::changes`]).
    pub fn changes(&self) -> StorageChanges {
        self.provider.changes()
    }

    /// Records the changes as persisted.
    pub fn persisted(&mut self, changes: StorageChanges) {
        self.provider.persisted(changes);
    }

    /// The groups: id → local name.
    pub fn names(&self) -> BTreeMap<Vec<u8>, String> {
        self.groups
            .iter()
            .map(|(id, j)| (id.clone(), j.name.clone()))
            .collect()
    }

    /// The groups' names if they changed since [`GroupBook::names_persisted`] (or the
    /// book was opened).
    pub fn changed_names(&self) -> Option<BTreeMap<Vec<u8>, String>> {
        let names = self.names();
        (names != self.persisted_names).then_some(names)
    }

    /// Records `names` as persisted.
    pub fn names_persisted(&mut self, names: BTreeMap<Vec<u8>, String>) {
        self.persisted_names = names;
    }

    /// Every group, by name.
    pub fn summaries(&self) -> Vec<GroupSummary> {
        let mut out: Vec<GroupSummary> = self
            .groups
            .iter()
            .map(|(id, joined)| GroupSummary {
                name: joined.name.clone(),
                group_id: id.clone(),
                epoch: joined.group.epoch().as_u64(),
                members: member_identities(&joined.group),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The id of the group named `name`.
    pub fn id_of(&self, name: &str) -> Option<Vec<u8>> {
        self.groups
            .iter()
            .find(|(_, j)| j.name == name)
            .map(|(id, _)| id.clone())
    }

    /// The local name of the group `group_id`.
    pub fn name_of(&self, group_id: &[u8]) -> Option<&str> {
        self.groups.get(group_id).map(|j| j.name.as_str())
    }

    /// The epoch of the group `group_id`.
    pub fn epoch_of(&self, group_id: &[u8]) -> Option<u64> {
        self.groups.get(group_id).map(|j| j.group.epoch().as_u64())
    }

    /// The members of the group `group_id`.
    pub fn members_of(&self, group_id: &[u8]) -> Vec<IdentityKey> {
        self.groups
            .get(group_id)
            .map(|j| member_identities(&j.group))
            .unwrap_or_default()
    }

    fn capabilities() -> Capabilities {
        Capabilities::new(
            None,
            Some(&[CIPHERSUITE]),
            Some(&[ExtensionType::Unknown(GROUP_NAME_EXTENSION)]),
            None,
            None,
        )
    }

    /// `count` new one-time KeyPackages (their private keys kept in the storage), as
    /// `MLSMessage` bytes for `PublishKeyPackages`; `last_resort` makes one reusable
    /// KeyPackage instead (RFC 9420 §16.8).
    pub fn key_packages(&mut self, count: usize, last_resort: bool) -> Result<Vec<Vec<u8>>, GroupError> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let mut builder = KeyPackage::builder().leaf_node_capabilities(Self::capabilities());
            if last_resort {
                builder = builder.mark_as_last_resort();
            }
            let bundle = builder
                .build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone())
                .map_err(mls)?;
            let message = MlsMessageOut::from(bundle.key_package().clone());
            out.push(message.tls_serialize_detached().map_err(mls)?);
        }
        Ok(out)
    }

    /// Reads a fetched KeyPackage of `who`, checks it (signature, ciphersuite, that it is
    /// no one else's) and returns it with the identity its credential binds.
    pub fn read_key_package(
        &self,
        who: &str,
        expected: &IdentityKey,
        bytes: &[u8],
    ) -> Result<KeyPackage, GroupError> {
        let invalid = |reason: String| GroupError::InvalidKeyPackage {
            who: who.to_owned(),
            reason,
        };
        let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| invalid(e.to_string()))?;
        let MlsMessageBodyIn::KeyPackage(package) = message.extract() else {
            return Err(invalid("not a KeyPackage".into()));
        };
        let package = package
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| invalid(e.to_string()))?;
        if package.ciphersuite() != CIPHERSUITE {
            return Err(invalid("another ciphersuite".into()));
        }
        let leaf = package.leaf_node();
        let identity = verify_credential(leaf.credential(), leaf.signature_key().as_slice())
            .map_err(|e| invalid(e.to_string()))?;
        if identity != *expected {
            return Err(invalid(format!(
                "it binds identity {} where {who} is pinned as {}",
                identity.short(),
                expected.short()
            )));
        }
        Ok(package)
    }

    /// Creates the group `name` with us as its only member, and the commit (for epoch 0)
    /// that adds the members of `packages` (checked by [`GroupBook::read_key_package`]).
    /// The commit stays pending until stored.
    pub fn create(
        &mut self,
        name: &str,
        msg_id: [u8; 16],
        packages: Vec<(IdentityKey, KeyPackage)>,
    ) -> Result<(Vec<u8>, Frame), GroupError> {
        validate_group_name(name)?;
        if self.id_of(name).is_some() {
            return Err(GroupError::NameTaken(name.to_owned()));
        }
        let extension = Extension::Unknown(GROUP_NAME_EXTENSION, UnknownExtension(name.as_bytes().to_vec()));
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(PAST_EPOCHS)
            .padding_size(PADDING)
            .capabilities(Self::capabilities())
            .with_group_context_extensions(Extensions::single(extension).map_err(mls)?)
            .build();
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            GroupId::from_slice(&id),
            self.credential.clone(),
        )
        .map_err(mls)?;
        self.groups.insert(
            id.to_vec(),
            Joined {
                name: name.to_owned(),
                group,
            },
        );
        match self.add(&id, msg_id, packages) {
            Ok(frame) => Ok((id.to_vec(), frame)),
            Err(err) => {
                self.forget(&id);
                Err(err)
            }
        }
    }

    /// The commit that adds the members of `packages` to the group `group_id`.
    pub fn add(
        &mut self,
        group_id: &[u8],
        msg_id: [u8; 16],
        packages: Vec<(IdentityKey, KeyPackage)>,
    ) -> Result<Frame, GroupError> {
        let joined = self.joined(group_id)?;
        let mut members = member_identities(&joined.group);
        let mut added = Vec::with_capacity(packages.len());
        for (identity, _) in &packages {
            if members.contains(identity) || added.contains(identity) {
                return Err(GroupError::Membership(format!(
                    "{} is in the group already",
                    identity.short()
                )));
            }
            added.push(*identity);
        }
        let key_packages: Vec<KeyPackage> = packages.into_iter().map(|(_, p)| p).collect();
        let (provider, signer) = (&self.provider, &self.signer);
        let joined = self.groups.get_mut(group_id).ok_or_else(|| unknown(group_id))?;
        let (commit, welcome, _) = joined
            .group
            .add_members(provider, signer, &key_packages)
            .map_err(mls)?;
        members.extend(added.iter().copied());
        Ok(Frame::GroupCommit {
            msg_id,
            commit: commit.tls_serialize_detached().map_err(mls)?,
            welcome: Some(welcome.tls_serialize_detached().map_err(mls)?),
            members: members.iter().map(|m| *m.as_bytes()).collect(),
            added: added.iter().map(|m| *m.as_bytes()).collect(),
        })
    }

    /// The commit that removes `who` from the group `group_id`.
    pub fn remove(
        &mut self,
        group_id: &[u8],
        msg_id: [u8; 16],
        who: &[IdentityKey],
    ) -> Result<Frame, GroupError> {
        let joined = self.joined(group_id)?;
        let mut leaves = Vec::with_capacity(who.len());
        for identity in who {
            if *identity == self.identity {
                return Err(GroupError::Membership("use /group leave to leave a group".into()));
            }
            let leaf = joined
                .group
                .members()
                .find(|m| identity_of(m).as_ref() == Some(identity))
                .map(|m| m.index)
                .ok_or_else(|| GroupError::Membership(format!("{} is not in the group", identity.short())))?;
            leaves.push(leaf);
        }
        let members: Vec<IdentityKey> = member_identities(&joined.group)
            .into_iter()
            .filter(|m| !who.contains(m))
            .collect();
        let (provider, signer) = (&self.provider, &self.signer);
        let joined = self.groups.get_mut(group_id).ok_or_else(|| unknown(group_id))?;
        let (commit, _, _) = joined
            .group
            .remove_members(provider, signer, &leaves)
            .map_err(mls)?;
        Ok(Frame::GroupCommit {
            msg_id,
            commit: commit.tls_serialize_detached().map_err(mls)?,
            welcome: None,
            members: members.iter().map(|m| *m.as_bytes()).collect(),
            added: Vec::new(),
        })
    }

    /// A commit that renews our leaf and the secrets on our path (RFC 9420 §12.4, an
    /// update by a commit with a path): whoever learnt our past group secrets learns
    /// none of the next epoch's (post-compromise security).
    pub fn update(&mut self, group_id: &[u8], msg_id: [u8; 16]) -> Result<Frame, GroupError> {
        let (provider, signer) = (&self.provider, &self.signer);
        let joined = self.groups.get_mut(group_id).ok_or_else(|| unknown(group_id))?;
        let members = member_identities(&joined.group);
        let bundle = joined
            .group
            .self_update(provider, signer, LeafNodeParameters::default())
            .map_err(mls)?;
        Ok(Frame::GroupCommit {
            msg_id,
            commit: bundle.commit().tls_serialize_detached().map_err(mls)?,
            welcome: None,
            members: members.iter().map(|m| *m.as_bytes()).collect(),
            added: Vec::new(),
        })
    }

    /// The proposal asking the other members to remove us (RFC 9420 §12.1.3).
    pub fn leave(&mut self, group_id: &[u8], msg_id: [u8; 16]) -> Result<Frame, GroupError> {
        let (provider, signer) = (&self.provider, &self.signer);
        let joined = self.groups.get_mut(group_id).ok_or_else(|| unknown(group_id))?;
        let proposal = joined.group.leave_group(provider, signer).map_err(mls)?;
        Ok(Frame::GroupSend {
            msg_id,
            message: proposal.tls_serialize_detached().map_err(mls)?,
        })
    }

    /// A text for every other member of the group `group_id`.
    pub fn send(&mut self, group_id: &[u8], msg_id: [u8; 16], text: &str) -> Result<Frame, GroupError> {
        let (provider, signer) = (&self.provider, &self.signer);
        let joined = self.groups.get_mut(group_id).ok_or_else(|| unknown(group_id))?;
        let message = joined
            .group
            .create_message(provider, signer, text.as_bytes())
            .map_err(mls)?;
        Ok(Frame::GroupSend {
            msg_id,
            message: message.tls_serialize_detached().map_err(mls)?,
        })
    }

    /// Our commit is stored at the relay: the group moves to its next epoch.
    pub fn commit_stored(&mut self, group_id: &[u8]) -> Result<Option<GroupEvent>, GroupError> {
        let provider = &self.provider;
        let Some(joined) = self.groups.get_mut(group_id) else {
            return Ok(None);
        };
        if joined.group.pending_commit().is_none() {
            return Ok(None);
        }
        let before = member_identities(&joined.group);
        joined.group.merge_pending_commit(provider).map_err(mls)?;
        let after = member_identities(&joined.group);
        Ok(Some(GroupEvent::Members {
            group: joined.name.clone(),
            by: self.identity,
            epoch: joined.group.epoch().as_u64(),
            added: after.iter().filter(|m| !before.contains(m)).copied().collect(),
            removed: before.iter().filter(|m| !after.contains(m)).copied().collect(),
        }))
    }

    /// Our pending commit was refused (another took the epoch): drop it.
    pub fn discard_pending(&mut self, group_id: &[u8]) -> Result<(), GroupError> {
        let provider = &self.provider;
        if let Some(joined) = self.groups.get_mut(group_id) {
            if joined.group.pending_commit().is_some() {
                joined
                    .group
                    .clear_pending_commit(provider.storage())
                    .map_err(mls)?;
            }
        }
        Ok(())
    }

    /// Forgets the group `group_id` (we left it, or were removed); its secrets are
    /// deleted from the storage.
    pub fn forget(&mut self, group_id: &[u8]) {
        if let Some(mut joined) = self.groups.remove(group_id) {
            let _ = joined.group.delete(self.provider.storage());
        }
    }

    /// Reads a delivered MLS message (the payload after `MSG_TYPE_MLS`).
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<GroupEvent>, GroupError> {
        let message =
            MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| GroupError::Unreadable(e.to_string()))?;
        match message.extract() {
            MlsMessageBodyIn::Welcome(welcome) => self.join(welcome).map(|e| vec![e]),
            MlsMessageBodyIn::PrivateMessage(m) => self.process(m.into()),
            MlsMessageBodyIn::PublicMessage(m) => self.process(m.into()),
            _ => Err(GroupError::Unreadable("not a Welcome or a group message".into())),
        }
    }

    fn join(&mut self, welcome: Welcome) -> Result<GroupEvent, GroupError> {
        let config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(PAST_EPOCHS)
            .padding_size(PADDING)
            .build();
        let staged = StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None).map_err(mls)?;
        let by_leaf = staged.welcome_sender().map_err(mls)?;
        let by = verify_credential(by_leaf.credential(), by_leaf.signature_key().as_slice())?;
        for member in staged.members() {
            verify_credential(&member.credential, &member.signature_key)?;
        }
        let group = staged.into_group(&self.provider).map_err(mls)?;
        let wanted = group
            .extensions()
            .unknown(GROUP_NAME_EXTENSION)
            .and_then(|e| String::from_utf8(e.0.clone()).ok())
            .filter(|n| validate_group_name(n).is_ok())
            .unwrap_or_else(|| "group".to_owned());
        let name = self.free_name(&wanted);
        let id = group.group_id().as_slice().to_vec();
        let members = member_identities(&group);
        self.groups.insert(
            id,
            Joined {
                name: name.clone(),
                group,
            },
        );
        Ok(GroupEvent::Joined {
            group: name,
            by,
            members,
        })
    }

    /// `wanted`, or `wanted-2`, `wanted-3`… if taken.
    fn free_name(&self, wanted: &str) -> String {
        if self.id_of(wanted).is_none() {
            return wanted.to_owned();
        }
        (2..)
            .map(|n| format!("{}-{n}", &wanted[..wanted.len().min(MAX_GROUP_NAME_LEN - 6)]))
            .find(|n| self.id_of(n).is_none())
            .unwrap_or_else(|| wanted.to_owned())
    }

    fn process(&mut self, message: ProtocolMessage) -> Result<Vec<GroupEvent>, GroupError> {
        let id = message.group_id().as_slice().to_vec();
        let provider = &self.provider;
        let joined = self.groups.get_mut(&id).ok_or(GroupError::NotInGroup)?;
        let processed = joined.group.process_message(provider, message).map_err(mls)?;
        let sender_leaf = match processed.sender() {
            Sender::Member(index) => Some(*index),
            _ => None,
        };
        // The sender is named by its leaf in our tree, whose binding we checked when it
        // joined or last changed; never by what the message claims.
        let from = sender_leaf
            .and_then(|index| joined.group.member_at(index))
            .and_then(|member| identity_of(&member));
        let name = joined.name.clone();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(message) => {
                let from = from.ok_or_else(|| GroupError::Unreadable("sender credential".into()))?;
                let text = String::from_utf8(message.into_bytes())
                    .map_err(|_| GroupError::Unreadable("the text is not UTF-8".into()))?;
                Ok(vec![GroupEvent::Message {
                    group: name,
                    from,
                    text,
                }])
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                // Only a member's proposal to remove itself (leaving) is acted on: the
                // remaining member with the lowest leaf index commits the removal.
                let leaving = match (proposal.proposal(), sender_leaf) {
                    (Proposal::Remove(remove), Some(sender)) if remove.removed() == sender => sender,
                    _ => return Ok(Vec::new()),
                };
                let who = from.ok_or_else(|| GroupError::Unreadable("sender credential".into()))?;
                let lowest = joined
                    .group
                    .members()
                    .map(|m| m.index)
                    .filter(|i| *i != leaving)
                    .min();
                Ok(vec![GroupEvent::LeaveAsked {
                    group: name,
                    who,
                    commit_it: lowest == Some(joined.group.own_leaf_index()),
                }])
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let by = from.ok_or_else(|| GroupError::Unreadable("committer credential".into()))?;
                // Every leaf the commit brings in must bind its MLS key to an identity
                // (RFC 9420 leaves this to the application, §5.3.1), and a member that
                // renews its leaf (its update path, an Update proposal) keeps its
                // identity: otherwise the commit is refused, and we stay in this epoch.
                for add in staged.add_proposals() {
                    let leaf = add.add_proposal().key_package().leaf_node();
                    verify_credential(leaf.credential(), leaf.signature_key().as_slice())?;
                }
                if let Some(leaf) = staged.update_path_leaf_node() {
                    keeps_identity(leaf, Some(by))?;
                }
                for update in staged.update_proposals() {
                    let was = match update.sender() {
                        Sender::Member(index) => joined.group.member_at(*index).and_then(|m| identity_of(&m)),
                        _ => None,
                    };
                    keeps_identity(update.update_proposal().leaf_node(), was)?;
                }
                let before = member_identities(&joined.group);
                let removed_us = staged.self_removed();
                joined.group.merge_staged_commit(provider, *staged).map_err(mls)?;
                if removed_us {
                    self.forget(&id);
                    return Ok(vec![GroupEvent::Removed { group: name, by }]);
                }
                let after = member_identities(&joined.group);
                Ok(vec![GroupEvent::Members {
                    group: name,
                    by,
                    epoch: joined.group.epoch().as_u64(),
                    added: after.iter().filter(|m| !before.contains(m)).copied().collect(),
                    removed: before.iter().filter(|m| !after.contains(m)).copied().collect(),
                }])
            }
            _ => Ok(Vec::new()),
        }
    }

    fn joined(&self, group_id: &[u8]) -> Result<&Joined, GroupError> {
        self.groups.get(group_id).ok_or_else(|| unknown(group_id))
    }
}

fn unknown(group_id: &[u8]) -> GroupError {
    GroupError::UnknownGroup(hex::encode(group_id))
}

/// The identity a member's credential names (its binding was checked when it joined).
fn identity_of(member: &Member) -> Option<IdentityKey> {
    verify_credential(&member.credential, &member.signature_key).ok()
}

/// Checks that a renewed leaf binds its key to the identity its member had (`was`).
fn keeps_identity(leaf: &LeafNode, was: Option<IdentityKey>) -> Result<(), GroupError> {
    let now = verify_credential(leaf.credential(), leaf.signature_key().as_slice())?;
    if Some(now) != was {
        return Err(GroupError::Credential(CredentialError::IdentityChanged));
    }
    Ok(())
}

fn member_identities(group: &MlsGroup) -> Vec<IdentityKey> {
    group.members().filter_map(|m| identity_of(&m)).collect()
}

#[cfg(test)]
mod tests;
