//! The agent's groups in its state: the [`GroupBook`] (MLS, docs/PROTOCOL.md 8) and the
//! group outbox, every change written in one transaction with what caused it.
//!
//! Guarantees, as for sessions: a group operation's storage changes commit with the
//! outbox entry of the upload it made before the upload leaves (an MLS secret is never
//! used twice, even across a crash), and a delivery's changes commit with its id before
//! it is acknowledged (a redelivery is a quiet duplicate). A write that fails puts the
//! book back as it was persisted.

use std::collections::VecDeque;

use e2ee_protocol::frame::Frame;
use serde::{Deserialize, Serialize};

use super::error::StateError;
use super::AgentState;
use crate::group::{GroupBook, GroupError};
use crate::store::groups::GroupOutboxRow;
use crate::store::Rows;

/// The meta key of the MLS signature key's public half.
const SIGNATURE_KEY_META: &str = "mls_signature_key";

/// A member as a group operation names it: the name it was added under, its identity
/// and (to add it) its fetched KeyPackage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentMember {
    /// The peer name.
    pub name: String,
    /// Its identity key (hex).
    pub identity: String,
    /// Its KeyPackage (hex), for an addition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_package: String,
}

/// What an upload in the group outbox is for; made again on a new epoch when the relay
/// answers that another commit took the epoch (`GroupEpoch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GroupIntent {
    /// Create the group (its first commit adds `members`).
    Create {
        /// The members added.
        members: Vec<IntentMember>,
    },
    /// Add members.
    Add {
        /// The members added.
        members: Vec<IntentMember>,
    },
    /// Remove members.
    Remove {
        /// The members removed.
        members: Vec<IntentMember>,
    },
    /// Renew our leaf and path secrets (a commit with a path, no member change).
    Update,
    /// Ask the other members to remove us.
    Leave,
    /// A text for the group.
    Text {
        /// The text.
        text: String,
    },
}

impl GroupIntent {
    /// Whether the upload is a commit (it moves the group to the next epoch once stored).
    pub fn is_commit(&self) -> bool {
        matches!(
            self,
            Self::Create { .. } | Self::Add { .. } | Self::Remove { .. } | Self::Update
        )
    }
}

/// An upload not yet stored by the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOutboxEntry {
    /// Its message id (the same for every attempt).
    pub msg_id: [u8; 16],
    /// The group.
    pub group_id: Vec<u8>,
    /// What it is for.
    pub intent: GroupIntent,
    /// The upload made for it on the current epoch (`None` until made, and after a
    /// `GroupEpoch` until made again).
    pub frame: Option<Frame>,
}

impl GroupOutboxEntry {
    fn row(&self) -> Result<GroupOutboxRow, StateError> {
        let intent = serde_json::to_vec(&self.intent)
            .map_err(|e| StateError::Group(GroupError::Mls(e.to_string())))?;
        Ok(GroupOutboxRow {
            msg_id: self.msg_id,
            group_id: self.group_id.clone(),
            intent,
            frame: self.frame.as_ref().map(|f| {
                let mut bytes = bytes::BytesMut::new();
                f.encode(&mut bytes);
                bytes.to_vec()
            }),
        })
    }

    fn from_row(row: GroupOutboxRow, path: &std::path::Path) -> Result<Self, StateError> {
        let corrupt = |detail: String| StateError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let intent =
            serde_json::from_slice(&row.intent).map_err(|e| corrupt(format!("group_outbox.intent: {e}")))?;
        let frame = row
            .frame
            .map(|f| Frame::decode(&f).map_err(|e| corrupt(format!("group_outbox.frame: {e}"))))
            .transpose()?;
        Ok(Self {
            msg_id: row.msg_id,
            group_id: row.group_id,
            intent,
            frame,
        })
    }
}

/// A change of the group outbox or of the deliveries read, written with a group
/// operation.
#[derive(Debug)]
pub enum GroupEdit {
    /// Add or update an entry.
    Put(GroupOutboxEntry),
    /// Remove an entry.
    Remove([u8; 16]),
    /// A delivery (sender, msg_id) is read.
    Received([u8; 32], [u8; 16]),
}

