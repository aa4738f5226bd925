//! SIP and SIPS URIs (RFC 3261 section 19.1, RFC 5118 for IPv6 references).

use crate::ParseError;
use crate::lex::{find_param, is_scheme};

/// A parsed `sip:` or `sips:` URI, borrowing the input.
///
/// Escapes (`%41`) are not decoded: every field is the text as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sip` or `sips` as written (compare case-insensitively).
    pub scheme: &'a str,
    /// The user part, when the URI has one.
    pub user: Option<&'a str>,
    /// The password part of the userinfo, when present.
    pub password: Option<&'a str>,
    /// The host; an IPv6 reference keeps its brackets (`[2001:db8::1]`).
    pub host: &'a str,
    /// The port, when written.
    pub port: Option<u16>,
    /// The raw URI parameters after the first `;` (empty when none), before any `?`.
    pub params: &'a str,
    /// The raw URI headers after `?`, when present.
    pub headers: Option<&'a str>,
}

impl<'a> SipUri<'a> {
    /// A URI parameter by name (case-insensitive): `Some(None)` for a flag
    /// such as `lr`, `Some(Some(v))` for `name=v`.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }

    /// Whether the scheme is `sips`.
    #[must_use]
    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sips")
    }

    /// The host without IPv6 brackets.
    #[must_use]
    pub fn host_unbracketed(&self) -> &'a str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(self.host)
    }
}

fn err(reason: &'static str) -> ParseError {
    ParseError::InvalidUri { reason }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

fn is_user_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'%' | b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/'
        )
}

fn is_password_byte(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'%' | b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b'='
        )
}

fn is_header_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'%' | b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'=' | b'&'
        )
}

/// Validates the inside of an IPv6 reference leniently: hex digits, colons
/// and dots, at least one colon. RFC 5118 4.10 requires tolerating the
/// three-colon form `2001:db8:::192.0.2.1`, so the grammar is not enforced
/// more tightly than that.
pub(crate) fn is_ipv6_body(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 45
        && s.contains(':')
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

/// `hostname / IPv4address / IPv6reference`.
pub(crate) fn is_host(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('[') {
        return inner.strip_suffix(']').is_some_and(is_ipv6_body);
    }
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
}

pub(crate) fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Splits `host[:port]` (host possibly an IPv6 reference). `Err` for a bad port.
pub(crate) fn split_hostport(s: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']').ok_or("unterminated IPv6 reference")?;
        let (host, rest) = s.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if rest.is_empty() => (host, None),
            None => return Err("text after IPv6 reference"),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !is_host(host) {
        return Err("invalid host");
    }
    match port {
        None => Ok((host, None)),
        Some(p) => parse_port(p).map(|p| (host, Some(p))).ok_or("invalid port"),
    }
}

