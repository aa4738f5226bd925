//! Building responses to a parsed request (RFC 3261 8.2.6, 18.2.1; RFC 3581).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::Message;
use crate::lex::{find_param, parse_param, split_top};
use crate::via::Via;

/// The standard reason phrase for a status code (RFC 3261 21 and later
/// RFCs), or a generic one for the code's class.
#[must_use]
pub fn reason_phrase(code: u16) -> &'static str {
    known_phrase(code).unwrap_or(match code {
        100..=199 => "Trying",
        200..=299 => "OK",
        300..=399 => "Redirection",
        400..=499 => "Bad Request",
        500..=599 => "Server Error",
        _ => "Global Failure",
    })
}

fn known_phrase(code: u16) -> Option<&'static str> {
    Some(match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 | 606 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity-Info",
        437 => "Unsupported Certificate",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        607 => "Unwanted",
        _ => return None,
    })
}

/// Appends `s` with every line break run (and the white space around it)
/// replaced by one SP, so copied values never span lines and user-supplied
/// text cannot inject header lines.
fn push_line(out: &mut String, s: &str) {
    let mut rest = s;
    while let Some(pos) = memchr::memchr2(b'\r', b'\n', rest.as_bytes()) {
        out.push_str(rest[..pos].trim_end_matches([' ', '\t']));
        out.push(' ');
        rest = rest[pos..].trim_start_matches([' ', '\t', '\r', '\n']);
    }
    out.push_str(rest);
}

fn push_header(out: &mut String, name: &str, value: &str) {
    push_line(out, name);
    out.push_str(": ");
    push_line(out, value);
    out.push_str("\r\n");
}

fn host_ip(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The top Via as it goes into the response: `received` added when the
/// sent-by host is not the source address (always when `rport` is asked
/// for, RFC 3581 4), a bare `rport` filled with the source port, and any
/// `received` the client sent itself dropped. `via` is `top` parsed, as
/// the request keeps it.
fn top_via_for_response(
    out: &mut String,
    top: &str,
    via: Result<Via<'_>, crate::ParseError>,
    src: SocketAddr,
) {
    let Ok(via) = via else {
        push_header(out, "Via", top);
        return;
    };
    let ip = src.ip().to_canonical();
    let wants_rport = find_param(via.params, "rport") == Some(None);
    let needs_received = wants_rport || host_ip(via.host) != Some(ip);
    out.push_str("Via: ");
    push_line(out, via.sent());
    if !via.params.is_empty() {
        for seg in split_top(via.params, b';') {
            let Ok((name, value)) = parse_param(seg) else {
                continue;
            };
            if name.eq_ignore_ascii_case("received") {
                continue;
            }
            out.push(';');
            if name.eq_ignore_ascii_case("rport") && value.is_none() {
                out.push_str("rport=");
                out.push_str(itoa::Buffer::new().format(src.port()));
            } else {
                push_line(out, crate::lex::trim_lws(seg));
            }
        }
    }
    if needs_received {
        // RFC 3261's `received` grammar takes a plain IPv6address, no brackets.
        let _ = write!(out, ";received={ip}");
    }
    out.push_str("\r\n");
}

/// Builds a response to `req`.
///
/// In order: the status line; every Via of the request in order (the top
/// one with `received` / `rport` filled in for `src`); From; To, with
/// `;tag=<to_tag>` appended when the request's To has no tag and `to_tag`
/// is given; `Call-ID`; `CSeq`; the `extra` headers in order; `Content-Length`
/// matching `body`; the empty line; `body`. Header names are long forms,
/// line ends CRLF. Folded values are joined onto one line, and line breaks
/// in `reason`, `to_tag` or `extra` are replaced by SP.
#[must_use]
pub fn response(
    req: &Message<'_>,
    code: u16,
    reason: &str,
    src: SocketAddr,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = String::with_capacity(512 + body.len());
    out.push_str("SIP/2.0 ");
    out.push_str(itoa::Buffer::new().format(code));
    out.push(' ');
    push_line(&mut out, reason);
    out.push_str("\r\n");
    for (i, via) in req.vias().enumerate() {
        if i == 0 {
            top_via_for_response(&mut out, via, req.top_via(), src);
        } else {
            push_header(&mut out, "Via", via);
        }
    }
    if let Some(from) = req.header("From") {
        push_header(&mut out, "From", from);
    }
    if let Some(to) = req.header("To") {
        out.push_str("To: ");
        push_line(&mut out, to);
        let has_tag = req
            .to()
            .map_or_else(|_| find_param(to, "tag").is_some(), |t| t.tag.is_some());
        if let (false, Some(tag)) = (has_tag, to_tag) {
            out.push_str(";tag=");
            push_line(&mut out, tag);
        }
        out.push_str("\r\n");
    }
    if let Some(call_id) = req.header("Call-ID") {
        push_header(&mut out, "Call-ID", call_id);
    }
    if let Some(cseq) = req.header("CSeq") {
        push_header(&mut out, "CSeq", cseq);
    }
    for (name, value) in extra {
        push_header(&mut out, name, value);
    }
    out.push_str("Content-Length: ");
    out.push_str(itoa::Buffer::new().format(body.len()));
    out.push_str("\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
