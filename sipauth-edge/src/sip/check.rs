//! What a request must be before it is judged, and the answer when it is
//! not (RFC 3261 8.1.1, 8.2.2.1, 18.3; the refusals RFC 4475 and RFC 5118
//! ask for).
//!
//! A version other than SIP/2.0 gets 505; a Request-URI scheme other than
//! sip or sips gets 416; a missing, repeated or unreadable mandatory header,
//! a CSeq method that is not the request's, URI headers in the
//! Request-URI, an unreadable Contact in a REGISTER, or a message that
//! cannot be framed gets 400 naming the fault. Each refusal is one
//! response, sent once (no transaction): a refused request costs one reply.
//! Responses, ACKs and requests without a usable top Via are never
//! answered; they are counted and dropped.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use sipauth_sip::{Message, ParseError};

use super::request::{ToTags, response};
use crate::metrics::Metrics;
use crate::transport::Replier;

/// Why a request is refused before it is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// RFC 3261 8.2.1 / 21.5.20: 505.
    #[error("Version Not Supported")]
    Version,
    /// RFC 3261 8.2.2.1: 416.
    #[error("Unsupported URI Scheme")]
    Scheme,
    /// RFC 3261 8.1.1, 18.3, 21.4.1: 400, naming the fault.
    #[error("Bad Request ({0})")]
    Malformed(ParseError),
}

impl Refusal {
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Self::Version => 505,
            Self::Scheme => 416,
            Self::Malformed(_) => 400,
        }
    }
}

/// Checks a parsed request as a whole.
pub fn request(msg: &Message<'_>) -> Result<(), Refusal> {
    if !msg.version().eq_ignore_ascii_case("SIP/2.0") {
        return Err(Refusal::Version);
    }
    msg.validate().map_err(|e| match e {
        ParseError::UnsupportedVersion => Refusal::Version,
        e => Refusal::Malformed(e),
    })?;
    if msg.sip_request_uri() == Some(Err(ParseError::UnsupportedScheme)) {
        return Err(Refusal::Scheme);
    }
    if msg.method() == Some("REGISTER") {
        for c in msg.contacts() {
            c.map_err(Refusal::Malformed)?;
        }
    }
    Ok(())
}

/// Whether a response can carry a top Via back: its sent-protocol and
/// sent-by read, whatever its parameters are (RFC 4475 3.1.2.1 answers a
/// Via with stray separators).
#[must_use]
pub fn has_usable_via(msg: &Message<'_>) -> bool {
    let Some(top) = msg.vias().next() else {
        return false;
    };
    let sent = top.split(';').next().unwrap_or_default();
    sipauth_sip::parse_via(sent).is_ok()
}

/// The header section of a request that did not parse, rebuilt so that a
/// 400 can be formed from it: its start line replaced by `METHOD
/// sip:invalid SIP/2.0` (the method kept), Content-Length removed and the
/// body left out. `None` when it is not a request, or has no header
/// section (on a stream, one that is not complete; a datagram ends its
/// header section where it ends).
#[must_use]
pub fn salvage(data: &[u8], datagram: bool) -> Option<Vec<u8>> {
    let start = data.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let data = &data[start..];
    let head = match data.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &data[..i + 2],
        None if datagram => data,
        None => return None,
    };
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let mut lines = text.split("\r\n");
    let start_line = lines.next()?;
    let method = start_line.split(' ').next()?;
    if method.is_empty()
        || method.starts_with("SIP/")
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    {
        return None;
    }
    let mut out = format!("{method} sip:invalid SIP/2.0\r\n");
    let mut skipping = false;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if !skipping {
                out.push_str(line);
                out.push_str("\r\n");
            }
            continue;
        }
        let name = line.split(':').next().unwrap_or_default().trim();
        skipping = name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l");
        if !skipping {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    Some(out.into_bytes())
}

/// A message that did not parse (or, on a stream, could not be framed):
/// a request whose headers still read gets 400 naming the fault;
/// anything else is dropped.
pub fn refuse_unparseable(
    metrics: &Metrics,
    tags: &ToTags,
    data: &[u8],
    error: ParseError,
    src: SocketAddr,
    replier: &Replier,
) {
    metrics.malformed.fetch_add(1, Relaxed);
    let head = salvage(data, !replier.is_reliable());
    let msg = head.as_deref().and_then(|h| sipauth_sip::parse(h).ok());
    match msg {
        Some(msg) if has_usable_via(&msg) && msg.method() != Some("ACK") => {
            tracing::debug!(%src, %error, "unparseable SIP request refused");
            send_refusal(tags, &msg, Refusal::Malformed(error), src, replier);
        }
        _ => {
            // Without a request's headers there is no Via to answer to.
            metrics.dropped.fetch_add(1, Relaxed);
            tracing::debug!(%src, %error, "unparseable SIP message dropped");
        }
    }
}