/// Parses a `sip:` or `sips:` URI.
///
/// Any other well-formed scheme (`tel:`, `http:`, ...) yields
/// [`ParseError::UnsupportedScheme`]: such URIs are valid in From, To and
/// Contact and are kept there as opaque text, but this function only parses
/// SIP URIs. Anything that is not a URI at all yields
/// [`ParseError::InvalidUri`].
///
/// The user part ends at the first `@`. Escapes are not decoded.
pub fn parse_uri(s: &str) -> Result<SipUri<'_>, ParseError> {
    let (scheme, rest) = s.split_once(':').ok_or(err("no scheme"))?;
    if !is_scheme(scheme) {
        return Err(err("invalid scheme"));
    }
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return Err(ParseError::UnsupportedScheme);
    }
    let (userinfo, after_userinfo) = match rest.find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (user, password) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if user.is_empty() || !user.bytes().all(is_user_byte) {
                return Err(err("invalid user part"));
            }
            if password.is_some_and(|p| !p.bytes().all(is_password_byte)) {
                return Err(err("invalid password"));
            }
            (Some(user), password)
        }
    };
    // hostport ends at the first ';' or '?' (neither can occur inside it).
    let end = after_userinfo
        .find([';', '?'])
        .unwrap_or(after_userinfo.len());
    let (hostport, tail) = after_userinfo.split_at(end);
    let (host, port) = split_hostport(hostport).map_err(err)?;
    let (params, headers) = match tail.split_once('?') {
        Some((p, h)) => (p, Some(h)),
        None => (tail, None),
    };
    let params = params.strip_prefix(';').unwrap_or(params);
    if !tail.is_empty() && tail.starts_with(';') {
        for p in params.split(';') {
            if p.is_empty() || p.starts_with('=') || !p.bytes().all(is_param_byte) {
                return Err(err("invalid URI parameter"));
            }
        }
    }
    if let Some(h) = headers
        && !h.bytes().all(is_header_byte)
    {
        return Err(err("invalid URI header"));
    }
    Ok(SipUri {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// Checks a URI of any scheme well enough to reject what cannot be a URI:
/// `sip`/`sips` must parse fully, any other scheme only needs a valid scheme
/// name and a non-empty remainder free of white space, controls, `<>` and `"`.
pub(crate) fn check_any_uri(s: &str) -> Result<(), ParseError> {
    match parse_uri(s) {
        Ok(_) => Ok(()),
        Err(ParseError::UnsupportedScheme) => {
            let rest = s.split_once(':').map_or("", |(_, r)| r);
            if rest.is_empty()
                || rest
                    .bytes()
                    .any(|b| b <= b' ' || b == 0x7f || matches!(b, b'<' | b'>' | b'"'))
            {
                Err(err("invalid opaque URI"))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let u = parse_uri("sip:alice@example.com").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, None);
        assert_eq!(u.params, "");
        assert_eq!(u.headers, None);
    }

    #[test]
    fn port_params_headers() {
        let u = parse_uri("SIPS:bob:pw@10.0.0.1:5061;transport=tcp;lr?Subject=hi").unwrap();
        assert!(u.is_sips());
        assert_eq!(u.user, Some("bob"));
        assert_eq!(u.password, Some("pw"));
        assert_eq!(u.host, "10.0.0.1");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert_eq!(u.param("LR"), Some(None));
        assert_eq!(u.headers, Some("Subject=hi"));
    }

    #[test]
    fn ipv6() {
        let u = parse_uri("sip:user@[2001:db8::10]:5070").unwrap();
        assert_eq!(u.host, "[2001:db8::10]");
        assert_eq!(u.host_unbracketed(), "2001:db8::10");
        assert_eq!(u.port, Some(5070));
        let u = parse_uri("sip:[2001:db8::10:5070]").unwrap();
        assert_eq!(u.host, "[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        assert!(parse_uri("sip:user@[2001:db8:::192.0.2.1]").is_ok());
        assert!(parse_uri("sip:2001:db8::10").is_err());
        assert!(parse_uri("sip:[2001:db8::10").is_err());
    }

    #[test]
    fn user_with_separators() {
        let u = parse_uri("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
    }

    #[test]
    fn other_schemes() {
        assert_eq!(
            parse_uri("tel:+15551234"),
            Err(ParseError::UnsupportedScheme)
        );
        assert!(matches!(
            parse_uri("<sip:x@y>"),
            Err(ParseError::InvalidUri { .. })
        ));
        assert!(matches!(
            parse_uri("nothing"),
            Err(ParseError::InvalidUri { .. })
        ));
        assert!(check_any_uri("soap.beep://192.0.2.103:3002").is_ok());
        assert!(check_any_uri("tel:+1 555").is_err());
    }

    #[test]
    fn rejects() {
        for bad in [
            "sip:",
            "sip:@host",
            "sip:host:",
            "sip:host:99999",
            "sip:ho st",
            "sip:host;",
            "sip:host;;lr",
            "sip:host>",
            "sip:user@",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }
}
