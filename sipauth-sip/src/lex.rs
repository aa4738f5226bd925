//! Small lexical helpers shared by the header parsers (RFC 3261 section 25.1).

use std::borrow::Cow;

const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        #[expect(clippy::cast_possible_truncation, reason = "i < 256")]
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
}

static TOKEN: [bool; 256] = token_table();

/// `token` characters: alphanumerics and ``-.!%*_+`'~``.
#[inline]
pub(crate) fn is_token_byte(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Linear white space as it can appear inside a (possibly folded) header value.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim_lws(s: &str) -> &str {
    let b = s.as_bytes();
    let mut i = 0;
    let mut j = b.len();
    while i < j && is_lws(b[i]) {
        i += 1;
    }
    while j > i && is_lws(b[j - 1]) {
        j -= 1;
    }
    // Both ends sit next to ASCII bytes, so they are char boundaries.
    s.get(i..j).unwrap_or("")
}

pub(crate) fn trim_lws_start(s: &str) -> &str {
    let i = s.bytes().position(|b| !is_lws(b)).unwrap_or(s.len());
    s.get(i..).unwrap_or("")
}

/// Given `s` starting with `"`, the index of the closing quote, honouring
/// backslash escapes. `None` when the string is unterminated.
pub(crate) fn quoted_end(s: &[u8]) -> Option<usize> {
    debug_assert_eq!(s.first(), Some(&b'"'));
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Splits `s` on `sep` outside double quotes and angle brackets.
/// Unbalanced quotes or brackets simply run to the end of the input; the
/// element parsers reject them afterwards.
pub(crate) struct SplitTop<'a> {
    rest: Option<&'a str>,
    sep: Option<u8>,
}

pub(crate) fn split_top(s: &str, sep: u8) -> SplitTop<'_> {
    SplitTop {
        rest: Some(s),
        sep: Some(sep),
    }
}

/// Like [`split_top`], but yields `s` whole when `sep` is `None`.
pub(crate) fn split_top_opt(s: &str, sep: Option<u8>) -> SplitTop<'_> {
    SplitTop { rest: Some(s), sep }
}

impl<'a> Iterator for SplitTop<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let Some(sep) = self.sep else {
            self.rest = None;
            return Some(s);
        };
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut in_quotes = false;
        let mut in_angle = false;
        while let Some(&b) = bytes.get(i) {
            if in_quotes {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_quotes = false,
                    _ => {}
                }
            } else if in_angle {
                if b == b'>' {
                    in_angle = false;
                }
            } else if b == b'"' {
                in_quotes = true;
            } else if b == b'<' {
                in_angle = true;
            } else if b == sep {
                self.rest = s.get(i + 1..);
                return s.get(..i);
            }
            i += 1;
        }
        self.rest = None;
        Some(s)
    }
}

/// Characters allowed in an unquoted generic-param value: `token`, plus what
/// a `host` adds (`:` `[` `]` for IPv6 references and bare IPv6 addresses).
fn is_gen_value_byte(b: u8) -> bool {
    is_token_byte(b) || matches!(b, b':' | b'[' | b']')
}

/// Reads one `generic-param` (`name [ EQUAL value ]`) from a `;`-separated
/// segment. Quoted values are returned as the raw text between the quotes.
pub(crate) fn parse_param(seg: &str) -> Result<(&str, Option<&str>), &'static str> {
    let seg = trim_lws(seg);
    if seg.is_empty() {
        return Err("empty parameter");
    }
    let (name, value) = match seg.find('=') {
        Some(eq) => (trim_lws(&seg[..eq]), Some(trim_lws(&seg[eq + 1..]))),
        None => (seg, None),
    };
    if !is_token(name) {
        return Err("parameter name is not a token");
    }
    let Some(value) = value else {
        return Ok((name, None));
    };
    if value.starts_with('"') {
        let end = quoted_end(value.as_bytes()).ok_or("unterminated quoted parameter value")?;
        if end + 1 != value.len() {
            return Err("text after quoted parameter value");
        }
        return Ok((name, Some(&value[1..end])));
    }
    if value.is_empty() || !value.bytes().all(is_gen_value_byte) {
        return Err("invalid parameter value");
    }
    Ok((name, Some(value)))
}

/// Validates every parameter of a `;`-separated list (the text after the
/// first `;`) and returns the first value of the parameter `want`.
#[expect(
    clippy::option_option,
    reason = "absent, flag and name=value are three distinct answers"
)]
pub(crate) fn check_params<'a>(
    params: &'a str,
    want: &str,
) -> Result<Option<Option<&'a str>>, &'static str> {
    let mut found = None;
    for seg in split_top(params, b';') {
        let (name, value) = parse_param(seg)?;
        if found.is_none() && name.eq_ignore_ascii_case(want) {
            found = Some(value);
        }
    }
    Ok(found)
}

/// Looks `name` up (case-insensitively) in a validated `;`-separated list.
#[expect(
    clippy::option_option,
    reason = "absent, flag and name=value are three distinct answers"
)]
pub(crate) fn find_param<'a>(params: &'a str, name: &str) -> Option<Option<&'a str>> {
    if params.is_empty() {
        return None;
    }
    split_top(params, b';')
        .filter_map(|seg| parse_param(seg).ok())
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Replaces every run of white space that contains a line break (a folded
/// header line) with a single SP. Borrows when there is nothing to replace.
#[must_use]
pub fn unfold(value: &str) -> Cow<'_, str> {
    if !value.contains(['\r', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find(['\r', '\n']) {
        let head = rest[..pos].trim_end_matches([' ', '\t']);
        out.push_str(head);
        out.push(' ');
        rest = trim_lws_start(&rest[pos..]);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `scheme ":"` prefix check: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
pub(crate) fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_angles() {
        let parts: Vec<_> = split_top(r#""a,b" <sip:x;y,z>, c, "q\",r""#, b',').collect();
        assert_eq!(parts, vec![r#""a,b" <sip:x;y,z>"#, " c", r#" "q\",r""#]);
    }

    #[test]
    fn params() {
        assert_eq!(parse_param(" tag = abc "), Ok(("tag", Some("abc"))));
        assert_eq!(parse_param("lr"), Ok(("lr", None)));
        assert_eq!(parse_param(r#"x="a;b""#), Ok(("x", Some("a;b"))));
        assert_eq!(
            parse_param("received=[2001:db8::1]"),
            Ok(("received", Some("[2001:db8::1]")))
        );
        assert!(parse_param("").is_err());
        assert!(parse_param("a=").is_err());
        assert!(parse_param("a=\"x").is_err());
        assert!(parse_param("a b=c").is_err());
        assert_eq!(find_param("lr;Tag=x", "tag"), Some(Some("x")));
        assert_eq!(find_param("lr;Tag=x", "LR"), Some(None));
        assert_eq!(find_param("", "lr"), None);
    }

    #[test]
    fn unfolding_joins_with_one_space() {
        assert_eq!(unfold("a\r\n b"), "a b");
        assert_eq!(unfold("a  \r\n\t  b\r\n c"), "a b c");
        assert!(matches!(unfold("plain"), Cow::Borrowed("plain")));
    }
}
