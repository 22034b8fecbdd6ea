//! Presence: which relay node holds each identity's connection, in Redis. Served on a
//! thread of its own (blocking Redis calls never run on the Router's event loop).

use std::sync::LazyLock;
use std::time::Duration;

use actix::prelude::*;
use redis::Script;
use slog::{warn, Logger};

use super::ClusterNode;
use crate::router::{ClusterNotice, PresenceGranted, Router};
use crate::store::redis::RedisLink;
use crate::store::IdentityBytes;

/// Records arrivals and departures of this node's identities, or (a second instance on a
/// thread of its own, so that a burst of logins never delays it) the node's heartbeat.
pub struct Presence {
    node: ClusterNode,
    /// This process's token, the value of its heartbeat key.
    instance: String,
    /// A heartbeat was written before (the first one finds no key, as expected).
    beating: bool,
    link: Option<RedisLink>,
    router: Addr<Router>,
    log: Logger,
}

impl Presence {
    /// Presence of `node`'s identities; grants go to `router`.
    pub fn new(node: ClusterNode, router: Addr<Router>, log: Logger) -> Self {
        Self {
            instance: node.instance.clone(),
            node,
            beating: false,
            link: None,
            router,
            log,
        }
    }

    /// Runs `op` on the Redis link (opened first if needed); a failure is logged
    /// (presence only speeds delivery up: every message is in the store whatever it
    /// says).
    fn call<T>(
        &mut self,
        op: impl FnMut(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>,
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
        let script: &Script = if arrive { &ARRIVE } else { &LEAVE };
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

/// The presence scripts, loaded once per process (and per Redis server, by `EVALSHA`).
static ARRIVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("presence_arrive.lua")));
static LEAVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("presence_leave.lua")));

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

/// This node is alive: `{prefix}alive:<node>` is set to this process's token for
/// [`ALIVE_FOR`]. If the key had run out meanwhile (Redis was away, or this thread was
/// held up), other nodes sent this one no messages in that time: every connection here
/// reads its queue again. If another token was there, another relay runs under this
/// node's name, which is logged.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Heartbeat;

impl Handler<Heartbeat> for Presence {
    type Result = ();

    fn handle(&mut self, _: Heartbeat, _: &mut SyncContext<Self>) {
        let key = format!("{}alive:{}", self.node.key_prefix, self.node.name);
        let ms = u64::try_from(ALIVE_FOR.as_millis()).unwrap_or(u64::MAX);
        let instance = self.instance.clone();
        let before = self.call(|con| {
            redis::cmd("SET")
                .arg(&key)
                .arg(&instance)
                .arg("PX")
                .arg(ms)
                .arg("GET")
                .query::<Option<String>>(con)
        });
        let Some(before) = before else { return };
        match before {
            None if self.beating => {
                warn!(self.log, "heartbeat had run out: connections read their queues again";
                      "node" => %self.node.name);
                self.router.do_send(ClusterNotice::NoticesMissed);
            }
            Some(other) if other != self.instance => {
                slog::error!(self.log, "another relay runs under this node name";
                             "node" => %self.node.name);
            }
            _ => {}
        }
        self.beating = true;
    }
}

/// Waits until no other running relay uses `node`'s name: a heartbeat key of another
/// process that is still refreshed after [`ALIVE_FOR`] means one does. A relay restarted
/// right after it died waits for its old heartbeat to run out (at most [`ALIVE_FOR`]).
///
/// # Errors
/// When another relay runs under the name, or Redis cannot be asked.
pub fn claim_node_name(node: &ClusterNode) -> Result<(), String> {
    let mut link = RedisLink::open(crate::store::redis::RedisEndpoint {
        require_fsync: false,
        ..node.endpoint.clone()
    })
    .map_err(|err| err.to_string())?;
    let key = format!("{}alive:{}", node.key_prefix, node.name);
    let deadline = std::time::Instant::now() + ALIVE_FOR + Duration::from_secs(1);
    let mut last_ttl = i64::MAX;
    loop {
        let ttl: i64 = link
            .with(|con| redis::cmd("PTTL").arg(&key).query(con))
            .map_err(|err| err.to_string())?;
        if ttl < 0 {
            return Ok(());
        }
        if ttl > last_ttl || std::time::Instant::now() > deadline {
            return Err(format!(
                "another relay runs as node {:?} on this Redis (its heartbeat is being refreshed); \
                 give this relay another store.node_name",
                node.name
            ));
        }
        last_ttl = ttl;
        std::thread::sleep(Duration::from_millis(250));
    }
}
