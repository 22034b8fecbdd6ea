//! Presence: which relay node holds each identity's connection, in Redis. Served on a
//! thread of its own (blocking Redis calls never run on the Router's event loop).

use std::time::Duration;

use actix::prelude::*;
use redis::Script;
use slog::{warn, Logger};

use super::ClusterNode;
use crate::router::{PresenceGranted, Router};
use crate::store::redis::RedisLink;
use crate::store::IdentityBytes;

/// Records arrivals and departures of this node's identities.
pub struct Presence {
    node: ClusterNode,
    link: Option<RedisLink>,
    router: Addr<Router>,
    arrive: Script,
    leave: Script,
    log: Logger,
}

impl Presence {
    /// Presence of `node`'s identities; grants go to `router`.
    pub fn new(node: ClusterNode, router: Addr<Router>, log: Logger) -> Self {
        Self {
            node,
            link: None,
            router,
            arrive: Script::new(include_str!("presence_arrive.lua")),
            leave: Script::new(include_str!("presence_leave.lua")),
            log,
        }
    }

    /// Runs `op` on the Redis link (opened first if needed); a failure is logged
    /// (presence only speeds delivery up: every message is in the store whatever it
    /// says).
    fn call<T>(
        &mut self,
        op: impl FnOnce(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>,
    ) -> Option<T> {
        if self.link.is_none() {
            match RedisLink::open(crate::store::redis::RedisEndpoint {
                require_fsync: false,
                ..self.node.endpoint.clone()
            }) {
                Ok(link) => self.link = Some(link),
                Err(err) => {
                    warn!(self.log, "presence not recorded"; "error" => %err);
                    return None;
                }
            }
        }
        match self.link.as_mut()?.with(op) {
            Ok(value) => Some(value),
            Err(err) => {
                warn!(self.log, "presence not recorded"; "error" => %err);
                None
            }
        }
    }

    /// Runs the arrival (or else the departure) script with `args` after the prefix.
    fn run(&mut self, arrive: bool, args: &[&[u8]]) -> Option<u64> {
        let anchor = format!("{}seq", self.node.key_prefix);
        let prefix = self.node.key_prefix.clone();
        let script = if arrive {
            self.arrive.clone()
        } else {
            self.leave.clone()
        };
        self.call(|con| {
            let mut call = script.key(&anchor);
            call.arg(prefix.as_bytes());
            for arg in args {
                call.arg(*arg);
            }
            call.invoke::<u64>(con)
        })
    }
}

/// How often a relay node says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How long a node counts as alive after its last heartbeat: past it, the other nodes
/// stop sending it messages and replacements (its identities' presence is then stale).
pub const ALIVE_FOR: Duration = Duration::from_secs(15);

impl Actor for Presence {
    type Context = SyncContext<Self>;
}

/// An identity authenticated on this node (connection `conn_id`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Arrive {
    /// The identity.
    pub identity: IdentityBytes,
    /// Its connection on this node.
    pub conn_id: u64,
}

impl Handler<Arrive> for Presence {
    type Result = ();

    fn handle(&mut self, msg: Arrive, _: &mut SyncContext<Self>) {
        let name = self.node.name.clone();
        if let Some(generation) = self.run(true, &[&msg.identity, name.as_bytes()]) {
            self.router.do_send(PresenceGranted {
                identity: msg.identity,
                conn_id: msg.conn_id,
                generation,
            });
        }
    }
}

/// An identity's connection of `generation` on this node ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The identity.
    pub identity: IdentityBytes,
    /// The generation its arrival was granted.
    pub generation: u64,
}

impl Handler<Leave> for Presence {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut SyncContext<Self>) {
        let (name, generation) = (self.node.name.clone(), msg.generation.to_string());
        self.run(false, &[&msg.identity, name.as_bytes(), generation.as_bytes()]);
    }
}

/// This node is alive: `{prefix}alive:<node>` is set for [`ALIVE_FOR`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Heartbeat;

impl Handler<Heartbeat> for Presence {
    type Result = ();

    fn handle(&mut self, _: Heartbeat, _: &mut SyncContext<Self>) {
        let key = format!("{}alive:{}", self.node.key_prefix, self.node.name);
        let ms = u64::try_from(ALIVE_FOR.as_millis()).unwrap_or(u64::MAX);
        self.call(|con| {
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(ms)
                .query::<()>(con)
        });
    }
}
