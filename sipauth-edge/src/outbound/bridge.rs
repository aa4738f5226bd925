//! `<Dial>`: an inbound caller bridged to the first of the Dial's targets
//! to answer (all are rung at once, see [`super::fork`]).
//!
//! The legs carry the caller's SDP as their offer and answer the far end's
//! challenges with the `<User>` credentials. Their 180 / 183 are relayed to
//! the caller as provisional responses, the winner's 2xx (with its SDP) as
//! the 200 of the inbound INVITE, with the edge's To-tag and Contact,
//! retransmitted over UDP until the caller's ACK. A caller that sent no
//! offer gets the far end's offer in that 200 and its ACK's answer is
//! passed on in the leg's ACK. When no leg answers the caller gets the
//! best of their final responses. A BYE on either side ends both legs; a
//! CANCEL (or an early BYE) from the caller cancels the ringing legs and
//! the INVITE gets 487.
//!
//! Only the rendered `sipHeaders` reach the far end: no header of the
//! inbound INVITE (Authorization and Proxy-Authorization included) is
//! copied to the outbound leg, nor the other way.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use sipauth_callback::Dial;
use sipauth_sip::{Message, OwnedMessage, build};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fork::{self, Fork, Ring};
use super::{Dialog, Held, Outcome, Settings, message};
use crate::outcome::Dialed;
use crate::sip::dialog::Dialogs;
pub use crate::sip::dialog::Event;
use crate::sip::{OwnedRequest, Retransmit, ServerRequest, Timers, wait_until};
use crate::transport::{Replier, Transport};

/// A bridged call is ended by the edge after this long.
const MAX_CALL: Duration = Duration::from_hours(4);

/// The timers of the caller's side: those of the edge's server
/// transactions, not the outbound legs' (whose Timer B may be shorter).
const TIMERS: Timers = Timers::RFC;

/// The caller's side of a bridge: its INVITE and how to answer it. What
/// only a bridge needs (the dialog's To-tag, the edge's Contact and
/// sent-by) is made when first asked for: most calls end without one.
pub(crate) struct Caller<'m> {
    req: &'m ServerRequest<'m>,
    msg: &'m Message<'m>,
    replier: &'m Replier,
    to_tag: OnceLock<String>,
    /// The edge's Contact, from the Request-URI the caller used.
    contact: OnceLock<String>,
    /// The Via sent-by of the edge's requests to the caller.
    sent_by: OnceLock<String>,
}

impl<'m> Caller<'m> {
    pub(crate) fn new(req: &'m ServerRequest<'m>) -> Self {
        Self {
            req,
            msg: req.msg(),
            replier: req.replier(),
            to_tag: OnceLock::new(),
            contact: OnceLock::new(),
            sent_by: OnceLock::new(),
        }
    }

    fn to_tag(&self) -> &str {
        self.to_tag.get_or_init(|| self.req.to_tag())
    }

    fn contact(&self) -> &str {
        self.contact
            .get_or_init(|| edge_contact(self.msg, self.replier.transport()))
    }

    fn sent_by(&self) -> &str {
        self.sent_by.get_or_init(|| edge_sent_by(self.msg))
    }

    /// A final response to the caller's INVITE, without a body.
    pub(crate) fn respond(&self, code: u16, reason: &str) {
        self.req.respond(code, reason, &[], b"");
    }

    /// The caller's CANCEL, ACK, BYE and in-dialog requests come to the
    /// receiver from now on, until [`Caller::unbridge`].
    fn bridge(&self, dialogs: &Dialogs) -> mpsc::UnboundedReceiver<Event> {
        let (call_id, from_tag) = self.dialog_id();
        dialogs.insert(call_id, from_tag, self.to_tag())
    }

    fn unbridge(&self, dialogs: &Dialogs) {
        let (call_id, from_tag) = self.dialog_id();
        dialogs.remove(call_id, from_tag);
    }

    /// Call-ID and the caller's tag.
    fn dialog_id(&self) -> (&'m str, &'m str) {
        let call_id = self.msg.call_id().unwrap_or_default();
        let from_tag = self.msg.from().ok().and_then(|f| f.tag).unwrap_or_default();
        (call_id, from_tag)
    }
}

