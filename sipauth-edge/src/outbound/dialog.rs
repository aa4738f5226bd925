//! The dialog of an answered outbound leg (RFC 3261 12): its ACK, the
//! far end's in-dialog requests (re-INVITE, UPDATE, INFO, BYE) and ours,
//! each built from the dialog's state with its own CSeq and route set.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use sipauth_sip::{Message, OwnedMessage, build};

use super::conn::Conn;
use super::leg::{Auth, Leg, answer_challenge};
use super::message::{self, branch};
use super::txn::{self, Acks, End, Hooks};
use super::{Credentials, Target, Timers};
use crate::sip::{self, Retransmit, wait_until};

/// An answered leg.
///
/// When the INVITE carried an offer, the 2xx was ACKed as it arrived. When
/// it did not, the 2xx carries the far end's offer ([`Dialog::sdp`]) and
/// the leg waits for [`Dialog::ack`] with the answer (RFC 3264; RFC 3261
/// 13.2.2.4 allows the ACK to follow within 64*T1).
pub struct Dialog {
    conn: Conn,
    acks: Acks,
    timers: Timers,
    ring_timeout: Duration,
    peer: SocketAddr,
    pub(super) call_id: String,
    from: String,
    to: String,
    contact: String,
    /// Our Via sent-by, `host:port` of the leg's socket.
    sent_by: String,
    remote_target: String,
    route: Vec<String>,
    /// CSeq of the last request sent in the dialog.
    cseq: u32,
    /// CSeq and branch of the INVITE whose 2xx was last taken.
    invite_cseq: u32,
    invite_branch: String,
    /// The ACK of that 2xx, once sent (re-sent when the 2xx is).
    ack: Option<Vec<u8>>,
    credentials: Option<Credentials>,
    /// Our 2xx to the far end's re-INVITE, until its ACK.
    answered: Option<Answered>,
    /// The branch of the far end's last request we answered, and the
    /// answer: a retransmission of it gets the answer again.
    last_answer: Option<(String, Vec<u8>)>,
    /// The far end's requests that came while one of ours was under way,
    /// in order: handled before anything read after them.
    waiting: VecDeque<OwnedMessage>,
    /// The 2xx status.
    pub code: u16,
    /// The far end's session description: from its 2xx, then from the
    /// last offer or answer it gave.
    pub sdp: Vec<u8>,
}

/// What [`Dialog::hold`] ended with.
#[derive(Debug)]
pub enum Held {
    /// The time asked for went by.
    Elapsed,
    /// The far end hung up (BYE), or its connection failed.
    HungUp,
    /// The far end sent a re-INVITE; answer it with [`Dialog::respond`].
    Reinvite(OwnedMessage),
    /// The far end sent an INFO or UPDATE to pass on; answer it with
    /// [`Dialog::respond_with`].
    Request(OwnedMessage),
}

/// A 2xx we sent to a re-INVITE, retransmitted over UDP until its ACK.
struct Answered {
    bytes: Vec<u8>,
    cseq: u32,
    schedule: Retransmit,
}

/// What a leg knows of its dialog when the 2xx arrives.
pub(super) struct Setup {
    /// Our Via sent-by, `host:port` of the connection's local address.
    pub(super) sent_by: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) contact: String,
    pub(super) call_id: String,
    pub(super) cseq: u32,
    pub(super) branch: String,
}

impl std::fmt::Debug for Dialog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialog")
            .field("call_id", &self.call_id)
            .field("remote_target", &self.remote_target)
            .finish_non_exhaustive()
    }
}

impl Dialog {
    pub(super) fn new(
        conn: Conn,
        acks: Acks,
        leg: &Leg,
        target: &Target,
        setup: Setup,
        resp: &Message<'_>,
    ) -> Self {
        let remote_target = resp
            .contacts()
            .filter_map(Result::ok)
            .map(|c| c.uri.to_owned())
            .next()
            .unwrap_or_else(|| target.uri.clone());
        // RFC 3261 12.1.2: the route set is the Record-Route of the 2xx,
        // reversed.
        let mut route: Vec<String> = resp
            .headers("Record-Route")
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        route.reverse();
        Self {
            conn,
            acks,
            timers: leg.timers,
            ring_timeout: leg.ring_timeout,
            peer: target.addr,
            call_id: setup.call_id,
            from: setup.from,
            to: setup.to,
            contact: setup.contact,
            sent_by: setup.sent_by,
            remote_target,
            route,
            cseq: setup.cseq,
            invite_cseq: setup.cseq,
            invite_branch: setup.branch,
            ack: None,
            credentials: leg.credentials.clone(),
            answered: None,
            last_answer: None,
            waiting: VecDeque::new(),
            code: resp.status().unwrap_or(200),
            sdp: resp.body().to_vec(),
        }
    }

