//! `name-addr` / `addr-spec` values: From, To, Contact, Route, Record-Route.

use crate::ParseError;
use crate::lex::{check_params, find_param, is_lws, is_token_byte, quoted_end, trim_lws};
use crate::uri::{SipUri, check_any_uri, parse_uri};

/// A From/To/Contact-style value: optional display name, URI, parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name. For a quoted display name this is the raw text
    /// between the quotes, escapes (`\"`) kept as written; an unquoted one is
    /// the token sequence, trimmed.
    pub display: Option<&'a str>,
    /// The URI, without angle brackets. Any scheme; `sip`/`sips` URIs have
    /// been checked with [`parse_uri`]. A Contact of `*` has `uri == "*"`.
    pub uri: &'a str,
    /// The `tag` parameter.
    pub tag: Option<&'a str>,
    /// The whole value, trimmed.
    pub raw: &'a str,
    /// The header parameters after the URI (text after the first `;`, empty when none).
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// A header parameter by name (case-insensitive).
    #[must_use]
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }

    /// The URI parsed as a SIP URI (`Err(UnsupportedScheme)` for other schemes).
    pub fn sip_uri(&self) -> Result<SipUri<'a>, ParseError> {
        parse_uri(self.uri)
    }
}

/// Parses a `name-addr` or `addr-spec` followed by `;` parameters.
///
/// `header` names the header in errors. Rejects unterminated quotes, white
/// space inside `<...>`, display names that are not tokens, and URIs that
/// need angle brackets (containing `?` or `,`) but lack them.
pub fn parse_name_addr<'a>(
    value: &'a str,
    header: &'static str,
) -> Result<NameAddr<'a>, ParseError> {
    let err = |reason| ParseError::InvalidHeader {
        name: header,
        reason,
    };
    let raw = trim_lws(value);
    if raw.is_empty() {
        return Err(err("empty value"));
    }
    let bytes = raw.as_bytes();
    let (display, uri, after) = if raw.starts_with('"') {
        let end = quoted_end(bytes).ok_or(err("unterminated quoted display name"))?;
        let rest = trim_lws(&raw[end + 1..]);
        let rest = rest
            .strip_prefix('<')
            .ok_or(err("expected '<' after display name"))?;
        let (uri, after) = rest.split_once('>').ok_or(err("missing '>'"))?;
        (Some(&raw[1..end]), uri, after)
    } else if let Some(lt) = raw.find('<') {
        let display = trim_lws(&raw[..lt]);
        if !display.bytes().all(|b| is_token_byte(b) || is_lws(b)) {
            return Err(err("display name is neither a token sequence nor quoted"));
        }
        let (uri, after) = raw[lt + 1..].split_once('>').ok_or(err("missing '>'"))?;
        ((!display.is_empty()).then_some(display), uri, after)
    } else {
        let end = raw.find(';').unwrap_or(raw.len());
        let uri = trim_lws(&raw[..end]);
        if uri.contains(['?', ',']) {
            return Err(err("URI with '?' or ',' must be enclosed in <>"));
        }
        (None, uri, &raw[end..])
    };
    if uri.is_empty() || uri.bytes().any(is_lws) {
        return Err(err("white space in or around the URI"));
    }
    if uri == "*" && header == "Contact" && display.is_none() {
        // The wildcard Contact of a REGISTER that removes all bindings.
    } else {
        check_any_uri(uri).map_err(|_| err("invalid URI"))?;
    }
    let after = trim_lws(after);
    let (params, tag) = if after.is_empty() {
        ("", None)
    } else {
        let p = after
            .strip_prefix(';')
            .ok_or(err("unexpected text after the URI"))?;
        match check_params(p, "tag").map_err(err)? {
            Some(Some(t)) => (p, Some(t)),
            Some(None) => return Err(err("tag without value")),
            None => (p, None),
        }
    };
    Ok(NameAddr {
        display,
        uri,
        tag,
        raw,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let n = parse_name_addr(
            "\"Alice A.\" <sip:alice@example.com>;tag=1928301774",
            "From",
        )
        .unwrap();
        assert_eq!(n.display, Some("Alice A."));
        assert_eq!(n.uri, "sip:alice@example.com");
        assert_eq!(n.tag, Some("1928301774"));

        let n = parse_name_addr("Bob <sips:bob@example.com;transport=tcp>", "To").unwrap();
        assert_eq!(n.display, Some("Bob"));
        assert_eq!(n.uri, "sips:bob@example.com;transport=tcp");
        assert_eq!(n.tag, None);

        let n = parse_name_addr("sip:carol@example.com;tag=x;user=phone", "To").unwrap();
        assert_eq!(n.display, None);
        assert_eq!(n.uri, "sip:carol@example.com");
        assert_eq!(n.tag, Some("x"));
        assert_eq!(n.param("USER"), Some(Some("phone")));

        let n = parse_name_addr("caller<sip:caller@example.com>;tag=323", "From").unwrap();
        assert_eq!(n.display, Some("caller"));

        let n = parse_name_addr("<tel:+15551234>;tag=a", "From").unwrap();
        assert_eq!(n.uri, "tel:+15551234");

        let n = parse_name_addr(
            " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
            "To",
        )
        .unwrap();
        assert_eq!(n.tag, Some("1918181833n"));
    }

    #[test]
    fn escaped_display_kept_raw() {
        let n = parse_name_addr(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#,
            "From",
        )
        .unwrap();
        assert_eq!(n.display, Some(r#"J Rosenberg \\\""#));
        assert_eq!(n.tag, Some("98asjd8"));
    }

    #[test]
    fn ipv6_uri() {
        let n = parse_name_addr("\"Caller\" <sip:caller@[2001:db8::20]>", "Contact").unwrap();
        assert_eq!(n.sip_uri().unwrap().host, "[2001:db8::20]");
    }

    #[test]
    fn rejects() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:joe@example.org>;;;;",
            "<sip:joe@example.org> junk",
            "<sip:joe@example.org",
            "",
            "<>",
            "<sip:2001:db8::10>",
            "<sip:a@b>;tag",
        ] {
            assert!(parse_name_addr(bad, "To").is_err(), "{bad:?}");
        }
    }
}