/// How the ringing leg ended, as far as the caller is concerned.
enum Rung {
    Answered(Box<Dialog>),
    Failed(Outcome),
    /// The caller cancelled (any answer of the leg is already hung up).
    Cancelled,
}

/// An inbound caller that `<Dial>` bridges to the first of its targets to
/// answer, with what that needs: the outbound legs' settings, the edge's
/// dialog table, and what comes in the caller's dialog once the first
/// `<Dial>` put it in the table (it stays there between Dials, until
/// [`Bridge::close`]).
pub(crate) struct Bridge<'a> {
    settings: &'a Settings,
    dialogs: &'a Dialogs,
    caller: Caller<'a>,
    events: Option<mpsc::UnboundedReceiver<Event>>,
}

// === impl Bridge ===

impl<'a> Bridge<'a> {
    pub(crate) fn new(settings: &'a Settings, dialogs: &'a Dialogs, caller: Caller<'a>) -> Self {
        Self {
            settings,
            dialogs,
            caller,
            events: None,
        }
    }

    pub(crate) fn caller(&self) -> &Caller<'a> {
        &self.caller
    }

    /// Rings `dial`'s targets for the caller: answered and over (the
    /// caller's INVITE has its 200, or 487 when it cancelled), or no target
    /// answered (no final response sent yet); and whether a target rang or
    /// answered. The legs' From user is `from_user`; their `sipHeaders`
    /// go raw (`X-{key}`) when `raw_headers` (the caller authenticated
    /// with SIP auth).
    pub(crate) async fn dial(
        &mut self,
        from_user: &str,
        raw_headers: bool,
        dial: &Dial,
    ) -> (Dialed, bool) {
        let Self {
            settings,
            dialogs,
            caller,
            events,
        } = self;
        let events = events.get_or_insert_with(|| caller.bridge(dialogs));
        let body = caller.msg.body();
        let plan = fork::Plan {
            from_user,
            raw_headers,
            sdp: (!body.is_empty()).then(|| body.to_vec()),
            settings,
        };
        let (legs, failed) = fork::legs(dial.clone(), &plan);
        let (rung, alerted) = ring(caller, Fork::start(legs, failed), events).await;
        match rung {
            Rung::Cancelled => {
                let o = Outcome::CANCELLED;
                caller.respond(o.code, o.reason());
                (Dialed::Over(o), alerted)
            }
            Rung::Failed(o) => (Dialed::Unreached(o), alerted),
            Rung::Answered(dialog) => {
                let limit = dial.time_limit_secs.map_or(MAX_CALL, |t| {
                    Duration::from_secs(u64::from(t)).min(MAX_CALL)
                });
                talk(caller, dialog, events, limit).await;
                (Dialed::Over(Outcome::HUNG_UP), true)
            }
        }
    }

    /// Whether the caller left: a CANCEL (or an early BYE) came in its
    /// dialog since the last look.
    pub(crate) fn left(&mut self) -> bool {
        self.events.as_mut().is_some_and(|events| {
            std::iter::from_fn(|| events.try_recv().ok())
                .any(|ev| matches!(ev, Event::Cancel | Event::Bye))
        })
    }

    /// Takes the caller's dialog out of the table; true when a `<Dial>`
    /// had put it there.
    pub(crate) fn close(&mut self) -> bool {
        let bridged = self.events.take().is_some();
        if bridged {
            self.caller.unbridge(self.dialogs);
        }
        bridged
    }
}

impl Drop for Bridge<'_> {
    /// A bridge never leaves its dialog in the table.
    fn drop(&mut self) {
        self.close();
    }
}

