//! Presence: which relay node holds each identity's connection, in Redis. Served on a
//! thread of its own (blocking Redis calls never run on the Router's event loop).

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

    /// Runs `script` with `args` after the prefix; a failure is logged (presence only
    /// speeds delivery up: every message is in the store whatever it says).
    fn run(&mut self, arrive: bool, args: &[&[u8]]) -> Option<u64> {
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
        let anchor = format!("{}seq", self.node.key_prefix);
        let prefix = self.node.key_prefix.clone();
        let script = if arrive { &self.arrive } else { &self.leave };
        let link = self.link.as_mut()?;
        let result = link.with(|con| {
            let mut call = script.key(&anchor);
            call.arg(prefix.as_bytes());
            for arg in args {
                call.arg(*arg);
            }
            call.invoke::<u64>(con)
        });
        match result {
            Ok(n) => Some(n),
            Err(err) => {
                warn!(self.log, "presence not recorded"; "error" => %err);
                None
            }
        }
    }
}

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
