//! MLS group operations at 10, 100 and 1 000 members (docs/PERFORMANCE.md 14): the time
//! a member takes to make a commit that adds or removes one member or renews its own
//! keys, the commit's and the Welcome's size, and a text's encryption.
//!
//! Each group is measured twice: **fresh**, right after one commit added everybody (the
//! ratchet tree's inner nodes are blank, so a commit encrypts to every member: O(n)),
//! and **populated**, after members in each of the committer's sibling subtrees have
//! committed once (their path secrets fill the nodes the committer encrypts to: O(log n),
//! the steady state of a group whose members commit now and then). Sizes are printed once
//! per case (`group …` lines); a commit is made, then dropped (`discard_pending`), so
//! every sample starts from the same group.

use std::collections::{BTreeMap, HashMap};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use e2ee_agent::group::GroupBook;
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use rand_core::OsRng;

struct Member {
    identity: IdentityKeyPair,
    book: GroupBook,
}

fn member() -> Member {
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let book = GroupBook::open(&identity, HashMap::new(), None, &BTreeMap::new()).expect("open");
    Member { identity, book }
}

fn package(adder: &GroupBook, who: &mut Member) -> (IdentityKey, openmls::prelude::KeyPackage) {
    let bytes = who.book.key_packages(1, false).expect("key package").remove(0);
    let id = *who.identity.public();
    (id, adder.read_key_package("member", &id, &bytes).expect("valid"))
}

fn parts(frame: &Frame) -> (Vec<u8>, Option<Vec<u8>>) {
    match frame {
        Frame::GroupCommit { commit, welcome, .. } => (commit.clone(), welcome.clone()),
        Frame::GroupSend { message, .. } => (message.clone(), None),
        _ => (Vec::new(), None),
    }
}

/// Members at leaves 1, 2, 4, 8, … (one in each sibling subtree of leaf 0) join and
/// commit an update in turn; every later one and the creator read the earlier commits.
fn populate(creator: &mut GroupBook, others: &mut [Member], id: &[u8], welcome: &[u8]) -> usize {
    let mut commits: Vec<Vec<u8>> = Vec::new();
    let mut leaf = 1;
    while leaf <= others.len() {
        let m = &mut others[leaf - 1];
        m.book.receive(welcome).expect("join");
        for commit in &commits {
            m.book.receive(commit).expect("read an earlier update");
        }
        let frame = m.book.update(id, [9; 16]).expect("update");
        m.book.commit_stored(id).expect("merge");
        commits.push(parts(&frame).0);
        leaf *= 2;
    }
    for commit in &commits {
        creator.receive(commit).expect("creator reads");
    }
    commits.len()
}

fn group_ops(c: &mut Criterion) {
    let mut bench = c.benchmark_group("group");
    bench.sample_size(10);
    // `cargo test --all-targets` runs benches once, without `--bench`: the small group
    // only, so the test run stays short.
    let sizes: &[usize] = if std::env::args().any(|a| a == "--bench") {
        &[10, 100, 1000]
    } else {
        &[10]
    };
    for &n in sizes {
        let mut creator = member();
        let mut others: Vec<Member> = (1..n).map(|_| member()).collect();
        let packages = others.iter_mut().map(|m| package(&creator.book, m)).collect();
        let (id, created) = creator.book.create("bench", [0; 16], packages).expect("create");
        creator.book.commit_stored(&id).expect("merge");
        let welcome = parts(&created).1.expect("welcome");
        let mut newcomer = member();
        let addition = package(&creator.book, &mut newcomer);
        let removed = *others[n - 2].identity.public();

        for tree in ["fresh", "populated"] {
            if tree == "populated" {
                let commits = populate(&mut creator.book, &mut others, &id, &welcome);
                println!("group {n}: populated by {commits} update commits");
            }
            let add = creator
                .book
                .add(&id, [1; 16], vec![addition.clone()])
                .expect("add");
            creator.book.discard_pending(&id).expect("discard");
            let remove = creator.book.remove(&id, [2; 16], &[removed]).expect("remove");
            creator.book.discard_pending(&id).expect("discard");
            let update = creator.book.update(&id, [3; 16]).expect("update");
            creator.book.discard_pending(&id).expect("discard");
            let text = creator.book.send(&id, [4; 16], &"x".repeat(256)).expect("send");
            println!(
                "group {n} {tree}: add one: commit {} B, Welcome {} B; remove one: commit {} B; update: commit {} B; 256-byte text: {} B",
                parts(&add).0.len(),
                parts(&add).1.map_or(0, |w| w.len()),
                parts(&remove).0.len(),
                parts(&update).0.len(),
                parts(&text).0.len(),
            );
            let name = |op: &str| BenchmarkId::new(format!("{op}_{tree}"), n);
            bench.bench_function(name("commit_add_one"), |b| {
                b.iter(|| {
                    let frame = creator
                        .book
                        .add(&id, [1; 16], vec![addition.clone()])
                        .expect("add");
                    creator.book.discard_pending(&id).expect("discard");
                    frame
                })
            });
            bench.bench_function(name("commit_remove_one"), |b| {
                b.iter(|| {
                    let frame = creator.book.remove(&id, [2; 16], &[removed]).expect("remove");
                    creator.book.discard_pending(&id).expect("discard");
                    frame
                })
            });
            bench.bench_function(name("commit_update"), |b| {
                b.iter(|| {
                    let frame = creator.book.update(&id, [3; 16]).expect("update");
                    creator.book.discard_pending(&id).expect("discard");
                    frame
                })
            });
            bench.bench_function(name("encrypt_text_256"), |b| {
                b.iter(|| creator.book.send(&id, [4; 16], &"x".repeat(256)).expect("send"))
            });
        }
    }
    bench.finish();
}

criterion_group!(benches, group_ops);
criterion_main!(benches);
