//! Digest authentication headers (RFC 7616, RFC 2617, RFC 8760, RFC 3261 22.4).
//!
//! The server side reads `Authorization` / `Proxy-Authorization` with
//! [`parse_credentials`]; the client side reads `WWW-Authenticate` /
//! `Proxy-Authenticate` with [`parse_challenge`].
//!
//! The scheme name and parameter names are case-insensitive. Values may be
//! quoted strings or bare values (tokens; leniently, anything without white
//! space, control characters, `"` or `<`); a quoted value is returned as
//! the raw text between the quotes (backslash escapes are not removed —
//! they are rare in Digest parameters, and the `uri` in particular must be
//! the exact string the client hashed). Unknown parameters are ignored; a known parameter
//! given twice is an error.

use crate::ParseError;
use crate::lex::{is_lws, is_token, is_token_byte, quoted_end, split_top, trim_lws};

/// Credentials from an `Authorization` or `Proxy-Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestCredentials<'a> {
    /// `username` (the user hash when `userhash` is true).
    pub username: &'a str,
    /// `realm`.
    pub realm: &'a str,
    /// `nonce`.
    pub nonce: &'a str,
    /// `uri`: the exact raw digest-uri string the response was computed over.
    pub uri: &'a str,
    /// `response`: the hex digest as sent.
    pub response: &'a str,
    /// `algorithm` as written (`MD5`, `SHA-256`, `SHA-512-256`, `...-sess`).
    pub algorithm: Option<&'a str>,
    /// `cnonce`.
    pub cnonce: Option<&'a str>,
    /// `opaque`.
    pub opaque: Option<&'a str>,
    /// `qop` (`auth` or `auth-int`).
    pub qop: Option<&'a str>,
    /// `nc`, the nonce count (8 hex digits on the wire).
    pub nc: Option<u32>,
    /// `userhash=true`.
    pub userhash: bool,
}

/// A challenge from a `WWW-Authenticate` or `Proxy-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge<'a> {
    /// `realm`.
    pub realm: &'a str,
    /// `nonce`.
    pub nonce: &'a str,
    /// `opaque`.
    pub opaque: Option<&'a str>,
    /// `algorithm` as written.
    pub algorithm: Option<&'a str>,
    /// The offered qop values, from `qop="auth,auth-int"`.
    pub qop: Vec<&'a str>,
    /// `stale=true`.
    pub stale: bool,
    /// `domain` (raw, space-separated URIs).
    pub domain: Option<&'a str>,
}

fn invalid(name: &'static str, reason: &'static str) -> ParseError {
    ParseError::InvalidParam { name, reason }
}

/// Strips the `Digest` scheme and returns the parameter list.
fn digest_params(value: &str) -> Result<&str, ParseError> {
    let value = trim_lws(value);
    let end = value
        .bytes()
        .position(|b| !is_token_byte(b))
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(end);
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(ParseError::UnsupportedAuthScheme);
    }
    if !rest.is_empty() && !rest.starts_with(|c: char| is_lws(c as u8)) {
        return Err(ParseError::UnsupportedAuthScheme);
    }
    Ok(rest)
}

/// Iterates `name=value` pairs of an auth-param list. Empty list elements are skipped.
fn auth_params(list: &str) -> impl Iterator<Item = Result<(&str, &str), ParseError>> {
    split_top(list, b',').filter_map(|item| {
        let item = trim_lws(item);
        if item.is_empty() {
            return None;
        }
        Some(auth_param(item))
    })
}

fn auth_param(item: &str) -> Result<(&str, &str), ParseError> {
    let (name, value) = item
        .split_once('=')
        .ok_or(invalid("-", "parameter without '='"))?;
    let name = trim_lws(name);
    if !is_token(name) {
        return Err(invalid("-", "parameter name is not a token"));
    }
    let value = trim_lws(value);
    if value.starts_with('"') {
        let end = quoted_end(value.as_bytes()).ok_or(invalid("-", "unterminated quoted string"))?;
        if end + 1 != value.len() {
            return Err(invalid("-", "text after quoted string"));
        }
        Ok((name, &value[1..end]))
    } else if value.is_empty()
        || value
            .bytes()
            // `<` would open an angle bracket for the list splitter and take
            // the parameters after it along, so the same list would parse
            // or not depending on the order of its parameters.
            .any(|b| is_lws(b) || b == b'"' || b == b'<' || b < 0x20 || b == 0x7f)
    {
        Err(invalid("-", "invalid token value"))
    } else {
        Ok((name, value))
    }
}

