//! The Via header (RFC 3261 20.42, RFC 3581 rport).

use crate::ParseError;
use crate::lex::{check_params, find_param, is_lws, is_token_byte, trim_lws};
use crate::uri::split_hostport;

/// One Via value, e.g. `SIP/2.0/UDP host:5060;branch=z9hG4bK1;rport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol version as written, e.g. `2.0`.
    pub version: &'a str,
    /// Transport as written, e.g. `UDP` (compare case-insensitively).
    pub transport: &'a str,
    /// The sent-by host; an IPv6 reference keeps its brackets.
    pub host: &'a str,
    /// The sent-by port, when written.
    pub port: Option<u16>,
    /// The `branch` parameter's value.
    pub branch: Option<&'a str>,
    /// The whole value, trimmed (it may still contain folded line breaks).
    pub raw: &'a str,
    /// The parameters after the first `;` (empty when none).
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// A parameter by name (case-insensitive): `Some(None)` for a flag such as
    /// a bare `rport`, `Some(Some(v))` for `name=v` (quoted values without
    /// their quotes, escapes kept).
    #[must_use]
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }

    /// Whether the Via carries an `rport` parameter (with or without value).
    #[must_use]
    pub fn has_rport(&self) -> bool {
        self.param("rport").is_some()
    }

    /// The `received` parameter, when present.
    #[must_use]
    pub fn received(&self) -> Option<&'a str> {
        self.param("received").flatten()
    }

    /// The text before the parameters (`SIP/2.0/UDP host:port`).
    #[must_use]
    pub fn sent(&self) -> &'a str {
        let end = self.raw.len() - self.params.len();
        let head = if self.params.is_empty() {
            self.raw
        } else {
            self.raw.get(..end.saturating_sub(1)).unwrap_or(self.raw)
        };
        trim_lws(head.trim_end_matches(|c: char| c == ';' || is_lws(c as u8)))
    }
}

fn err(reason: &'static str) -> ParseError {
    ParseError::InvalidHeader {
        name: "Via",
        reason,
    }
}

/// Reads a token, then skips LWS after it.
fn token(s: &str) -> (&str, &str) {
    let end = s.bytes().position(|b| !is_token_byte(b)).unwrap_or(s.len());
    let (tok, rest) = s.split_at(end);
    (tok, rest.trim_start_matches(|c: char| is_lws(c as u8)))
}

/// Parses one Via value (one element of a possibly comma-joined header).
pub fn parse_via(value: &str) -> Result<Via<'_>, ParseError> {
    let raw = trim_lws(value);
    let (name, rest) = token(raw);
    if name.is_empty() {
        return Err(err("missing protocol name"));
    }
    let rest = trim_lws(rest.strip_prefix('/').ok_or(err("expected '/'"))?);
    let (version, rest) = token(rest);
    if version.is_empty() {
        return Err(err("missing protocol version"));
    }
    let rest = trim_lws(rest.strip_prefix('/').ok_or(err("expected '/'"))?);
    let end = rest
        .bytes()
        .position(|b| !is_token_byte(b))
        .unwrap_or(rest.len());
    let (transport, rest) = rest.split_at(end);
    if transport.is_empty() {
        return Err(err("missing transport"));
    }
    if !rest.starts_with(|c: char| is_lws(c as u8)) {
        return Err(err("expected white space after transport"));
    }
    let rest = trim_lws(rest);
    // sent-by: host [ SWS ":" SWS port ], ending at ';' or end.
    let (sent_by, params) = match rest.find(';') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let sent_by = trim_lws(sent_by);
    let (host, port) = if sent_by.starts_with('[') {
        split_hostport_lws(sent_by)
    } else {
        match sent_by.split_once(':') {
            Some((h, p)) => split_hostport_parts(trim_lws(h), trim_lws(p)),
            None => split_hostport(sent_by),
        }
    }
    .map_err(err)?;
    let branch = match params
        .map(|p| check_params(p, "branch"))
        .transpose()
        .map_err(err)?
    {
        None | Some(None) => None,
        Some(Some(Some(b))) => Some(b),
        Some(Some(None)) => return Err(err("branch without value")),
    };
    let params = params.unwrap_or("");
    Ok(Via {
        version,
        transport,
        host,
        port,
        branch,
        raw,
        params,
    })
}

fn split_hostport_lws(s: &str) -> Result<(&str, Option<u16>), &'static str> {
    let close = s.find(']').ok_or("unterminated IPv6 reference")?;
    let (host, rest) = s.split_at(close + 1);
    let rest = trim_lws(rest);
    match rest.strip_prefix(':') {
        Some(p) => split_hostport_parts(host, trim_lws(p)),
        None if rest.is_empty() => split_hostport(host),
        None => Err("text after IPv6 reference"),
    }
}

fn split_hostport_parts<'a>(
    host: &'a str,
    port: &str,
) -> Result<(&'a str, Option<u16>), &'static str> {
    let (host, _) = split_hostport(host)?;
    let port = crate::uri::parse_port(port).ok_or("invalid port")?;
    Ok((host, Some(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple() {
        let v =
            parse_via("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds;rport").unwrap();
        assert_eq!(v.version, "2.0");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "pc33.example.com");
        assert_eq!(v.port, Some(5066));
        assert_eq!(v.branch, Some("z9hG4bK776asdhds"));
        assert!(v.has_rport());
        assert_eq!(v.param("rport"), Some(None));
        assert_eq!(v.param("BRANCH"), Some(Some("z9hG4bK776asdhds")));
        assert_eq!(v.param("ttl"), None);
        assert_eq!(v.sent(), "SIP/2.0/UDP pc33.example.com:5066");
    }

    #[test]
    fn lws_everywhere() {
        let v =
            parse_via("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2 : 5070 ;branch = 390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch, Some("390skdjuw"));
    }

    #[test]
    fn ipv6() {
        let v = parse_via(
            "SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3;received=2001:db8::9:255",
        )
        .unwrap();
        assert_eq!(v.host, "[2001:db8::9:1]");
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.received(), Some("2001:db8::9:255"));
        let v =
            parse_via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=x").unwrap();
        assert_eq!(v.port, None);
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        assert_eq!(v.branch, Some("x"));
    }

    #[test]
    fn no_params() {
        let v = parse_via("SIP/2.0/TCP sip33.example.com").unwrap();
        assert_eq!(v.branch, None);
        assert_eq!(v.params, "");
        assert_eq!(v.sent(), "SIP/2.0/TCP sip33.example.com");
    }

    #[test]
    fn rejects() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP host;",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "SIP/2.0/UDP host:port",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP host;branch=",
            "SIP/2.0/UDP ho st",
            "SIP/2.0/UDPhost",
            "",
        ] {
            assert!(parse_via(bad).is_err(), "{bad:?}");
        }
    }
}
