//! A recording TCP proxy for loopback tests: clients connect to it instead of the relay,
//! it forwards every byte unchanged in both directions and keeps a copy of each chunk
//! with the time it passed. The recording can then be searched as raw bytes or parsed
//! into relay frames ([`Recording::frames`]), as a passive eavesdropper on the wire
//! would see them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;
use bytes::BytesMut;
use e2ee_protocol::codec::FrameCodec;
use e2ee_protocol::frame::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;

/// Recording stops (forwarding goes on) past this many bytes.
pub const MAX_RECORDED_BYTES: usize = 256 * 1024 * 1024;
/// Read buffer of one direction of one connection.
const CHUNK: usize = 16 * 1024;

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Client to relay.
    ToRelay,
    /// Relay to client.
    FromRelay,
}

/// Bytes read in one go from one side of one connection.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Connection number, from 1 in accept order.
    pub conn: u64,
    /// Which way.
    pub direction: Direction,
    /// When the proxy read them.
    pub at: Instant,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// One direction of one connection, as a contiguous byte string.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Connection number.
    pub conn: u64,
    /// Which way.
    pub direction: Direction,
    /// Every byte, in order.
    pub bytes: Vec<u8>,
}

/// A frame parsed from the recording.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// Connection number.
    pub conn: u64,
    /// Which way.
    pub direction: Direction,
    /// When the chunk that completed the frame passed the proxy.
    pub at: Instant,
    /// The frame.
    pub frame: Frame,
}

/// Everything the proxy saw.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Every chunk, in the order the proxy read them.
    pub chunks: Vec<Chunk>,
    /// Connections accepted.
    pub connections: u64,
    /// Bytes recorded.
    pub bytes: usize,
    /// True if recording stopped at [`MAX_RECORDED_BYTES`].
    pub truncated: bool,
}

impl Recording {
    /// Each direction of each connection as one byte string, ordered by connection.
    pub fn streams(&self) -> Vec<Stream> {
        let mut streams: std::collections::BTreeMap<(u64, Direction), Vec<u8>> = Default::default();
        for chunk in &self.chunks {
            streams
                .entry((chunk.conn, chunk.direction))
                .or_default()
                .extend_from_slice(&chunk.bytes);
        }
        streams
            .into_iter()
            .map(|((conn, direction), bytes)| Stream {
                conn,
                direction,
                bytes,
            })
            .collect()
    }

    /// Every complete frame, in the order the proxy completed them, and the number of
    /// streams whose bytes did not parse as frames to the end.
    pub fn frames(&self) -> (Vec<CapturedFrame>, usize) {
        let mut decoders: std::collections::HashMap<(u64, Direction), (FrameCodec, BytesMut, bool)> =
            Default::default();
        let mut frames = Vec::new();
        for chunk in &self.chunks {
            let (codec, buffer, broken) = decoders
                .entry((chunk.conn, chunk.direction))
                .or_insert_with(|| (FrameCodec::default(), BytesMut::new(), false));
            if *broken {
                continue;
            }
            buffer.extend_from_slice(&chunk.bytes);
            loop {
                match codec.decode(buffer) {
                    Ok(Some(frame)) => frames.push(CapturedFrame {
                        conn: chunk.conn,
                        direction: chunk.direction,
                        at: chunk.at,
                        frame,
                    }),
                    Ok(None) => break,
                    Err(_) => {
                        *broken = true;
                        break;
                    }
                }
            }
        }
        let unparsed = decoders
            .values()
            .filter(|(_, rest, broken)| *broken || !rest.is_empty())
            .count();
        (frames, unparsed)
    }
}

/// A running proxy; stopped when dropped.
pub struct RecordingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    recording: Arc<Mutex<Recording>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("proxy bind")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let recording = Arc::new(Mutex::new(Recording::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = recording.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("proxy runtime")?;
        let thread = std::thread::Builder::new()
            .name("recording-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = accept_loop(listener, upstream, shared) => {},
                        _ = stop_rx => {},
                    }
                });
                // Dropping the runtime cancels every forwarding task.
            })?;
        Ok(Self {
            addr,
            recording,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// A copy of everything recorded so far.
    pub fn recording(&self) -> Recording {
        lock(&self.recording).clone()
    }

    /// Stops forwarding (open connections are cut) and returns the recording.
    pub fn stop(mut self) -> Recording {
        self.shutdown();
        self.recording()
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock(recording: &Mutex<Recording>) -> MutexGuard<'_, Recording> {
    recording.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, recording: Arc<Mutex<Recording>>) {
    let ids = AtomicU64::new(1);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let conn = ids.fetch_add(1, Ordering::Relaxed);
        lock(&recording).connections += 1;
        let recording = recording.clone();
        tokio::spawn(async move {
            let Ok(relay) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = relay.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (relay_read, relay_write) = relay.into_split();
            let up = pump(
                conn,
                Direction::ToRelay,
                client_read,
                relay_write,
                recording.clone(),
            );
            let down = pump(conn, Direction::FromRelay, relay_read, client_write, recording);
            tokio::join!(up, down);
        });
    }
}

async fn pump(
    conn: u64,
    direction: Direction,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    recording: Arc<Mutex<Recording>>,
) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut recording = lock(&recording);
            if recording.bytes + n <= MAX_RECORDED_BYTES {
                recording.bytes += n;
                recording.chunks.push(Chunk {
                    conn,
                    direction,
                    at: Instant::now(),
                    bytes: buffer[..n].to_vec(),
                });
            } else {
                recording.truncated = true;
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_and_records_both_directions_and_parses_frames() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let upstream = echo.local_addr().expect("addr");
            tokio::spawn(async move {
                let (mut socket, _) = echo.accept().await.expect("accept");
                let mut buf = [0u8; 64];
                let n = socket.read(&mut buf).await.expect("read");
                socket.write_all(&buf[..n]).await.expect("echo");
            });
            let proxy = RecordingProxy::start(upstream).expect("proxy");
            let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
            let ping = [0, 0, 0, 10, 1, 0x40, 0, 0, 0, 0, 0, 0, 0, 5];
            client.write_all(&ping).await.expect("write");
            let mut back = [0u8; 14];
            client.read_exact(&mut back).await.expect("echoed");
            assert_eq!(back, ping);
            drop(client);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let recording = proxy.stop();
            assert_eq!(recording.bytes, 28);
            let (frames, unparsed) = recording.frames();
            assert_eq!(unparsed, 0);
            assert_eq!(frames.len(), 2);
            assert!(frames.iter().all(|f| f.frame == Frame::Ping { nonce: 5 }));
            assert_eq!(recording.streams().len(), 2);
        });
    }
}
