//! The part of RESP (the Redis protocol) that pub/sub needs: commands out as arrays of
//! bulk strings (`SUBSCRIBE`, `PUBLISH`, `PING`), and replies in: integers (a
//! `PUBLISH` answers with the number of subscribers reached), errors, simple strings and
//! arrays of bulk strings and integers (`subscribe` confirmations, `message` pushes).
//! Hand-written over a codec instead of the `redis` crate, whose async pub/sub pulls in
//! a connection manager, a URL parser and its own runtime glue for four commands.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Largest bulk string accepted.
const MAX_BULK: usize = 1024 * 1024;
/// Longest header line accepted.
const MAX_LINE: usize = 1024;
/// Most elements in an array reply.
const MAX_ARRAY: usize = 16;

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
            if len > MAX_ARRAY || depth > 2 {
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
    fn encodes_publish() {
        let mut out = BytesMut::new();
        RespCodec
            .encode(Command::publish("c", Bytes::from_static(b"x")), &mut out)
            .expect("encode");
        assert_eq!(&out[..], b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\nx\r\n");
    }
}
