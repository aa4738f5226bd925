//! A scripted SIP provider for one call, over UDP, TCP or TLS, in a
//! namespace: the far end of the edge's outbound legs.
//!
//! It challenges with 407 (MD5 and SHA-256, MD5 first) and checks the
//! answer with the digest crate (a wrong one gets 403), then does what its
//! [`Script`] says. It answers re-INVITEs, CANCELs and BYEs, keeps every
//! request it received, and re-sends its last response to a retransmitted
//! request instead of judging it again.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::netns::Netns;
use crate::wire::{Wire, token};

pub const REALM: &str = "provider.test";
pub const USER: &str = "prov-user";
/// The password the provider accepts.
pub const PASSWORD: &str = "Prov-Pass-7781";

/// What the provider does with the INVITE (after its credentials, when it
/// challenges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// 180, then 200 with SDP (an answer, or an offer when the INVITE had
    /// none).
    Answer,
    /// This final status.
    Final(u16),
    /// Nothing more (the INVITE is never answered).
    Silent,
    /// 180 and nothing more until a CANCEL (200, then 487).
    Ring,
    /// 180, and when the CANCEL comes, a 200 for the INVITE instead of 487:
    /// the answer crosses the CANCEL.
    RingThenAnswerTheCancel,
}

#[derive(Debug, Clone, Copy)]
pub struct Script {
    /// 407 first, and check the credentials.
    pub challenge: bool,
    pub then: Then,
    /// After the ACK of our 200, hang up with a BYE this much later.
    pub bye_after: Option<Duration>,
    /// After the final response to that BYE, send the same BYE again (its
    /// retransmission, as if the response were lost) this much later, and
    /// wait for its answer too.
    pub bye_again_after: Option<Duration>,
    /// After the ACK of our 200, send a re-INVITE with a new offer
    /// ([`REOFFER`]) this much later.
    pub reinvite_after: Option<Duration>,
    /// After the ACK of our 200, send an INFO with a DTMF digit
    /// ([`DTMF`]) this much later.
    pub info_after: Option<Duration>,
}

impl Script {
    #[must_use]
    pub const fn new(challenge: bool, then: Then) -> Self {
        Self {
            challenge,
            then,
            bye_after: None,
            bye_again_after: None,
            reinvite_after: None,
            info_after: None,
        }
    }
}

/// Everything the provider received.
#[derive(Debug, Default, Clone)]
pub struct Saw {
    /// Requests, raw, in order (retransmissions included).
    pub requests: Vec<String>,
    /// Responses to the provider's own BYE.
    pub responses: Vec<String>,
    /// Whether the dialog ended with a BYE either way.
    pub bye: bool,
}

impl Saw {
    /// The requests of `method`.
    #[must_use]
    pub fn of(&self, method: &str) -> Vec<&str> {
        let prefix = format!("{method} ");
        self.requests
            .iter()
            .filter(|r| r.starts_with(&prefix))
            .map(String::as_str)
            .collect()
    }

    /// The last request of `method`, or "" when none came.
    #[must_use]
    pub fn last(&self, method: &str) -> &str {
        self.of(method).last().copied().unwrap_or_default()
    }

