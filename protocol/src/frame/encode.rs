//! Encoding frames: [`Frame::encoded_len`], [`Frame::validate`] (every limit, as the
//! receiving side checks it) and [`Frame::encode`] (docs/PROTOCOL.md 1.3, 1.4).

use bytes::{BufMut, BytesMut};

use super::*;

impl Frame {
    /// The length of the encoded body (version and type bytes included, length prefix
    /// excluded): exactly what [`Frame::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        const U32: usize = 4;
        const U64: usize = 8;
        let fields = match self {
            Frame::Challenge { .. } => 2 * KEY_LEN,
            Frame::Auth { .. } => KEY_LEN + SIGNATURE_LEN,
            Frame::AuthOk { .. } => U32,
            Frame::PublishPreKeys { bundle } => U32 + bundle.len(),
            Frame::FetchBundle { .. } => U32 + KEY_LEN,
            Frame::Bundle { bundle, .. } => U32 + 1 + bundle.as_ref().map_or(0, |b| U32 + b.len()),
            Frame::PreKeysLow { .. } => U32,
            Frame::PreKeysStored { .. } => U32,
            Frame::PublishName { claim } => U32 + claim.len(),
            Frame::LookupName { name, .. } => U32 + 2 + name.len(),
            Frame::NameClaim { claim, .. } => U32 + 1 + claim.as_ref().map_or(0, |c| U32 + c.len()),
            Frame::LookupIdentity { .. } => U32 + KEY_LEN,
            Frame::ReleaseName { release, .. } => U32 + U32 + release.len(),
            Frame::QueryAway { .. } => U32 + KEY_LEN,
            Frame::Away { .. } => U32 + U32,
            Frame::Send { payload, .. } => KEY_LEN + MSG_ID_LEN + U32 + payload.len(),
            Frame::SentAck { .. } => MSG_ID_LEN,
            Frame::Deliver { payload, .. } => DeliverRef::fields_len(payload.len()),
            Frame::DeliveryAck { .. } => KEY_LEN + MSG_ID_LEN,
            Frame::Expired { notices, .. } => U64 + 2 + notices.len() * (KEY_LEN + MSG_ID_LEN),
            Frame::ExpiredAck { .. } => U64,
            Frame::RateLimited { msg_id, .. } => 1 + msg_id.map_or(0, |_| MSG_ID_LEN) + U32,
            Frame::QuotaExceeded { .. } => MSG_ID_LEN + KEY_LEN + U32,
            Frame::QueryQuota => 0,
            Frame::Quota { .. } => 3 * U32,
            Frame::Refused { reason, .. } => U32 + 1 + 2 + U32 + 2 + reason.len(),
            Frame::Accepted { .. } | Frame::Features { .. } => U32,
            Frame::GroupSend { message, .. } => MSG_ID_LEN + U32 + message.len(),
            Frame::GroupCommit {
                commit,
                welcome,
                members,
                added,
                ..
            } => {
                MSG_ID_LEN
                    + U32
                    + commit.len()
                    + 1
                    + welcome.as_ref().map_or(0, |w| U32 + w.len())
                    + 2 * 2
                    + (members.len() + added.len()) * KEY_LEN
            }
            Frame::GroupEpoch { .. } => MSG_ID_LEN + U64,
            Frame::PublishKeyPackages {
                packages,
                last_resort,
            } => {
                2 + packages.iter().map(|p| 2 + p.len()).sum::<usize>()
                    + 1
                    + last_resort.as_ref().map_or(0, |p| 2 + p.len())
            }
            Frame::KeyPackageCount { .. } => U32,
            Frame::FetchKeyPackage { .. } => U32 + KEY_LEN,
            Frame::KeyPackage { package, .. } => U32 + 1 + package.as_ref().map_or(0, |p| 2 + p.len()),
            Frame::Ping { .. } | Frame::Pong { .. } => U64,
            Frame::Error { reason, .. } => 2 + 2 + reason.len(),
        };
        2 + fields
    }

    /// Checks every field against its limit, exactly as [`Frame::decode`] would on the
    /// receiving side. [`Frame::encode`] does not check; the codec calls this first.
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Frame::PublishPreKeys { bundle } => max("bundle", bundle.len(), MAX_BUNDLE_LEN),
            Frame::Bundle {
                bundle: Some(bundle), ..
            } => max("bundle", bundle.len(), MAX_BUNDLE_LEN),
            Frame::PublishName { claim }
            | Frame::NameClaim {
                claim: Some(claim), ..
            } => max("claim", claim.len(), MAX_CLAIM_LEN),
            Frame::ReleaseName { release, .. } => max("release", release.len(), MAX_CLAIM_LEN),
            Frame::LookupName { name, .. } => {
                max("name", name.len(), MAX_NAME_LEN)?;
                check_name_not_empty(name.as_bytes())
            }
            Frame::Send { payload, .. } | Frame::Deliver { payload, .. } => {
                max("payload", payload.len(), MAX_PAYLOAD_LEN)
            }
            Frame::Error { reason, .. } | Frame::Refused { reason, .. } => {
                max("reason", reason.len(), MAX_REASON_LEN)
            }
            Frame::Expired { notices, .. } => {
                max("notices", notices.len(), MAX_EXPIRED_NOTICES)?;
                check_notices_not_empty(notices.len())
            }
            Frame::GroupSend { message, .. } => max("message", message.len(), MAX_MLS_MESSAGE_LEN),
            Frame::GroupCommit {
                commit,
                welcome,
                members,
                added,
                ..
            } => {
                max("commit", commit.len(), MAX_MLS_MESSAGE_LEN)?;
                if let Some(welcome) = welcome {
                    max("welcome", welcome.len(), MAX_MLS_MESSAGE_LEN)?;
                }
                max("members", members.len(), MAX_GROUP_MEMBERS)?;
                max("added", added.len(), MAX_GROUP_MEMBERS)
            }
            Frame::PublishKeyPackages {
                packages,
                last_resort,
            } => {
                max("packages", packages.len(), MAX_KEY_PACKAGES)?;
                for package in packages.iter().chain(last_resort) {
                    max("package", package.len(), MAX_KEY_PACKAGE_LEN)?;
                }
                Ok(())
            }
            Frame::KeyPackage {
                package: Some(package),
                ..
            } => max("package", package.len(), MAX_KEY_PACKAGE_LEN),
            _ => Ok(()),
        }
    }

    /// Appends the body (`version || type || fields`, no length prefix) to `dst`.
    ///
    /// Does not check field limits: a frame that fails [`Frame::validate`] encodes to
    /// bytes the peer rejects. [`crate::codec::FrameCodec`] validates before encoding.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u8(FRAME_VERSION);
        dst.put_u8(self.type_byte());
        match self {
            Frame::Challenge { relay_id, nonce } => {
                dst.put_slice(relay_id);
                dst.put_slice(nonce);
            }
            Frame::Auth { identity, signature } => {
                dst.put_slice(identity);
                dst.put_slice(signature);
            }
            Frame::AuthOk { queued } => dst.put_u32(*queued),
            Frame::PublishPreKeys { bundle } => put_bytes_u32(dst, bundle),
            Frame::FetchBundle { request_id, identity } => {
                dst.put_u32(*request_id);
                dst.put_slice(identity);
            }
            Frame::Bundle { request_id, bundle } => {
                dst.put_u32(*request_id);
                put_optional_bytes(dst, bundle.as_deref());
            }
            Frame::PreKeysLow { remaining } => dst.put_u32(*remaining),
            Frame::PreKeysStored { opks } => dst.put_u32(*opks),
            Frame::PublishName { claim } => put_bytes_u32(dst, claim),
            Frame::LookupName { request_id, name } => {
                dst.put_u32(*request_id);
                put_bytes_u16(dst, name.as_bytes());
            }
            Frame::NameClaim { request_id, claim } => {
                dst.put_u32(*request_id);
                put_optional_bytes(dst, claim.as_deref());
            }
            Frame::LookupIdentity { request_id, identity } => {
                dst.put_u32(*request_id);
                dst.put_slice(identity);
            }
            Frame::ReleaseName { request_id, release } => {
                dst.put_u32(*request_id);
                put_bytes_u32(dst, release);
            }
            Frame::QueryAway { request_id, identity } => {
                dst.put_u32(*request_id);
                dst.put_slice(identity);
            }
            Frame::Away {
                request_id,
                away_days,
            } => {
                dst.put_u32(*request_id);
                dst.put_u32(*away_days);
            }
            Frame::Send {
                recipient,
                msg_id,
                payload,
            } => {
                dst.put_slice(recipient);
                dst.put_slice(msg_id);
                put_bytes_u32(dst, payload);
            }
            Frame::SentAck { msg_id } => dst.put_slice(msg_id),
            Frame::Deliver {
                sender,
                msg_id,
                timestamp_ms,
                payload,
            } => DeliverRef {
                sender,
                msg_id,
                timestamp_ms: *timestamp_ms,
                payload,
            }
            .encode_fields(dst),
            Frame::DeliveryAck { sender, msg_id } => {
                dst.put_slice(sender);
                dst.put_slice(msg_id);
            }
            Frame::Expired { through, notices } => {
                dst.put_u64(*through);
                dst.put_u16(u16::try_from(notices.len()).unwrap_or(u16::MAX));
                for notice in notices {
                    dst.put_slice(&notice.recipient);
                    dst.put_slice(&notice.msg_id);
                }
            }
            Frame::ExpiredAck { through } => dst.put_u64(*through),
            Frame::RateLimited {
                msg_id,
                retry_after_ms,
            } => {
                match msg_id {
                    Some(id) => {
                        dst.put_u8(1);
                        dst.put_slice(id);
                    }
                    None => dst.put_u8(0),
                }
                dst.put_u32(*retry_after_ms);
            }
            Frame::QuotaExceeded {
                msg_id,
                recipient,
                retry_after_ms,
            } => {
                dst.put_slice(msg_id);
                dst.put_slice(recipient);
                dst.put_u32(*retry_after_ms);
            }
            Frame::QueryQuota => {}
            Frame::Quota {
                remaining,
                capacity,
                refill_per_sec,
            } => {
                dst.put_u32(*remaining);
                dst.put_u32(*capacity);
                dst.put_u32(*refill_per_sec);
            }
            Frame::Refused {
                request_seq,
                request_type,
                code,
                retry_after_ms,
                reason,
            } => {
                dst.put_u32(*request_seq);
                dst.put_u8(*request_type);
                dst.put_u16(code.to_u16());
                dst.put_u32(*retry_after_ms);
                put_bytes_u16(dst, reason.as_bytes());
            }
            Frame::Accepted { request_seq } => dst.put_u32(*request_seq),
            Frame::Features { flags } => dst.put_u32(*flags),
            Frame::GroupSend { msg_id, message } => {
                dst.put_slice(msg_id);
                put_bytes_u32(dst, message);
            }
            Frame::GroupCommit {
                msg_id,
                commit,
                welcome,
                members,
                added,
            } => {
                dst.put_slice(msg_id);
                put_bytes_u32(dst, commit);
                put_optional_bytes(dst, welcome.as_deref());
                put_keys(dst, members);
                put_keys(dst, added);
            }
            Frame::GroupEpoch { msg_id, epoch } => {
                dst.put_slice(msg_id);
                dst.put_u64(*epoch);
            }
            Frame::PublishKeyPackages {
                packages,
                last_resort,
            } => {
                dst.put_u16(u16::try_from(packages.len()).unwrap_or(u16::MAX));
                for package in packages {
                    put_bytes_u16(dst, package);
                }
                match last_resort {
                    Some(package) => {
                        dst.put_u8(1);
                        put_bytes_u16(dst, package);
                    }
                    None => dst.put_u8(0),
                }
            }
            Frame::KeyPackageCount { remaining } => dst.put_u32(*remaining),
            Frame::FetchKeyPackage { request_id, identity } => {
                dst.put_u32(*request_id);
                dst.put_slice(identity);
            }
            Frame::KeyPackage { request_id, package } => {
                dst.put_u32(*request_id);
                match package {
                    Some(package) => {
                        dst.put_u8(1);
                        put_bytes_u16(dst, package);
                    }
                    None => dst.put_u8(0),
                }
            }
            Frame::Ping { nonce } | Frame::Pong { nonce } => dst.put_u64(*nonce),
            Frame::Error { code, reason } => {
                dst.put_u16(code.to_u16());
                put_bytes_u16(dst, reason.as_bytes());
            }
        }
    }
}

pub(crate) fn put_bytes_u32(dst: &mut BytesMut, bytes: &[u8]) {
    // Lengths past u32 cannot pass `validate`; saturate instead of wrapping.
    dst.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    dst.put_slice(bytes);
}

fn put_bytes_u16(dst: &mut BytesMut, bytes: &[u8]) {
    dst.put_u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
    dst.put_slice(bytes);
}

fn put_keys(dst: &mut BytesMut, keys: &[[u8; 32]]) {
    dst.put_u16(u16::try_from(keys.len()).unwrap_or(u16::MAX));
    for key in keys {
        dst.put_slice(key);
    }
}

fn put_optional_bytes(dst: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            dst.put_u8(1);
            put_bytes_u32(dst, bytes);
        }
        None => dst.put_u8(0),
    }
}