/// Rings the legs, relaying their provisional responses, until one is
/// answered, all fail, or the caller cancels.
async fn ring(
    caller: &Caller<'_>,
    mut fork: Fork,
    events: &mut mpsc::UnboundedReceiver<Event>,
) -> (Rung, bool) {
    let mut cancelled = false;
    let mut alerted = false;
    loop {
        tokio::select! {
            ring = fork.next() => match ring {
                Ring::Progress(resp) => {
                    alerted = true;
                    provisional(caller, &resp);
                }
                Ring::Answered(dialog) => return (Rung::Answered(dialog), true),
                Ring::Failed(_) if cancelled => return (Rung::Cancelled, alerted),
                Ring::Failed(o) => return (Rung::Failed(o), alerted),
            },
            Some(ev) = events.recv() => {
                if matches!(ev, Event::Cancel | Event::Bye) && !cancelled {
                    cancelled = true;
                    fork.cancel();
                }
            }
        }
    }
}

/// Relays a 180 / 183 of the leg (and its SDP) to the caller.
fn provisional(caller: &Caller<'_>, resp: &OwnedMessage) {
    let resp = resp.message();
    let Some(code @ 101..=199) = resp.status() else {
        return;
    };
    let body = resp.body();
    let mut extra = vec![("Contact", caller.contact())];
    if !body.is_empty() {
        extra.push((
            "Content-Type",
            resp.header("Content-Type").unwrap_or("application/sdp"),
        ));
    }
    caller
        .req
        .respond(code, build::reason_phrase(code), &extra, body);
}

/// The leg answered: 200 to the caller, then both legs stay up until
/// a BYE on either side or `limit` (`<Dial timeLimit>`, at most
/// [`MAX_CALL`]). Re-INVITEs, UPDATEs and INFOs of either side are
/// passed to the other and their answers back.
async fn talk(
    caller: &Caller<'_>,
    mut dialog: Box<Dialog>,
    events: &mut mpsc::UnboundedReceiver<Event>,
    limit: Duration,
) {
    enum Turn {
        Far(Held),
        Caller(Option<Event>),
        Retransmit,
    }
    let mut extra = vec![("Contact", caller.contact())];
    if !dialog.sdp.is_empty() {
        extra.push(("Content-Type", "application/sdp"));
    }
    let ok = caller.req.respond_kept(200, "OK", &extra, &dialog.sdp);
    let mut toward = Toward::new(caller);
    let end_by = Instant::now() + limit;
    // RFC 3261 13.3.1.4: a 2xx is retransmitted (over UDP) until the
    // ACK, which may carry the answer to an offer in the 2xx.
    let reliable = caller.replier.is_reliable();
    let mut first_acked = false;
    let mut pending = (!reliable).then(|| Pending::new(ok, caller.replier.clone()));
    loop {
        let left = end_by.saturating_duration_since(Instant::now());
        let next = pending.as_ref().and_then(|p| p.schedule.next_deadline());
        let turn = tokio::select! {
            held = dialog.hold(left) => Turn::Far(held),
            ev = events.recv() => Turn::Caller(ev),
            () = wait_until(next) => Turn::Retransmit,
        };
        match turn {
            Turn::Far(Held::Reinvite(req)) => {
                match reinvite_caller(&mut toward, &req, events).await {
                    Ok(answer) => dialog.respond(&req, 200, &answer).await,
                    Err(Some(code)) => dialog.respond(&req, code, b"").await,
                    Err(None) => {
                        // The caller hung up meanwhile.
                        dialog.respond(&req, 487, b"").await;
                        dialog.bye().await;
                        return;
                    }
                }
            }
            Turn::Far(Held::Request(req)) => {
                match request_caller(&mut toward, &req, events).await {
                    Ok((code, ct, body)) => {
                        dialog.respond_with(&req, code, ct.as_deref(), &body).await;
                    }
                    Err(Some(code)) => dialog.respond_with(&req, code, None, b"").await,
                    Err(None) => {
                        dialog.respond_with(&req, 481, None, b"").await;
                        dialog.bye().await;
                        return;
                    }
                }
            }
            Turn::Far(held) => {
                if matches!(held, Held::Elapsed) {
                    dialog.bye().await;
                }
                bye_caller(&mut toward, events).await;
                return;
            }
            Turn::Caller(Some(Event::Ack(answer))) => {
                if !first_acked && dialog.ack_pending() {
                    dialog.ack(Some(&answer)).await;
                }
                first_acked = true;
                pending = None;
            }
            Turn::Caller(Some(Event::Reinvite(r))) => {
                let code = caller_reinvite(caller, &mut dialog, &r).await;
                if (200..300).contains(&code.0) && !reliable {
                    pending = Some(Pending::new(code.1, r.replier().clone()));
                }
            }
            Turn::Caller(Some(Event::Request(r))) => {
                caller_request(caller, &mut dialog, &r).await;
            }
            Turn::Caller(Some(Event::Bye) | None) => {
                dialog.bye().await;
                return;
            }
            Turn::Caller(Some(_)) => {}
            Turn::Retransmit => {
                let Some(p) = pending.as_mut() else { continue };
                if !p.resend() {
                    // No ACK in 64*T1: the dialog is over (13.3.1.4).
                    tracing::info!(call_id = %caller.msg.call_id().unwrap_or_default(), "bridged caller never ACKed a 2xx");
                    dialog.bye().await;
                    bye_caller(&mut toward, events).await;
                    return;
                }
            }
        }
    }
}

