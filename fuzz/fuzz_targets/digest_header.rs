//! Digest header parsing (RFC 7616 3.3-3.4, RFC 3261 22.4): `Authorization` /
//! `Proxy-Authorization` credentials and `WWW-Authenticate` /
//! `Proxy-Authenticate` challenges.
//!
//! The input is one header value, read both as credentials and as a
//! challenge. What parses must:
//! - borrow every field from the input, and satisfy the grammar the parser
//!   promises (algorithm and qop are tokens, qop brings cnonce and nc, a
//!   value is a valid quoted-string interior or a bare value);
//! - parse the same when rendered back in another order (values spelled as
//!   in the input), and again with every value quoted, upper-case names,
//!   folded lines and empty list elements;
//! - parse the same when carried in a SIP message and read back with
//!   `Message::headers`, the way the edge and its outbound legs read them;
//! - agree between the two parsers on the parameters both read.
#![no_main]

use std::fmt::Write as _;

use libfuzzer_sys::fuzz_target;
use sipauth_sip::{DigestChallenge, DigestCredentials, parse, parse_challenge, parse_credentials};

/// Whether `part` is a slice of `whole` (the parsers never copy).
fn within(whole: &str, part: &str) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}

/// Text that can stand between double quotes as it is: every `"` escaped,
/// no backslash left escaping the closing quote.
fn is_quoted_interior(s: &str) -> bool {
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' if bytes.next().is_none() => return false,
            b'"' => return false,
            _ => {}
        }
    }
    true
}

/// A value the parser may return: a quoted-string interior, or a bare value
/// (no white space, quote or control character).
fn check_value(v: &str) {
    let bare = !v.is_empty()
        && !v
            .bytes()
            .any(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'"') || b < 0x20 || b == 0x7f);
    assert!(
        is_quoted_interior(v) || bare,
        "{v:?} is neither a quoted-string interior nor a bare value"
    );
}

/// How a rendering spells the header.
#[derive(Clone, Copy)]
struct Style {
    /// Upper-case scheme and parameter names.
    upper: bool,
    /// Separator between parameters.
    sep: &'static str,
    /// Values bare in the input stay bare (so only the order of the
    /// parameters changes); otherwise every value that can be is quoted.
    keep_bare: bool,
}

const PLAIN: Style = Style {
    upper: false,
    sep: ", ",
    keep_bare: true,
};
const ODD: Style = Style {
    upper: true,
    sep: " ,\r\n\t, ,",
    keep_bare: false,
};

struct Render<'i> {
    input: &'i str,
    out: String,
    style: Style,
    first: bool,
}

impl<'i> Render<'i> {
    fn new(input: &'i str, style: Style) -> Self {
        let scheme = if style.upper { "DIGEST" } else { "Digest" };
        Render {
            input,
            out: format!("{scheme} "),
            style,
            first: true,
        }
    }

    fn name(&mut self, name: &str) {
        if !self.first {
            self.out.push_str(self.style.sep);
        }
        self.first = false;
        if self.style.upper {
            self.out.push_str(&name.to_ascii_uppercase());
        } else {
            self.out.push_str(name);
        }
        self.out.push('=');
    }

    /// Quoted when the raw value can be (and, with `keep_bare`, was in the
    /// input), bare otherwise.
    fn value(&mut self, name: &str, v: &str) {
        self.name(name);
        let at = v.as_ptr() as usize - self.input.as_ptr() as usize;
        let was_bare = at == 0 || self.input.as_bytes()[at - 1] != b'"';
        if is_quoted_interior(v) && !(self.style.keep_bare && was_bare) {
            let _ = write!(self.out, "\"{v}\"");
        } else {
            self.out.push_str(v);
        }
    }

    fn bare(&mut self, name: &str, v: &str) {
        self.name(name);
        self.out.push_str(v);
    }
}

fn render_credentials(input: &str, c: &DigestCredentials<'_>, style: Style) -> String {
    let mut r = Render::new(input, style);
    r.value("username", c.username);
    r.value("realm", c.realm);
    r.value("nonce", c.nonce);
    r.value("uri", c.uri);
    r.value("response", c.response);
    if let Some(a) = c.algorithm {
        r.bare("algorithm", a);
    }
    if let Some(v) = c.cnonce {
        r.value("cnonce", v);
    }
    if let Some(v) = c.opaque {
        r.value("opaque", v);
    }
    if let Some(q) = c.qop {
        r.bare("qop", q);
    }
    if let Some(nc) = c.nc {
        r.bare("nc", &format!("{nc:08x}"));
    }
    if c.userhash {
        r.bare("userhash", "true");
    }
    r.out
}