    /// The value of `header` in `raw`.
    #[must_use]
    pub fn header<'a>(raw: &'a str, header: &str) -> Option<&'a str> {
        raw.split("\r\n\r\n").next()?.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case(header)
                .then_some(value.trim())
        })
    }

    /// The body of `raw`.
    #[must_use]
    pub fn body(raw: &str) -> &str {
        raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

pub struct Provider {
    pub addr: SocketAddr,
    pub tcp: bool,
    /// Over TLS (then `tcp` too).
    pub tls: bool,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Saw>,
}

impl Provider {
    /// Listens on `addr` in `ns` and plays `script` for one call.
    #[must_use]
    pub fn start(ns: &Netns, addr: SocketAddr, tcp: bool, script: Script) -> Self {
        Self::start_with(ns, addr, tcp, None, script)
    }

    /// Listens on `addr` in `ns` for TLS with `tls`'s certificate and
    /// plays `script` for one call.
    #[must_use]
    pub fn start_tls(
        ns: &Netns,
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        script: Script,
    ) -> Self {
        Self::start_with(ns, addr, true, Some(tls), script)
    }

    fn start_with(
        ns: &Netns,
        addr: SocketAddr,
        tcp: bool,
        tls: Option<Arc<rustls::ServerConfig>>,
        script: Script,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = tcp.then(|| ns.enter(|| TcpListener::bind(addr).expect("bind provider")));
        let wire = (!tcp).then(|| Wire::udp(ns, addr, None));
        let s = stop.clone();
        let over_tls = tls.is_some();
        let handle = std::thread::spawn(move || {
            let wire = match (wire, listener) {
                (Some(w), _) => Some(w),
                (None, Some(l)) => {
                    let deadline = Instant::now() + Duration::from_secs(20);
                    loop {
                        let accepted = match &tls {
                            Some(config) => {
                                Wire::accept_tls(&l, Duration::from_millis(50), config.clone())
                            }
                            None => Wire::accept(&l, Duration::from_millis(50)),
                        };
                        if let Some(w) = accepted {
                            break Some(w);
                        }
                        if s.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break None;
                        }
                    }
                }
                (None, None) => None,
            };
            match wire {
                Some(w) => Far::new(w, script, addr).run(&s),
                None => Saw::default(),
            }
        });
        Self {
            addr,
            tcp,
            tls: over_tls,
            stop,
            handle,
        }
    }

    /// The URI that reaches it.
    #[must_use]
    pub fn uri(&self) -> String {
        let host = match self.addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let transport = match (self.tcp, self.tls) {
            (_, true) => ";transport=tls",
            (true, false) => ";transport=tcp",
            (false, false) => "",
        };
        format!("sip:bob@{host}:{}{transport}", self.addr.port())
    }

    /// Waits up to `grace` for the call to end by itself, then stops and
    /// returns what was seen.
    #[must_use]
    pub fn finish(self, grace: Duration) -> Saw {
        let deadline = Instant::now() + grace;
        while !self.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("provider thread")
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The body of the provider's INFO (`application/dtmf-relay`).
pub const DTMF: &str = "Signal=5\r\nDuration=160\r\n";
/// The offer of the provider's own re-INVITE.
pub const REOFFER: &str = "v=0\r\no=provider 1 2 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 4004 RTP/AVP 0\r\n";
const OFFER: &str = "v=0\r\no=provider 1 1 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const ANSWER: &str = "v=0\r\no=provider 1 1 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";

struct Far {
    wire: Wire,
    script: Script,
    addr: SocketAddr,
    key: sipauth_digest::NonceKey,
    nc: sipauth_digest::NcTracker,
    ha1: sipauth_digest::Ha1Set,
    saw: Saw,
    /// The last response to each request, by branch and method (`None`:
    /// seen, not answered).
    sent: HashMap<String, Option<Vec<u8>>>,
    /// The initial INVITE that was answered or is ringing (raw).
    invite: Option<Vec<u8>>,
    bye_at: Option<Instant>,
    /// Our BYE (raw), and when to send it again ([`Script::bye_again_after`]).
    bye: Option<String>,
    bye_again_at: Option<Instant>,
    /// Sent again, its answer not yet here.
    bye_again_unanswered: bool,
    reinvite_at: Option<Instant>,
    info_at: Option<Instant>,
    /// Our next CSeq in the dialog.
    cseq: u32,
}

impl Far {
    fn new(wire: Wire, script: Script, addr: SocketAddr) -> Self {
        Self {
            wire,
            script,
            addr,
            key: sipauth_digest::NonceKey::random(),
            nc: sipauth_digest::NcTracker::new(300, 1000),
            ha1: sipauth_digest::Ha1Set::new(USER, REALM, PASSWORD),
            saw: Saw::default(),
            sent: HashMap::new(),
            invite: None,
            bye_at: None,
            bye: None,
            bye_again_at: None,
            bye_again_unanswered: false,
            reinvite_at: None,
            info_at: None,
            cseq: 1,
        }
    }

    fn run(mut self, stop: &AtomicBool) -> Saw {
        while !stop.load(Ordering::Relaxed) && !self.ended() {
            if self.bye_at.is_some_and(|t| Instant::now() >= t) {
                self.bye_at = None;
                self.send_request("BYE", "");
            }
            if self.bye_again_at.is_some_and(|t| Instant::now() >= t) {
                self.bye_again_at = None;
                if let Some(bye) = &self.bye {
                    self.wire.send(bye.as_bytes());
                    self.bye_again_unanswered = true;
                }
            }
            if self.reinvite_at.is_some_and(|t| Instant::now() >= t) {
                self.reinvite_at = None;
                self.send_request("INVITE", REOFFER);
            }
            if self.info_at.is_some_and(|t| Instant::now() >= t) {
                self.info_at = None;
                self.send_request("INFO", DTMF);
            }
            let Some((raw, _)) = self.wire.recv(Duration::from_millis(20)) else {
                if self.wire.is_tcp() && !stop.load(Ordering::Relaxed) {
                    // A closed stream ends the call.
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            };
            self.handle(&raw);
        }
        self.saw
    }

    fn respond(
        &mut self,
        m: &sipauth_sip::Message<'_>,
        code: u16,
        extra: &[(&str, &str)],
        body: &str,
    ) {
        let contact = format!("<sip:bob@{}{}>", self.addr, self.wire.uri_param());
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if (180..300).contains(&code) && m.method() == Some("INVITE") {
            headers.push(("Contact", &contact));
        }
        if !body.is_empty() {
            headers.push(("Content-Type", "application/sdp"));
        }
        let src = self.wire_peer();
        let bytes = sipauth_sip::build::response(
            m,
            code,
            sipauth_sip::build::reason_phrase(code),
            src,
            Some("prov1"),
            &headers,
            body.as_bytes(),
        );
        self.wire.send(&bytes);
        if let Some(b) = m.top_via().ok().and_then(|v| v.branch) {
            self.sent
                .insert(format!("{b}/{}", m.cseq().map_or("", |c| c.1)), Some(bytes));
        }
    }

    fn wire_peer(&self) -> SocketAddr {
        match &self.wire {
            Wire::Udp { peer, .. } => peer.unwrap_or(self.addr),
            Wire::Tcp { peer, .. } => *peer,
        }
    }

    fn handle(&mut self, raw: &[u8]) {
        let Ok(m) = sipauth_sip::parse(raw) else {
            return;
        };
        let text = String::from_utf8_lossy(raw).into_owned();
        let Some(method) = m.method() else {
            self.saw.responses.push(text);
            let status = m.status().unwrap_or(0);
            match m.cseq() {
                Ok((_, "BYE")) if status >= 200 => {
                    self.saw.bye = true;
                    self.bye_again_unanswered = false;
                    if let Some(after) = self.script.bye_again_after.take() {
                        self.bye_again_at = Some(Instant::now() + after);
                    }
                }
                Ok((cseq, "INVITE")) if (200..300).contains(&status) => {
                    // Our re-INVITE was answered: ACK it.
                    let ack = self.request("ACK", "", cseq, m.header("To"));
                    self.wire.send(ack.as_bytes());
                }
                _ => {}
            }
            return;
        };
        self.saw.requests.push(text);
        let key = m
            .top_via()
            .ok()
            .and_then(|v| v.branch)
            .map(|b| format!("{b}/{}", m.cseq().map_or("", |c| c.1)));
        if method != "ACK"
            && let Some(k) = &key
        {
            match self.sent.get(k) {
                // A retransmission: the same answer again, or none again.
                Some(previous) => {
                    if let Some(p) = previous.clone() {
                        self.wire.send(&p);
                    }
                    return;
                }
                None => {
                    self.sent.insert(k.clone(), None);
                }
            }
        }
        let in_dialog = m.to().ok().and_then(|t| t.tag).is_some();
        match method {
            "INVITE" if in_dialog => {
                let body = if m.body().is_empty() { OFFER } else { ANSWER };
                self.respond(&m, 200, &[], body);
            }
            "INVITE" => self.invite(&m, raw),
            "ACK" => {
                let answered = self.invite.is_some()
                    && matches!(
                        self.script.then,
                        Then::Answer | Then::RingThenAnswerTheCancel
                    );
                if in_dialog && answered && self.bye_at.is_none() && self.reinvite_at.is_none() {
                    if let Some(after) = self.script.bye_after {
                        self.bye_at = Some(Instant::now() + after);
                    }
                    if let Some(after) = self.script.reinvite_after.take() {
                        self.reinvite_at = Some(Instant::now() + after);
                    }
                    if let Some(after) = self.script.info_after.take() {
                        self.info_at = Some(Instant::now() + after);
                    }
                }
            }
            "CANCEL" => {
                self.respond(&m, 200, &[], "");
                if let Some(invite) = self.invite.clone()
                    && let Ok(inv) = sipauth_sip::parse(&invite)
                {
                    if self.script.then == Then::RingThenAnswerTheCancel {
                        let body = if inv.body().is_empty() { OFFER } else { ANSWER };
                        self.respond(&inv, 200, &[], body);
                    } else {
                        self.respond(&inv, 487, &[], "");
                    }
                }
            }
            "BYE" => {
                self.respond(&m, 200, &[], "");
                self.saw.bye = true;
            }
            // An UPDATE with an offer gets an answer.
            "UPDATE" if !m.body().is_empty() => self.respond(&m, 200, &[], ANSWER),
            _ => self.respond(&m, 200, &[], ""),
        }
    }

    fn invite(&mut self, m: &sipauth_sip::Message<'_>, raw: &[u8]) {
        if self.script.challenge {
            let creds = m
                .header("Proxy-Authorization")
                .and_then(|v| sipauth_sip::parse_credentials(v).ok());
            let Some(c) = creds else {
                let nonce = self.key.issue(REALM, unix_now());
                let values = [
                    sipauth_digest::Algorithm::Md5,
                    sipauth_digest::Algorithm::Sha256,
                ]
                .map(|a| sipauth_digest::challenge(a, REALM, &nonce, None, false));
                let extra: Vec<(&str, &str)> = values
                    .iter()
                    .map(|v| ("Proxy-Authenticate", v.as_str()))
                    .collect();
                self.respond(m, 407, &extra, "");
                return;
            };
            let ha1 = self.ha1.clone();
            let verdict = sipauth_digest::verify(
                &c,
                "INVITE",
                REALM,
                &self.key,
                &self.nc,
                unix_now(),
                300,
                |u| (u == USER).then(|| ha1.clone()),
            );
            if format!("{verdict:?}") != "Ok" {
                self.respond(m, 403, &[], "");
                return;
            }
        }
        let body = if m.body().is_empty() { OFFER } else { ANSWER };
        match self.script.then {
            Then::Answer => {
                self.respond(m, 180, &[], "");
                self.invite = Some(raw.to_vec());
                self.respond(m, 200, &[], body);
            }
            Then::Final(code) => self.respond(m, code, &[], ""),
            Then::Silent => {}
            Then::Ring | Then::RingThenAnswerTheCancel => {
                self.respond(m, 180, &[], "");
                self.invite = Some(raw.to_vec());
            }
        }
    }

    /// A request of ours in the dialog of the answered INVITE, to its
    /// Contact, on this socket; `to` replaces the far end's To value.
    fn request(&self, method: &str, sdp: &str, cseq: u32, to: Option<&str>) -> String {
        let Some(m) = self
            .invite
            .as_deref()
            .and_then(|i| sipauth_sip::parse(i).ok())
        else {
            return String::new();
        };
        let target = m
            .contacts()
            .filter_map(Result::ok)
            .map(|c| c.uri.to_owned())
            .next()
            .unwrap_or_default();
        let mut r = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
             From: {};tag=prov1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            self.wire.via(),
            self.addr,
            token(),
            m.header("To").unwrap_or_default(),
            to.or_else(|| m.header("From")).unwrap_or_default(),
            m.call_id().unwrap_or_default(),
        );
        if method == "INVITE" {
            let _ = write!(r, "Contact: <sip:bob@{}>\r\n", self.addr);
        }
        if !sdp.is_empty() {
            let ty = if method == "INFO" {
                "application/dtmf-relay"
            } else {
                "application/sdp"
            };
            let _ = write!(r, "Content-Type: {ty}\r\n");
        }
        let _ = write!(r, "Content-Length: {}\r\n\r\n{sdp}", sdp.len());
        r
    }

    /// Sends a request in the dialog (BYE, or a re-INVITE with `sdp`).
    fn send_request(&mut self, method: &str, sdp: &str) {
        self.cseq += 1;
        let r = self.request(method, sdp, self.cseq, None);
        self.wire.send(r.as_bytes());
        if method == "BYE" {
            self.bye = Some(r);
        }
    }

    /// Whether the dialog is over: a BYE either way answered, and ours
    /// sent again and answered when the script asks for it.
    fn ended(&self) -> bool {
        self.saw.bye && self.bye_again_at.is_none() && !self.bye_again_unanswered
    }
}
