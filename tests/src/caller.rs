//! A scripted SIP caller for one call to the edge, over UDP, TCP or TLS,
//! from a caller namespace: INVITE (with or without an offer), the final
//! response, ACK, BYE or CANCEL, and the edge's own BYE.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::wire::{Wire, token};

/// The caller's offer.
pub const OFFER: &str = "v=0\r\no=caller 1 1 IN IP4 192.0.2.60\r\ns=-\r\nc=IN IP4 192.0.2.60\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
/// The caller's answer, when the edge's 200 carried the offer.
pub const ANSWER: &str = "v=0\r\no=caller 1 1 IN IP4 192.0.2.60\r\ns=-\r\nc=IN IP4 192.0.2.60\r\nt=0 0\r\nm=audio 5002 RTP/AVP 0\r\n";

/// The final response to the INVITE, and what came before it.
#[derive(Debug)]
pub struct Final {
    pub code: u16,
    pub raw: String,
    pub provisional: Vec<u16>,
    /// Whole provisional responses, raw.
    pub provisional_raw: Vec<String>,
}

pub struct Caller {
    wire: Wire,
    uri: String,
    from: String,
    to: String,
    call_id: String,
    branch: String,
    /// The CSeq number of the last INVITE (the ACK and CANCEL take it).
    invite_cseq: u32,
    cseq: u32,
    local: SocketAddr,
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl Caller {
    /// Sends an INVITE for `app` from `local_ip` (as `from_user`) to the
    /// edge, with `sdp` as its offer.
    #[must_use]
    pub fn invite(
        ns: &Netns,
        local_ip: IpAddr,
        edge: SocketAddr,
        app: &str,
        from_user: &str,
        tcp: bool,
        sdp: Option<&str>,
    ) -> Self {
        let wire = if tcp {
            Wire::connect(ns, edge)
        } else {
            Wire::udp(ns, SocketAddr::new(local_ip, 0), Some(edge))
        };
        Self::invite_on(wire, local_ip, edge, app, from_user, sdp)
    }

    /// Sends an INVITE for `app` on `wire` (already connected to the edge
    /// at `edge`, over TLS for instance).
    #[must_use]
    pub fn invite_on(
        wire: Wire,
        local_ip: IpAddr,
        edge: SocketAddr,
        app: &str,
        from_user: &str,
        sdp: Option<&str>,
    ) -> Self {
        let local = wire.local();
        let uri = format!("sip:{app}@{}:{}", host(edge.ip()), edge.port());
        let mut c = Self {
            wire,
            from: format!("<sip:{from_user}@{}>;tag={}", host(local_ip), token()),
            to: format!("<{uri}>"),
            uri,
            call_id: format!("{}@rig", token()),
            branch: format!("z9hG4bK{}", token()),
            invite_cseq: 1,
            cseq: 1,
            local,
        };
        let invite = c.request("INVITE", &c.uri.clone(), &c.branch.clone(), 1, sdp);
        c.wire.send(invite.as_bytes());
        c
    }

    fn request(
        &self,
        method: &str,
        uri: &str,
        branch: &str,
        cseq: u32,
        body: Option<&str>,
    ) -> String {
        let body = body.unwrap_or("");
        let mut r = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{}{}>\r\n",
            self.wire.via(),
            self.local,
            self.from,
            self.to,
            self.call_id,
            self.local,
            self.wire.uri_param(),
        );
        if !body.is_empty() {
            r.push_str("Content-Type: application/sdp\r\n");
        }
        let _ = write!(r, "Content-Length: {}\r\n\r\n{body}", body.len());
        r
    }

