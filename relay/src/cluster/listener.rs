//! Listens on this node's Redis channel and tells the Router: a message is waiting for
//! one of its identities (`W‖identity`), or an identity's connection was replaced by a
//! newer one on another node (`R‖identity‖generation`). A thread of its own with a
//! blocking subscription; it resubscribes after Redis goes away, and then has every
//! connection read its queue again (a notice may have been missed meanwhile). It ends
//! when the Router stops.

use std::thread;
use std::time::Duration;

use actix::Addr;
use slog::{info, warn, Logger};

use super::ClusterNode;
use crate::router::{ClusterNotice, Router};
use crate::store::redis::connection_to;

/// How long one wait for a notice lasts (the thread checks the Router is alive between).
const POLL: Duration = Duration::from_secs(1);
/// Wait before resubscribing after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// What a notice payload says.
fn parse(payload: &[u8]) -> Option<ClusterNotice> {
    match payload {
        [b'W', identity @ ..] => Some(ClusterNotice::Waiting {
            identity: identity.try_into().ok()?,
        }),
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
    let url = node.endpoint.urls[0].clone();
    thread::Builder::new()
        .name("cluster-listener".into())
        .spawn(move || {
            let mut first = true;
            while router.connected() {
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
                    router.do_send(ClusterNotice::Resubscribed);
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
        let mut waiting = vec![b'W'];
        waiting.extend([7u8; 32]);
        assert!(matches!(parse(&waiting), Some(ClusterNotice::Waiting { identity }) if identity == [7; 32]));
        let mut replaced = vec![b'R'];
        replaced.extend([8u8; 32]);
        replaced.extend(b"42");
        assert!(matches!(
            parse(&replaced),
            Some(ClusterNotice::ReplacedElsewhere { identity, generation: 42 }) if identity == [8; 32]
        ));
        for junk in [&b""[..], b"W", b"Wshort", b"X", &replaced[..33]] {
            assert!(parse(junk).is_none(), "{junk:?}");
        }
    }
}
