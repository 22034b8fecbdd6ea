//! A load-run connection to NATS JetStream, the durable peer of the relay in a bench: a
//! sender publishes to the recipient's subject with a reply subject, and JetStream's
//! answer (`{"stream":…,"seq":…}`, sent once the message is in the stream) is its
//! acknowledgement; a recipient owns a file-backed work-queue stream for its subject and
//! a durable pull consumer on it, pulls in batches, and acknowledges each message
//! (`$JS.ACK…`) with its next flush. The consumer is durable, so a recipient that
//! reconnects (churn) goes on where it stopped; what it had not acknowledged comes again
//! after the consumer's ack wait.
//!
//! JetStream's API is JSON over request/reply subjects (`$JS.API.…`); only the requests
//! below are used, with headers off (a pull that expires is never asked for).

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rand_core::{OsRng, RngCore};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::link::Event;
use super::nats::{self, NatsCodec, NatsIn, NatsOut};

/// Messages asked for by one pull request.
const PULL_BATCH: u32 = 512;
/// Ask for more when fewer than this many of the pulls' messages are still to come.
const PULL_AGAIN_BELOW: u32 = PULL_BATCH / 2;
/// The durable consumer's name.
const CONSUMER: &str = "e2ee-load";

/// A connection to JetStream, as a sender or as a recipient.
pub struct JetStreamLink {
    framed: Framed<TcpStream, NatsCodec>,
    /// `_INBOX.<random>`: publish acknowledgements come to `<inbox>.<seq>`; pulled
    /// messages, asked for with `<inbox>.pull`, come through the same subscription
    /// with their own subject and a `$JS.ACK.…` reply subject.
    inbox: String,
    /// A recipient's stream.
    stream: Option<String>,
    /// Messages the outstanding pulls may still bring.
    pull_left: u32,
    /// Acknowledgement subjects of the messages handed out, sent with the next flush.
    acks: Vec<String>,
}

/// The stream that holds `subject`'s messages (stream names cannot hold '.').
fn stream_name(subject: &str) -> String {
    format!("L_{}", subject.replace(['.', '*', '>'], "_"))
}

/// `Err` with the server's description if a JetStream API answer is an error.
fn api_error(answer: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let error = value.get("error")?;
    Some(
        error["description"]
            .as_str()
            .unwrap_or("unknown error")
            .to_owned(),
    )
}

impl JetStreamLink {
    /// Connects; a recipient (`subscribe`: its subject) makes sure its stream and durable
    /// consumer exist (made by its first connection) and starts pulling.
    ///
    /// # Errors
    /// When the server is unreachable, has no JetStream, or refuses a request.
    pub async fn open(stream: TcpStream, subscribe: Option<&str>) -> anyhow::Result<Self> {
        let inbox = format!("_INBOX.{:016x}", OsRng.next_u64());
        let replies = format!("{inbox}.*");
        let framed = nats::handshake(stream, &[(replies.as_str(), 1)]).await?;
        let mut link = Self {
            framed,
            inbox,
            stream: None,
            pull_left: 0,
            acks: Vec::new(),
        };
        if let Some(subject) = subscribe {
            let name = stream_name(subject);
            let config = serde_json::json!({
                "name": name,
                "subjects": [subject],
                "storage": "file",
                "retention": "workqueue",
                "num_replicas": 1,
            });
            link.request(&format!("$JS.API.STREAM.CREATE.{name}"), &config, true)
                .await
                .context("creating the recipient's stream")?;
            let consumer = serde_json::json!({
                "stream_name": name,
                "config": {
                    "durable_name": CONSUMER,
                    "ack_policy": "explicit",
                    "deliver_policy": "all",
                    "max_ack_pending": 1_000_000,
                    // A message pulled by a connection that churned away comes again
                    // after this (ns).
                    "ack_wait": 5_000_000_000u64,
                },
            });
            link.request(
                &format!("$JS.API.CONSUMER.DURABLE.CREATE.{name}.{CONSUMER}"),
                &consumer,
                true,
            )
            .await
            .context("creating the recipient's consumer")?;
            link.stream = Some(name);
            link.pull().await?;
        }
        Ok(link)
    }