    /// Answers the 401/407 `challenged` with a new INVITE (same Call-ID and
    /// From tag, To without a tag, the next CSeq, a new branch) carrying
    /// the credentials for its challenge of `algorithm` (`MD5`,
    /// `SHA-256`). `false` when no challenge offers that algorithm.
    pub fn authenticate(
        &mut self,
        challenged: &Final,
        algorithm: &str,
        user: &str,
        password: &str,
        sdp: Option<&str>,
    ) -> bool {
        let Ok(m) = sipauth_sip::parse(challenged.raw.as_bytes()) else {
            return false;
        };
        let (challenge_header, answer_header) = if challenged.code == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let uri = self.uri.clone();
        let Some(credentials) = m
            .headers(challenge_header)
            .filter_map(|v| sipauth_sip::parse_challenge(v).ok())
            .find(|c| c.algorithm.unwrap_or("MD5").eq_ignore_ascii_case(algorithm))
            .and_then(|c| sipauth_digest::authorization(&c, user, password, "INVITE", &uri, 1))
        else {
            return false;
        };
        self.to = format!("<{uri}>");
        self.cseq += 1;
        self.invite_cseq = self.cseq;
        self.branch = format!("z9hG4bK{}", token());
        let invite = self
            .request("INVITE", &uri, &self.branch.clone(), self.cseq, sdp)
            .replacen(
                "Max-Forwards: 70\r\n",
                &format!("Max-Forwards: 70\r\n{answer_header}: {credentials}\r\n"),
                1,
            );
        self.wire.send(invite.as_bytes());
        true
    }

