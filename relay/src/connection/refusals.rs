//! [`RequestRef`] and the Connection's refusals: how a request that does not succeed is
//! answered, as `Refused` naming the request for a client that asked for it with
//! `Features`, otherwise as the frames of revision 7 and earlier (`Error`,
//! `RateLimited`, `QuotaExceeded`); docs/PROTOCOL.md 1.11.

use e2ee_protocol::frame::FEATURE_NAMED_REFUSALS;

use super::*;

/// Which request an answer is for: the frame's position on the connection (its `Auth`
/// being 0) and its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RequestRef {
    pub(super) seq: u32,
    pub(super) request_type: u8,
}

/// Counts the frames read on one connection and remembers what the client asked for.
#[derive(Debug, Default)]
pub(super) struct RequestLog {
    /// Frames read so far (the next frame's `seq`).
    read: u32,
    /// The frame being handled.
    current: Option<RequestRef>,
    /// The client sent `Features` with [`FEATURE_NAMED_REFUSALS`].
    named: bool,
}

impl RequestLog {
    /// A frame was read: it becomes the current request.
    pub(super) fn read(&mut self, frame: &Frame) {
        self.current = Some(RequestRef {
            seq: self.read,
            request_type: frame.type_byte(),
        });
        self.read = self.read.wrapping_add(1);
    }

    /// The frame being handled (kept by a handler that answers later).
    pub(super) fn current(&self) -> RequestRef {
        self.current.unwrap_or(RequestRef {
            seq: 0,
            request_type: 0,
        })
    }

    /// Makes `request` current again (a frame whose handling was paused).
    pub(super) fn resume(&mut self, request: RequestRef) {
        self.current = Some(request);
    }

    /// The client's `Features` flags.
    pub(super) fn features(&mut self, flags: u32) {
        self.named = flags & FEATURE_NAMED_REFUSALS != 0;
    }

    /// Whether refusals are sent as `Refused`.
    pub(super) fn named(&self) -> bool {
        self.named
    }
}

impl Connection {
    /// Refuses the request being handled for good (see [`Connection::refuse`]).
    pub(super) fn refuse_current(&mut self, code: ErrorCode, reason: &str, ctx: &mut Context<Self>) {
        self.refuse(self.requests.current(), code, reason, ctx);
    }

    /// Refuses `request` for good (a code that is not retryable) without closing the
    /// connection.
    pub(super) fn refuse(
        &mut self,
        request: RequestRef,
        code: ErrorCode,
        reason: &str,
        ctx: &mut Context<Self>,
    ) {
        self.relay.metrics.reject(code);
        warn!(self.log, "request refused"; "reason" => reason, "code" => code.name(),
              "request_seq" => request.seq);
        self.send_refusal(request, code, reason, ctx);
    }

    /// Sends the refusal of `request` in the form the client understands.
    pub(super) fn send_refusal(
        &mut self,
        request: RequestRef,
        code: ErrorCode,
        reason: &str,
        ctx: &mut Context<Self>,
    ) {
        let frame = if self.requests.named() {
            Frame::refused(request.seq, request.request_type, code, 0, reason)
        } else {
            Frame::error(code, reason)
        };
        self.send(frame, ctx);
    }

    /// Refuses `request` (the Send `msg_id`, or another request) for `wait`.
    pub(super) fn rate_limited(
        &mut self,
        request: RequestRef,
        msg_id: Option<MsgId>,
        wait: Duration,
        ctx: &mut Context<Self>,
    ) {
        self.relay.metrics.rate_limited.inc();
        let retry_after_ms = u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX);
        let frame = if self.requests.named() {
            let reason = "rate limit: send it again later";
            Frame::refused(
                request.seq,
                request.request_type,
                ErrorCode::RateLimited,
                retry_after_ms,
                reason,
            )
        } else {
            Frame::RateLimited {
                msg_id,
                retry_after_ms,
            }
        };
        self.send(frame, ctx);
    }

    /// Refuses the Send `request` (`msg_id` to `recipient`) because `quota` is full.
    pub(super) fn quota_exceeded(
        &mut self,
        request: RequestRef,
        msg_id: MsgId,
        recipient: IdentityBytes,
        quota: Quota,
        ctx: &mut Context<Self>,
    ) {
        let retry_after_ms = self.relay.limits.quota_retry_after_ms;
        let frame = if self.requests.named() {
            let reason = format!("{} is full: send it again later", quota.name());
            Frame::refused(
                request.seq,
                request.request_type,
                ErrorCode::QuotaExceeded,
                retry_after_ms,
                reason,
            )
        } else {
            Frame::QuotaExceeded {
                msg_id,
                recipient,
                retry_after_ms,
            }
        };
        self.send(frame, ctx);
    }

    /// Answers a request that has no reply of its own (a stored `PublishName`): `Accepted`
    /// for a client that asked for named refusals, nothing otherwise.
    pub(super) fn accepted(&mut self, request: RequestRef, ctx: &mut Context<Self>) {
        if self.requests.named() {
            self.send(
                Frame::Accepted {
                    request_seq: request.seq,
                },
                ctx,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_numbered_from_the_auth_and_a_paused_one_keeps_its_number() {
        let mut log = RequestLog::default();
        log.read(&Frame::Auth {
            identity: [0; 32],
            signature: [0; 64],
        });
        assert_eq!(
            log.current(),
            RequestRef {
                seq: 0,
                request_type: 0x02
            }
        );
        log.read(&Frame::Features { flags: 3 });
        log.features(3);
        assert!(log.named());
        log.features(2);
        assert!(!log.named(), "only bit 0 asks for named refusals");
        log.read(&Frame::QueryQuota);
        let paused = log.current();
        log.read(&Frame::Ping { nonce: 1 });
        assert_eq!(log.current().seq, 3);
        log.resume(paused);
        assert_eq!(
            log.current(),
            RequestRef {
                seq: 2,
                request_type: 0x32
            }
        );
    }
}