/// Opens the book over what the state holds; a new book's signature key is written at
/// once.
pub(super) fn open_book(
    db: &mut crate::store::StateDb,
    identity: &e2ee_protocol::identity::IdentityKeyPair,
) -> Result<(GroupBook, VecDeque<GroupOutboxEntry>), StateError> {
    let rows = db.rows();
    let public = rows.meta(SIGNATURE_KEY_META)?;
    let mut book = GroupBook::open(identity, rows.mls_storage()?, public.as_deref(), &rows.groups()?)?;
    let outbox = load_group_outbox(&rows, db.path())?;
    if public.is_none() {
        let changes = book.changes();
        let public = book.signature_public();
        db.transaction(|tx| {
            tx.put_mls_storage(&changes.put, &changes.deleted)?;
            tx.put_meta(SIGNATURE_KEY_META, &public)
        })?;
        book.persisted(changes);
    }
    Ok((book, outbox))
}

fn load_group_outbox(
    rows: &Rows<'_>,
    path: &std::path::Path,
) -> Result<VecDeque<GroupOutboxEntry>, StateError> {
    rows.group_outbox()?
        .into_iter()
        .map(|row| GroupOutboxEntry::from_row(row, path))
        .collect()
}

impl AgentState {
    /// The groups.
    pub fn groups(&self) -> &GroupBook {
        &self.groups
    }

    /// The group outbox, oldest first.
    pub fn group_outbox(&self) -> &VecDeque<GroupOutboxEntry> {
        &self.group_outbox
    }

    /// Whether the group delivery (sender, msg_id) was read already.
    pub fn group_received(&self, sender: &[u8; 32], msg_id: &[u8; 16]) -> Result<bool, StateError> {
        Ok(self.db.rows().group_received(sender, msg_id)?)
    }

    /// Runs `op` on the groups, then writes what it changed (MLS storage, the groups and
    /// their names) with `edits` in one transaction. If `op` fails nothing is written
    /// and the book is put back as persisted; if the write fails, too.
    pub fn with_groups<T>(
        &mut self,
        op: impl FnOnce(&mut GroupBook) -> Result<T, GroupError>,
        edits: impl FnOnce(&T) -> Vec<GroupEdit>,
    ) -> Result<T, StateError> {
        let value = match op(&mut self.groups) {
            Ok(value) => value,
            Err(err) => {
                self.reload_groups()?;
                return Err(err.into());
            }
        };
        let edits = edits(&value);
        if let Err(err) = self.write_groups(&edits) {
            self.reload_groups()?;
            return Err(err);
        }
        for edit in edits {
            match edit {
                GroupEdit::Put(entry) => {
                    match self.group_outbox.iter_mut().find(|e| e.msg_id == entry.msg_id) {
                        Some(existing) => *existing = entry,
                        None => self.group_outbox.push_back(entry),
                    }
                }
                GroupEdit::Remove(msg_id) => self.group_outbox.retain(|e| e.msg_id != msg_id),
                GroupEdit::Received(..) => {}
            }
        }
        Ok(value)
    }

    fn write_groups(&mut self, edits: &[GroupEdit]) -> Result<(), StateError> {
        let changes = self.groups.changes();
        let names = self.groups.changed_names();
        let rows = edits
            .iter()
            .map(|e| match e {
                GroupEdit::Put(entry) => entry.row().map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.db.transaction_with(|tx| -> Result<(), StateError> {
            tx.put_mls_storage(&changes.put, &changes.deleted)?;
            if let Some(names) = &names {
                tx.put_groups(names)?;
            }
            for (edit, row) in edits.iter().zip(&rows) {
                match (edit, row) {
                    (_, Some(row)) => tx.put_group_outbox(row)?,
                    (GroupEdit::Remove(msg_id), _) => tx.remove_group_outbox(msg_id)?,
                    (GroupEdit::Received(sender, msg_id), _) => tx.put_group_received(sender, msg_id)?,
                    _ => {}
                }
            }
            Ok(())
        })?;
        self.groups.persisted(changes);
        if let Some(names) = names {
            self.groups.names_persisted(names);
        }
        Ok(())
    }

    /// Puts the book back as persisted.
    fn reload_groups(&mut self) -> Result<(), StateError> {
        let rows = self.db.rows();
        let public = rows.meta(SIGNATURE_KEY_META)?;
        self.groups = GroupBook::open(
            &self.identity,
            rows.mls_storage()?,
            public.as_deref(),
            &rows.groups()?,
        )?;
        Ok(())
    }
}
