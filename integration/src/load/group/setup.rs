//! Setting the group up for `e2ee-load group`: connecting the members, making the
//! group (MLS-shaped headers, or real MLS with Welcomes), and the frame helpers both use.

use super::*;

/// A `PrivateMessage` header (RFC 9420 §6.3) up to its content type.
pub(super) fn private_header(group_id: &[u8], epoch: u64, content_type: u8) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 2, group_id.len() as u8];
    m.extend_from_slice(group_id);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.push(content_type);
    m
}

/// The probe as text (`--mls`): hex of pair, seq and intended time, padded with '.'.
pub(super) fn probe_text(probe: &Probe, size: usize) -> String {
    let mut text = format!("{:08x}{:016x}{:016x}", probe.pair, probe.seq, probe.intended_ns);
    while text.len() < size {
        text.push('.');
    }
    text
}

pub(super) fn parse_probe_text(text: &str) -> Option<Probe> {
    let hex = text.get(..TEXT_PROBE_LEN)?;
    Some(Probe {
        pair: u32::from_str_radix(&hex[..8], 16).ok()?,
        seq: u64::from_str_radix(&hex[8..24], 16).ok()?,
        intended_ns: u64::from_str_radix(&hex[24..40], 16).ok()?,
    })
}

/// The next frame that matters during setup: pings are answered, notices skipped.
pub(super) async fn next_frame(framed: &mut LinkFramed, deadline: Instant) -> anyhow::Result<Frame> {
    for _ in 0..10_000 {
        let frame = tokio::time::timeout_at(deadline.into(), framed.next())
            .await
            .context("timed out while setting the group up")?
            .ok_or_else(|| anyhow!("the relay closed the connection"))??;
        match frame {
            Frame::Ping { nonce } => framed.send(Frame::Pong { nonce }).await?,
            Frame::Pong { .. } | Frame::KeyPackageCount { .. } | Frame::PreKeysLow { .. } => {}
            other => return Ok(other),
        }
    }
    bail!("no answer among 10 000 frames")
}

/// Waits for the `SentAck` of `msg_id`.
pub(super) async fn await_ack(framed: &mut LinkFramed, msg_id: [u8; 16]) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETUP_WAIT;
    match next_frame(framed, deadline).await? {
        Frame::SentAck { msg_id: id } if id == msg_id => Ok(()),
        other => bail!("the group commit was not stored: {other:?}"),
    }
}

/// Waits for the next `Deliver` and acknowledges it: (sender, msg_id, payload).
pub(super) async fn await_deliver(framed: &mut LinkFramed) -> anyhow::Result<([u8; 32], [u8; 16], Vec<u8>)> {
    let deadline = Instant::now() + SETUP_WAIT;
    match next_frame(framed, deadline).await? {
        Frame::Deliver {
            sender,
            msg_id,
            payload,
            ..
        } => {
            framed.send(Frame::DeliveryAck { sender, msg_id }).await?;
            Ok((sender, msg_id, payload))
        }
        other => bail!("expected a group delivery, got {other:?}"),
    }
}

