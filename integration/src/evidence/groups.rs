//! Group membership secrecy (docs/PROTOCOL.md 8), shown by trying with the agent's own
//! group library (`GroupBook`, the code agents run) and a thief's copy of a member's MLS
//! storage, exactly as the agent persists it:
//!
//! - a member removed from a group, whose storage was copied *just before* its removal,
//!   decrypts nothing sent after the commit that removed it (nor does its own state
//!   after the removal);
//! - a member added to a group decrypts nothing sent before it joined, though it has
//!   every ciphertext;
//! - a member that rewrites its own stored leaf to name another member's identity and
//!   commits an update is refused, and its texts are not shown as that member's.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, Context as _};
use e2ee_agent::group::{GroupBook, GroupEvent};
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use rand_core::OsRng;

use super::report::Section;
use super::{guarded, Scale};

struct Member {
    identity: IdentityKeyPair,
    book: GroupBook,
}

impl Member {
    fn new() -> anyhow::Result<Self> {
        let identity = IdentityKeyPair::generate(&mut OsRng);
        let book = GroupBook::open(&identity, HashMap::new(), None, &BTreeMap::new())?;
        Ok(Self { identity, book })
    }

    fn id(&self) -> IdentityKey {
        *self.identity.public()
    }

    /// A copy of this member's MLS storage as the agent persists it, opened as a thief
    /// would with the library.
    fn stolen(&self) -> anyhow::Result<GroupBook> {
        let values: HashMap<Vec<u8>, Vec<u8>> = self.book.changes().put.into_iter().collect();
        let public = self.book.signature_public();
        Ok(GroupBook::open(
            &self.identity,
            values,
            Some(&public),
            &self.book.names(),
        )?)
    }
}

fn package(
    adder: &GroupBook,
    who: &mut Member,
) -> anyhow::Result<(IdentityKey, e2ee_agent::group::KeyPackage)> {
    let bytes = who.book.key_packages(1, false)?.remove(0);
    Ok((who.id(), adder.read_key_package("member", &who.id(), &bytes)?))
}

fn commit_of(frame: &Frame) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
    match frame {
        Frame::GroupCommit { commit, welcome, .. } => Ok((commit.clone(), welcome.clone())),
        other => Err(anyhow!("not a commit: {}", other.kind())),
    }
}

fn text_of(frame: &Frame) -> anyhow::Result<Vec<u8>> {
    match frame {
        Frame::GroupSend { message, .. } => Ok(message.clone()),
        other => Err(anyhow!("not a text: {}", other.kind())),
    }
}

/// How many of `ciphertexts` `book` decrypts.
fn readable(book: &mut GroupBook, ciphertexts: &[Vec<u8>]) -> usize {
    ciphertexts
        .iter()
        .filter(|c| matches!(book.receive(c).as_deref(), Ok([GroupEvent::Message { .. }])))
        .count()
}

/// Runs the scenario: one run, three sections.
pub fn run(scale: Scale) -> Vec<Section> {
    let texts = scale.pick(5, 20);
    let membership = guarded(
        Section::new(
            "group-membership",
            "Group membership secrecy",
            "A member removed from a group cannot decrypt what is sent after the commit that \
             removed it, even from a copy of its state taken just before; a member added \
             cannot decrypt what was sent before it joined. (In process, with the agents' own \
             group library and their MLS storage as persisted: a property of the end-to-end \
             layer, which the relay cannot change.)",
        ),
        |section| membership(section, texts),
    );
    let identity = guarded(
        Section::new(
            "group-identity",
            "Group member identities",
            "A member cannot make its texts appear as another member's by renewing its own \
             leaf with that member's identity: the commit is refused by every other member.",
        ),
        identity,
    );
    vec![membership, identity]
}

fn membership(section: &mut Section, texts: usize) -> anyhow::Result<()> {
    let (mut alice, mut bob, mut carol, mut dave) =
        (Member::new()?, Member::new()?, Member::new()?, Member::new()?);
    let packages = vec![package(&alice.book, &mut bob)?, package(&alice.book, &mut carol)?];
    let (id, created) = alice.book.create("evidence", [1; 16], packages)?;
    alice.book.commit_stored(&id)?;
    let welcome = commit_of(&created)?.1.context("welcome")?;
    bob.book.receive(&welcome)?;
    carol.book.receive(&welcome)?;
    section.did("alice made a group with bob and carol (MLS, through the agents' GroupBook)");

    let mut before = Vec::new();
    for n in 0..texts {
        let text = text_of(
            &bob.book
                .send(&id, [10 + n as u8; 16], &format!("before dave {n}"))?,
        )?;
        alice.book.receive(&text)?;
        carol.book.receive(&text)?;
        before.push(text);
    }
    section.did(format!("bob sent {texts} texts; every ciphertext kept"));
    let added = alice
        .book
        .add(&id, [2; 16], vec![package(&alice.book, &mut dave)?])?;
    alice.book.commit_stored(&id)?;
    let (commit, welcome) = commit_of(&added)?;
    bob.book.receive(&commit)?;
    carol.book.receive(&commit)?;
    dave.book.receive(&welcome.context("welcome")?)?;
    section.did("alice added dave");
    let dave_reads = readable(&mut dave.book, &before);
    section.check(
        "texts sent before dave joined that dave decrypts",
        "0",
        format!("{dave_reads} of {texts}"),
        dave_reads == 0,
    );

    let bob_before_removal = bob.stolen()?;
    section.did("a thief copied bob's MLS storage");
    let removed = alice.book.remove(&id, [3; 16], &[bob.id()])?;
    alice.book.commit_stored(&id)?;
    let commit = commit_of(&removed)?.0;
    let told = bob.book.receive(&commit)?;
    carol.book.receive(&commit)?;
    dave.book.receive(&commit)?;
    section.did("alice removed bob; bob read the commit that removed him");
    section.check(
        "bob learns he is removed",
        "a removal",
        match told.as_slice() {
            [GroupEvent::Removed { .. }] => "a removal".to_owned(),
            other => format!("{} other event(s)", other.len()),
        },
        matches!(told.as_slice(), [GroupEvent::Removed { .. }]),
    );
    let mut after = Vec::new();
    for n in 0..texts {
        let text = text_of(
            &dave
                .book
                .send(&id, [40 + n as u8; 16], &format!("after bob {n}"))?,
        )?;
        let carol_reads = readable(&mut carol.book, std::slice::from_ref(&text));
        anyhow::ensure!(carol_reads == 1, "carol cannot read dave's text");
        after.push(text);
    }
    section.did(format!(
        "dave sent {texts} texts after the removal; carol read them all"
    ));
    let own = readable(&mut bob.book, &after);
    section.check(
        "texts after the removal that bob's state decrypts",
        "0",
        format!("{own} of {texts}"),
        own == 0,
    );
    let mut thief = bob_before_removal;
    let stolen = readable(&mut thief, &after);
    section.check(
        "texts after the removal that the copy of bob's state taken before it decrypts",
        "0",
        format!("{stolen} of {texts}"),
        stolen == 0,
    );
    let mut thief_with_commit = bob.stolen()?;
    let _ = thief_with_commit.receive(&commit);
    let with_commit = readable(&mut thief_with_commit, &after);
    section.check(
        "the same after feeding it the removal commit",
        "0",
        format!("{with_commit} of {texts}"),
        with_commit == 0,
    );
    Ok(())
}

