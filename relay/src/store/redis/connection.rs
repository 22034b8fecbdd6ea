//! The relay's connection to Redis: one server or a Redis Cluster, reopened after a
//! failure, and checked at start for the durability the operator asked for.

use std::time::Duration;

use ::redis::cluster::ClusterClientBuilder;
use ::redis::{Client, ConnectionLike, RedisError, RedisResult};

use super::REDIS_TIMEOUT;
use crate::store::StoreError;

/// Where the relay's Redis is and what it must guarantee.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    /// `redis://host:port` addresses: the server, or seed nodes of a cluster.
    pub urls: Vec<String>,
    /// A Redis Cluster (commands routed by slot) rather than one server.
    pub cluster: bool,
    /// Refuse to start unless every address given has `appendonly yes` and
    /// `appendfsync always` (so an acknowledged message survives `kill -9` of Redis).
    pub require_fsync: bool,
    /// After each commit, wait until this many replicas have it (`WAIT`, one server
    /// only); 0: do not wait.
    pub wait_replicas: u32,
}

impl RedisEndpoint {
    /// The addresses, for messages.
    pub fn describe(&self) -> String {
        self.urls.join(",")
    }

    /// A [`StoreError::Redis`] for this endpoint.
    pub fn error(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Redis {
            endpoint: self.describe(),
            reason: reason.to_string(),
        }
    }
}

type Conn = Box<dyn ConnectionLike + Send>;

/// A connection to the endpoint, reopened on the next command after it failed.
pub struct RedisLink {
    endpoint: RedisEndpoint,
    conn: Option<Conn>,
}

/// Whether `err` means the connection is no longer usable (reopen it).
fn breaks_connection(err: &RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_timeout() || err.is_unrecoverable_error()
}

impl RedisLink {
    /// Connects, and checks durability when `endpoint.require_fsync`.
    ///
    /// # Errors
    /// [`StoreError::Redis`] when no address is given, Redis cannot be reached, or a
    /// server does not fsync every write while that is required.
    pub fn open(endpoint: RedisEndpoint) -> Result<Self, StoreError> {
        if endpoint.urls.is_empty() {
            return Err(endpoint.error("no Redis address configured (store.redis_urls)"));
        }
        if endpoint.require_fsync {
            for url in &endpoint.urls {
                check_fsync(&endpoint, url)?;
            }
        }
        let conn = connect(&endpoint).map_err(|err| endpoint.error(err))?;
        Ok(Self {
            endpoint,
            conn: Some(conn),
        })
    }

    /// Runs `op` on the connection (opened first if a failure closed it). After a
    /// failure that breaks the connection, the next call reconnects.
    ///
    /// # Errors
    /// [`StoreError::Redis`] with Redis's or the client's message.
    pub fn with<T>(
        &mut self,
        mut op: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        // A connection that broke while idle (Redis restarted) is found broken by the
        // first command: that one runs once more on a new connection. Every store
        // operation may run twice (an append found stored already is a duplicate).
        let had_connection = self.conn.is_some();
        match self.try_once(&mut op) {
            Err(_) if had_connection && self.conn.is_none() => self.try_once(&mut op),
            result => result,
        }
    }

    /// Runs `op` on the connection, opened first if needed; a failure that breaks the
    /// connection closes it.
    fn try_once<T>(
        &mut self,
        op: &mut impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            slot @ None => slot.insert(connect(&self.endpoint).map_err(|err| self.endpoint.error(err))?),
        };
        match op(conn.as_mut()) {
            Ok(value) => Ok(value),
            Err(err) => {
                if breaks_connection(&err) {
                    self.conn = None;
                }
                Err(self.endpoint.error(err))
            }
        }
    }

    /// Waits until the configured number of replicas acknowledged the writes so far.
    ///
    /// # Errors
    /// [`StoreError::Redis`] when fewer replicas answered within [`REDIS_TIMEOUT`].
    pub fn wait_replicas(&mut self) -> Result<(), StoreError> {
        let wanted = self.endpoint.wait_replicas;
        if wanted == 0 || self.endpoint.cluster {
            return Ok(());
        }
        let timeout = u64::try_from(REDIS_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let got: u32 = self.with(|con| ::redis::cmd("WAIT").arg(wanted).arg(timeout).query(con))?;
        if got < wanted {
            return Err(self.endpoint.error(format!(
                "{got} of {wanted} replicas acknowledged the write in time"
            )));
        }
        Ok(())
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &RedisEndpoint {
        &self.endpoint
    }
}

/// A new connection to the endpoint, with [`REDIS_TIMEOUT`] on connecting and on each
/// command.
fn connect(endpoint: &RedisEndpoint) -> RedisResult<Conn> {
    if endpoint.cluster {
        let client = ClusterClientBuilder::new(endpoint.urls.clone())
            .connection_timeout(REDIS_TIMEOUT)
            .response_timeout(REDIS_TIMEOUT)
            .build()?;
        Ok(Box::new(client.get_connection()?))
    } else {
        Ok(Box::new(connection_to(&endpoint.urls[0], REDIS_TIMEOUT)?))
    }
}

/// A connection to the one server at `url`, with `timeout` on connecting and on each
/// command.
///
/// # Errors
/// When the address is not a Redis URL or the server cannot be reached.
pub fn connection_to(url: &str, timeout: Duration) -> RedisResult<::redis::Connection> {
    let conn = Client::open(url)?.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

/// Checks that the server at `url` appends every write to its AOF and fsyncs it before
/// answering.
fn check_fsync(endpoint: &RedisEndpoint, url: &str) -> Result<(), StoreError> {
    let fail = |reason: String| endpoint.error(format!("{url}: {reason}"));
    let mut conn = connection_to(url, REDIS_TIMEOUT).map_err(|err| fail(err.to_string()))?;
    let get = |conn: &mut ::redis::Connection, name: &str| -> Result<String, StoreError> {
        let pair: Vec<String> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(conn)
            .map_err(|err| fail(err.to_string()))?;
        Ok(pair.get(1).cloned().unwrap_or_default())
    };
    let (appendonly, appendfsync) = (get(&mut conn, "appendonly")?, get(&mut conn, "appendfsync")?);
    if appendonly != "yes" || appendfsync != "always" {
        return Err(fail(format!(
            "appendonly is {appendonly:?} and appendfsync {appendfsync:?}: an acknowledged message \
             could be lost if Redis is killed; set appendonly yes and appendfsync always, or \
             store.redis_require_fsync = false to accept that loss"
        )));
    }
    // An evicting Redis drops stored messages when it is full.
    let policy = get(&mut conn, "maxmemory-policy")?;
    if policy != "noeviction" {
        return Err(fail(format!(
            "maxmemory-policy is {policy:?}: Redis may evict acknowledged messages when it is \
             full; set maxmemory-policy noeviction (a full Redis then refuses writes, and the \
             relay acknowledges nothing), or store.redis_require_fsync = false to accept that loss"
        )));
    }
    Ok(())
}
