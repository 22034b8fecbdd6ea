//! A load-run connection to Redis Streams, a durable peer of the relay in a bench: a
//! sender `XADD`s to the recipient's stream (the reply, sent once the entry is in the
//! AOF, is its acknowledgement); a recipient reads its stream with a consumer group and
//! `XACK`s each read batch with its next read, which [`StreamLink::flush`] sends once
//! every entry read was handed out. A recipient that reconnects first reads what it read
//! before and did not acknowledge (`XREADGROUP … 0`), then new entries (`>`).

use std::collections::VecDeque;

use anyhow::bail;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::link::Event;
use super::resp::{Command, Resp, RespCodec};

/// A connection to Redis Streams, as a sender or as a recipient.
pub struct StreamLink {
    framed: Framed<TcpStream, RespCodec>,
    /// Sequence numbers of `XADD`s whose replies are outstanding.
    added: VecDeque<u64>,
    /// A recipient's stream.
    stream: Option<String>,
    /// Entries read and not yet handed out.
    inbox: VecDeque<(Bytes, Bytes)>,
    /// Ids handed out, acknowledged with the next read.
    read: Vec<Bytes>,
    /// An `XREADGROUP` is outstanding.
    reading: bool,
    /// `XACK` replies outstanding.
    acks: usize,
    /// Still reading what this consumer read on an earlier connection and did not
    /// acknowledge (a recipient's first reads, until one comes back empty).
    pending: bool,
}

impl StreamLink {
    /// Connects; a recipient (`subscribe`: its stream) makes sure its consumer group
    /// exists and starts reading.
    ///
    /// # Errors
    /// When the server refuses or the connection fails.
    pub async fn open(stream: TcpStream, subscribe: Option<&str>) -> anyhow::Result<Self> {
        let mut link = Self {
            framed: Framed::new(stream, RespCodec),
            added: VecDeque::new(),
            stream: subscribe.map(str::to_owned),
            inbox: VecDeque::new(),
            read: Vec::new(),
            reading: false,
            acks: 0,
            pending: true,
        };
        if let Some(stream) = subscribe {
            link.framed.send(Command::xgroup_create(stream)).await?;
            match link.framed.next().await {
                Some(Ok(Resp::Simple(_))) => {}
                // A recipient that reconnects: its group is there.
                Some(Ok(Resp::Error(e))) if e.starts_with("BUSYGROUP") => {}
                other => bail!("redis XGROUP CREATE failed: {other:?}"),
            }
            link.read_more().await?;
        }
        Ok(link)
    }

    /// Acknowledges what was handed out and waits for more.
    async fn read_more(&mut self) -> anyhow::Result<()> {
        let Some(stream) = self.stream.clone() else {
            return Ok(());
        };
        if !self.read.is_empty() {
            self.framed
                .feed(Command::xack(&stream, std::mem::take(&mut self.read)))
                .await?;
            self.acks += 1;
        }
        self.framed
            .send(Command::xreadgroup(&stream, self.pending))
            .await?;
        self.reading = true;
        Ok(())
    }

    /// Queues message `seq` for `stream` (not flushed).
    pub async fn feed_message(&mut self, stream: &str, seq: u64, payload: Bytes) -> anyhow::Result<()> {
        self.framed.feed(Command::xadd(stream, payload)).await?;
        self.added.push_back(seq);
        Ok(())
    }

    /// Writes everything queued; a recipient that handed out all it read acknowledges it
    /// and reads on.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.stream.is_some() && !self.reading && self.inbox.is_empty() {
            self.read_more().await?;
        }
        SinkExt::<Command>::flush(&mut self.framed).await?;
        Ok(())
    }

    /// The next event.
    pub async fn next_event(&mut self) -> Event {
        loop {
            if let Some((id, payload)) = self.inbox.pop_front() {
                self.read.push(id);
                return Event::Delivered { payload, ack: None };
            }
            match self.framed.next().await {
                // An XADD's reply: the entry's id, once it is in the AOF.
                Some(Ok(Resp::Bulk(Some(_)))) if self.stream.is_none() => {
                    let Some(seq) = self.added.pop_front() else {
                        return Event::Notice("unexpected_reply");
                    };
                    return Event::Acked(seq);
                }
                Some(Ok(Resp::Error(_))) if self.stream.is_none() => {
                    return Event::Refused {
                        seq: self.added.pop_front(),
                        kind: "server_error",
                    };
                }
                // An XACK's reply.
                Some(Ok(Resp::Integer(_))) if self.acks > 0 => self.acks -= 1,
                Some(Ok(reply)) => match reply.into_stream_entries() {
                    Some(entries) => {
                        self.reading = false;
                        if entries.is_empty() && self.pending {
                            // Nothing left from before: new entries from now on (the one
                            // write here; a read must be outstanding).
                            self.pending = false;
                            if self.read_more().await.is_err() {
                                return Event::Closed("write_failed");
                            }
                        }
                        self.inbox.extend(entries);
                    }
                    None => return Event::Notice("unexpected_reply"),
                },
                Some(Err(_)) => return Event::Closed("read_failed"),
                None => return Event::Closed("closed_by_server"),
            }
        }
    }
}
