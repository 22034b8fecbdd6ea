//! `Debug` for [`Frame`]: ids and keys as hex, opaque bytes as their length only (no
//! payload, claim or bundle bytes in logs).

use std::fmt;

use super::Frame;

/// Debug helper: fixed-size ids and keys as lowercase hex.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Debug helper: opaque bytes as their length only.
struct Len(usize);

impl fmt::Debug for Len {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

fn opt_len(bytes: &Option<Vec<u8>>) -> Option<Len> {
    bytes.as_ref().map(|b| Len(b.len()))
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Challenge { relay_id, nonce } => f
                .debug_struct("Challenge")
                .field("relay_id", &Hex(relay_id))
                .field("nonce", &Hex(nonce))
                .finish(),
            Frame::Auth { identity, signature } => f
                .debug_struct("Auth")
                .field("identity", &Hex(identity))
                .field("signature", &Hex(signature))
                .finish(),
            Frame::AuthOk { queued } => f.debug_struct("AuthOk").field("queued", queued).finish(),
            Frame::PublishPreKeys { bundle } => f
                .debug_struct("PublishPreKeys")
                .field("bundle", &Len(bundle.len()))
                .finish(),
            Frame::FetchBundle { request_id, identity } => f
                .debug_struct("FetchBundle")
                .field("request_id", request_id)
                .field("identity", &Hex(identity))
                .finish(),
            Frame::Bundle { request_id, bundle } => f
                .debug_struct("Bundle")
                .field("request_id", request_id)
                .field("bundle", &opt_len(bundle))
                .finish(),
            Frame::PreKeysLow { remaining } => f
                .debug_struct("PreKeysLow")
                .field("remaining", remaining)
                .finish(),
            Frame::PreKeysStored { opks } => f.debug_struct("PreKeysStored").field("opks", opks).finish(),
            Frame::PublishName { claim } => f
                .debug_struct("PublishName")
                .field("claim", &Len(claim.len()))
                .finish(),
            Frame::LookupName { request_id, name } => f
                .debug_struct("LookupName")
                .field("request_id", request_id)
                .field("name", name)
                .finish(),
            Frame::NameClaim { request_id, claim } => f
                .debug_struct("NameClaim")
                .field("request_id", request_id)
                .field("claim", &opt_len(claim))
                .finish(),
            Frame::LookupIdentity { request_id, identity } => f
                .debug_struct("LookupIdentity")
                .field("request_id", request_id)
                .field("identity", &Hex(identity))
                .finish(),
            Frame::ReleaseName { request_id, release } => f
                .debug_struct("ReleaseName")
                .field("request_id", request_id)
                .field("release", &Len(release.len()))
                .finish(),
            Frame::QueryAway { request_id, identity } => f
                .debug_struct("QueryAway")
                .field("request_id", request_id)
                .field("identity", &Hex(identity))
                .finish(),
            Frame::Away {
                request_id,
                away_days,
            } => f
                .debug_struct("Away")
                .field("request_id", request_id)
                .field("away_days", away_days)
                .finish(),
            Frame::Send {
                recipient,
                msg_id,
                payload,
            } => f
                .debug_struct("Send")
                .field("recipient", &Hex(recipient))
                .field("msg_id", &Hex(msg_id))
                .field("payload", &Len(payload.len()))
                .finish(),
            Frame::SentAck { msg_id } => f.debug_struct("SentAck").field("msg_id", &Hex(msg_id)).finish(),
            Frame::Deliver {
                sender,
                msg_id,
                timestamp_ms,
                payload,
            } => f
                .debug_struct("Deliver")
                .field("sender", &Hex(sender))
                .field("msg_id", &Hex(msg_id))
                .field("timestamp_ms", timestamp_ms)
                .field("payload", &Len(payload.len()))
                .finish(),
            Frame::DeliveryAck { sender, msg_id } => f
                .debug_struct("DeliveryAck")
                .field("sender", &Hex(sender))
                .field("msg_id", &Hex(msg_id))
                .finish(),
            Frame::Expired { through, notices } => f
                .debug_struct("Expired")
                .field("through", through)
                .field("notices", &notices.len())
                .finish(),
            Frame::ExpiredAck { through } => f.debug_struct("ExpiredAck").field("through", through).finish(),
            Frame::RateLimited {
                msg_id,
                retry_after_ms,
            } => f
                .debug_struct("RateLimited")
                .field("msg_id", &msg_id.as_ref().map(|id| Hex(id)))
                .field("retry_after_ms", retry_after_ms)
                .finish(),
            Frame::QuotaExceeded {
                msg_id,
                recipient,
                retry_after_ms,
            } => f
                .debug_struct("QuotaExceeded")
                .field("msg_id", &Hex(msg_id))
                .field("recipient", &Hex(recipient))
                .field("retry_after_ms", retry_after_ms)
                .finish(),
            Frame::QueryQuota => f.write_str("QueryQuota"),
            Frame::Quota {
                remaining,
                capacity,
                refill_per_sec,
            } => f
                .debug_struct("Quota")
                .field("remaining", remaining)
                .field("capacity", capacity)
                .field("refill_per_sec", refill_per_sec)
                .finish(),
            Frame::Refused {
                request_seq,
                request_type,
                code,
                retry_after_ms,
                reason,
            } => f
                .debug_struct("Refused")
                .field("request_seq", request_seq)
                .field("request_type", request_type)
                .field("code", code)
                .field("retry_after_ms", retry_after_ms)
                .field("reason", reason)
                .finish(),
            Frame::Accepted { request_seq } => f
                .debug_struct("Accepted")
                .field("request_seq", request_seq)
                .finish(),
            Frame::Features { flags } => f.debug_struct("Features").field("flags", flags).finish(),
            Frame::GroupSend { msg_id, message } => f
                .debug_struct("GroupSend")
                .field("msg_id", &Hex(msg_id))
                .field("message", &Len(message.len()))
                .finish(),
            Frame::GroupCommit {
                msg_id,
                commit,
                welcome,
                members,
                added,
            } => f
                .debug_struct("GroupCommit")
                .field("msg_id", &Hex(msg_id))
                .field("commit", &Len(commit.len()))
                .field("welcome", &opt_len(welcome))
                .field("members", &members.len())
                .field("added", &added.len())
                .finish(),
            Frame::GroupEpoch { msg_id, epoch } => f
                .debug_struct("GroupEpoch")
                .field("msg_id", &Hex(msg_id))
                .field("epoch", epoch)
                .finish(),
            Frame::PublishKeyPackages {
                packages,
                last_resort,
            } => f
                .debug_struct("PublishKeyPackages")
                .field("packages", &packages.len())
                .field("last_resort", &opt_len(last_resort))
                .finish(),
            Frame::KeyPackageCount { remaining } => f
                .debug_struct("KeyPackageCount")
                .field("remaining", remaining)
                .finish(),
            Frame::FetchKeyPackage { request_id, identity } => f
                .debug_struct("FetchKeyPackage")
                .field("request_id", request_id)
                .field("identity", &Hex(identity))
                .finish(),
            Frame::KeyPackage { request_id, package } => f
                .debug_struct("KeyPackage")
                .field("request_id", request_id)
                .field("package", &opt_len(package))
                .finish(),
            Frame::Ping { nonce } => f.debug_struct("Ping").field("nonce", nonce).finish(),
            Frame::Pong { nonce } => f.debug_struct("Pong").field("nonce", nonce).finish(),
            Frame::Error { code, reason } => f
                .debug_struct("Error")
                .field("code", code)
                .field("reason", reason)
                .finish(),
        }
    }
}
