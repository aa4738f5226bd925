//! One outbound leg: INVITE, digest challenges and the final answer; the
//! dialog that follows a 2xx is [`super::dialog`].
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use sipauth_model::Cause;
use sipauth_sip::{Message, OwnedMessage};

use super::conn::{Conn, OpenError, UdpPool};
use super::message::{self, Request, branch, escape_user, random_hex};
use super::resolve::{Dest, Resolver};
use super::txn::{self, Acks, End, Hooks};
use super::{Credentials, Target, Timers};
use crate::outcome::Outcome;
use crate::sip::{Retransmit, wait_until};
use crate::tls::ClientTls;

use super::dialog::Setup;
pub use super::dialog::{Dialog, Held};

/// What to dial.
#[derive(Debug)]
pub struct Leg {
    /// The URI, resolved when the leg is placed.
    pub dest: Dest,
    pub resolver: Resolver,
    /// How TLS servers are verified; `None`: TLS targets cannot be reached.
    pub tls: Option<ClientTls>,
    /// Where a UDP leg's socket comes from and goes back to.
    pub udp: UdpPool,
    /// The From user part (the caller id), escaped when sent.
    pub from_user: String,
    pub credentials: Option<Credentials>,
    /// Extra headers, already rendered (`X-PH-...`).
    pub headers: Vec<(String, String)>,
    /// The offer, when the leg carries one.
    pub sdp: Option<Vec<u8>>,
    pub timers: Timers,
    /// How long a ringing INVITE waits for its final response
    /// ([`super::RING_TIMEOUT`] unless the call says otherwise).
    pub ring_timeout: Duration,
    /// Provisional responses out and a cancel in, for a bridged leg.
    pub hooks: Hooks,
}

/// How [`Leg::place`] ended.
#[derive(Debug)]
pub enum LegEnd {
    Answered(Box<Dialog>),
    Failed(Outcome),
}