    /// Sends a JetStream API request and waits for its answer (skipping nothing else can
    /// arrive yet); an error answer fails, unless `exists_ok` and it says the thing
    /// exists already (a recipient that reconnects).
    async fn request(
        &mut self,
        subject: &str,
        body: &serde_json::Value,
        exists_ok: bool,
    ) -> anyhow::Result<()> {
        let reply = format!("{}.api", self.inbox);
        self.framed
            .send(NatsOut::Pub {
                subject: subject.to_owned(),
                reply: Some(reply.clone()),
                payload: Bytes::from(serde_json::to_vec(body)?),
            })
            .await?;
        loop {
            match self.framed.next().await {
                Some(Ok(NatsIn::Msg { subject, payload, .. })) if subject == reply => {
                    return match api_error(&payload) {
                        None => Ok(()),
                        Some(error) if exists_ok && error.contains("already in use") => Ok(()),
                        Some(error) => bail!("JetStream refused {subject}: {error}"),
                    };
                }
                Some(Ok(NatsIn::Ping)) => self.framed.send(NatsOut::Pong).await?,
                Some(Ok(NatsIn::Err(err))) => bail!("nats-server refused: {err}"),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
                None => bail!("nats-server closed during a JetStream request"),
            }
        }
    }

    /// Asks the consumer for the next batch (queued, sent with the next flush).
    async fn pull(&mut self) -> anyhow::Result<()> {
        let Some(stream) = &self.stream else { return Ok(()) };
        self.framed
            .feed(NatsOut::Pub {
                subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{CONSUMER}"),
                reply: Some(format!("{}.pull", self.inbox)),
                payload: Bytes::from(format!("{{\"batch\":{PULL_BATCH}}}")),
            })
            .await?;
        self.pull_left += PULL_BATCH;
        Ok(())
    }

    /// Queues message `seq` for `subject`, its acknowledgement asked to `<inbox>.<seq>`.
    pub async fn feed_message(&mut self, subject: &str, seq: u64, payload: Bytes) -> anyhow::Result<()> {
        self.framed
            .feed(NatsOut::Pub {
                subject: subject.to_owned(),
                reply: Some(format!("{}.{seq}", self.inbox)),
                payload,
            })
            .await?;
        Ok(())
    }

    /// Acknowledges the messages handed out, pulls more if the pulls run low, and
    /// writes everything queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        for ack in std::mem::take(&mut self.acks) {
            self.framed
                .feed(NatsOut::Pub {
                    subject: ack,
                    reply: None,
                    payload: Bytes::new(),
                })
                .await?;
        }
        if self.stream.is_some() && self.pull_left < PULL_AGAIN_BELOW {
            self.pull().await?;
        }
        SinkExt::<NatsOut>::flush(&mut self.framed).await?;
        Ok(())
    }

    /// The next event (cancel-safe: it only reads).
    pub async fn next_event(&mut self) -> Event {
        loop {
            match self.framed.next().await {
                Some(Ok(NatsIn::Msg {
                    subject,
                    reply,
                    payload,
                })) => {
                    // A pulled message keeps its own subject and carries its
                    // acknowledgement subject as the reply.
                    if let Some(ack) = reply.filter(|r| r.starts_with("$JS.ACK.")) {
                        self.pull_left = self.pull_left.saturating_sub(1);
                        self.acks.push(ack);
                        return Event::Delivered { payload, ack: None };
                    }
                    let token = subject
                        .strip_prefix(&self.inbox)
                        .and_then(|s| s.strip_prefix('.'));
                    let Some(Ok(seq)) = token.map(str::parse::<u64>) else {
                        return Event::Notice("unexpected_message");
                    };
                    return match api_error(&payload) {
                        None => Event::Acked(seq),
                        Some(_) => Event::Refused {
                            seq: Some(seq),
                            kind: "server_error",
                        },
                    };
                }
                Some(Ok(NatsIn::Ping)) => {
                    if self.framed.send(NatsOut::Pong).await.is_err() {
                        return Event::Closed("write_failed");
                    }
                }
                Some(Ok(NatsIn::Err(_))) => return Event::Notice("server_error"),
                Some(Ok(_)) => {}
                Some(Err(_)) => return Event::Closed("read_failed"),
                None => return Event::Closed("closed_by_server"),
            }
        }
    }
}
