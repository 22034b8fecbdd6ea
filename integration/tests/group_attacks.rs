//! Attacks on group chats (docs/PROTOCOL.md 8, docs/AGENT.md 3.2): a raw client that
//! hand-builds MLS headers against the relay's delivery-service rules, a real MLS member
//! (the agent library's `GroupBook`, driven frame by frame) against agents, agents
//! killed or restored from a backup, and a user typing `/group` commands.
//!
//! Each test is an attack (or an accident) and checks the defence against it; those
//! that first failed were findings, fixed since: a credential changed by an update
//! commit, copies to members who never joined bypassing the quotas, a nameless member
//! that could not be removed, a restored state waiting silently, a leave ending in an
//! error, impossible changes dropped silently.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use e2ee_agent::group::GroupBook;
use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::client::{msg_id, RelayClient};
use e2ee_integration::process::{copy_private_dir, spawn_relay, RelayProcess};
use e2ee_protocol::frame::{ErrorCode, Frame};
use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use rand_core::OsRng;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
const AGENT_WAIT: Duration = Duration::from_secs(30);

fn identity() -> IdentityKeyPair {
    IdentityKeyPair::generate(&mut OsRng)
}

fn key(pair: &IdentityKeyPair) -> [u8; 32] {
    *pair.public().as_bytes()
}

/// An `MLSMessage` `PrivateMessage` header (RFC 9420 §6.3) with `body` bytes after it.
fn private(group_id: &[u8], epoch: u64, content_type: u8, body: usize) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 2, group_id.len() as u8];
    m.extend_from_slice(group_id);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.push(content_type);
    m.resize(m.len() + body, 0xab);
    m
}

/// Bytes that start like an `MLSMessage` of `wire_format` and are garbage after.
fn mls_of(wire_format: u8, body: usize) -> Vec<u8> {
    let mut m = vec![0, 1, 0, wire_format];
    m.resize(4 + body, 0xcd);
    m
}