/// Stores `value` in the slot whose label matches `name` (case-insensitive);
/// unknown names are ignored, a second value for a known name is an error.
fn store<'a, const N: usize>(
    slots: [(&'static str, &mut Option<&'a str>); N],
    name: &str,
    value: &'a str,
) -> Result<(), ParseError> {
    for (label, slot) in slots {
        if label.eq_ignore_ascii_case(name) {
            if slot.replace(value).is_some() {
                return Err(ParseError::DuplicateParam(label));
            }
            return Ok(());
        }
    }
    Ok(())
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, ParseError> {
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(invalid(name, "expected true or false"))
    }
}

/// Parses `Digest username="..", realm="..", ...` credentials.
///
/// Required: `username`, `realm`, `nonce`, `uri`, `response`; when `qop` is
/// present, `cnonce` and `nc` are required too (RFC 7616 3.4). `nc` must be
/// exactly 8 hex digits.
pub fn parse_credentials(value: &str) -> Result<DigestCredentials<'_>, ParseError> {
    let list = digest_params(value)?;
    let mut username = None;
    let mut realm = None;
    let mut nonce = None;
    let mut uri = None;
    let mut response = None;
    let mut algorithm = None;
    let mut cnonce = None;
    let mut opaque = None;
    let mut qop = None;
    let mut nc = None;
    let mut userhash = None;
    for p in auth_params(list) {
        let (name, v) = p?;
        let slots: [(&'static str, &mut Option<&str>); 11] = [
            ("username", &mut username),
            ("realm", &mut realm),
            ("nonce", &mut nonce),
            ("uri", &mut uri),
            ("response", &mut response),
            ("algorithm", &mut algorithm),
            ("cnonce", &mut cnonce),
            ("opaque", &mut opaque),
            ("qop", &mut qop),
            ("nc", &mut nc),
            ("userhash", &mut userhash),
        ];
        store(slots, name, v)?;
    }
    let nc = nc
        .map(|v: &str| {
            if v.len() == 8 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                u32::from_str_radix(v, 16).map_err(|_| invalid("nc", "not hex"))
            } else {
                Err(invalid("nc", "expected 8 hex digits"))
            }
        })
        .transpose()?;
    if qop.is_some_and(|q: &str| !is_token(q)) {
        return Err(invalid("qop", "expected a single token"));
    }
    if qop.is_some() {
        if cnonce.is_none() {
            return Err(ParseError::MissingParam("cnonce"));
        }
        if nc.is_none() {
            return Err(ParseError::MissingParam("nc"));
        }
    }
    if algorithm.is_some_and(|a: &str| !is_token(a)) {
        return Err(invalid("algorithm", "expected a token"));
    }
    Ok(DigestCredentials {
        username: username.ok_or(ParseError::MissingParam("username"))?,
        realm: realm.ok_or(ParseError::MissingParam("realm"))?,
        nonce: nonce.ok_or(ParseError::MissingParam("nonce"))?,
        uri: uri.ok_or(ParseError::MissingParam("uri"))?,
        response: response.ok_or(ParseError::MissingParam("response"))?,
        algorithm,
        cnonce,
        opaque,
        qop,
        nc,
        userhash: userhash
            .map(|v| parse_bool("userhash", v))
            .transpose()?
            .unwrap_or(false),
    })
}