/// The authentication state of a leg across its INVITEs.
#[derive(Default)]
pub(super) struct Auth {
    /// `(header, value)` for the next INVITE.
    pub(super) header: Option<(&'static str, String)>,
    /// Whether credentials were sent at all.
    pub(super) sent: bool,
    /// Whether the one stale=true re-challenge was answered.
    pub(super) stale_used: bool,
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// How one target of a leg ended.
enum Attempt {
    /// The leg ended here (answered, refused, cancelled, ...).
    Done(LegEnd),
    /// The target could not be reached, never answered or answered 503:
    /// the next target is tried (RFC 3263 4.3), if any.
    Next(Outcome),
}

impl Leg {
    /// Resolves the URI, then INVITEs its targets in turn and answers
    /// their challenges until the leg is answered or ends.
    pub async fn place(mut self) -> LegEnd {
        let targets = match self.resolver.targets(&self.dest).await {
            Ok(t) => t,
            Err(o) => return LegEnd::Failed(o),
        };
        let mut last = Outcome::NETWORK_ERROR;
        let n = targets.len();
        for (i, target) in targets.into_iter().enumerate() {
            match self.attempt(&target).await {
                Attempt::Done(end) => return end,
                Attempt::Next(o) => {
                    if i + 1 < n {
                        tracing::info!(target = %target.addr, cause = o.cause.name(), "outbound leg: trying the next target");
                    }
                    last = o;
                }
            }
        }
        LegEnd::Failed(last)
    }

    /// One target of the leg.
    async fn attempt(&mut self, target: &Target) -> Attempt {
        let mut conn = match Conn::open(target, self.timers.timer_b, self.tls.as_ref(), &self.udp)
            .await
        {
            Ok(c) => c,
            Err(OpenError::Certificate(e)) => {
                tracing::info!(target = %target.addr, host = %target.host, error = %e, "outbound leg: TLS certificate refused");
                return Attempt::Next(Outcome::TLS_CERTIFICATE_FAILED);
            }
            Err(OpenError::Io(e)) => {
                tracing::info!(target = %target.addr, error = %e, "outbound leg: cannot open a connection");
                return Attempt::Next(Outcome::NETWORK_ERROR);
            }
        };
        let local = conn.local;
        let sent_by = message::host_port(local);
        let call_id = format!("{}@sipauth", random_hex(16));
        let user = escape_user(&self.from_user);
        let from = format!("<sip:{user}@{}>;tag={}", host(local.ip()), random_hex(8));
        let to = format!("<{}>", target.uri);
        let contact = format!("<sip:{user}@{sent_by}{}>", conn.transport.uri_param());
        let mut acks = Acks::default();
        let mut auth = Auth::default();
        let mut cseq = 1u32;
        loop {
            let branch = branch();
            let mut extra: Vec<(&str, &str)> = self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Some((name, value)) = &auth.header {
                extra.push((name, value.as_str()));
            }
            let req = Request {
                method: "INVITE",
                uri: &target.uri,
                transport: conn.transport.via_name(),
                sent_by: &sent_by,
                branch: &branch,
                from: &from,
                to: &to,
                call_id: &call_id,
                cseq,
                contact: Some(&contact),
                extra: &extra,
                body: self.sdp.as_deref().map(|b| ("application/sdp", b)),
            };
            let invite = message::build(&req);
            let end = txn::invite(
                &mut conn,
                &invite,
                &branch,
                &self.timers,
                self.ring_timeout,
                &acks,
                &mut self.hooks,
            )
            .await;
            let resp = match end {
                End::Final(resp) => resp,
                End::Transport(e) => {
                    tracing::info!(target = %target.addr, error = %e, "outbound leg: transport failed");
                    return Attempt::Next(Outcome::NETWORK_ERROR);
                }
                End::Cancelled { .. } => {
                    if let Some(ok) = cancel(&mut conn, &req, &self.timers, &acks).await {
                        self.hang_up_crossed(conn, acks, target, &req, &ok).await;
                    }
                    return Attempt::Done(LegEnd::Failed(Outcome::of_status(487)));
                }
                End::Timeout { provisional } => {
                    if provisional > 0
                        && let Some(ok) = cancel(&mut conn, &req, &self.timers, &acks).await
                    {
                        self.hang_up_crossed(conn, acks, target, &req, &ok).await;
                    }
                    return match provisional {
                        0 | 100 if auth.sent => {
                            Attempt::Done(LegEnd::Failed(Outcome::AUTH_TIMEOUT))
                        }
                        // Nothing at all came back: the next target.
                        0 => Attempt::Next(Outcome::new(408, "timeout", Cause::RequestTimeout)),
                        _ => Attempt::Done(LegEnd::Failed(Outcome::new(
                            480,
                            "no-answer",
                            Cause::NoAnswer,
                        ))),
                    };
                }
            };
            let resp = resp.message();
            let code = resp.status().unwrap_or(500);
            let resp_to = resp.header("To").unwrap_or(&to).to_owned();
            if code >= 300 {
                // RFC 3261 17.1.1.3: same branch, the response's To.
                let ack = message::build(&Request {
                    method: "ACK",
                    cseq,
                    to: &resp_to,
                    contact: None,
                    extra: &[],
                    body: None,
                    ..req
                });
                let _ = conn.send(&ack).await;
                acks.push(branch.clone(), ack);
            }
            match code {
                200..=299 => {
                    let setup = Setup {
                        sent_by,
                        from,
                        to: resp_to,
                        contact,
                        call_id,
                        cseq,
                        branch,
                    };
                    let mut dialog = Dialog::new(conn, acks, self, target, setup, &resp);
                    if self.sdp.is_some() {
                        dialog.ack(None).await;
                    }
                    return Attempt::Done(LegEnd::Answered(Box::new(dialog)));
                }
                401 | 407 => {
                    let Some(creds) = &self.credentials else {
                        return Attempt::Done(LegEnd::Failed(Outcome::AUTH_FAILED));
                    };
                    match answer_challenge(&resp, code, creds, &target.uri, &mut auth) {
                        Some(header) => auth.header = Some(header),
                        None => return Attempt::Done(LegEnd::Failed(Outcome::AUTH_FAILED)),
                    }
                    cseq += 1;
                }
                403 if auth.sent => return Attempt::Done(LegEnd::Failed(Outcome::AUTH_FAILED)),
                503 => return Attempt::Next(Outcome::of_status(code)),
                _ => return Attempt::Done(LegEnd::Failed(Outcome::of_status(code))),
            }
        }
    }
}

impl Leg {
    /// A 2xx crossed our CANCEL: the far end answered anyway, so the leg
    /// is ACKed and hung up with a BYE (RFC 3261 9.1).
    async fn hang_up_crossed(
        &self,
        conn: Conn,
        acks: Acks,
        target: &Target,
        invite: &Request<'_>,
        ok: &OwnedMessage,
    ) {
        let resp = ok.message();
        let setup = Setup {
            sent_by: invite.sent_by.to_owned(),
            from: invite.from.to_owned(),
            to: resp.header("To").unwrap_or(invite.to).to_owned(),
            contact: invite.contact.unwrap_or_default().to_owned(),
            call_id: invite.call_id.to_owned(),
            cseq: invite.cseq,
            branch: invite.branch.to_owned(),
        };
        let mut dialog = Dialog::new(conn, acks, self, target, setup, &resp);
        dialog.ack(None).await;
        tracing::debug!(call_id = %dialog.call_id, "answered across our CANCEL; hanging up");
        dialog.bye().await;
    }
}

/// The credentials header answering a 401 (`Authorization`) or 407
/// (`Proxy-Authorization`): the strongest supported challenge, a fresh
/// cnonce. `None` when the leg must give up: a repeated challenge without
/// stale=true (or a second stale one), or nothing we can answer.
pub(super) fn answer_challenge(
    resp: &Message<'_>,
    code: u16,
    creds: &Credentials,
    uri: &str,
    auth: &mut Auth,
) -> Option<(&'static str, String)> {
    let (challenge_header, answer_header) = if code == 401 {
        ("WWW-Authenticate", "Authorization")
    } else {
        ("Proxy-Authenticate", "Proxy-Authorization")
    };
    let offered: Vec<sipauth_sip::DigestChallenge<'_>> = resp
        .headers(challenge_header)
        .filter_map(|v| sipauth_sip::parse_challenge(v).ok())
        .collect();
    let ch = &offered[sipauth_digest::pick_challenge(&offered)?];
    if auth.sent {
        if !ch.stale || auth.stale_used {
            return None;
        }
        auth.stale_used = true;
    }
    // A new nonce each time, so the count starts over.
    let value = sipauth_digest::authorization(
        ch,
        &creds.username,
        creds.password.expose(),
        "INVITE",
        uri,
        1,
    )?;
    auth.sent = true;
    Some((answer_header, value))
}

/// CANCELs a ringing INVITE and ACKs the 487 that ends it. A 2xx that
/// crossed the CANCEL is returned: the caller ACKs it and hangs up.
///
/// The CANCEL is retransmitted over UDP like any non-INVITE request
/// (Timer E, Timer F; a provisional response to it changes nothing); the
/// INVITE's final response may come before or after the CANCEL's own 200,
/// and is waited for up to [`Timers::cancel_wait`] after it.
async fn cancel(
    conn: &mut Conn,
    invite: &Request<'_>,
    timers: &Timers,
    acks: &Acks,
) -> Option<OwnedMessage> {
    let req = message::build(&Request {
        method: "CANCEL",
        contact: None,
        extra: &[],
        body: None,
        ..*invite
    });
    conn.send(&req).await.ok()?;
    let mut schedule = Retransmit::timer_e(timers, Instant::now(), conn.reliable());
    loop {
        tokio::select! {
            () = wait_until(schedule.next_deadline()) => {
                if !schedule.fire(Instant::now()) {
                    return None;
                }
                conn.send(&req).await.ok()?;
            }
            r = conn.recv() => {
                let msg = r.ok()?;
                let status = txn::response_to(&msg.message(), invite.branch, "INVITE");
                match status {
                    Some(200..=299) => return Some(msg),
                    Some(300..) => {
                        let ack = {
                            let m = msg.message();
                            message::build(&Request {
                                method: "ACK",
                                to: m.header("To").unwrap_or(invite.to),
                                contact: None,
                                extra: &[],
                                body: None,
                                ..*invite
                            })
                        };
                        let _ = conn.send(&ack).await;
                        return None;
                    }
                    Some(_) => {}
                    None => {
                        let m = msg.message();
                        if txn::response_to(&m, invite.branch, "CANCEL").is_some_and(|s| s >= 200) {
                            schedule.stop();
                            schedule.give_up_by(Instant::now() + timers.cancel_wait());
                        } else {
                            acks.absorb(conn, &m).await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