/// What a refused commit is, its Welcome, members and added members.
type BadCommit = (&'static str, Option<Vec<u8>>, Vec<[u8; 32]>, Vec<[u8; 32]>);

const APPLICATION: u8 = 1;
const PROPOSAL: u8 = 2;
const COMMIT: u8 = 3;

/// The relay's answer to the upload `id`: `SentAck`, `GroupEpoch`, a refusal or an
/// error (deliveries, pings and counts in between are skipped).
async fn answer(client: &mut RelayClient, id: [u8; 16]) -> Frame {
    loop {
        match client.recv(WAIT).await.expect("an answer") {
            Frame::SentAck { msg_id } | Frame::GroupEpoch { msg_id, .. } if msg_id != id => {}
            frame @ (Frame::SentAck { .. }
            | Frame::GroupEpoch { .. }
            | Frame::Error { .. }
            | Frame::Refused { .. }
            | Frame::QuotaExceeded { .. }
            | Frame::RateLimited { .. }) => return frame,
            _ => {}
        }
    }
}

async fn commit(
    client: &mut RelayClient,
    id: [u8; 16],
    message: Vec<u8>,
    welcome: Option<Vec<u8>>,
    members: Vec<[u8; 32]>,
    added: Vec<[u8; 32]>,
) -> Frame {
    client
        .send(Frame::GroupCommit {
            msg_id: id,
            commit: message,
            welcome,
            members,
            added,
        })
        .await
        .expect("send");
    answer(client, id).await
}

async fn group_send(client: &mut RelayClient, id: [u8; 16], message: Vec<u8>) -> Frame {
    client
        .send(Frame::GroupSend { msg_id: id, message })
        .await
        .expect("send");
    answer(client, id).await
}

fn code_of(frame: &Frame) -> Option<ErrorCode> {
    match frame {
        Frame::Error { code, .. } | Frame::Refused { code, .. } => Some(*code),
        _ => None,
    }
}

#[track_caller]
fn assert_refused(frame: &Frame, code: ErrorCode, what: &str) {
    assert_eq!(code_of(frame), Some(code), "{what}: {frame:?}");
}

/// Deliveries that reach `client` within `wait`, acknowledged: (sender, payload).
async fn drain_deliveries(client: &mut RelayClient, wait: Duration) -> Vec<([u8; 32], Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return got;
        }
        match client.recv(left).await {
            Ok(Frame::Deliver {
                sender,
                msg_id,
                payload,
                ..
            }) => {
                client
                    .send(Frame::DeliveryAck { sender, msg_id })
                    .await
                    .expect("ack");
                got.push((sender, payload));
            }
            Ok(_) => {}
            Err(_) => return got,
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. The relay as delivery service, against a raw client
// ---------------------------------------------------------------------------------------

/// Non-members, unknown groups, member lists that do not fit, Welcomes that are not
/// Welcomes, commits sent as GroupSend, and every epoch game are refused or answered
/// `GroupEpoch`, and none of them queues anything for the group's members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_outsiders_bad_member_lists_and_epoch_games() {
    let (handle, _dir) = spawn_relay(|_| {}).expect("relay");
    let (owner_id, member_id, outsider_id, victim_id) = (identity(), identity(), identity(), identity());
    let (owner, member, victim) = (key(&owner_id), key(&member_id), key(&victim_id));
    let mut o = RelayClient::connect(handle.addr, owner_id.clone())
        .await
        .expect("owner");
    let mut m = RelayClient::connect(handle.addr, member_id.clone())
        .await
        .expect("member");
    let mut x = RelayClient::connect(handle.addr, outsider_id)
        .await
        .expect("outsider");
    let g = b"0123456789abcdef".to_vec();

    // Only a commit in epoch 0 creates a group.
    let r = group_send(&mut x, msg_id(1), private(&g, 0, APPLICATION, 32)).await;
    assert_refused(&r, ErrorCode::UnknownGroup, "a text to a group nobody made");
    let r = commit(
        &mut o,
        msg_id(2),
        private(&g, 3, COMMIT, 32),
        None,
        vec![owner],
        vec![],
    )
    .await;
    assert_refused(
        &r,
        ErrorCode::UnknownGroup,
        "a commit in epoch 3 for an unknown group",
    );

    // Commits whose lists do not fit are refused and create nothing.
    let cases: Vec<BadCommit> = vec![
        (
            "committer not among the members",
            None,
            vec![member],
            vec![member],
        ),
        (
            "a member listed twice",
            Some(mls_of(3, 16)),
            vec![owner, member, member],
            vec![member],
        ),
        (
            "added not the new members",
            Some(mls_of(3, 16)),
            vec![owner, member],
            vec![],
        ),
        (
            "added someone not listed",
            Some(mls_of(3, 16)),
            vec![owner],
            vec![member],
        ),
        (
            "a Welcome without additions",
            Some(mls_of(3, 16)),
            vec![owner],
            vec![],
        ),
        (
            "additions without a Welcome",
            None,
            vec![owner, member],
            vec![member],
        ),
        (
            "a Welcome that is a KeyPackage",
            Some(mls_of(5, 16)),
            vec![owner, member],
            vec![member],
        ),
        (
            "a Welcome that is a commit",
            Some(private(&g, 0, COMMIT, 8)),
            vec![owner, member],
            vec![member],
        ),
        (
            "a member key that is no curve point",
            Some(mls_of(3, 16)),
            vec![owner, [0xff; 32]],
            vec![[0xff; 32]],
        ),
    ];
    for (n, (what, welcome, members, added)) in cases.into_iter().enumerate() {
        let r = commit(
            &mut o,
            msg_id(100 + n as u64),
            private(&g, 0, COMMIT, 32),
            welcome,
            members,
            added,
        )
        .await;
        assert_refused(&r, ErrorCode::InvalidGroupMessage, what);
    }
    let r = group_send(&mut o, msg_id(3), private(&g, 0, COMMIT, 32)).await;
    assert_refused(&r, ErrorCode::InvalidGroupMessage, "a commit sent as GroupSend");
    let r = commit(
        &mut o,
        msg_id(4),
        private(&g, 0, APPLICATION, 32),
        None,
        vec![owner],
        vec![],
    )
    .await;
    assert_refused(&r, ErrorCode::InvalidGroupMessage, "a text sent as GroupCommit");
    let r = group_send(&mut o, msg_id(5), mls_of(3, 40)).await;
    assert_refused(&r, ErrorCode::InvalidGroupMessage, "a Welcome sent as GroupSend");

    // A good creation: owner and member.
    let create = private(&g, 0, COMMIT, 32);
    let r = commit(
        &mut o,
        msg_id(10),
        create.clone(),
        Some(mls_of(3, 16)),
        vec![owner, member],
        vec![member],
    )
    .await;
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");

    // The outsider can neither talk nor commit, in any epoch.
    for (n, epoch) in [0, 1, 2, u64::MAX].into_iter().enumerate() {
        let r = group_send(&mut x, msg_id(20 + n as u64), private(&g, epoch, APPLICATION, 32)).await;
        assert_refused(&r, ErrorCode::NotGroupMember, "an outsider's text");
        let r = commit(
            &mut x,
            msg_id(30 + n as u64),
            private(&g, epoch, COMMIT, 32),
            None,
            vec![key(&identity())],
            vec![],
        )
        .await;
        assert_refused(&r, ErrorCode::NotGroupMember, "an outsider's commit");
    }
    // Squatting the id again in epoch 0 is no new group: the outsider is no member.
    let r = commit(
        &mut x,
        msg_id(40),
        private(&g, 0, COMMIT, 32),
        None,
        vec![key(&identity())],
        vec![],
    )
    .await;
    assert_refused(&r, ErrorCode::NotGroupMember, "re-creating an existing group");

    // Epoch games by a member: the future, the far future, the past.
    for (n, epoch) in [0, 2, 1_000_000, u64::MAX].into_iter().enumerate() {
        let r = group_send(&mut m, msg_id(50 + n as u64), private(&g, epoch, APPLICATION, 32)).await;
        assert!(
            matches!(r, Frame::GroupEpoch { epoch: 1, .. }),
            "text in epoch {epoch}: {r:?}"
        );
        let r = commit(
            &mut m,
            msg_id(60 + n as u64),
            private(&g, epoch, COMMIT, 32),
            None,
            vec![owner, member],
            vec![],
        )
        .await;
        assert!(
            matches!(r, Frame::GroupEpoch { epoch: 1, .. }),
            "commit in epoch {epoch}: {r:?}"
        );
    }
    // The creation resent (same id): stored once. Another sender or id: stale.
    let r = commit(
        &mut o,
        msg_id(10),
        create.clone(),
        Some(mls_of(3, 16)),
        vec![owner, member],
        vec![member],
    )
    .await;
    assert!(matches!(r, Frame::SentAck { .. }), "the resent creation: {r:?}");
    let r = commit(
        &mut m,
        msg_id(10),
        create.clone(),
        None,
        vec![owner, member],
        vec![],
    )
    .await;
    assert!(
        matches!(r, Frame::GroupEpoch { epoch: 1, .. }),
        "the creation's id by the member: {r:?}"
    );
    let r = commit(&mut o, msg_id(11), create, None, vec![owner, member], vec![]).await;
    assert!(
        matches!(r, Frame::GroupEpoch { epoch: 1, .. }),
        "another epoch-0 commit: {r:?}"
    );

    // The member removes the owner; the owner's old-epoch text and new-epoch text are
    // refused (stale, then not a member), and the victim, never listed, got nothing.
    let r = commit(
        &mut m,
        msg_id(70),
        private(&g, 1, COMMIT, 32),
        None,
        vec![member],
        vec![],
    )
    .await;
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");
    let r = group_send(&mut o, msg_id(71), private(&g, 2, APPLICATION, 32)).await;
    assert_refused(&r, ErrorCode::NotGroupMember, "the removed owner's text");
    let r = group_send(&mut o, msg_id(72), private(&g, 1, PROPOSAL, 32)).await;
    assert_refused(&r, ErrorCode::NotGroupMember, "the removed owner's old proposal");

    // What the member got: the creation's Welcome, once, and nothing of the refused
    // uploads; the owner got the removal commit, once. (New connections: `answer`
    // skipped the deliveries, which the relay sends again on the next connection.)
    drop((o, m));
    let mut m = RelayClient::connect(handle.addr, member_id)
        .await
        .expect("member");
    let mut o = RelayClient::connect(handle.addr, owner_id).await.expect("owner");
    let got = drain_deliveries(&mut m, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 1, "member: {got:?}");
    assert_eq!(got[0].1[..5], [0x10, 0, 1, 0, 3], "a Welcome");
    let got = drain_deliveries(&mut o, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 1, "owner: {got:?}");
    assert_eq!(got[0].1[0], 0x10);
    let mut v = RelayClient::connect(handle.addr, victim_id)
        .await
        .expect("victim");
    assert!(drain_deliveries(&mut v, Duration::from_millis(300))
        .await
        .is_empty());
    let _ = victim;
}

/// A member that lists identities that never joined (PROTOCOL.md 8.5 calls this
/// disrupting one's own group) gets them copies that are held to no quota: the
/// recipient's queue quota, the sender's quotas and the relay's whole storage budget are
/// all bypassed, with an amplification of up to 1 000 copies per upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_members_cannot_make_one_upload_exceed_the_uploaders_quota() {
    const BUDGET: u64 = 2 * 1024 * 1024;
    let (handle, _dir) = spawn_relay(|s| {
        s.limits.queue_quota = 10;
        s.limits.sender_quota_messages = 10;
        s.limits.sender_quota_bytes = 256 * 1024;
        s.store.max_stored_bytes = BUDGET;
    })
    .expect("relay");
    let attacker_id = identity();
    let me = key(&attacker_id);
    let mut a = RelayClient::connect(handle.addr, attacker_id)
        .await
        .expect("attacker");
    let victims: Vec<[u8; 32]> = (0..50).map(|_| key(&identity())).collect();

    // Pairwise, the attacker is stopped by the quotas.
    let mut refused_pairwise = 0;
    for n in 0..15u64 {
        a.send(Frame::Send {
            recipient: victims[0],
            msg_id: msg_id(1000 + n),
            payload: vec![1; 100],
        })
        .await
        .expect("send");
        if !matches!(answer(&mut a, msg_id(1000 + n)).await, Frame::SentAck { .. }) {
            refused_pairwise += 1;
        }
    }
    assert!(refused_pairwise > 0, "pairwise sends are held to the quotas");

    // A group of the attacker and 50 identities that never joined.
    let g = [7u8; 16];
    let mut members = vec![me];
    members.extend(&victims);
    let r = commit(
        &mut a,
        msg_id(1),
        private(&g, 0, COMMIT, 64),
        Some(mls_of(3, 32)),
        members,
        victims.clone(),
    )
    .await;
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");
    // 20 uploads of 60 KiB: 50 copies each, 60 MB in all, 30 times the relay's budget.
    let mut stored = 0u64;
    let mut refused = 0;
    for n in 0..20u64 {
        let r = group_send(&mut a, msg_id(10 + n), private(&g, 1, APPLICATION, 60 * 1024)).await;
        match r {
            Frame::SentAck { .. } => stored += 50 * 60 * 1024,
            _ => refused += 1,
        }
    }
    // An honest stranger cannot send anything any more: the budget is spent.
    let mut honest = RelayClient::connect(handle.addr, identity())
        .await
        .expect("honest");
    honest
        .send(Frame::Send {
            recipient: victims[1],
            msg_id: msg_id(1),
            payload: vec![1; 100],
        })
        .await
        .expect("send");
    let honest_answer = answer(&mut honest, msg_id(1)).await;
    assert!(
        refused > 0 && stored <= 2 * BUDGET,
        "the relay stored {stored} bytes of copies (budget {BUDGET}), refusing {refused} of 20 uploads; \
         an honest sender now gets {honest_answer:?}"
    );
}

