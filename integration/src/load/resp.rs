//! The part of RESP (the Redis protocol) that pub/sub and streams need: commands out as
//! arrays of bulk strings (`SUBSCRIBE`, `PUBLISH`, `XADD`, `XREADGROUP`, `XACK`), and
//! replies in: integers (a `PUBLISH` answers with the number of subscribers reached),
//! errors, simple strings, bulk strings and nested arrays (`subscribe` confirmations,
//! `message` pushes, the entries an `XREADGROUP` read).
//! Hand-written over a codec instead of the `redis` crate, whose async pub/sub pulls in
//! a connection manager, a URL parser and its own runtime glue for four commands.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Largest bulk string accepted.
const MAX_BULK: usize = 1024 * 1024;
/// Longest header line accepted.
const MAX_LINE: usize = 1024;
/// Most elements in an array reply (a stream read of [`STREAM_READ_COUNT`] entries).
const MAX_ARRAY: usize = 1024;
/// Deepest nesting of arrays (a stream read: streams, entries, entry, fields).
const MAX_DEPTH: u8 = 4;
/// Most entries one `XREADGROUP` reads.
pub const STREAM_READ_COUNT: usize = 512;

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+text`.
    Simple(String),
    /// `-text`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` and n bytes (`None` for the null bulk string `$-1`).
    Bulk(Option<Bytes>),
    /// `*n` and n elements (`None` for the null array).
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The entries of an `XREADGROUP` reply, `(id, payload)` each:
    /// `[[stream, [[id, ["p", payload]], ...]]]`. `None` if the reply is not one.
    pub fn into_stream_entries(self) -> Option<Vec<(Bytes, Bytes)>> {
        let Resp::Array(Some(streams)) = self else {
            return None;
        };
        let mut out = Vec::new();
        for stream in streams {
            let Resp::Array(Some(parts)) = stream else {
                return None;
            };
            let Some(Resp::Array(Some(entries))) = parts.into_iter().nth(1) else {
                return None;
            };
            for entry in entries {
                let Resp::Array(Some(entry)) = entry else {
                    return None;
                };
                let mut entry = entry.into_iter();
                let (Some(Resp::Bulk(Some(id))), Some(Resp::Array(Some(fields)))) =
                    (entry.next(), entry.next())
                else {
                    return None;
                };
                let Some(Resp::Bulk(Some(payload))) = fields.into_iter().nth(1) else {
                    return None;
                };
                out.push((id, payload));
            }
        }
        Some(out)
    }

    /// A pub/sub `message` push: `["message", channel, payload]`.
    pub fn into_message(self) -> Option<Bytes> {
        let Resp::Array(Some(items)) = self else {
            return None;
        };
        let mut items = items.into_iter();
        match (items.next(), items.next(), items.next()) {
            (Some(Resp::Bulk(Some(kind))), Some(_), Some(Resp::Bulk(Some(payload))))
                if &kind[..] == b"message" =>
            {
                Some(payload)
            }
            _ => None,
        }
    }
}

/// Why the server's bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something outside the subset.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// RESP as a codec: decodes [`Resp`] replies, encodes commands given as argument lists.
#[derive(Debug, Default, Clone, Copy)]
pub struct RespCodec;

/// Parses one value at `pos`; `Ok(None)` when more bytes are needed.
fn parse(buf: &[u8], pos: usize, depth: u8) -> Result<Option<(Resp, usize)>, RespError> {
    let Some(rest) = buf.get(pos..) else {
        return Ok(None);
    };
    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > MAX_LINE {
            return Err(RespError::Protocol("header line too long"));
        }
        return Ok(None);
    };
    let Some((&tag, body)) = rest[..eol].split_first() else {
        return Err(RespError::Protocol("empty line"));
    };
    let next = pos + eol + 2;
    let text = || std::str::from_utf8(body).map_err(|_| RespError::Protocol("line not UTF-8"));
    let number =
        || -> Result<i64, RespError> { text()?.parse().map_err(|_| RespError::Protocol("bad number")) };
    match tag {
        b'+' => Ok(Some((Resp::Simple(text()?.to_owned()), next))),
        b'-' => Ok(Some((Resp::Error(text()?.to_owned()), next))),
        b':' => Ok(Some((Resp::Integer(number()?), next))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Resp::Bulk(None), next)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::Protocol("bad length"))?;
            if len > MAX_BULK {
                return Err(RespError::Protocol("bulk string too large"));
            }
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            let data = Bytes::copy_from_slice(&buf[next..next + len]);
            Ok(Some((Resp::Bulk(Some(data)), next + len + 2)))
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Resp::Array(None), next)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::Protocol("bad length"))?;
            if len > MAX_ARRAY || depth > MAX_DEPTH {
                return Err(RespError::Protocol("array too large or too deep"));
            }
            let mut items = Vec::with_capacity(len);
            let mut at = next;
            for _ in 0..len {
                let Some((item, after)) = parse(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = after;
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        _ => Err(RespError::Protocol("unknown reply type")),
    }
}

