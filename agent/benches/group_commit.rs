//! MLS group operations at 10, 100 and 1 000 members (docs/PERFORMANCE.md 14): the time
//! a member takes to make a commit that adds or removes one member, the commit's and
//! the Welcome's size, and a text's encryption. Sizes are printed once per group size
//! (`group size …` lines); a commit is made, then dropped (`discard_pending`), so every
//! sample starts from the same group.

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

fn commit_sizes(frame: &Frame) -> (usize, usize) {
    match frame {
        Frame::GroupCommit { commit, welcome, .. } => (commit.len(), welcome.as_ref().map_or(0, Vec::len)),
        _ => (0, 0),
    }
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
        // The creator and n - 1 members; one more identity to add.
        let mut creator = member();
        let mut others: Vec<Member> = (1..n).map(|_| member()).collect();
        let packages = others.iter_mut().map(|m| package(&creator.book, m)).collect();
        let (id, _) = creator.book.create("bench", [0; 16], packages).expect("create");
        creator.book.commit_stored(&id).expect("merge");
        let mut newcomer = member();
        let addition = package(&creator.book, &mut newcomer);
        let removed = *others[n / 2 - 1].identity.public();

        let add = creator
            .book
            .add(&id, [1; 16], vec![addition.clone()])
            .expect("add");
        creator.book.discard_pending(&id).expect("discard");
        let remove = creator.book.remove(&id, [2; 16], &[removed]).expect("remove");
        creator.book.discard_pending(&id).expect("discard");
        let text = match creator.book.send(&id, [3; 16], &"x".repeat(256)).expect("send") {
            Frame::GroupSend { message, .. } => message.len(),
            _ => 0,
        };
        let (add_commit, welcome) = commit_sizes(&add);
        let (remove_commit, _) = commit_sizes(&remove);
        println!(
            "group size {n}: add one: commit {add_commit} B, Welcome {welcome} B; remove one: commit {remove_commit} B; 256-byte text: {text} B"
        );

        bench.bench_with_input(BenchmarkId::new("commit_add_one", n), &n, |b, _| {
            b.iter(|| {
                let frame = creator
                    .book
                    .add(&id, [1; 16], vec![addition.clone()])
                    .expect("add");
                creator.book.discard_pending(&id).expect("discard");
                frame
            })
        });
        bench.bench_with_input(BenchmarkId::new("commit_remove_one", n), &n, |b, _| {
            b.iter(|| {
                let frame = creator.book.remove(&id, [2; 16], &[removed]).expect("remove");
                creator.book.discard_pending(&id).expect("discard");
                frame
            })
        });
        bench.bench_with_input(BenchmarkId::new("encrypt_text_256", n), &n, |b, _| {
            b.iter(|| creator.book.send(&id, [3; 16], &"x".repeat(256)).expect("send"))
        });
    }
    bench.finish();
}

criterion_group!(benches, group_ops);
criterion_main!(benches);
