//! Decoding frame bodies: [`Frame::decode`], which never panics and bounds every length
//! (docs/PROTOCOL.md 1.3, 1.4).

use super::*;

impl Frame {
    /// Decodes one complete body (`version || type || fields`, no length prefix).
    ///
    /// Returns [`DecodeError::Incomplete`] only when `body` is a strict prefix of some
    /// valid body; every other failure is a distinct, final error. Never panics.
    pub fn decode(body: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = Reader::new(body);
        let version = r.u8()?;
        if version != FRAME_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let frame = match r.u8()? {
            ty::CHALLENGE => Frame::Challenge {
                relay_id: r.array()?,
                nonce: r.array()?,
            },
            ty::AUTH => Frame::Auth {
                identity: r.array()?,
                signature: r.array()?,
            },
            ty::AUTH_OK => Frame::AuthOk { queued: r.u32()? },
            ty::PUBLISH_PREKEYS => Frame::PublishPreKeys {
                bundle: r.bytes_u32(MAX_BUNDLE_LEN, "bundle")?.to_vec(),
            },
            ty::FETCH_BUNDLE => Frame::FetchBundle {
                request_id: r.u32()?,
                identity: r.array()?,
            },
            ty::BUNDLE => Frame::Bundle {
                request_id: r.u32()?,
                bundle: read_optional_bytes(&mut r, MAX_BUNDLE_LEN, "bundle")?,
            },
            ty::PREKEYS_LOW => Frame::PreKeysLow { remaining: r.u32()? },
            ty::PREKEYS_STORED => Frame::PreKeysStored { opks: r.u32()? },
            ty::PUBLISH_NAME => Frame::PublishName {
                claim: r.bytes_u32(MAX_CLAIM_LEN, "claim")?.to_vec(),
            },
            ty::LOOKUP_NAME => {
                let request_id = r.u32()?;
                let raw = r.bytes_u16(MAX_NAME_LEN, "name")?;
                check_name_not_empty(raw)?;
                Frame::LookupName {
                    request_id,
                    name: utf8(raw, "name")?,
                }
            }
            ty::NAME_CLAIM => Frame::NameClaim {
                request_id: r.u32()?,
                claim: read_optional_bytes(&mut r, MAX_CLAIM_LEN, "claim")?,
            },
            ty::LOOKUP_IDENTITY => Frame::LookupIdentity {
                request_id: r.u32()?,
                identity: r.array()?,
            },
            ty::RELEASE_NAME => Frame::ReleaseName {
                request_id: r.u32()?,
                release: r.bytes_u32(MAX_CLAIM_LEN, "release")?.to_vec(),
            },
            ty::QUERY_AWAY => Frame::QueryAway {
                request_id: r.u32()?,
                identity: r.array()?,
            },
            ty::AWAY => Frame::Away {
                request_id: r.u32()?,
                away_days: r.u32()?,
            },
            ty::SEND => Frame::Send {
                recipient: r.array()?,
                msg_id: r.array()?,
                payload: r.bytes_u32(MAX_PAYLOAD_LEN, "payload")?.to_vec(),
            },
            ty::SENT_ACK => Frame::SentAck { msg_id: r.array()? },
            ty::DELIVER => Frame::Deliver {
                sender: r.array()?,
                msg_id: r.array()?,
                timestamp_ms: r.u64()?,
                payload: r.bytes_u32(MAX_PAYLOAD_LEN, "payload")?.to_vec(),
            },
            ty::DELIVERY_ACK => Frame::DeliveryAck {
                sender: r.array()?,
                msg_id: r.array()?,
            },
            ty::EXPIRED => {
                let through = r.u64()?;
                let count = usize::from(r.u16()?);
                max("notices", count, MAX_EXPIRED_NOTICES)?;
                check_notices_not_empty(count)?;
                let mut notices = Vec::with_capacity(count);
                for _ in 0..count {
                    notices.push(ExpiredNotice {
                        recipient: r.array()?,
                        msg_id: r.array()?,
                    });
                }
                Frame::Expired { through, notices }
            }
            ty::EXPIRED_ACK => Frame::ExpiredAck { through: r.u64()? },
            ty::GROUP_SEND => Frame::GroupSend {
                msg_id: r.array()?,
                message: r.bytes_u32(MAX_MLS_MESSAGE_LEN, "message")?.to_vec(),
            },
            ty::GROUP_COMMIT => Frame::GroupCommit {
                msg_id: r.array()?,
                commit: r.bytes_u32(MAX_MLS_MESSAGE_LEN, "commit")?.to_vec(),
                welcome: read_optional_bytes(&mut r, MAX_MLS_MESSAGE_LEN, "welcome")?,
                members: read_keys(&mut r, "members")?,
                added: read_keys(&mut r, "added")?,
            },
            ty::GROUP_EPOCH => Frame::GroupEpoch {
                msg_id: r.array()?,
                epoch: r.u64()?,
            },
            ty::PUBLISH_KEY_PACKAGES => {
                let count = usize::from(r.u16()?);
                max("packages", count, MAX_KEY_PACKAGES)?;
                let mut packages = Vec::with_capacity(count);
                for _ in 0..count {
                    packages.push(r.bytes_u16(MAX_KEY_PACKAGE_LEN, "package")?.to_vec());
                }
                let last_resort = if read_presence(&mut r, "last_resort")? {
                    Some(r.bytes_u16(MAX_KEY_PACKAGE_LEN, "package")?.to_vec())
                } else {
                    None
                };
                Frame::PublishKeyPackages {
                    packages,
                    last_resort,
                }
            }
            ty::KEY_PACKAGE_COUNT => Frame::KeyPackageCount { remaining: r.u32()? },
            ty::FETCH_KEY_PACKAGE => Frame::FetchKeyPackage {
                request_id: r.u32()?,
                identity: r.array()?,
            },
            ty::KEY_PACKAGE => {
                let request_id = r.u32()?;
                let package = if read_presence(&mut r, "package")? {
                    Some(r.bytes_u16(MAX_KEY_PACKAGE_LEN, "package")?.to_vec())
                } else {
                    None
                };
                Frame::KeyPackage { request_id, package }
            }
            ty::RATE_LIMITED => {
                let msg_id = if read_presence(&mut r, "msg_id")? {
                    Some(r.array()?)
                } else {
                    None
                };
                Frame::RateLimited {
                    msg_id,
                    retry_after_ms: r.u32()?,
                }
            }
            ty::QUOTA_EXCEEDED => Frame::QuotaExceeded {
                msg_id: r.array()?,
                recipient: r.array()?,
                retry_after_ms: r.u32()?,
            },
            ty::QUERY_QUOTA => Frame::QueryQuota,
            ty::QUOTA => Frame::Quota {
                remaining: r.u32()?,
                capacity: r.u32()?,
                refill_per_sec: r.u32()?,
            },
            ty::REFUSED => {
                let request_seq = r.u32()?;
                let request_type = r.u8()?;
                let code = ErrorCode::from_u16(r.u16()?);
                let retry_after_ms = r.u32()?;
                let raw = r.bytes_u16(MAX_REASON_LEN, "reason")?;
                Frame::Refused {
                    request_seq,
                    request_type,
                    code,
                    retry_after_ms,
                    reason: utf8(raw, "reason")?,
                }
            }
            ty::ACCEPTED => Frame::Accepted {
                request_seq: r.u32()?,
            },
            ty::FEATURES => Frame::Features { flags: r.u32()? },
            ty::PING => Frame::Ping { nonce: r.u64()? },
            ty::PONG => Frame::Pong { nonce: r.u64()? },
            ty::ERROR => {
                let code = ErrorCode::from_u16(r.u16()?);
                let raw = r.bytes_u16(MAX_REASON_LEN, "reason")?;
                Frame::Error {
                    code,
                    reason: utf8(raw, "reason")?,
                }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

fn read_presence(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid {
            field,
            reason: "presence byte is neither 0 nor 1",
        }),
    }
}

fn read_optional_bytes(
    r: &mut Reader<'_>,
    max: usize,
    field: &'static str,
) -> Result<Option<Vec<u8>>, DecodeError> {
    if read_presence(r, field)? {
        Ok(Some(r.bytes_u32(max, field)?.to_vec()))
    } else {
        Ok(None)
    }
}

/// `count u16 || count × 32-byte key`, at most [`MAX_GROUP_MEMBERS`] keys.
fn read_keys(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<[u8; 32]>, DecodeError> {
    let count = usize::from(r.u16()?);
    max(field, count, MAX_GROUP_MEMBERS)?;
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        keys.push(r.array()?);
    }
    Ok(keys)
}

fn utf8(raw: &[u8], field: &'static str) -> Result<String, DecodeError> {
    match std::str::from_utf8(raw) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(DecodeError::Invalid {
            field,
            reason: "not valid UTF-8",
        }),
    }
}
