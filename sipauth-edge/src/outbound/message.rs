//! Requests the edge sends as a user agent client (RFC 3261 8.1.1,
//! 17.1.1.3, 13.2.2.4), and the one builder of requests inside a dialog
//! (12.2.1.1), for the outbound legs' dialogs and the bridged callers'
//! alike. Every value is kept on its line: CR, LF and NUL become spaces,
//! so no value can add a header.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::net::SocketAddr;

use rand::RngCore as _;

/// One request; `extra` headers go after Contact, in order.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    /// `UDP`, `TCP` or `TLS`.
    pub transport: &'a str,
    /// The Via sent-by, `host[:port]`.
    pub sent_by: &'a str,
    pub branch: &'a str,
    /// Whole From and To values (tags included when known).
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub contact: Option<&'a str>,
    pub extra: &'a [(&'a str, &'a str)],
    /// `(content type, body)`.
    pub body: Option<(&'a str, &'a [u8])>,
}

/// `host:port`, IPv6 in brackets.
#[must_use]
pub fn host_port(a: SocketAddr) -> String {
    a.to_string()
}

/// Random lowercase hex of `bytes` bytes.
#[must_use]
pub fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// A fresh RFC 3261 branch (magic cookie first).
#[must_use]
pub fn branch() -> String {
    format!("z9hG4bK{}", random_hex(12))
}

/// `s` as a SIP URI user part: unreserved and user-unreserved characters
/// kept, everything else percent-encoded (RFC 3261 25.1).
#[must_use]
pub fn escape_user(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Appends `s` with CR, LF and NUL turned into spaces, so a value stays
/// on its line.
fn push_value(out: &mut String, s: &str) {
    let mut rest = s;
    while let Some(i) = rest.find(['\r', '\n', '\0']) {
        out.push_str(&rest[..i]);
        out.push(' ');
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// Appends `name: value` and its line end, each kept on the line.
fn push_header(out: &mut String, name: &str, value: &str) {
    push_value(out, name);
    out.push_str(": ");
    push_value(out, value);
    out.push_str("\r\n");
}

#[must_use]
pub fn build(r: &Request<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(768);
    out.push_str(r.method);
    out.push(' ');
    push_value(&mut out, r.uri);
    out.push_str(" SIP/2.0\r\nVia: SIP/2.0/");
    out.push_str(r.transport);
    out.push(' ');
    push_value(&mut out, r.sent_by);
    out.push_str(";branch=");
    push_value(&mut out, r.branch);
    out.push_str(";rport\r\nMax-Forwards: 70\r\n");
    push_header(&mut out, "From", r.from);
    push_header(&mut out, "To", r.to);
    push_header(&mut out, "Call-ID", r.call_id);
    out.push_str("CSeq: ");
    out.push_str(itoa::Buffer::new().format(r.cseq));
    out.push(' ');
    out.push_str(r.method);
    out.push_str("\r\n");
    if let Some(c) = r.contact {
        push_header(&mut out, "Contact", c);
    }
    for (name, value) in r.extra {
        push_header(&mut out, name, value);
    }
    out.push_str("User-Agent: sipauth\r\n");
    let body = match r.body {
        Some((ty, body)) => {
            push_header(&mut out, "Content-Type", ty);
            body
        }
        None => &[],
    };
    out.push_str("Content-Length: ");
    out.push_str(itoa::Buffer::new().format(body.len()));
    out.push_str("\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A dialog as the requests inside it need it (RFC 3261 12.2.1.1).
pub struct Dialog<'a> {
    /// The remote target: the Request-URI.
    pub remote_target: &'a str,
    /// The route set, as Route header values in order.
    pub route: &'a [String],
    /// Our side (From, with our tag) and the far side (To).
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    /// Our Contact.
    pub contact: &'a str,
    /// `UDP`, `TCP` or `TLS`.
    pub transport: &'a str,
    /// The Via sent-by, `host[:port]`.
    pub sent_by: &'a str,
}

impl Dialog<'_> {
    /// A request inside the dialog: the route set first among the extra
    /// headers, then `extra`; our Contact when `contact` (a target refresh
    /// or an INVITE).
    #[must_use]
    pub fn request(
        &self,
        method: &str,
        branch: &str,
        cseq: u32,
        contact: bool,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let mut headers: Vec<(&str, &str)> =
            self.route.iter().map(|r| ("Route", r.as_str())).collect();
        headers.extend_from_slice(extra);
        build(&Request {
            method,
            uri: self.remote_target,
            transport: self.transport,
            sent_by: self.sent_by,
            branch,
            from: self.from,
            to: self.to,
            call_id: self.call_id,
            cseq,
            contact: contact.then_some(self.contact),
            extra: &headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parses_back() {
        let branch = branch();
        let bytes = build(&Request {
            method: "INVITE",
            uri: "sip:bob@10.0.0.2",
            transport: "UDP",
            sent_by: "10.0.0.1:40000",
            branch: &branch,
            from: "<sip:alice@10.0.0.1>;tag=abc",
            to: "<sip:bob@10.0.0.2>",
            call_id: "c1",
            cseq: 1,
            contact: Some("<sip:alice@10.0.0.1:40000>"),
            extra: &[("X-PH-a", "b\r\nInjected: 1")],
            body: Some(("application/sdp", b"v=0\r\n")),
        });
        let m = sipauth_sip::parse(&bytes).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.top_via().unwrap().branch, Some(branch.as_str()));
        assert_eq!(m.cseq().unwrap(), (1, "INVITE"));
        assert!(m.header("Injected").is_none());
        assert_eq!(m.body(), b"v=0\r\n");
        assert_eq!(escape_user("+1 555"), "+1%20555");
    }

    #[test]
    fn branches_and_tags_are_lowercase_hex() {
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let b = branch();
        assert_eq!(b.len(), 7 + 24);
        assert!(b.starts_with("z9hG4bK") && lower_hex(&b[7..]), "{b}");
        // More bytes than one draw from the generator.
        let long = random_hex(20);
        assert_eq!(long.len(), 40);
        assert!(lower_hex(&long), "{long}");
        assert_ne!(random_hex(8), random_hex(8));
    }

    #[test]
    fn no_value_in_a_dialog_adds_a_header() {
        let route = vec!["<sip:p1@192.0.2.9;lr>\r\nInjected: route".to_owned()];
        let dialog = Dialog {
            remote_target: "sip:bob@192.0.2.2",
            route: &route,
            from: "<sip:alice@192.0.2.1>;tag=1\nInjected: from",
            to: "<sip:bob@192.0.2.2>;tag=2\rInjected: to",
            call_id: "c1\r\nInjected: call-id",
            contact: "<sip:alice@192.0.2.1>\r\nInjected: contact",
            transport: "UDP",
            sent_by: "192.0.2.1:5060",
        };
        let bytes = dialog.request(
            "INFO",
            "z9hG4bKi",
            2,
            true,
            &[("X-PH-a", "b\r\nInjected: extra")],
            Some(("text/plain\r\nInjected: type", b"hello")),
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("\nInjected") && !text.contains("\rInjected"),
            "{text}"
        );
        let m = sipauth_sip::parse(&bytes).unwrap();
        assert!(
            m.header("Injected").is_none(),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(m.method(), Some("INFO"));
        assert_eq!(m.cseq().unwrap(), (2, "INFO"));
        assert_eq!(m.headers("Route").count(), 1);
        assert_eq!(m.header("Content-Type"), Some("text/plain  Injected: type"));
        assert_eq!(m.body(), b"hello");
    }
}