/// Connects every member (TLS unless `--insecure-plaintext`).
pub(super) async fn connect(cfg: &GroupConfig, endpoint: &Endpoint) -> anyhow::Result<Vec<Member>> {
    let addr = endpoint.addr;
    let mls = cfg.mls;
    futures_util::stream::iter(0..cfg.members)
        .map(|index| async move {
            let identity = IdentityKeyPair::generate(&mut OsRng);
            let (link, _) = Link::open(Kind::Relay, addr, None, &identity, None)
                .await
                .with_context(|| format!("member {index} connecting"))?;
            let Link::Relay(framed) = link else {
                bail!("not a relay connection");
            };
            let book = if mls {
                Some(
                    GroupBook::open(&identity, HashMap::new(), None, &BTreeMap::new())
                        .map_err(|e| anyhow!("member {index}: {e}"))?,
                )
            } else {
                None
            };
            Ok(Member {
                index,
                identity,
                framed,
                book,
            })
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

/// Headers mode: one hand-made commit at epoch 0 from member 0 adds everyone; each
/// other member gets (and acknowledges) its copy of the Welcome.
pub(super) async fn setup_headers(
    members: &mut [Member],
    ids: &[[u8; 32]],
    group_id: &[u8],
) -> anyhow::Result<GroupSetup> {
    let mut commit = private_header(group_id, 0, 3);
    commit.extend_from_slice(&[0u8; 64]);
    let mut welcome = vec![0, 1, 0, 3];
    welcome.extend_from_slice(&[0u8; 256]);
    let msg_id = probe::msg_id(SETUP_PAIR, 0);
    let frame = Frame::GroupCommit {
        msg_id,
        commit: commit.clone(),
        welcome: Some(welcome.clone()),
        members: ids.to_vec(),
        added: ids[1..].to_vec(),
    };
    let first = &mut members[0].framed;
    first.send(frame).await?;
    await_ack(first, msg_id).await?;
    let expected = mls_payload(&welcome);
    let mut copies = 0;
    for member in &mut members[1..] {
        let (sender, id, payload) = await_deliver(&mut member.framed).await?;
        if sender != ids[0] || id != fan_out_id(&msg_id, &ids[member.index]) || payload != expected {
            bail!(
                "member {} got another Welcome copy than the one uploaded",
                member.index
            );
        }
        copies += 1;
    }
    Ok(GroupSetup {
        commits: 1,
        batch: ids.len() - 1,
        welcome_bytes: welcome.len(),
        commit_bytes: commit.len(),
        welcome_all_at_once_bytes: None,
        max_welcome: MAX_MLS_MESSAGE_LEN,
        setup_copies: copies,
        setup_s: 0.0,
    })
}

/// `--mls`: member 0 creates the group with the others' KeyPackages, in as few commits
/// as the Welcome size allows; every member reads its Welcome (and the later commits).
/// Returns the setup and the group id.
pub(super) async fn setup_mls(
    members: &mut [Member],
    ids: &[[u8; 32]],
    max_welcome: usize,
) -> anyhow::Result<(GroupSetup, Vec<u8>)> {
    let mut packages: Vec<Vec<u8>> = Vec::with_capacity(members.len());
    for member in &mut members[1..] {
        let book = member.book.as_mut().ok_or_else(|| anyhow!("no group book"))?;
        let mut made = book
            .key_packages(1, false)
            .map_err(|e| anyhow!("KeyPackage: {e}"))?;
        packages.push(made.pop().ok_or_else(|| anyhow!("no KeyPackage made"))?);
    }
    let mut setup = GroupSetup {
        max_welcome,
        ..GroupSetup::default()
    };
    let mut group_id: Option<Vec<u8>> = None;
    let mut batch = packages.len();
    let mut next = 1; // the first member not yet added
    let mut commit_no = 0u64;
    while next < members.len() {
        // Bounded: every pass either adds at least one member or halves the batch.
        let take = batch.min(members.len() - next);
        let (first, rest) = members.split_at_mut(1);
        let adder = first[0].book.as_mut().ok_or_else(|| anyhow!("no group book"))?;
        let mut chosen = Vec::with_capacity(take);
        for (k, bytes) in packages[next - 1..next - 1 + take].iter().enumerate() {
            let who = &rest[next - 1 + k];
            let key = who.identity.public();
            let package = adder
                .read_key_package(&format!("member {}", who.index), key, bytes)
                .map_err(|e| anyhow!("{e}"))?;
            chosen.push((*key, package));
        }
        let msg_id = probe::msg_id(SETUP_PAIR, commit_no);
        let frame = match &group_id {
            None => {
                let (id, frame) = adder
                    .create("load", msg_id, chosen)
                    .map_err(|e| anyhow!("creating the group: {e}"))?;
                group_id = Some(id);
                frame
            }
            Some(id) => adder
                .add(id, msg_id, chosen)
                .map_err(|e| anyhow!("adding: {e}"))?,
        };
        let gid = group_id.clone().ok_or_else(|| anyhow!("no group"))?;
        let Frame::GroupCommit { commit, welcome, .. } = &frame else {
            bail!("not a commit");
        };
        let welcome_len = welcome.as_ref().map_or(0, Vec::len);
        if welcome_len > max_welcome || commit.len() > max_welcome {
            if take == packages.len() {
                setup.welcome_all_at_once_bytes = Some(welcome_len);
            }
            if take <= 1 {
                bail!("a Welcome adding one member is {welcome_len} B, over {max_welcome} B");
            }
            if commit_no == 0 {
                adder.forget(&gid);
                group_id = None;
            } else {
                adder.discard_pending(&gid).map_err(|e| anyhow!("{e}"))?;
            }
            batch = take.div_ceil(2);
            continue;
        }
        setup.welcome_bytes = setup.welcome_bytes.max(welcome_len);
        setup.commit_bytes = setup.commit_bytes.max(commit.len());
        setup.batch = setup.batch.max(take);
        let expected_welcome = welcome.as_ref().map(|w| mls_payload(w));
        first[0].framed.send(frame).await?;
        await_ack(&mut first[0].framed, msg_id).await?;
        adder.commit_stored(&gid).map_err(|e| anyhow!("{e}"))?;
        // Members already in the group read the commit; the added ones their Welcome.
        for member in rest[..next - 1 + take].iter_mut() {
            let (sender, id, payload) = await_deliver(&mut member.framed).await?;
            setup.setup_copies += 1;
            if sender != ids[0] || id != fan_out_id(&msg_id, &ids[member.index]) {
                bail!("member {} got a copy under another id", member.index);
            }
            let added_now = member.index >= next;
            if added_now && Some(&payload) != expected_welcome.as_ref() {
                bail!(
                    "member {} got another Welcome than the one uploaded",
                    member.index
                );
            }
            let body = payload
                .strip_prefix(&[MSG_TYPE_MLS])
                .ok_or_else(|| anyhow!("not an MLS delivery"))?;
            let book = member.book.as_mut().ok_or_else(|| anyhow!("no group book"))?;
            book.receive(body)
                .map_err(|e| anyhow!("member {} reading the setup: {e}", member.index))?;
        }
        next += take;
        commit_no += 1;
    }
    setup.commits = commit_no;
    let gid = group_id.ok_or_else(|| anyhow!("no group made"))?;
    // Every member at the same epoch, with all N members.
    for member in members.iter() {
        let book = member.book.as_ref().ok_or_else(|| anyhow!("no group book"))?;
        let summary = book
            .summaries()
            .into_iter()
            .find(|s| s.group_id == gid)
            .ok_or_else(|| anyhow!("member {} is not in the group", member.index))?;
        if summary.epoch != commit_no || summary.members.len() != members.len() {
            bail!(
                "member {} is at epoch {} with {} members",
                member.index,
                summary.epoch,
                summary.members.len()
            );
        }
    }
    Ok((setup, gid))
}