impl Decoder for RespCodec {
    type Item = Resp;
    type Error = RespError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Resp>, RespError> {
        match parse(buf, 0, 0)? {
            Some((value, used)) => {
                buf.advance(used);
                Ok(Some(value))
            }
            None => Ok(None),
        }
    }
}

/// A command: its arguments, each sent as a bulk string.
#[derive(Debug, Clone)]
pub struct Command(pub Vec<Bytes>);

impl Command {
    /// `PUBLISH channel payload`.
    pub fn publish(channel: &str, payload: Bytes) -> Self {
        Self(vec![
            Bytes::from_static(b"PUBLISH"),
            Bytes::copy_from_slice(channel.as_bytes()),
            payload,
        ])
    }

    /// Arguments as given.
    fn of(args: &[&[u8]]) -> Self {
        Self(args.iter().map(|a| Bytes::copy_from_slice(a)).collect())
    }

    /// `XADD stream * p payload`: appends an entry (the reply is its id).
    pub fn xadd(stream: &str, payload: Bytes) -> Self {
        let mut command = Self::of(&[b"XADD", stream.as_bytes(), b"*", b"p"]);
        command.0.push(payload);
        command
    }

    /// `XGROUP CREATE stream e2ee-load $ MKSTREAM`: the consumer group a recipient reads
    /// its stream with.
    pub fn xgroup_create(stream: &str) -> Self {
        Self::of(&[
            b"XGROUP",
            b"CREATE",
            stream.as_bytes(),
            b"e2ee-load",
            b"$",
            b"MKSTREAM",
        ])
    }

    /// `XREADGROUP GROUP e2ee-load c COUNT n BLOCK 0 STREAMS stream >`: waits for new
    /// entries; with `pending`, `… STREAMS stream 0` instead: the entries this consumer
    /// read before and did not acknowledge (a recipient that reconnects).
    pub fn xreadgroup(stream: &str, pending: bool) -> Self {
        let count = STREAM_READ_COUNT.to_string();
        let from: &[u8] = if pending { b"0" } else { b">" };
        Self::of(&[
            b"XREADGROUP",
            b"GROUP",
            b"e2ee-load",
            b"c",
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            b"0",
            b"STREAMS",
            stream.as_bytes(),
            from,
        ])
    }

    /// `XACK stream e2ee-load id...`.
    pub fn xack(stream: &str, ids: Vec<Bytes>) -> Self {
        let mut command = Self::of(&[b"XACK", stream.as_bytes(), b"e2ee-load"]);
        command.0.extend(ids);
        command
    }

    /// `SUBSCRIBE channel`.
    pub fn subscribe(channel: &str) -> Self {
        Self(vec![
            Bytes::from_static(b"SUBSCRIBE"),
            Bytes::copy_from_slice(channel.as_bytes()),
        ])
    }
}

impl Encoder<Command> for RespCodec {
    type Error = RespError;

    fn encode(&mut self, item: Command, dst: &mut BytesMut) -> Result<(), RespError> {
        dst.put_slice(format!("*{}\r\n", item.0.len()).as_bytes());
        for arg in item.0 {
            dst.put_slice(format!("${}\r\n", arg.len()).as_bytes());
            dst.put_slice(&arg);
            dst.put_slice(b"\r\n");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_message_push_in_pieces() {
        let mut codec = RespCodec;
        let wire = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n:1\r\n";
        let mut buf = BytesMut::from(&wire[..20]);
        assert_eq!(codec.decode(&mut buf).expect("partial"), None);
        buf.put_slice(&wire[20..]);
        let push = codec.decode(&mut buf).expect("push").expect("complete");
        assert_eq!(push.into_message(), Some(Bytes::from_static(b"abc")));
        assert_eq!(codec.decode(&mut buf).expect("int"), Some(Resp::Integer(1)));
    }

    #[test]
    fn decodes_a_stream_read() {
        let wire = b"*1\r\n*2\r\n$1\r\ns\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\np\r\n$2\r\nab\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\np\r\n$1\r\nc\r\n";
        let mut buf = BytesMut::from(&wire[..]);
        let read = RespCodec.decode(&mut buf).expect("read").expect("complete");
        let entries = read.into_stream_entries().expect("entries");
        let got: Vec<(&[u8], &[u8])> = entries.iter().map(|(i, p)| (&i[..], &p[..])).collect();
        assert_eq!(got, vec![(&b"1-0"[..], &b"ab"[..]), (&b"1-1"[..], &b"c"[..])]);
        assert!(buf.is_empty());
    }

    #[test]
    fn encodes_publish() {
        let mut out = BytesMut::new();
        RespCodec
            .encode(Command::publish("c", Bytes::from_static(b"x")), &mut out)
            .expect("encode");
        assert_eq!(&out[..], b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\nx\r\n");
    }
}