/// A request that failed [`request`]: answered once, unless it is an ACK
/// (never answered) or has no Via a response could follow.
pub fn refuse(
    metrics: &Metrics,
    tags: &ToTags,
    msg: &Message<'_>,
    why: Refusal,
    src: SocketAddr,
    replier: &Replier,
) {
    if let Refusal::Malformed(_) = why {
        metrics.malformed.fetch_add(1, Relaxed);
    }
    if !has_usable_via(msg) || msg.method() == Some("ACK") {
        metrics.dropped.fetch_add(1, Relaxed);
        tracing::debug!(%src, error = %why, "refused request dropped");
        return;
    }
    tracing::debug!(%src, error = %why, "request refused");
    send_refusal(tags, msg, why, src, replier);
}

/// The refusal, sent once with the edge's stateless To-tag (no
/// transaction).
fn send_refusal(
    tags: &ToTags,
    msg: &Message<'_>,
    why: Refusal,
    src: SocketAddr,
    replier: &Replier,
) {
    let tag = tags.stateless(msg);
    let reason = why.to_string();
    replier.send(response(
        msg,
        why.code(),
        &reason,
        src,
        Some(&tag),
        &[],
        b"",
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(start: &str, headers: &str) -> Vec<u8> {
        format!(
            "{start}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n\
             To: <sip:b@example.com>\r\nCall-ID: c1\r\nMax-Forwards: 70\r\n{headers}\r\n"
        )
        .into_bytes()
    }

    fn check(bytes: &[u8]) -> Result<(), Refusal> {
        request(&sipauth_sip::parse(bytes).unwrap())
    }

    /// A refusal is one response, with the edge's To-tag and no
    /// transaction; an ACK is never answered, and a message that did not
    /// parse is answered from its salvaged headers.
    #[test]
    fn a_refusal_is_sent_once_and_an_ack_is_dropped() {
        let (metrics, tags) = (Metrics::new(), ToTags::default());
        let (replier, mut rx) = Replier::channel();
        let src: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let r = req("OPTIONS sip:b@example.com SIP/7.0", "CSeq: 1 OPTIONS\r\n");
        let msg = sipauth_sip::parse(&r).unwrap();
        refuse(&metrics, &tags, &msg, check(&r).unwrap_err(), src, &replier);
        let got = String::from_utf8(rx.try_recv().unwrap()).unwrap();
        assert!(
            got.starts_with("SIP/2.0 505 Version Not Supported\r\n"),
            "{got}"
        );
        let tag = format!("To: <sip:b@example.com>;tag={}\r\n", tags.stateless(&msg));
        assert!(got.contains(&tag), "{got}");
        assert!(rx.try_recv().is_err());
        assert_eq!(metrics.malformed.load(Relaxed), 0);

        let ack = req("ACK sip:b@example.com SIP/2.0", "CSeq: 1 INVITE\r\n");
        let msg = sipauth_sip::parse(&ack).unwrap();
        refuse(
            &metrics,
            &tags,
            &msg,
            check(&ack).unwrap_err(),
            src,
            &replier,
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(metrics.malformed.load(Relaxed), 1);
        assert_eq!(metrics.dropped.load(Relaxed), 1);

        let long = req(
            "INVITE sip:b@example.com SIP/2.0",
            "CSeq: 1 INVITE\r\nContent-Length: 500\r\n",
        );
        let error = sipauth_sip::parse(&long).unwrap_err();
        refuse_unparseable(&metrics, &tags, &long, error, src, &replier);
        let got = String::from_utf8(rx.try_recv().unwrap()).unwrap();
        assert!(
            got.starts_with("SIP/2.0 400 Bad Request (Content-Length 500"),
            "{got}"
        );
        assert_eq!(metrics.malformed.load(Relaxed), 2);
    }

    #[test]
    fn a_well_formed_request_passes() {
        let r = req("OPTIONS sip:b@example.com SIP/2.0", "CSeq: 1 OPTIONS\r\n");
        assert_eq!(check(&r), Ok(()));
    }

    #[test]
    fn another_version_is_505() {
        let r = req("OPTIONS sip:b@example.com SIP/7.0", "CSeq: 1 OPTIONS\r\n");
        assert_eq!(check(&r), Err(Refusal::Version));
        assert_eq!(Refusal::Version.code(), 505);
    }

    #[test]
    fn repeated_single_headers_are_400_naming_the_header() {
        for (header, name) in [
            ("Call-ID: c2\r\n", "Call-ID"),
            ("From: <sip:x@example.com>;tag=2\r\n", "From"),
            ("To: <sip:y@example.com>\r\n", "To"),
            ("CSeq: 2 OPTIONS\r\n", "CSeq"),
            ("Max-Forwards: 3\r\n", "Max-Forwards"),
        ] {
            let r = req(
                "OPTIONS sip:b@example.com SIP/2.0",
                &format!("CSeq: 1 OPTIONS\r\n{header}"),
            );
            let e = check(&r).unwrap_err();
            assert_eq!(e, Refusal::Malformed(ParseError::DuplicateHeader(name)));
            assert_eq!(e.code(), 400);
            assert_eq!(
                e.to_string(),
                format!("Bad Request ({name} header appears more than once)")
            );
        }
    }

    #[test]
    fn cseq_mismatch_missing_headers_and_uri_headers_are_400() {
        let r = req("OPTIONS sip:b@example.com SIP/2.0", "CSeq: 1 INVITE\r\n");
        assert_eq!(
            check(&r),
            Err(Refusal::Malformed(ParseError::CSeqMethodMismatch))
        );
        let r = req("OPTIONS sip:b@example.com SIP/2.0", "");
        assert_eq!(
            check(&r),
            Err(Refusal::Malformed(ParseError::MissingHeader("CSeq")))
        );
        let r = req(
            "INVITE sip:b@example.com?Route=%3Csip:x%3E SIP/2.0",
            "CSeq: 1 INVITE\r\n",
        );
        assert_eq!(
            check(&r),
            Err(Refusal::Malformed(ParseError::RequestUriHeaders))
        );
        // ACK carries its own method in CSeq.
        let r = req("ACK sip:b@example.com SIP/2.0", "CSeq: 1 ACK\r\n");
        assert_eq!(check(&r), Ok(()));
    }

    #[test]
    fn an_unknown_request_uri_scheme_is_416() {
        let r = req(
            "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0",
            "CSeq: 1 OPTIONS\r\n",
        );
        assert_eq!(check(&r), Err(Refusal::Scheme));
        assert_eq!(Refusal::Scheme.code(), 416);
    }

    #[test]
    fn a_register_with_an_unreadable_contact_is_400() {
        let r = req(
            "REGISTER sip:example.com SIP/2.0",
            "CSeq: 1 REGISTER\r\nContact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\r\n",
        );
        assert!(
            matches!(check(&r), Err(Refusal::Malformed(_))),
            "{:?}",
            check(&r)
        );
        let r = req(
            "REGISTER sip:example.com SIP/2.0",
            "CSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\n",
        );
        assert_eq!(check(&r), Ok(()));
    }

    #[test]
    fn usable_via_needs_protocol_and_sent_by_only() {
        let with = |via: &str| {
            let r = format!(
                "OPTIONS sip:b@example.com SIP/2.0\r\nVia: {via}\r\nCSeq: 1 OPTIONS\r\n\r\n"
            );
            has_usable_via(&sipauth_sip::parse(r.as_bytes()).unwrap())
        };
        assert!(with("SIP/2.0/UDP 192.0.2.15;;,;,,"));
        assert!(with("SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw"));
        assert!(!with("SIP/2.0 host"));
        assert!(!with(""));
        let none =
            sipauth_sip::parse(b"OPTIONS sip:b@example.com SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n")
                .unwrap();
        assert!(!has_usable_via(&none));
    }

    #[test]
    fn salvage_rebuilds_a_head_that_parses() {
        // A start line with LWS in the Request-URI, and a Content-Length
        // larger than the datagram.
        let bad =
            b"INVITE sip:user@example.com; lr SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                    Content-Length:\r\n 9999\r\nCSeq: 1 INVITE\r\n\r\nv=0\r\n";
        let head = salvage(bad, true).unwrap();
        let msg = sipauth_sip::parse(&head).unwrap();
        assert_eq!(msg.method(), Some("INVITE"));
        assert_eq!(msg.cseq(), Ok((1, "INVITE")));
        assert!(msg.header("Content-Length").is_none());
        assert!(msg.body().is_empty());
        // A datagram without the empty line still ends its headers.
        let cut =
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS";
        assert!(sipauth_sip::parse(&salvage(cut, true).unwrap()).is_ok());
        // On a stream it is incomplete.
        assert_eq!(salvage(cut, false), None);
        // Responses and junk are not requests.
        assert_eq!(salvage(b"SIP/2.0 200 OK\r\n\r\n", true), None);
        assert_eq!(salvage(b"\xff\xfe junk\r\n\r\n", true), None);
        assert_eq!(salvage(b"", true), None);
        assert_eq!(salvage(b"\r\n\r\n", true), None);
    }

    #[test]
    fn salvage_never_panics_on_prefixes() {
        let bad = b"INVITE <sip:user@example.com> SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 5\r\n\r\n\xc3";
        for cut in 0..=bad.len() {
            if let Some(h) = salvage(&bad[..cut], true) {
                let _ = sipauth_sip::parse(&h);
            }
        }
    }
}