    /// The dialog as our requests inside it are built from (RFC 3261
    /// 12.2.1.1): the remote target as Request-URI, the route set, our tags
    /// and Call-ID.
    fn wire(&self) -> message::Dialog<'_> {
        message::Dialog {
            remote_target: &self.remote_target,
            route: &self.route,
            from: &self.from,
            to: &self.to,
            call_id: &self.call_id,
            contact: &self.contact,
            transport: self.conn.transport.via_name(),
            sent_by: &self.sent_by,
        }
    }

    /// Whether the 2xx still waits for its ACK (the far end made the offer).
    #[must_use]
    pub fn ack_pending(&self) -> bool {
        self.ack.is_none()
    }

    /// ACKs the last 2xx, with `answer` when the 2xx carried the offer
    /// (RFC 3261 13.2.2.4: a new branch, the INVITE's CSeq number).
    pub async fn ack(&mut self, answer: Option<&[u8]>) {
        let ack = self.wire().request(
            "ACK",
            &branch(),
            self.invite_cseq,
            false,
            &[],
            answer
                .filter(|a| !a.is_empty())
                .map(|a| ("application/sdp", a)),
        );
        if let Err(e) = self.conn.send(&ack).await {
            tracing::info!(call_id = %self.call_id, error = %e, "outbound leg: ACK of the 2xx failed");
        }
        self.ack = Some(ack);
    }

    /// Sends a re-INVITE carrying `offer` (RFC 3261 14.1) and returns the
    /// far end's answer, or the status that refused it. A 401 / 407 is
    /// answered once with the leg's credentials.
    pub async fn reinvite(&mut self, offer: &[u8]) -> Result<Vec<u8>, u16> {
        let mut auth = Auth::default();
        loop {
            self.cseq += 1;
            let branch = branch();
            let credentials: Vec<(&str, &str)> = auth
                .header
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            let bytes = self.wire().request(
                "INVITE",
                &branch,
                self.cseq,
                true,
                &credentials,
                Some(("application/sdp", offer)),
            );
            let end = txn::invite(
                &mut self.conn,
                &bytes,
                &branch,
                &self.timers,
                self.ring_timeout,
                &self.acks,
                &mut Hooks::default(),
            )
            .await;
            let resp = match end {
                End::Final(resp) => resp,
                End::Timeout { .. } | End::Cancelled { .. } => return Err(408),
                End::Transport(_) => return Err(503),
            };
            let resp = resp.message();
            let code = resp.status().unwrap_or(500);
            if code >= 300 {
                // RFC 3261 17.1.1.3: the INVITE's branch and route set.
                let ack = self
                    .wire()
                    .request("ACK", &branch, self.cseq, false, &[], None);
                let _ = self.conn.send(&ack).await;
                self.acks.push(branch.clone(), ack);
            }
            match code {
                200..=299 => {
                    // A target refresh (RFC 3261 12.2.1.2).
                    if let Some(c) = resp.contacts().find_map(Result::ok) {
                        c.uri.clone_into(&mut self.remote_target);
                    }
                    let answer = resp.body().to_vec();
                    self.sdp.clone_from(&answer);
                    self.invite_cseq = self.cseq;
                    self.invite_branch = branch;
                    self.ack(None).await;
                    return Ok(answer);
                }
                401 | 407 => {
                    let uri = self.remote_target.clone();
                    let header = self
                        .credentials
                        .as_ref()
                        .and_then(|c| answer_challenge(&resp, code, c, &uri, &mut auth));
                    match header {
                        Some(h) => auth.header = Some(h),
                        None => return Err(code),
                    }
                }
                _ => return Err(code),
            }
        }
    }

    /// Keeps the call up for `length`, answering the far end meanwhile,
    /// until something the caller must act on happens.
    pub async fn hold(&mut self, length: Duration) -> Held {
        let wait = tokio::time::sleep(length);
        tokio::pin!(wait);
        while let Some(msg) = self.waiting.pop_front() {
            if let Some(held) = self.incoming(msg).await {
                return held;
            }
        }
        loop {
            let resend = self
                .answered
                .as_ref()
                .and_then(|a| a.schedule.next_deadline());
            tokio::select! {
                () = &mut wait => return Held::Elapsed,
                () = wait_until(resend) => {
                    self.resend_answer().await;
                }
                r = self.conn.recv() => {
                    let Ok(msg) = r else { return Held::HungUp };
                    match self.incoming(msg).await {
                        Some(Held::HungUp) => return Held::HungUp,
                        Some(held) => return held,
                        None => {}
                    }
                }
            }
        }
    }

    /// Retransmits the 2xx of a re-INVITE from the far end (UDP, RFC 3261
    /// 13.3.1.4) until its ACK, for at most 64*T1.
    async fn resend_answer(&mut self) {
        let Some(a) = self.answered.as_mut() else {
            return;
        };
        if !a.schedule.fire(Instant::now()) {
            self.answered = None;
            return;
        }
        let bytes = a.bytes.clone();
        let _ = self.conn.send(&bytes).await;
    }

    /// Answers a re-INVITE the far end sent (handed out by
    /// [`Dialog::hold`]) with `code` and, for a 2xx, `sdp`.
    pub async fn respond(&mut self, request: &OwnedMessage, code: u16, sdp: &[u8]) {
        self.respond_with(request, code, Some("application/sdp"), sdp)
            .await;
    }

    /// Answers a request the far end sent in the dialog with `code` and a
    /// body of `content_type`. A 2xx to a re-INVITE is sent again over UDP
    /// until its ACK; every answer is sent again to a retransmission of its
    /// request.
    pub async fn respond_with(
        &mut self,
        request: &OwnedMessage,
        code: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) {
        let m = request.message();
        let contact = self.contact.clone();
        let mut extra = vec![("Contact", contact.as_str())];
        if !body.is_empty() {
            extra.push(("Content-Type", content_type.unwrap_or("application/sdp")));
        }
        let bytes = self.response(&m, code, build::reason_phrase(code), &extra, body);
        let _ = self.conn.send(&bytes).await;
        if let Some(b) = m.top_via().ok().and_then(|v| v.branch) {
            self.last_answer = Some((b.to_owned(), bytes.clone()));
        }
        if (200..300).contains(&code) && m.method() == Some("INVITE") && !self.conn.reliable() {
            self.answered = Some(Answered {
                bytes,
                cseq: m.cseq().map_or(0, |c| c.0),
                schedule: Retransmit::timer_g(&self.timers, Instant::now(), false),
            });
        }
    }

    /// Our response to `request` of the far end, written by the SIP layer
    /// ([`sip::response`]): the far end's To-tag is ours already, as the
    /// request is inside the dialog.
    fn response(
        &self,
        request: &Message<'_>,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<u8> {
        sip::response(request, code, reason, self.peer, None, extra, body)
    }

    /// Sends an INFO or UPDATE in the dialog with a body of
    /// `content_type`; the far end's final status, its body's type and the
    /// body, or `Err(408)` / `Err(503)` when it never answered or the
    /// connection failed.
    pub async fn request(
        &mut self,
        method: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Option<String>, Vec<u8>), u16> {
        self.cseq += 1;
        let branch = branch();
        // UPDATE refreshes the target (RFC 3311); INFO does not.
        let req = self.wire().request(
            method,
            &branch,
            self.cseq,
            method == "UPDATE",
            &[],
            (!body.is_empty()).then(|| (content_type.unwrap_or("application/octet-stream"), body)),
        );
        match txn::non_invite(
            &mut self.conn,
            &req,
            &branch,
            method,
            &self.timers,
            &self.acks,
            &mut self.waiting,
        )
        .await
        {
            End::Final(resp) => {
                let m = resp.message();
                Ok((
                    m.status().unwrap_or(500),
                    m.header("Content-Type").map(str::to_owned),
                    m.body().to_vec(),
                ))
            }
            End::Timeout { .. } | End::Cancelled { .. } => Err(408),
            End::Transport(_) => Err(503),
        }
    }

    /// Handles one message inside the dialog: `Some` when the caller must
    /// act (a BYE ended the call; a re-INVITE wants an answer).
    async fn incoming(&mut self, msg: OwnedMessage) -> Option<Held> {
        /// What a message of the far end asks of the dialog.
        enum Next {
            /// Send this answer; the call is over when true (a BYE).
            Answer(Vec<u8>, bool),
            /// Our 2xx came again: its ACK again.
            Ack,
            /// A final response of an earlier transaction: its ACK again.
            Absorb,
            Reinvite,
            Request,
            Nothing,
        }
        let next = 'next: {
            let m = msg.message();
            if m.method().is_some_and(|x| x != "ACK")
                && let Some((branch, answer)) = &self.last_answer
                && m.top_via().ok().and_then(|v| v.branch) == Some(branch.as_str())
            {
                // A retransmission of a request we answered.
                break 'next Next::Answer(answer.clone(), false);
            }
            match m.method() {
                // A retransmitted 2xx: the ACK did not arrive.
                None if txn::response_to(&m, &self.invite_branch, "INVITE")
                    .is_some_and(|s| (200..300).contains(&s)) =>
                {
                    Next::Ack
                }
                None => Next::Absorb,
                Some("ACK") => {
                    let cseq = m.cseq().map_or(0, |c| c.0);
                    if self.answered.as_ref().is_some_and(|a| a.cseq == cseq) {
                        self.answered = None;
                    }
                    Next::Nothing
                }
                Some(method) => {
                    let ours = m.call_id().is_ok_and(|c| c == self.call_id);
                    let (code, reason) = match method {
                        "INVITE" if ours => break 'next Next::Reinvite,
                        "INFO" | "UPDATE" if ours => break 'next Next::Request,
                        "BYE" if ours => (200, "OK"),
                        "BYE" | "INVITE" | "INFO" | "UPDATE" => {
                            (481, "Call/Transaction Does Not Exist")
                        }
                        "OPTIONS" => (200, "OK"),
                        _ => (405, "Method Not Allowed"),
                    };
                    let resp = self.response(&m, code, reason, &[], b"");
                    Next::Answer(resp, method == "BYE" && ours)
                }
            }
        };
        match next {
            Next::Answer(bytes, hung_up) => {
                let _ = self.conn.send(&bytes).await;
                if !hung_up {
                    return None;
                }
                // The BYE's transaction outlives the dialog (Timer J).
                if let Some(branch) = msg.message().top_via().ok().and_then(|v| v.branch) {
                    self.conn.keep_answer(branch, bytes, self.timers.timer_j());
                }
                Some(Held::HungUp)
            }
            Next::Ack => {
                if let Some(ack) = &self.ack {
                    let _ = self.conn.send(ack).await;
                }
                None
            }
            Next::Absorb => {
                self.acks.absorb(&mut self.conn, &msg.message()).await;
                None
            }
            Next::Reinvite => Some(Held::Reinvite(msg)),
            Next::Request => Some(Held::Request(msg)),
            Next::Nothing => None,
        }
    }

    /// Ends the call from our side with a BYE (a 2xx still waiting for
    /// its ACK gets it first).
    pub async fn bye(&mut self) {
        if self.ack.is_none() {
            self.ack(None).await;
        }
        self.cseq += 1;
        let branch = branch();
        let req = self
            .wire()
            .request("BYE", &branch, self.cseq, false, &[], None);
        match txn::non_invite(
            &mut self.conn,
            &req,
            &branch,
            "BYE",
            &self.timers,
            &self.acks,
            &mut self.waiting,
        )
        .await
        {
            End::Final(resp) => {
                let status = resp.message().status();
                tracing::debug!(call_id = %self.call_id, ?status, "BYE answered");
            }
            End::Timeout { .. } | End::Cancelled { .. } => {
                tracing::debug!(call_id = %self.call_id, "BYE unanswered");
            }
            End::Transport(e) => {
                tracing::debug!(call_id = %self.call_id, error = %e, "BYE not sent");
            }
        }
        // What the far end sent meanwhile: its own BYE (the two crossed)
        // gets 200 as ever; anything else finds the dialog over.
        while let Some(msg) = self.waiting.pop_front() {
            if let Some(Held::Reinvite(req) | Held::Request(req)) = self.incoming(msg).await {
                self.respond_with(&req, 481, None, b"").await;
            }
        }
    }
}