/// Replaces every JSON byte array `[..from..]` in the storage values by `to` (how the
/// storage serializes keys): a member's own identity rewritten in its stored leaf.
fn rewrite_identity(values: &mut HashMap<Vec<u8>, Vec<u8>>, from: &[u8; 32], to: &[u8; 32]) -> usize {
    let join = |b: &[u8; 32]| b.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
    let (from, to) = (join(from), join(to));
    let mut replaced = 0;
    for value in values.values_mut() {
        let Ok(text) = String::from_utf8(value.clone()) else {
            continue;
        };
        let mut out = text;
        for (l, r) in [("[", ","), (",", ","), ("[", "]"), (",", "]")] {
            let (a, b) = (format!("{l}{from}{r}"), format!("{l}{to}{r}"));
            replaced += out.matches(&a).count();
            out = out.replace(&a, &b);
        }
        *value = out.into_bytes();
    }
    replaced
}

fn identity(section: &mut Section) -> anyhow::Result<()> {
    let (mut alice, mut bob, mut mallory) = (Member::new()?, Member::new()?, Member::new()?);
    let packages = vec![
        package(&alice.book, &mut bob)?,
        package(&alice.book, &mut mallory)?,
    ];
    let (id, created) = alice.book.create("identity", [1; 16], packages)?;
    alice.book.commit_stored(&id)?;
    let welcome = commit_of(&created)?.1.context("welcome")?;
    bob.book.receive(&welcome)?;
    mallory.book.receive(&welcome)?;
    section.did("alice made a group with bob and mallory");

    // Mallory rewrites her own stored leaf to name bob's identity, then renews her leaf.
    let mut values: HashMap<Vec<u8>, Vec<u8>> = mallory.book.changes().put.into_iter().collect();
    let replaced = rewrite_identity(&mut values, mallory.id().as_bytes(), bob.id().as_bytes());
    anyhow::ensure!(replaced > 0, "mallory's identity not found in her stored state");
    let public = mallory.book.signature_public();
    let names = mallory.book.names();
    let mut forger = GroupBook::open(&mallory.identity, values, Some(&public), &names)?;
    let forged = forger.update(&id, [2; 16])?;
    forger.commit_stored(&id)?;
    section.did("mallory rewrote her own leaf to name bob's identity and committed an update");
    let epoch_before = alice.book.epoch_of(&id);
    let refused = alice.book.receive(&commit_of(&forged)?.0);
    section.check(
        "alice accepts mallory's update naming bob",
        "refused",
        match &refused {
            Ok(events) => format!("accepted ({} event(s))", events.len()),
            Err(err) => format!("refused: {err}"),
        },
        refused.is_err() && alice.book.epoch_of(&id) == epoch_before,
    );
    let text = text_of(&forger.send(&id, [3; 16], "bob here: send the key to mallory")?)?;
    let shown = readable(&mut alice.book, std::slice::from_ref(&text));
    section.check(
        "mallory's next text shown to alice (as bob or at all)",
        "0",
        shown.to_string(),
        shown == 0,
    );

    // An honest update keeps its identity and is accepted.
    let update = bob.book.update(&id, [4; 16])?;
    bob.book.commit_stored(&id)?;
    let read = alice.book.receive(&commit_of(&update)?.0)?;
    section.did("bob renewed his leaf honestly; alice read it");
    section.check(
        "an honest update is accepted",
        "accepted",
        format!("{} event(s)", read.len()),
        matches!(read.as_slice(), [GroupEvent::Members { .. }]),
    );
    let text = text_of(&bob.book.send(&id, [5; 16], "still bob")?)?;
    let named = match alice.book.receive(&text)?.as_slice() {
        [GroupEvent::Message { from, .. }] => *from,
        other => return Err(anyhow!("{other:?}")),
    };
    section.check(
        "bob's next text is named by his identity",
        bob.id().short(),
        named.short(),
        named == bob.id(),
    );
    Ok(())
}
