//! Listens on this node's Redis channel and tells the Router: a message stored through
//! another node for one of its identities
//! (`D‖recipient‖sender‖msg_id‖seq:timestamp_ms:payload`, pushed like a message stored
//! here), or an identity's connection replaced by a newer one on another node
//! (`R‖identity‖generation`). A thread of its own with a
//! blocking subscription; it resubscribes after Redis goes away, and then has every
//! connection read its queue again (a notice may have been missed meanwhile). It ends
//! when the Router stops.

use std::thread;
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use slog::{info, warn, Logger};

use super::ClusterNode;
use crate::router::{ClusterNotice, Delivery, Router};
use crate::store::redis::connection_to;

/// How long one wait for a notice lasts (the thread checks the Router is alive between).
const POLL: Duration = Duration::from_secs(1);
/// Wait before resubscribing after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// What a notice payload says.
fn parse(payload: &[u8]) -> Option<ClusterNotice> {
    match payload {
        [b'D', rest @ ..] if rest.len() > 80 => {
            let (recipient, rest) = rest.split_at(32);
            let (sender, rest) = rest.split_at(32);
            let (msg_id, rest) = rest.split_at(16);
            let mut fields = rest.splitn(3, |b| *b == b':');
            let number =
                |field: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(field?).ok()?.parse().ok() };
            let (seq, timestamp_ms) = (number(fields.next())?, number(fields.next())?);
            let payload = fields.next()?;
            Some(ClusterNotice::Stored {
                recipient: recipient.try_into().ok()?,
                delivery: Delivery {
                    seq,
                    sender: sender.try_into().ok()?,
                    msg_id: msg_id.try_into().ok()?,
                    timestamp_ms,
                    payload: Bytes::copy_from_slice(payload),
                },
            })
        }
        [b'R', rest @ ..] if rest.len() > 32 => {
            let (identity, generation) = rest.split_at(32);
            Some(ClusterNotice::ReplacedElsewhere {
                identity: identity.try_into().ok()?,
                generation: std::str::from_utf8(generation).ok()?.parse().ok()?,
            })
        }
        _ => None,
    }
}

/// Starts the listener thread of `node`, telling `router`.
pub fn spawn(node: ClusterNode, router: Addr<Router>, log: Logger) -> std::io::Result<()> {
    let channel = node.channel_of(&node.name);
    // Classic pub/sub reaches every node of a cluster: any address will do, the next
    // one after a failure.
    let urls = node.endpoint.urls.clone();
    let mut next = 0usize;
    thread::Builder::new()
        .name("cluster-listener".into())
        .spawn(move || {
            let mut first = true;
            while router.connected() {
                let url = urls[next % urls.len()].clone();
                next += 1;
                let mut conn = match connection_to(&url, POLL) {
                    Ok(conn) => conn,
                    Err(err) => {
                        warn!(log, "cluster notices unavailable"; "redis" => %url, "error" => %err);
                        thread::sleep(RETRY);
                        continue;
                    }
                };
                let mut pubsub = conn.as_pubsub();
                if let Err(err) = pubsub.subscribe(&channel) {
                    warn!(log, "cluster notices unavailable"; "redis" => %url, "error" => %err);
                    thread::sleep(RETRY);
                    continue;
                }
                if !first {
                    info!(log, "cluster notices resumed"; "channel" => %channel);
                    router.do_send(ClusterNotice::NoticesMissed);
                }
                first = false;
                let _ = pubsub.set_read_timeout(Some(POLL));
                while router.connected() {
                    match pubsub.get_message() {
                        Ok(msg) => match parse(msg.get_payload_bytes()) {
                            Some(notice) => router.do_send(notice),
                            None => warn!(log, "unknown cluster notice"; "channel" => %channel),
                        },
                        Err(err) if err.is_timeout() => {}
                        Err(err) => {
                            warn!(log, "cluster notices interrupted"; "error" => %err);
                            break;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse_and_junk_does_not() {
        let mut stored = vec![b'D'];
        stored.extend([7u8; 32]);
        stored.extend([6u8; 32]);
        stored.extend([5u8; 16]);
        stored.extend(b"12:1700000000000:pay:load");
        match parse(&stored) {
            Some(ClusterNotice::Stored { recipient, delivery }) => {
                assert_eq!(recipient, [7; 32]);
                assert_eq!((delivery.sender, delivery.msg_id), ([6; 32], [5; 16]));
                assert_eq!((delivery.seq, delivery.timestamp_ms), (12, 1_700_000_000_000));
                assert_eq!(&delivery.payload[..], b"pay:load", "a payload may hold ':'");
            }
            other => panic!("{other:?}"),
        }
        let mut replaced = vec![b'R'];
        replaced.extend([8u8; 32]);
        replaced.extend(b"42");
        assert!(matches!(
            parse(&replaced),
            Some(ClusterNotice::ReplacedElsewhere { identity, generation: 42 }) if identity == [8; 32]
        ));
        let mut no_time = stored[..81].to_vec();
        no_time.extend(b"12");
        for junk in [
            &b""[..],
            b"D",
            b"Dshort",
            b"X",
            &replaced[..33],
            &no_time,
            &stored[..40],
        ] {
            assert!(parse(junk).is_none(), "{junk:?}");
        }
    }
}