/// A re-INVITE of the caller: its offer goes to the far end in a
/// re-INVITE of the leg, and the answer back in our 200. One without an
/// offer is answered with the far end's session as it stands. Returns
/// the status sent and the response.
async fn caller_reinvite(
    caller: &Caller<'_>,
    dialog: &mut Dialog,
    r: &OwnedRequest,
) -> (u16, Vec<u8>) {
    let req = r.request();
    let m = req.msg();
    let offer = m.body();
    let (code, sdp) = if offer.is_empty() {
        (200, dialog.sdp.clone())
    } else {
        match dialog.reinvite(offer).await {
            Ok(answer) => (200, answer),
            Err(code) => (code.max(300), Vec::new()),
        }
    };
    let mut extra = vec![("Contact", caller.contact())];
    if !sdp.is_empty() {
        extra.push(("Content-Type", "application/sdp"));
    }
    let bytes = req.respond_kept(code, build::reason_phrase(code), &extra, &sdp);
    (code, bytes)
}

/// Passes the far end's re-INVITE to the caller as a re-INVITE of
/// the inbound dialog and returns the caller's answer. `Err(Some(code))`
/// when the caller refused it (or never answered: 408), `Err(None)`
/// when the caller hung up meanwhile.
async fn reinvite_caller(
    toward: &mut Toward,
    far_request: &OwnedMessage,
    events: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<Vec<u8>, Option<u16>> {
    let offer = far_request.message().body().to_vec();
    let branch = message::branch();
    let cseq = toward.next_cseq();
    let invite = toward.request("INVITE", &branch, cseq, &offer);
    match transact(toward, invite, "INVITE", &branch, cseq, events).await? {
        (200..=299, _, answer) => Ok(answer),
        (code, _, _) => Err(Some(code)),
    }
}

/// An INFO or UPDATE of the caller: passed to the far end in the leg's
/// dialog, its answer back.
async fn caller_request(caller: &Caller<'_>, dialog: &mut Dialog, r: &OwnedRequest) {
    let req = r.request();
    let m = req.msg();
    let method = m.method().unwrap_or("INFO");
    let (code, ct, body) = match dialog
        .request(method, m.header("Content-Type"), m.body())
        .await
    {
        Ok(answer) => answer,
        Err(code) => (code, None, Vec::new()),
    };
    let mut extra = Vec::new();
    if method == "UPDATE" && (200..300).contains(&code) {
        extra.push(("Contact", caller.contact()));
    }
    if !body.is_empty() {
        extra.push((
            "Content-Type",
            ct.as_deref().unwrap_or("application/octet-stream"),
        ));
    }
    req.respond(code, build::reason_phrase(code), &extra, &body);
}

/// Passes the far end's INFO or UPDATE to the caller inside the
/// inbound dialog and returns the caller's final answer: status, body
/// type and body. `Err(Some(408))` when the caller never answered,
/// `Err(None)` when it hung up meanwhile.
async fn request_caller(
    toward: &mut Toward,
    far_request: &OwnedMessage,
    events: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<(u16, Option<String>, Vec<u8>), Option<u16>> {
    let m = far_request.message();
    let method = m.method().unwrap_or("INFO");
    let branch = message::branch();
    let cseq = toward.next_cseq();
    let request = toward.request_with(method, &branch, cseq, m.header("Content-Type"), m.body());
    transact(toward, request, method, &branch, cseq, events).await
}

/// One client transaction of ours towards the caller (RFC 3261 17.1):
/// `request` is sent, and over UDP again from T1 doubling up to T2 (an
/// INVITE stops once a provisional response came; the wait restarts
/// with each event seen) until its final response, which an INVITE
/// ACKs (a 2xx in a new transaction, a failure on the INVITE's
/// branch). The final status, body type and body; `Err(Some(408))`
/// after 64*T1 without one (a ringing INVITE included), `Err(None)`
/// when the caller hung up meanwhile. A re-INVITE of the caller
/// meanwhile gets 491.
async fn transact(
    toward: &Toward,
    request: Vec<u8>,
    method: &str,
    branch: &str,
    cseq: u32,
    events: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<(u16, Option<String>, Vec<u8>), Option<u16>> {
    let invite = method == "INVITE";
    toward.replier.send(request.clone());
    // TCP retransmits by itself. Timer E's schedule for an INVITE too,
    // and no interval of T2 after a provisional response.
    let mut schedule = Retransmit::timer_e(&TIMERS, Instant::now(), toward.replier.is_reliable());
    loop {
        tokio::select! {
            () = wait_until(schedule.next_deadline()) => {
                if !schedule.fire(Instant::now()) {
                    return Err(Some(408));
                }
                toward.replier.send(request.clone());
            }
            ev = events.recv() => {
                match ev {
                    Some(Event::Response { code, method: m, cseq: c, content_type, body })
                        if m == method && c == cseq =>
                    {
                        if code >= 200 {
                            if invite {
                                let fresh = message::branch();
                                let ack_branch = if code < 300 { fresh.as_str() } else { branch };
                                toward.replier.send(toward.request("ACK", ack_branch, cseq, b""));
                            }
                            return Ok((code, content_type, body));
                        }
                        // An INVITE waits once it rings.
                        if invite {
                            schedule.stop();
                        }
                    }
                    Some(Event::Bye) | None => return Err(None),
                    Some(Event::Reinvite(r)) => glare(&r),
                    Some(_) => {}
                }
                schedule.restart(Instant::now());
            }
        }
    }
}

/// A caller's re-INVITE while ours is pending: 491 (RFC 3261 14.2).
fn glare(r: &OwnedRequest) {
    r.request().respond(491, "Request Pending", &[], b"");
}

/// Sends the caller a BYE in the inbound dialog and waits for its
/// answer (retransmitting over UDP, Timer F at 64*T1).
async fn bye_caller(toward: &mut Toward, events: &mut mpsc::UnboundedReceiver<Event>) {
    let branch = message::branch();
    let cseq = toward.next_cseq();
    let bye = toward.request("BYE", &branch, cseq, b"");
    if transact(toward, bye, "BYE", &branch, cseq, events)
        .await
        .is_err()
    {
        tracing::debug!("bridged caller did not answer the BYE");
    }
}

/// A 2xx sent to the caller, retransmitted over UDP until its ACK (RFC
/// 3261 13.3.1.4).
struct Pending {
    bytes: Vec<u8>,
    replier: Replier,
    schedule: Retransmit,
}

impl Pending {
    fn new(bytes: Vec<u8>, replier: Replier) -> Self {
        Self {
            bytes,
            replier,
            schedule: Retransmit::timer_g(&TIMERS, Instant::now(), false),
        }
    }

    /// Sends it again; false once 64*T1 went by without an ACK.
    fn resend(&mut self) -> bool {
        if !self.schedule.fire(Instant::now()) {
            return false;
        }
        self.replier.send(self.bytes.clone());
        true
    }
}

/// The edge's requests to the caller, inside the inbound dialog: the
/// caller's Contact as Request-URI, its Record-Route as the route set,
/// From and To swapped, our own CSeq.
///
/// They go to the caller's Contact (the dialog's remote target, RFC 3261
/// 12.2.1.1): over UDP to its address when the Contact host is an IP
/// literal, to the INVITE's source address when it is a name (names are
/// never resolved) or when the INVITE came through record-routing proxies
/// (the source is the nearest of them); over TCP on the INVITE's
/// connection.
struct Toward {
    target: String,
    from: String,
    to: String,
    call_id: String,
    routes: Vec<String>,
    sent_by: String,
    /// Our Contact, as in the 200 of the caller's INVITE.
    contact: String,
    replier: Replier,
    cseq: u32,
}

impl Toward {
    fn new(caller: &Caller<'_>) -> Self {
        let m = caller.msg;
        let target = m
            .contacts()
            .filter_map(Result::ok)
            .map(|c| c.uri.to_owned())
            .next()
            .or_else(|| m.from().ok().map(|f| f.uri.to_owned()))
            .unwrap_or_default();
        let replier = match contact_addr(&target) {
            Some(dst) if m.header("Record-Route").is_none() => caller.replier.towards(dst),
            _ => caller.replier.clone(),
        };
        let to_header = m.header("To").unwrap_or_default();
        let from = if m.to().ok().and_then(|t| t.tag).is_some() {
            to_header.to_owned()
        } else {
            format!("{to_header};tag={}", caller.to_tag())
        };
        Self {
            target,
            from,
            to: m.header("From").unwrap_or_default().to_owned(),
            call_id: m.call_id().unwrap_or_default().to_owned(),
            routes: m
                .headers("Record-Route")
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect(),
            sent_by: caller.sent_by().to_owned(),
            contact: caller.contact().to_owned(),
            replier,
            cseq: 0,
        }
    }

    fn next_cseq(&mut self) -> u32 {
        self.cseq += 1;
        self.cseq
    }

    fn request(&self, method: &str, branch: &str, cseq: u32, sdp: &[u8]) -> Vec<u8> {
        self.request_with(method, branch, cseq, Some("application/sdp"), sdp)
    }

    /// A request with a body of `content_type`; our Contact in an INVITE
    /// or UPDATE.
    fn request_with(
        &self,
        method: &str,
        branch: &str,
        cseq: u32,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Vec<u8> {
        let transport = self.replier.transport().via_name();
        message::Dialog {
            remote_target: &self.target,
            route: &self.routes,
            from: &self.from,
            to: &self.to,
            call_id: &self.call_id,
            contact: &self.contact,
            transport,
            sent_by: &self.sent_by,
        }
        .request(
            method,
            branch,
            cseq,
            method == "INVITE" || method == "UPDATE",
            &[],
            (!body.is_empty()).then(|| (content_type.unwrap_or("application/octet-stream"), body)),
        )
    }
}

/// The address of a Contact URI whose host is an IP literal (port 5060
/// unless written).
fn contact_addr(uri: &str) -> Option<SocketAddr> {
    let u = sipauth_sip::parse_uri(uri).ok()?;
    let ip: std::net::IpAddr = u.host_unbracketed().parse().ok()?;
    Some(SocketAddr::new(ip, u.port.unwrap_or(5060)))
}

/// `host[:port]` of the Request-URI: where the caller reached the edge.
fn edge_sent_by(msg: &Message<'_>) -> String {
    msg.sip_request_uri()
        .and_then(Result::ok)
        .map(|u| match u.port {
            Some(p) => format!("{}:{p}", u.host),
            None => u.host.to_owned(),
        })
        .unwrap_or_default()
}

/// The edge's Contact towards the caller, over the transport it came by.
fn edge_contact(msg: &Message<'_>, transport: Transport) -> String {
    let user = msg
        .sip_request_uri()
        .and_then(Result::ok)
        .and_then(|u| u.user.map(str::to_owned))
        .unwrap_or_default();
    format!(
        "<sip:{}@{}{}>",
        message::escape_user(&user),
        edge_sent_by(msg),
        transport.uri_param()
    )
}

#[cfg(test)]
mod tests;