fn render_challenge(input: &str, c: &DigestChallenge<'_>, style: Style) -> String {
    let mut r = Render::new(input, style);
    r.value("realm", c.realm);
    r.value("nonce", c.nonce);
    if let Some(v) = c.opaque {
        r.value("opaque", v);
    }
    if let Some(a) = c.algorithm {
        r.bare("algorithm", a);
    }
    if !c.qop.is_empty() {
        r.name("qop");
        let _ = write!(r.out, "\"{}\"", c.qop.join(","));
    }
    if c.stale {
        r.bare("stale", "true");
    }
    if let Some(v) = c.domain {
        r.value("domain", v);
    }
    r.out
}

/// `value` as the only `name` header of a message; the values
/// `Message::headers` gives back for it. `None` when the value cannot be
/// carried as it is (a line break that is not a fold).
fn carried(start: &str, name: &str, value: &str) -> Option<Vec<String>> {
    let unfolded_breaks = value
        .replace("\r\n ", "")
        .replace("\r\n\t", "")
        .contains(['\r', '\n']);
    if unfolded_breaks {
        return None;
    }
    let msg = format!(
        "{start}\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
         From: <sip:alice@example.com>;tag=1928301774\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: a84b4c76e66710\r\nCSeq: 1 INVITE\r\n{name}: {value}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let parsed = parse(msg.as_bytes()).expect("a message around a rendered header parses");
    Some(parsed.headers(name).map(str::to_owned).collect())
}

fn check_credentials(input: &str, c: &DigestCredentials<'_>) {
    for v in [c.username, c.realm, c.nonce, c.uri, c.response]
        .into_iter()
        .chain(c.algorithm)
        .chain(c.cnonce)
        .chain(c.opaque)
        .chain(c.qop)
    {
        assert!(within(input, v), "{v:?} is not borrowed from the input");
        check_value(v);
    }
    assert!(c.algorithm.is_none_or(is_token), "algorithm not a token");
    assert!(c.qop.is_none_or(is_token), "qop not a token");
    if c.qop.is_some() {
        assert!(
            c.cnonce.is_some() && c.nc.is_some(),
            "qop without cnonce and nc"
        );
    }
    for style in [PLAIN, ODD] {
        let text = render_credentials(input, c, style);
        assert_eq!(
            parse_credentials(&text).as_ref(),
            Ok(c),
            "rendered as {text:?}"
        );
        for name in ["Authorization", "Proxy-Authorization"] {
            if let Some(values) = carried("INVITE sip:bob@example.com SIP/2.0", name, &text) {
                assert_eq!(values.len(), 1, "{name} split into {values:?}");
                assert_eq!(
                    parse_credentials(&values[0]).as_ref(),
                    Ok(c),
                    "{name} in a message: {text:?}"
                );
            }
        }
    }
}

fn check_challenge(input: &str, c: &DigestChallenge<'_>) {
    for v in [c.realm, c.nonce]
        .into_iter()
        .chain(c.opaque)
        .chain(c.algorithm)
        .chain(c.domain)
    {
        assert!(within(input, v), "{v:?} is not borrowed from the input");
        check_value(v);
    }
    assert!(c.algorithm.is_none_or(is_token), "algorithm not a token");
    for q in &c.qop {
        assert!(within(input, q), "qop {q:?} is not borrowed from the input");
        assert!(is_token(q), "qop {q:?} not a token");
    }
    for style in [PLAIN, ODD] {
        let text = render_challenge(input, c, style);
        assert_eq!(
            parse_challenge(&text).as_ref(),
            Ok(c),
            "rendered as {text:?}"
        );
        for (start, name) in [
            ("SIP/2.0 401 Unauthorized", "WWW-Authenticate"),
            (
                "SIP/2.0 407 Proxy Authentication Required",
                "Proxy-Authenticate",
            ),
        ] {
            if let Some(values) = carried(start, name, &text) {
                assert_eq!(values.len(), 1, "{name} split into {values:?}");
                assert_eq!(
                    parse_challenge(&values[0]).as_ref(),
                    Ok(c),
                    "{name} in a message: {text:?}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let creds = parse_credentials(input);
    let chall = parse_challenge(input);
    if let Ok(c) = &creds {
        check_credentials(input, c);
    }
    if let Ok(c) = &chall {
        check_challenge(input, c);
    }
    if let (Ok(a), Ok(b)) = (&creds, &chall) {
        assert_eq!(
            (a.realm, a.nonce, a.opaque, a.algorithm),
            (b.realm, b.nonce, b.opaque, b.algorithm),
            "the two parsers read the shared parameters differently"
        );
    }
});