    /// The final response to the INVITE within `timeout`; a non-2xx is
    /// ACKed (RFC 3261 17.1.1.3), a 2xx is left to [`Caller::ack`].
    pub fn final_response(&mut self, timeout: Duration) -> Option<Final> {
        let deadline = Instant::now() + timeout;
        let mut provisional = Vec::new();
        let mut provisional_raw = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, _) = self.wire.recv(left)?;
            let text = String::from_utf8_lossy(&raw).into_owned();
            let Ok(m) = sipauth_sip::parse(&raw) else {
                continue;
            };
            if m.cseq().map(|c| c.1) != Ok("INVITE") {
                continue;
            }
            let Some(code) = m.status() else {
                continue;
            };
            if code < 200 {
                provisional.push(code);
                provisional_raw.push(text);
                continue;
            }
            if let Some(to) = m.header("To") {
                to.clone_into(&mut self.to);
            }
            if code >= 300 {
                let ack = self.request(
                    "ACK",
                    &self.uri.clone(),
                    &self.branch.clone(),
                    self.invite_cseq,
                    None,
                );
                self.wire.send(ack.as_bytes());
            }
            return Some(Final {
                code,
                raw: text,
                provisional,
                provisional_raw,
            });
        }
    }

    /// Waits for a provisional response above 100 (ringing); its status.
    pub fn wait_ringing(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, _) = self.wire.recv(left)?;
            let Ok(m) = sipauth_sip::parse(&raw) else {
                continue;
            };
            if let Some(code @ 101..=199) = m.status() {
                return Some(code);
            }
        }
    }

    /// ACKs the 2xx (a new branch), with `body` when the 2xx carried the
    /// offer.
    pub fn ack(&mut self, body: Option<&str>) {
        let ack = self.request(
            "ACK",
            &self.uri.clone(),
            &format!("z9hG4bK{}", token()),
            self.invite_cseq,
            body,
        );
        self.wire.send(ack.as_bytes());
    }

    /// CANCELs the INVITE; true when the CANCEL got its 200.
    pub fn cancel(&mut self) -> bool {
        // CANCEL: the INVITE's branch, Request-URI and CSeq number, and the
        // To without a tag.
        let to = std::mem::replace(&mut self.to, format!("<{}>", self.uri));
        let cancel = self.request(
            "CANCEL",
            &self.uri.clone(),
            &self.branch.clone(),
            self.invite_cseq,
            None,
        );
        self.to = to;
        self.wire.send(cancel.as_bytes());
        self.response_to("CANCEL", Duration::from_secs(5)) == Some(200)
    }

    /// Hangs up with a BYE; the status it got.
    pub fn bye(&mut self) -> Option<u16> {
        self.cseq += 1;
        let bye = self.request(
            "BYE",
            &self.uri.clone(),
            &format!("z9hG4bK{}", token()),
            self.cseq,
            None,
        );
        self.wire.send(bye.as_bytes());
        self.response_to("BYE", Duration::from_secs(5))
    }

    fn response_to(&mut self, method: &str, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, _) = self.wire.recv(left)?;
            let Ok(m) = sipauth_sip::parse(&raw) else {
                continue;
            };
            if m.cseq().map(|c| c.1) == Ok(method)
                && let Some(s) = m.status().filter(|s| *s >= 200)
            {
                return Some(s);
            }
        }
    }

    /// Sends a re-INVITE with `sdp` in the dialog; its final status and
    /// the response, raw (a 2xx is ACKed).
    pub fn reinvite(&mut self, sdp: &str) -> Option<(u16, String)> {
        self.cseq += 1;
        let cseq = self.cseq;
        let branch = format!("z9hG4bK{}", token());
        let r = self.request("INVITE", &self.uri.clone(), &branch, cseq, Some(sdp));
        self.wire.send(r.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, _) = self.wire.recv(left)?;
            let Ok(m) = sipauth_sip::parse(&raw) else {
                continue;
            };
            if m.cseq() != Ok((cseq, "INVITE")) {
                continue;
            }
            let Some(code) = m.status().filter(|s| *s >= 200) else {
                continue;
            };
            let ack_branch = if code < 300 {
                format!("z9hG4bK{}", token())
            } else {
                branch.clone()
            };
            let ack = self.request("ACK", &self.uri.clone(), &ack_branch, cseq, None);
            self.wire.send(ack.as_bytes());
            return Some((code, String::from_utf8_lossy(&raw).into_owned()));
        }
    }

    /// Sends an INFO or UPDATE in the dialog with a body of `content_type`;
    /// its final status and the response, raw.
    pub fn in_dialog(
        &mut self,
        method: &str,
        content_type: &str,
        body: &str,
    ) -> Option<(u16, String)> {
        self.cseq += 1;
        let cseq = self.cseq;
        let branch = format!("z9hG4bK{}", token());
        let r = self
            .request(method, &self.uri.clone(), &branch, cseq, Some(body))
            .replace(
                "Content-Type: application/sdp",
                &format!("Content-Type: {content_type}"),
            );
        self.wire.send(r.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, _) = self.wire.recv(left)?;
            let Ok(m) = sipauth_sip::parse(&raw) else {
                continue;
            };
            if m.cseq() == Ok((cseq, method))
                && let Some(code) = m.status().filter(|s| *s >= 200)
            {
                return Some((code, String::from_utf8_lossy(&raw).into_owned()));
            }
        }
    }

    /// Waits for a `method` request from the edge and answers it 200 (no
    /// body); the request, raw.
    pub fn answer_request(&mut self, method: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, src) = self.wire.recv(left)?;
            let Ok(m) = sipauth_sip::parse(&raw) else {
                continue;
            };
            if m.method() == Some(method) {
                let ok = sipauth_sip::build::response(&m, 200, "OK", src, None, &[], b"");
                self.wire.send_to(&ok, src);
                return Some(String::from_utf8_lossy(&raw).into_owned());
            }
        }
    }

    /// Waits for a re-INVITE from the edge, answers it 200 with `sdp` and
    /// waits for its ACK; the re-INVITE and the ACK, raw.
    pub fn answer_reinvite(&mut self, sdp: &str, timeout: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + timeout;
        let invite = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, src) = self.wire.recv(left)?;
            let Ok(m) = sipauth_sip::parse(&raw) else {
                continue;
            };
            if m.method() == Some("INVITE") {
                let contact = format!("<sip:caller@{}>", self.local);
                let ok = sipauth_sip::build::response(
                    &m,
                    200,
                    "OK",
                    src,
                    None,
                    &[("Contact", &contact), ("Content-Type", "application/sdp")],
                    sdp.as_bytes(),
                );
                self.wire.send_to(&ok, src);
                break String::from_utf8_lossy(&raw).into_owned();
            }
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, _) = self.wire.recv(left)?;
            if raw.starts_with(b"ACK ") {
                return Some((invite, String::from_utf8_lossy(&raw).into_owned()));
            }
        }
    }

    /// Waits for the edge's BYE and answers it 200; the BYE, raw.
    pub fn await_bye(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, src) = self.wire.recv(left)?;
            let Ok(m) = sipauth_sip::parse(&raw) else {
                continue;
            };
            if m.method() == Some("BYE") {
                let ok = sipauth_sip::build::response(&m, 200, "OK", src, None, &[], b"");
                self.wire.send_to(&ok, src);
                return Some(String::from_utf8_lossy(&raw).into_owned());
            }
        }
    }
}
