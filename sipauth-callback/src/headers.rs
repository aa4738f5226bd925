//! The `sipHeaders` attribute of `<Dial>`, `<User>` and `<Number>`.

use crate::xml::XmlError;

/// Header-name prefixes a customer may not set (compared case-insensitively).
/// They belong to the platform, to the media side, or to other providers'
/// compatibility layers, and are dropped silently, as Plivo does.
pub const RESERVED_HEADER_PREFIXES: &[&str] = &["PH-", "Plivo", "FS-", "SipAuth", "ZT-", "Twilio"];
/// Reserved names (whole name, compared case-insensitively since SIP header
/// names are).
const RESERVED_NAMES: &[&str] = &["ClientRegion"];

/// Parses `sipHeaders="k=v,k2=v2"`.
///
/// Pairs are split on `,` and at the first `=`; surrounding spaces and tabs of
/// keys and values are trimmed and empty pieces skipped. Keys with a reserved
/// prefix ([`RESERVED_HEADER_PREFIXES`]) and the name `ClientRegion` are
/// dropped. A key that is not an RFC 3261 token, a piece without `=`, or a
/// value holding CR, LF or NUL is an error: the whole attribute is rejected.
pub fn parse_sip_headers(s: &str) -> Result<Vec<(String, String)>, XmlError> {
    let mut out = Vec::new();
    for piece in s.split(',') {
        if piece.trim_matches(is_ows).is_empty() {
            continue;
        }
        let Some((key, value)) = piece.split_once('=') else {
            return Err(XmlError::InvalidSipHeader(format!(
                "{:?} is not key=value",
                piece.trim_matches(is_ows)
            )));
        };
        let key = key.trim_matches(is_ows);
        let value = value.trim_matches(is_ows);
        if key.is_empty() || !key.bytes().all(is_token_byte) {
            return Err(XmlError::InvalidSipHeader(format!(
                "{key:?} is not a header name"
            )));
        }
        if value.contains(['\r', '\n', '\0']) {
            return Err(XmlError::InvalidSipHeader(format!(
                "value of {key:?} holds CR, LF or NUL"
            )));
        }
        if is_reserved(key) {
            tracing::debug!(header = key, "dropping reserved sipHeaders key");
            continue;
        }
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// Renders parsed headers for the outgoing leg: `X-PH-{key}`, or `X-{key}`
/// when `raw` (the inbound leg authenticated with SIP credentials).
pub fn render_sip_headers(headers: &[(String, String)], raw: bool) -> Vec<(String, String)> {
    let prefix = if raw { "X-" } else { "X-PH-" };
    headers
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect()
}

fn is_reserved(key: &str) -> bool {
    RESERVED_HEADER_PREFIXES.iter().any(|p| {
        key.len() >= p.len() && key.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    }) || RESERVED_NAMES.iter().any(|n| key.eq_ignore_ascii_case(n))
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 3261 `token`: letters, digits and ``-.!%*_+`'~``.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn splits_and_trims() {
        assert_eq!(
            parse_sip_headers("Tenant=acme, Ref = a=b ,,Empty=").unwrap(),
            kv(&[("Tenant", "acme"), ("Ref", "a=b"), ("Empty", "")])
        );
        assert_eq!(parse_sip_headers("").unwrap(), kv(&[]));
        assert_eq!(parse_sip_headers(" , ").unwrap(), kv(&[]));
    }

    #[test]
    fn reserved_prefixes_dropped_in_any_case() {
        let got = parse_sip_headers(
            "ph-a=1,PH-b=2,plivoX=3,PLIVO=4,fs-c=5,sipauth-d=6,SIPAUTHe=7,zt-f=8,TWILIO-g=9,\
             twilioh=10,ClientRegion=eu,clientregion=us,ClientRegionX=keep,Kept=yes",
        )
        .unwrap();
        assert_eq!(got, kv(&[("ClientRegionX", "keep"), ("Kept", "yes")]));
    }

    #[test]
    fn rejects_bad_keys_and_values() {
        for bad in [
            "a b=1",
            "=1",
            "k:x=1",
            "noequals",
            "k=line\r\nInjected: 1",
            "k=a\nb",
            "k=a\rb",
            "k=a\0b",
            "PH-x=a\r\nb", // rejected even though the key would be dropped
            "ké=1",
        ] {
            assert!(
                matches!(parse_sip_headers(bad), Err(XmlError::InvalidSipHeader(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn render_both_modes() {
        let h = kv(&[("Tenant", "acme"), ("Ref", "7")]);
        assert_eq!(
            render_sip_headers(&h, false),
            kv(&[("X-PH-Tenant", "acme"), ("X-PH-Ref", "7")])
        );
        assert_eq!(
            render_sip_headers(&h, true),
            kv(&[("X-Tenant", "acme"), ("X-Ref", "7")])
        );
        assert!(render_sip_headers(&[], true).is_empty());
    }
}