/// Throwaway identities fetching a victim's KeyPackages take at most the per-target
/// handout bucket of one-time ones (shared with the bucket size of one-time prekeys);
/// past it every fetch gets the last-resort KeyPackage and the rest stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwaway_identities_take_a_bounded_share_of_a_victims_one_time_key_packages() {
    const BUCKET: usize = 10;
    let (handle, _dir) = spawn_relay(|s| s.limits.opk_handout_capacity = BUCKET as u32).expect("relay");
    let victim_id = identity();
    let victim = key(&victim_id);
    let mut v = RelayClient::connect(handle.addr, victim_id)
        .await
        .expect("victim");
    let packages: Vec<Vec<u8>> = (0..60u8)
        .map(|n| {
            let mut p = mls_of(5, 40);
            p[4] = n;
            p
        })
        .collect();
    let mut last_resort = mls_of(5, 40);
    last_resort[4] = 0xff;
    v.send(Frame::PublishKeyPackages {
        packages,
        last_resort: Some(last_resort.clone()),
    })
    .await
    .expect("publish");
    loop {
        if let Frame::KeyPackageCount { remaining } = v.recv(WAIT).await.expect("count") {
            assert_eq!(remaining, 60);
            break;
        }
    }

    let mut one_time = HashSet::new();
    let mut last_resorts = 0;
    for _ in 0..4 {
        let mut fetcher = RelayClient::connect(handle.addr, identity())
            .await
            .expect("fetcher");
        for request_id in 0..20u32 {
            fetcher
                .send(Frame::FetchKeyPackage {
                    request_id,
                    identity: victim,
                })
                .await
                .expect("fetch");
            loop {
                match fetcher.recv(WAIT).await.expect("answer") {
                    Frame::KeyPackage { package: Some(p), .. } => {
                        if p == last_resort {
                            last_resorts += 1;
                        } else {
                            assert!(one_time.insert(p), "a one-time KeyPackage handed out twice");
                        }
                        break;
                    }
                    Frame::KeyPackage { package: None, .. } => panic!("no KeyPackage"),
                    Frame::RateLimited { .. } => break,
                    _ => {}
                }
            }
        }
    }
    assert!(
        one_time.len() <= BUCKET && one_time.len() + last_resorts == 80,
        "four throwaway identities took {} one-time KeyPackages (then {last_resorts} last-resort copies)",
        one_time.len()
    );
    // The owner still holds the rest.
    v.send(Frame::PublishKeyPackages {
        packages: Vec::new(),
        last_resort: None,
    })
    .await
    .expect("ask");
    loop {
        if let Frame::KeyPackageCount { remaining } = v.recv(WAIT).await.expect("count") {
            assert_eq!(remaining as usize, 60 - one_time.len());
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. A real MLS member driven frame by frame, against agents
// ---------------------------------------------------------------------------------------

fn relay(dir: &Path) -> RelayProcess {
    RelayProcess::start_for_test("127.0.0.1:0", dir).expect("relay starts")
}

fn agent(name: &str, addr: SocketAddr, dir: &Path) -> AgentProcess {
    AgentConfig::new(name, addr, &dir.join(name))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "300")
        .start()
        .expect("agent starts")
}

/// Waits until the relay has every identity's name claim and KeyPackages.
fn wait_ready(relay: &RelayProcess, agents: &mut [&mut AgentProcess]) -> Vec<String> {
    let full: Vec<String> = agents
        .iter_mut()
        .map(|a| a.identity(AGENT_WAIT).expect("started"))
        .collect();
    let ids: Vec<String> = full.iter().map(|id| id[..16].to_owned()).collect();
    let mut named: HashSet<String> = HashSet::new();
    let mut published: HashSet<String> = HashSet::new();
    let deadline = std::time::Instant::now() + AGENT_WAIT;
    while ids
        .iter()
        .any(|id| !named.contains(id) || !published.contains(id))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready: {named:?} {published:?}"
        );
        for line in relay.drain_log() {
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let id = value["identity"].as_str().unwrap_or_default().to_owned();
            match value["msg"].as_str() {
                Some("name claimed") => {
                    named.insert(id);
                }
                Some("key packages published") => {
                    published.insert(id);
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    full
}

fn identity_of_hex(hex_id: &str) -> IdentityKey {
    let bytes: [u8; 32] = hex::decode(hex_id).expect("hex").try_into().expect("32 bytes");
    IdentityKey::from_bytes(bytes).expect("identity")
}

fn joined(agent: &mut AgentProcess, group: &str) -> Value {
    agent
        .wait_for(&format!("joined {group}"), AGENT_WAIT, |e| {
            e["event"] == "group_joined" && e["group"] == group
        })
        .unwrap_or_else(|e| panic!("{e:#}: {}", agent.report()))
}

fn group_texts(agent: &mut AgentProcess, text: &str) -> Vec<Value> {
    agent
        .events_of("group_message")
        .into_iter()
        .filter(|e| e["text"] == text)
        .collect()
}

/// Mallory: a member made of the agent library's `GroupBook` and a raw relay client.
struct Mallory {
    pair: IdentityKeyPair,
    book: GroupBook,
    client: RelayClient,
    next: u64,
}

impl Mallory {
    async fn connect(addr: SocketAddr) -> Self {
        let pair = identity();
        let book = GroupBook::open(&pair, HashMap::new(), None, &BTreeMap::new()).expect("book");
        let client = RelayClient::connect(addr, pair.clone()).await.expect("mallory");
        Self {
            pair,
            book,
            client,
            next: 5000,
        }
    }

    fn id(&mut self) -> [u8; 16] {
        self.next += 1;
        msg_id(self.next)
    }

    /// A KeyPackage of `identity`, as the relay hands it out.
    async fn fetch_key_package(&mut self, identity: &IdentityKey) -> Vec<u8> {
        self.client
            .send(Frame::FetchKeyPackage {
                request_id: 1,
                identity: *identity.as_bytes(),
            })
            .await
            .expect("fetch");
        loop {
            if let Frame::KeyPackage { package, .. } = self.client.recv(WAIT).await.expect("answer") {
                return package.expect("a KeyPackage");
            }
        }
    }

    /// Creates the group `name` with `peers` (name, identity) and stores its commit.
    async fn create(&mut self, name: &str, peers: &[(&str, IdentityKey)]) -> Vec<u8> {
        let mut packages = Vec::new();
        for (who, identity) in peers {
            let bytes = self.fetch_key_package(identity).await;
            let package = self.book.read_key_package(who, identity, &bytes).expect("valid");
            packages.push((*identity, package));
        }
        let id = self.id();
        let (group_id, frame) = self.book.create(name, id, packages).expect("create");
        self.client.send(frame).await.expect("send");
        let r = answer(&mut self.client, id).await;
        assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");
        self.book.commit_stored(&group_id).expect("merge");
        group_id
    }

    /// Sends a text; returns the upload as sent.
    async fn say(&mut self, group_id: &[u8], text: &str) -> (Frame, Frame) {
        let id = self.id();
        let frame = self.book.send(group_id, id, text).expect("text");
        self.client.send(frame.clone()).await.expect("send");
        let r = answer(&mut self.client, id).await;
        (frame, r)
    }

    /// Reads every delivery queued for Mallory within `wait` into her book.
    async fn read_queue(&mut self, wait: Duration) -> Vec<(Vec<u8>, usize)> {
        let mut raw = Vec::new();
        for (_, payload) in drain_deliveries(&mut self.client, wait).await {
            let events = self
                .book
                .receive(&payload[1..])
                .map(|e| e.len())
                .unwrap_or(usize::MAX);
            raw.push((payload, events));
        }
        raw
    }
}

/// Mallory, a real MLS member with no registry name, makes a group with two agents.
/// Her texts are shown as hers (by her identity, never by a name she did not claim);
/// her own text uploaded again under a new id, and bob's text re-uploaded by her, are
/// shown once; nothing is acknowledged twice or crashes the agents.
#[test]
fn a_member_replaying_ciphertexts_gets_each_text_shown_once_and_as_its_author() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"));
    let mut bob = agent("bob", relay.addr, tmp.path());
    let mut carol = agent("carol", relay.addr, tmp.path());
    let ids = wait_ready(&relay, &mut [&mut bob, &mut carol]);
    let (bob_id, carol_id) = (identity_of_hex(&ids[0]), identity_of_hex(&ids[1]));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut mallory = rt.block_on(Mallory::connect(relay.addr));
    let mallory_hex = hex::encode(key(&mallory.pair));

    let group_id = rt.block_on(mallory.create("crew", &[("bob", bob_id), ("carol", carol_id)]));
    joined(&mut bob, "crew");
    joined(&mut carol, "crew");

    let (upload, r) = rt.block_on(mallory.say(&group_id, "from mallory"));
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");
    for a in [&mut bob, &mut carol] {
        let shown = a
            .wait_for("mallory's text", AGENT_WAIT, |e| {
                e["event"] == "group_message" && e["text"] == "from mallory"
            })
            .unwrap_or_else(|e| panic!("{e:#}: {}", a.report()));
        assert_eq!(shown["from_identity"], mallory_hex.as_str(), "{shown}");
        assert!(
            shown["from"].as_str().unwrap_or_default().starts_with('#'),
            "{shown}"
        );
    }

    // The same ciphertext, a new upload id: the relay stores it (it cannot tell), the
    // agents refuse the reused key generation.
    let Frame::GroupSend { message, .. } = upload else {
        panic!("a GroupSend")
    };
    let again = mallory.id();
    let r = rt.block_on(group_send(&mut mallory.client, again, message));
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");

    // bob talks; Mallory uploads bob's ciphertext as her own upload.
    bob.send_line("/g crew from bob").expect("stdin");
    let got = rt.block_on(mallory.read_queue(Duration::from_secs(3)));
    let bobs = got
        .iter()
        .find(|(p, events)| p[..5] == [0x10, 0, 1, 0, 2] && *events == 1)
        .map(|(p, _)| p[1..].to_vec())
        .expect("bob's text reached mallory");
    let relayed = mallory.id();
    let r = rt.block_on(group_send(&mut mallory.client, relayed, bobs));
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");
    let (_, r) = rt.block_on(mallory.say(&group_id, "still mallory"));
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");

    for a in [&mut bob, &mut carol] {
        a.wait_for("the text after the replays", AGENT_WAIT, |e| {
            e["event"] == "group_message" && e["text"] == "still mallory"
        })
        .unwrap_or_else(|e| panic!("{e:#}: {}", a.report()));
    }
    let from_bob = carol
        .wait_for("bob's text", AGENT_WAIT, |e| {
            e["event"] == "group_message" && e["text"] == "from bob"
        })
        .expect("bob's text");
    assert_eq!(from_bob["from"], "bob");
    std::thread::sleep(Duration::from_millis(500));
    for a in [&mut bob, &mut carol] {
        assert_eq!(group_texts(a, "from mallory").len(), 1, "{}", a.report());
        assert!(group_texts(a, "from bob").len() <= 1, "{}", a.report());
    }
    assert_eq!(group_texts(&mut carol, "from bob").len(), 1);
    assert!(
        group_texts(&mut bob, "from bob").is_empty(),
        "bob is not shown his own text"
    );
}

/// A member the registry cannot name is shown by its label `#…` (AGENT.md 3.2), but
/// `/group remove` takes only peer names: nobody can remove it.
#[test]
fn a_nameless_member_can_be_removed_by_its_label() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"));
    let mut bob = agent("bob", relay.addr, tmp.path());
    let ids = wait_ready(&relay, &mut [&mut bob]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut mallory = rt.block_on(Mallory::connect(relay.addr));
    let group_id = rt.block_on(mallory.create("spam", &[("bob", identity_of_hex(&ids[0]))]));
    joined(&mut bob, "spam");
    let (_, r) = rt.block_on(mallory.say(&group_id, "buy now"));
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");
    let shown = bob
        .wait_for("spam", AGENT_WAIT, |e| e["event"] == "group_message")
        .expect("spam shown");
    let label = shown["from"].as_str().expect("label").to_owned();
    bob.send_line(&format!("/group remove spam {label}"))
        .expect("stdin");
    let outcome = bob
        .wait_for("removal or error", AGENT_WAIT, |e| {
            e["event"] == "group_members" || e["event"] == "error" || e["event"] == "group_failed"
        })
        .expect("an answer");
    assert_eq!(outcome["event"], "group_members", "removing {label}: {outcome}");
    // Once removed, Mallory's uploads are refused by the relay.
    let (_, r) = rt.block_on(mallory.say(&group_id, "more spam"));
    assert!(code_of(&r).is_some(), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// 3. Crashes and backups
// ---------------------------------------------------------------------------------------

fn wait_members(agent: &mut AgentProcess, group: &str, expected: &[&str]) -> u64 {
    let deadline = std::time::Instant::now() + AGENT_WAIT;
    loop {
        agent.send_line("/groups").expect("stdin");
        let listed = agent.wait_event("groups", AGENT_WAIT).expect("groups");
        let line = (listed["groups"].as_array().expect("groups").iter()).find(|g| g["group"] == group);
        if let Some(line) = line {
            let mut names: Vec<String> = (line["members"].as_array().expect("members").iter())
                .map(|m| m.as_str().unwrap_or_default().to_owned())
                .collect();
            names.sort();
            if names == expected {
                return line["epoch"].as_u64().expect("epoch");
            }
        }
        if std::time::Instant::now() >= deadline {
            let name = agent.name().to_owned();
            panic!("{name} lists {listed} not {expected:?}: {}", agent.report());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// alice is killed -9 right after typing `/group create`, `/group add` and `/g`, at
/// several delays, and restarted on the same state directory each time. A command the
/// agent had not read yet may be lost (it had confirmed nothing; the user types it
/// again); nothing is done twice, and the group does not fork (one epoch everywhere,
/// texts both ways after the crashes).
#[test]
fn an_agent_killed_right_after_group_commands_recovers_without_fork_or_duplicate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"));
    let mut alice = agent("alice", relay.addr, tmp.path());
    let mut bob = agent("bob", relay.addr, tmp.path());
    let mut carol = agent("carol", relay.addr, tmp.path());
    let mut dave = agent("dave", relay.addr, tmp.path());
    wait_ready(&relay, &mut [&mut alice, &mut bob, &mut carol, &mut dave]);
    let mut lost = Vec::new();
    let joined_within = |a: &mut AgentProcess, wait: Duration| {
        a.wait_for("joined team", wait, |e| {
            e["event"] == "group_joined" && e["group"] == "team"
        })
        .is_ok()
    };

    alice.send_line("/group create team bob").expect("stdin");
    std::thread::sleep(Duration::from_millis(300));
    alice.kill9().expect("kill");
    let mut alice = agent("alice", relay.addr, tmp.path());
    if !joined_within(&mut bob, Duration::from_secs(10)) {
        lost.push("/group create team bob".to_owned());
        alice.send_line("/group create team bob").expect("stdin");
        joined(&mut bob, "team");
    }
    wait_members(&mut alice, "team", &["alice", "bob"]);

    let mut texts = Vec::new();
    for (round, (delay_ms, newcomer)) in [(40u64, &mut carol), (400, &mut dave)].into_iter().enumerate() {
        let name = newcomer.name().to_owned();
        let add = format!("/group add team {name}");
        alice.send_line(&add).expect("stdin");
        let text = format!("text {round}");
        alice.send_line(&format!("/g team {text}")).expect("stdin");
        texts.push(text.clone());
        std::thread::sleep(Duration::from_millis(delay_ms));
        alice.kill9().expect("kill");
        alice = agent("alice", relay.addr, tmp.path());
        if !joined_within(newcomer, Duration::from_secs(10)) {
            lost.push(add.clone());
            alice.send_line(&add).expect("stdin");
            joined(newcomer, "team");
        }
        if bob
            .wait_for(&text, Duration::from_secs(5), |e| {
                e["event"] == "group_message" && e["text"] == text.as_str()
            })
            .is_err()
        {
            lost.push(format!("/g team {text}"));
        }
    }
    let all = ["alice", "bob", "carol", "dave"];
    let epochs: Vec<u64> = [&mut alice, &mut bob, &mut carol, &mut dave]
        .into_iter()
        .map(|a| wait_members(a, "team", &all))
        .collect();
    assert!(epochs.iter().all(|e| *e == epochs[0]), "one epoch: {epochs:?}");
    bob.send_line("/g team after the crashes").expect("stdin");
    alice
        .wait_for("bob", AGENT_WAIT, |e| {
            e["event"] == "group_message" && e["text"] == "after the crashes"
        })
        .unwrap_or_else(|e| panic!("{e:#}: {}", alice.report()));
    alice.send_line("/g team alice is back").expect("stdin");
    for a in [&mut bob, &mut carol, &mut dave] {
        a.wait_for("alice", AGENT_WAIT, |e| {
            e["event"] == "group_message" && e["text"] == "alice is back"
        })
        .unwrap_or_else(|e| panic!("{e:#}: {}", a.report()));
    }
    std::thread::sleep(Duration::from_millis(500));
    for text in &texts {
        assert!(group_texts(&mut bob, text).len() <= 1, "{text}: {}", bob.report());
    }
    for a in [&mut bob, &mut carol, &mut dave] {
        assert_eq!(a.events_of("group_joined").len(), 1, "{}", a.report());
    }
    eprintln!("commands lost to the kills (typed again): {lost:?}");
}

/// alice's state directory is restored from a backup taken before the group moved on
/// (another member added, texts): the relay no longer holds what she missed. Her next
/// text must end in a clear error, not wait forever.
#[test]
fn a_state_restored_from_an_old_backup_reports_that_the_group_is_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"));
    let mut alice = agent("alice", relay.addr, tmp.path());
    let mut bob = agent("bob", relay.addr, tmp.path());
    let mut carol = agent("carol", relay.addr, tmp.path());
    wait_ready(&relay, &mut [&mut alice, &mut bob, &mut carol]);
    alice.send_line("/group create team bob").expect("stdin");
    joined(&mut bob, "team");
    wait_members(&mut alice, "team", &["alice", "bob"]);

    alice.kill9().expect("kill");
    let backup = tmp.path().join("alice-backup");
    copy_private_dir(&tmp.path().join("alice"), &backup).expect("backup");
    let mut alice = agent("alice", relay.addr, tmp.path());
    bob.send_line("/group add team carol").expect("stdin");
    joined(&mut carol, "team");
    bob.send_line("/g team moved on").expect("stdin");
    alice
        .wait_for("moved on", AGENT_WAIT, |e| {
            e["event"] == "group_message" && e["text"] == "moved on"
        })
        .expect("alice reads it");

    alice.kill9().expect("kill");
    std::fs::remove_dir_all(tmp.path().join("alice")).expect("remove");
    copy_private_dir(&backup, &tmp.path().join("alice")).expect("restore");
    let mut alice = agent("alice", relay.addr, tmp.path());
    alice.identity(AGENT_WAIT).expect("restarted");
    std::thread::sleep(Duration::from_secs(1));
    alice.send_line("/g team after the restore").expect("stdin");
    let outcome = alice.wait_for("an answer to /g", Duration::from_secs(15), |e| {
        matches!(e["event"].as_str(), Some("group_sent" | "group_failed" | "error"))
    });
    let report = alice.report();
    let outcome = outcome.unwrap_or_else(|e| panic!("{e:#}: {report}"));
    assert_eq!(outcome["event"], "group_failed", "{outcome}");
    eprintln!("after the restore: {outcome}");
    assert!(
        group_texts(&mut bob, "after the restore").is_empty(),
        "{}",
        bob.report()
    );
}

// ---------------------------------------------------------------------------------------
// 4. A user at the terminal
// ---------------------------------------------------------------------------------------

/// The next error-like answer of `agent` to a command.
fn error_for(agent: &mut AgentProcess, line: &str, wait: Duration) -> Value {
    agent.send_line(line).expect("stdin");
    let answer = agent.wait_for(&format!("an error for {line:?}"), wait, |e| {
        matches!(e["event"].as_str(), Some("error" | "group_failed" | "group_sent"))
    });
    let report = agent.report();
    answer.unwrap_or_else(|e| panic!("{line:?}: {e:#}: {report}"))
}

fn text_of(event: &Value) -> String {
    event["message"]
        .as_str()
        .or(event["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Typos and impossible `/group` commands are answered with an error that says what is
/// wrong, and nothing is sent.
#[test]
fn typos_and_impossible_group_commands_get_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"));
    let mut alice = AgentConfig::new("alice", relay.addr, &tmp.path().join("alice"))
        .env("E2EE_AGENT_EXPECT_TIMEOUT_MS", "2000")
        .start()
        .expect("agent");
    let mut bob = agent("bob", relay.addr, tmp.path());
    wait_ready(&relay, &mut [&mut alice, &mut bob]);
    let cases: &[(&str, &str)] = &[
        ("/group creat team bob", "creat"),
        ("/group", "create, add, remove or leave"),
        ("/group create", "group"),
        ("/group create team", "peer"),
        ("/group create bad@name bob", "bad@name"),
        ("/group create team alice", "member already"),
        ("/group add nosuch bob", "no group named nosuch"),
        ("/group remove nosuch bob", "no group named nosuch"),
        ("/group leave nosuch", "no group named nosuch"),
        ("/g nosuch hello", "nosuch"),
        ("/group create team nobody-here", "nobody-here"),
    ];
    let mut seen = Vec::new();
    for (line, needle) in cases {
        let answer = error_for(&mut alice, line, Duration::from_secs(20));
        let text = text_of(&answer);
        seen.push(format!("{line:?} -> {text}"));
        assert!(
            answer["event"] == "error" && text.to_lowercase().contains(needle),
            "{line:?}: {answer}"
        );
    }
    eprintln!("{}", seen.join("\n"));
    // None of them made a group.
    alice.send_line("/groups").expect("stdin");
    let listed = alice.wait_event("groups", WAIT).expect("groups");
    assert_eq!(listed["groups"].as_array().map(Vec::len), Some(0), "{listed}");
    // Leaving, then talking to the group left.
    alice.send_line("/group create team bob").expect("stdin");
    joined(&mut bob, "team");
    alice.send_line("/group leave team").expect("stdin");
    bob.wait_for("alice leaves", AGENT_WAIT, |e| {
        e["event"] == "group_members" && e["removed"][0] == "alice"
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", bob.report()));
    alice
        .wait_for("left", AGENT_WAIT, |e| e["event"] == "group_removed")
        .unwrap_or_else(|e| panic!("{e:#}: {}", alice.report()));
    alice.send_line("/g team still here?").expect("stdin");
    alice
        .wait_for("no group", Duration::from_secs(5), |e| {
            e["event"] == "error" && text_of(e).contains("no group named team")
        })
        .unwrap_or_else(|e| panic!("{e:#}: {}", alice.report()));
}

/// A member that leaves forgets the group as soon as its leave proposal is stored; the
/// commit that removes it then arrives and is reported as a failure to read "a message
/// of a group we are not in", group `?`: every ordinary `/group leave` ends in an
/// alarming error (and so does every text sent to the group before the removal).
#[test]
fn leaving_a_group_ends_without_a_failure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"));
    let mut alice = agent("alice", relay.addr, tmp.path());
    let mut bob = agent("bob", relay.addr, tmp.path());
    wait_ready(&relay, &mut [&mut alice, &mut bob]);
    alice.send_line("/group create team bob").expect("stdin");
    joined(&mut bob, "team");
    joined(&mut alice, "team");
    alice.send_line("/group leave team").expect("stdin");
    bob.wait_for("alice leaves", AGENT_WAIT, |e| {
        e["event"] == "group_members" && e["removed"][0] == "alice"
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", bob.report()));
    std::thread::sleep(Duration::from_secs(1));
    let failures = alice.events_of("group_failed");
    assert!(failures.is_empty(), "{failures:?}");
}

/// Changes that cannot apply — adding a member who is in the group already, removing a
/// peer who is not in it — are dropped without a word: the user believes they happened.
#[test]
fn group_changes_that_cannot_apply_are_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"));
    let mut alice = agent("alice", relay.addr, tmp.path());
    let mut bob = agent("bob", relay.addr, tmp.path());
    let mut carol = agent("carol", relay.addr, tmp.path());
    wait_ready(&relay, &mut [&mut alice, &mut bob, &mut carol]);
    alice.send_line("/msg carol hi").expect("stdin");
    alice.wait_event("sent", AGENT_WAIT).expect("carol pinned");
    alice.send_line("/group create team bob").expect("stdin");
    joined(&mut bob, "team");
    wait_members(&mut alice, "team", &["alice", "bob"]);
    let mut outcomes = Vec::new();
    for line in ["/group add team bob", "/group remove team carol"] {
        alice.send_line(line).expect("stdin");
        let answer = alice.wait_for(line, Duration::from_secs(8), |e| {
            matches!(
                e["event"].as_str(),
                Some("error" | "group_failed" | "group_members")
            )
        });
        outcomes.push(format!("{line:?}: {:?}", answer.map(|a| a.to_string())));
    }
    assert!(outcomes.iter().all(|o| o.contains("Ok(")), "{outcomes:#?}");
}

/// Replaces, in every value of an OpenMLS storage serialized as JSON, the byte sequence
/// `from` (as JSON numbers) by `to`.
fn rewrite_bytes(values: &mut HashMap<Vec<u8>, Vec<u8>>, from: &[u8; 32], to: &[u8; 32]) -> usize {
    let join = |b: &[u8; 32]| b.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
    let (from, to) = (join(from), join(to));
    let mut replaced = 0;
    for value in values.values_mut() {
        let Ok(text) = String::from_utf8(value.clone()) else {
            continue;
        };
        let mut out = text.clone();
        for (l, r) in [("[", ","), (",", ","), ("[", "]"), (",", "]")] {
            let (a, b) = (format!("{l}{from}{r}"), format!("{l}{to}{r}"));
            replaced += out.matches(&a).count();
            out = out.replace(&a, &b);
        }
        *value = out.into_bytes();
    }
    replaced
}

/// Mallory, a member, commits an update whose leaf carries a credential naming bob's
/// identity key (with a binding that cannot verify: she lacks bob's identity key).
/// OpenMLS leaves credential changes to the application (RFC 9420 §5.3.1): the agent
/// refuses a renewed leaf that does not keep its identity, and names the sender of a
/// text by its checked leaf, so carol never shows Mallory's text as bob's.
#[test]
fn a_member_cannot_take_another_members_name_by_an_update() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"));
    let mut bob = agent("bob", relay.addr, tmp.path());
    let mut carol = agent("carol", relay.addr, tmp.path());
    let ids = wait_ready(&relay, &mut [&mut bob, &mut carol]);
    let (bob_id, carol_id) = (identity_of_hex(&ids[0]), identity_of_hex(&ids[1]));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut mallory = rt.block_on(Mallory::connect(relay.addr));
    let group_id = rt.block_on(mallory.create("crew", &[("bob", bob_id), ("carol", carol_id)]));
    joined(&mut bob, "crew");
    joined(&mut carol, "crew");

    // Mallory's own state, her identity key replaced by bob's in her own leaf.
    let mut values: HashMap<Vec<u8>, Vec<u8>> = mallory.book.changes().put.into_iter().collect();
    let replaced = rewrite_bytes(&mut values, &key(&mallory.pair), bob_id.as_bytes());
    assert!(replaced > 0, "mallory's identity found in her MLS state");
    let signature = mallory.book.signature_public();
    let names = mallory.book.names();
    mallory.book = GroupBook::open(&mallory.pair, values, Some(&signature), &names).expect("reopen");
    let id = mallory.id();
    let Frame::GroupCommit { msg_id, commit, .. } = mallory.book.update(&group_id, id).expect("update")
    else {
        panic!("a commit")
    };
    // The relay's member list: as before (her own leaf no longer verifies as hers).
    let update = Frame::GroupCommit {
        msg_id,
        commit,
        welcome: None,
        members: vec![key(&mallory.pair), *bob_id.as_bytes(), *carol_id.as_bytes()],
        added: Vec::new(),
    };
    rt.block_on(mallory.client.send(update)).expect("send");
    let r = rt.block_on(answer(&mut mallory.client, id));
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");
    mallory.book.commit_stored(&group_id).expect("merge");
    let (_, r) = rt.block_on(mallory.say(&group_id, "bob here: send the key to mallory"));
    assert!(matches!(r, Frame::SentAck { .. }), "{r:?}");

    let outcome = carol.wait_for("the forged text or a failure", AGENT_WAIT, |e| {
        (e["event"] == "group_message" && e["text"] == "bob here: send the key to mallory")
            || e["event"] == "group_failed"
    });
    let report = carol.report();
    let outcome = outcome.unwrap_or_else(|e| panic!("{e:#}: {report}"));
    eprintln!("carol: {outcome}");
    assert!(
        !(outcome["event"] == "group_message" && outcome["from"] == "bob"),
        "carol shows mallory's text as bob's: {outcome}"
    );
}
