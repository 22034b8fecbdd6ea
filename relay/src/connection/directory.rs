//! The Connection's directory requests: publishing and fetching prekey bundles, and the
//! name registry (claims, lookups, reverse lookups, releases, away queries); docs/PROTOCOL.md
//! 1.7 and 1.8.

use super::*;

impl Connection {
    pub(super) fn on_publish_prekeys(&mut self, me: IdentityBytes, bytes: &[u8], ctx: &mut Context<Self>) {
        let bundle = match PreKeyBundle::decode_verified(bytes) {
            Ok(bundle) => bundle,
            Err(err) => return self.refuse_current(ErrorCode::InvalidBundle, &err.to_string(), ctx),
        };
        if bundle.identity.as_bytes() != &me {
            return self.refuse_current(ErrorCode::NotOwner, "bundle of another identity", ctx);
        }
        let publish = PublishPrekeys {
            owner: me,
            signed_prekey: *bundle.signed_prekey.as_bytes(),
            signature: bundle.signature.to_vec(),
            one_time: bundle.one_time_prekeys.iter().map(|k| *k.as_bytes()).collect(),
            max_prekeys: self.relay.limits.max_prekeys,
        };
        ctx.spawn(
            self.relay
                .store
                .send(publish)
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(Ok(opks)) => {
                        info!(act.log, "prekeys published"; "opks" => opks);
                        act.send(Frame::PreKeysStored { opks }, ctx);
                    }
                    _ => act.close(ErrorCode::Internal, "store failure", ctx),
                }),
        );
    }

    pub(super) fn on_fetch_bundle(&mut self, request_id: u32, owner: IdentityBytes, ctx: &mut Context<Self>) {
        if let Some(bundle) = self.substitute_bundle(&owner) {
            self.send(
                Frame::Bundle {
                    request_id,
                    bundle: Some(bundle),
                },
                ctx,
            );
            return;
        }
        let threshold = self.relay.limits.prekey_low_threshold;
        let read_at = self.last_seen;
        let take_one_time = self.relay.opk_handouts.try_take(&owner, read_at);
        if !take_one_time {
            self.relay.metrics.opk_handouts_limited.inc();
        }
        let fetch = FetchBundle { owner, take_one_time };
        ctx.spawn(
            self.relay
                .store
                .send(fetch)
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let stored = match res {
                        Ok(Ok(stored)) => stored,
                        _ => return act.close(ErrorCode::Internal, "store failure", ctx),
                    };
                    let handed_out = stored.as_ref().is_some_and(|s| s.one_time_prekey.is_some());
                    if take_one_time && !handed_out {
                        act.relay.opk_handouts.give_back(&owner, read_at);
                    }
                    let bundle = stored.as_ref().and_then(|s| bundle_bytes(owner, s));
                    if let Some(s) = &stored {
                        if s.one_time_prekey.is_some() && s.remaining < threshold {
                            act.relay.router.do_send(Notify {
                                identity: owner,
                                frame: Frame::PreKeysLow {
                                    remaining: s.remaining,
                                },
                            });
                        }
                    }
                    act.send(Frame::Bundle { request_id, bundle }, ctx);
                }),
        );
    }

    pub(super) fn on_publish_name(&mut self, me: IdentityBytes, bytes: Vec<u8>, ctx: &mut Context<Self>) {
        let claim = match NameClaim::decode_verified(&bytes) {
            Ok(claim) => claim,
            Err(err) => return self.refuse_current(ErrorCode::InvalidClaim, &err.to_string(), ctx),
        };
        if claim.identity.as_bytes() != &me {
            return self.refuse_current(ErrorCode::NotOwner, "claim of another identity", ctx);
        }
        let put = PutClaim {
            name: claim.name,
            owner: me,
            claim: bytes,
            now_ms: crate::now_ms(),
            lease: self.relay.lease,
        };
        let request = self.requests.current();
        ctx.spawn(
            self.relay
                .store
                .send(put)
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(ClaimOutcome::Stored)) => {
                        info!(act.log, "name claimed");
                        act.accepted(request, ctx);
                    }
                    Ok(Ok(ClaimOutcome::TakenOver { .. })) => {
                        info!(act.log, "name claimed"; "reason" => "the previous holder's lease ran out");
                        act.accepted(request, ctx);
                    }
                    Ok(Ok(ClaimOutcome::HeldByAnother)) => {
                        act.refuse(request, ErrorCode::NotOwner, "name held by another identity", ctx)
                    }
                    _ => act.close(ErrorCode::Internal, "store failure", ctx),
                }),
        );
    }

    /// The reverse lookup: the claim the registry binds to `identity`, if any.
    pub(super) fn on_lookup_identity(
        &mut self,
        request_id: u32,
        identity: IdentityBytes,
        ctx: &mut Context<Self>,
    ) {
        ctx.spawn(self.relay.store.send(ClaimOf(identity)).into_actor(self).map(
            move |res, act, ctx| match res {
                Ok(Ok(claim)) => {
                    act.send(Frame::NameClaim { request_id, claim }, ctx);
                }
                _ => act.close(ErrorCode::Internal, "store failure", ctx),
            },
        ));
    }

    /// How long `identity` has been away (docs/PROTOCOL.md 1.8): `0` while it is
    /// connected or was seen within the notice period, whole days past it. Never more
    /// precise than that, so the answer does not tell whether it is connected now.
    pub(super) fn on_query_away(
        &mut self,
        request_id: u32,
        identity: IdentityBytes,
        ctx: &mut Context<Self>,
    ) {
        if self.relay.routes.is_connected(&identity) {
            self.send(
                Frame::Away {
                    request_id,
                    away_days: 0,
                },
                ctx,
            );
            return;
        }
        ctx.spawn(
            self.relay
                .store
                .send(LastSeen(identity))
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(last_seen)) => {
                        let away_days = act.relay.away_notice.away_days(crate::now_ms(), last_seen);
                        act.send(
                            Frame::Away {
                                request_id,
                                away_days,
                            },
                            ctx,
                        );
                    }
                    _ => act.close(ErrorCode::Internal, "store failure", ctx),
                }),
        );
    }

    pub(super) fn on_release_name(
        &mut self,
        me: IdentityBytes,
        request_id: u32,
        bytes: &[u8],
        ctx: &mut Context<Self>,
    ) {
        let release = match NameRelease::decode_verified(bytes) {
            Ok(release) => release,
            Err(err) => return self.refuse_current(ErrorCode::InvalidClaim, &err.to_string(), ctx),
        };
        if release.identity.as_bytes() != &me {
            return self.refuse_current(ErrorCode::NotOwner, "release of another identity", ctx);
        }
        let release = ReleaseClaim {
            name: release.name,
            owner: me,
            issued_ms: release.issued_ms,
        };
        let request = self.requests.current();
        ctx.spawn(
            self.relay
                .store
                .send(release)
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(ReleaseOutcome::Released)) => {
                        info!(act.log, "name released");
                        act.send(
                            Frame::NameClaim {
                                request_id,
                                claim: None,
                            },
                            ctx,
                        );
                    }
                    Ok(Ok(ReleaseOutcome::NotHeld)) => act.refuse(
                        request,
                        ErrorCode::NotOwner,
                        "name not held by this identity",
                        ctx,
                    ),
                    Ok(Ok(ReleaseOutcome::OlderThanClaim { .. })) => act.refuse(
                        request,
                        ErrorCode::NotOwner,
                        "release is older than the claim it would remove (issued_ms)",
                        ctx,
                    ),
                    _ => act.close(ErrorCode::Internal, "store failure", ctx),
                }),
        );
    }
}

/// Rebuilds the wire bundle from the stored parts.
fn bundle_bytes(owner: IdentityBytes, stored: &StoredBundle) -> Option<Vec<u8>> {
    let bundle = PreKeyBundle {
        identity: IdentityKey::from_bytes(owner).ok()?,
        signed_prekey: PublicKey::from_bytes(stored.signed_prekey),
        signature: stored.signature.clone().try_into().ok()?,
        one_time_prekeys: stored
            .one_time_prekey
            .map(PublicKey::from_bytes)
            .into_iter()
            .collect(),
    };
    Some(bundle.encode())
}