/// Parses a `Digest realm="..", nonce="..", ...` challenge.
///
/// Required: `realm` and `nonce`. `qop` is split on commas.
pub fn parse_challenge(value: &str) -> Result<DigestChallenge<'_>, ParseError> {
    let list = digest_params(value)?;
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut algorithm = None;
    let mut qop = None;
    let mut stale = None;
    let mut domain = None;
    for p in auth_params(list) {
        let (name, v) = p?;
        let slots: [(&'static str, &mut Option<&str>); 7] = [
            ("realm", &mut realm),
            ("nonce", &mut nonce),
            ("opaque", &mut opaque),
            ("algorithm", &mut algorithm),
            ("qop", &mut qop),
            ("stale", &mut stale),
            ("domain", &mut domain),
        ];
        store(slots, name, v)?;
    }
    let qop = match qop {
        None => Vec::new(),
        Some(list) => {
            let values: Vec<&str> = list
                .split(',')
                .map(trim_lws)
                .filter(|q| !q.is_empty())
                .collect();
            if values.is_empty() || !values.iter().all(|q| is_token(q)) {
                return Err(invalid("qop", "expected a list of tokens"));
            }
            values
        }
    };
    if algorithm.is_some_and(|a: &str| !is_token(a)) {
        return Err(invalid("algorithm", "expected a token"));
    }
    Ok(DigestChallenge {
        realm: realm.ok_or(ParseError::MissingParam("realm"))?,
        nonce: nonce.ok_or(ParseError::MissingParam("nonce"))?,
        opaque,
        algorithm,
        qop,
        stale: stale
            .map(|v| parse_bool("stale", v))
            .transpose()?
            .unwrap_or(false),
        domain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRED: &str = r#"Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.com", qop=auth, nc=0000000a, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41", algorithm=SHA-256"#;

    #[test]
    fn credentials() {
        let c = parse_credentials(CRED).unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(c.realm, "biloxi.com");
        assert_eq!(c.nonce, "dcd98b7102dd2f0e8b11d0f600bfb0c093");
        assert_eq!(c.uri, "sip:bob@biloxi.com");
        assert_eq!(c.qop, Some("auth"));
        assert_eq!(c.nc, Some(10));
        assert_eq!(c.cnonce, Some("0a4f113b"));
        assert_eq!(c.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(c.opaque, Some("5ccc069c403ebaf9f0171e9517f40e41"));
        assert_eq!(c.algorithm, Some("SHA-256"));
        assert!(!c.userhash);
    }

    #[test]
    fn case_insensitive_names_and_scheme() {
        let c = parse_credentials(
            "dIgEsT USERNAME=\"a\",Realm=r,NONCE=\"n\",Uri=\"sip:x;lr\",RESPONSE=\"ff\",Algorithm=\"SHA-512-256-sess\",UserHash=TRUE",
        )
        .unwrap();
        assert_eq!(c.username, "a");
        assert_eq!(c.realm, "r");
        assert_eq!(c.uri, "sip:x;lr");
        assert_eq!(c.algorithm, Some("SHA-512-256-sess"));
        assert!(c.userhash);
        assert_eq!(c.nc, None);
    }

    #[test]
    fn raw_uri_kept_exactly() {
        let c = parse_credentials(
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:%61lice@[2001:db8::1]:5060;transport=tcp?x=1,2\", response=\"0\"",
        )
        .unwrap();
        assert_eq!(c.uri, "sip:%61lice@[2001:db8::1]:5060;transport=tcp?x=1,2");
    }

    #[test]
    fn credential_errors() {
        assert_eq!(
            parse_credentials("Basic dXNlcjpwYXNz"),
            Err(ParseError::UnsupportedAuthScheme)
        );
        assert_eq!(
            parse_credentials("NoOneKnowsThisScheme opaque-data=here"),
            Err(ParseError::UnsupportedAuthScheme)
        );
        assert_eq!(
            parse_credentials("Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\""),
            Err(ParseError::MissingParam("username"))
        );
        assert_eq!(
            parse_credentials("Digest username=a, username=b, realm=r, nonce=n, uri=u, response=x"),
            Err(ParseError::DuplicateParam("username"))
        );
        assert_eq!(
            parse_credentials(
                "Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, cnonce=c"
            ),
            Err(ParseError::MissingParam("nc"))
        );
        for nc in ["10", "0000000g", "000000001", "\"0000000a\"x"] {
            assert!(
                parse_credentials(&format!(
                    "Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, cnonce=c, nc={nc}"
                ))
                .is_err(),
                "{nc}"
            );
        }
        assert!(parse_credentials("Digest username=\"a, realm=r").is_err());
        assert!(parse_credentials("Digest").is_err());
        assert!(parse_credentials("").is_err());
        assert!(parse_credentials("Digestusername=a").is_err());
    }

    #[test]
    fn challenge() {
        let c = parse_challenge(
            "Digest realm=\"atlanta.com\", domain=\"sip:ss1.carrier.com\", qop=\"auth,auth-int\", nonce=\"f84f1cec41e6cbe5aea9c8e88d359\", opaque=\"\", stale=FALSE, algorithm=MD5-sess",
        )
        .unwrap();
        assert_eq!(c.realm, "atlanta.com");
        assert_eq!(c.nonce, "f84f1cec41e6cbe5aea9c8e88d359");
        assert_eq!(c.qop, vec!["auth", "auth-int"]);
        assert_eq!(c.opaque, Some(""));
        assert_eq!(c.algorithm, Some("MD5-sess"));
        assert_eq!(c.domain, Some("sip:ss1.carrier.com"));
        assert!(!c.stale);

        let c = parse_challenge(
            "DIGEST REALM=r, NONCE=n, STALE=true, QOP=\" auth \", ALGORITHM=SHA-512-256",
        )
        .unwrap();
        assert!(c.stale);
        assert_eq!(c.qop, vec!["auth"]);
        assert_eq!(c.algorithm, Some("SHA-512-256"));

        assert_eq!(
            parse_challenge("Digest nonce=n"),
            Err(ParseError::MissingParam("realm"))
        );
        assert!(parse_challenge("Digest realm=r, nonce=n, stale=maybe").is_err());
        assert!(parse_challenge("Digest realm=r, nonce=n, qop=\",\"").is_err());
    }
}
