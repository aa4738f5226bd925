//! `X-Plivo-Signature-V3`.
//!
//! The string that is signed is built from the callback URL, the HTTP method
//! and the call parameters, then `"." + nonce` is appended; the signature is
//! the standard (padded) base64 of HMAC-SHA256 over that string, keyed with
//! the account's auth token.
//!
//! * The base is `scheme://authority/path` of the URL as given (scheme
//!   lower-cased, query and fragment removed).
//! * Query pairs are form-decoded (`+` is a space, `%XX` decoded).
//! * GET: the URL's query pairs and `params` together, sorted by key and then
//!   value, each written `key=value` (not re-encoded) and joined with `&`;
//!   appended as `?…` when there is at least one pair.
//! * POST: the URL's query pairs sorted and joined as for GET. If there is a
//!   query or any `params`, `?` and the joined query follow the base; if there
//!   are both, a `.` follows. Then the `params` sorted by key and value, each
//!   written `keyvalue`, concatenated without separator.
//!
//! This is the algorithm of Plivo's server SDKs (`validate_v3_signature` in
//! plivo-python, `validateV3Signature` in plivo-node, `ValidateSignatureV3` in
//! plivo-go), and it reproduces the vectors of plivo-go's own tests.
//!
//! Repeated keys are kept as several values, as a form or query string
//! carries them. Any method other than GET (case-insensitive) is signed as
//! POST.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Computes the value of `X-Plivo-Signature-V3` for a request to `url` with
/// `method` (`"GET"` or `"POST"`) and the call parameters `params`, with
/// `nonce` (the `X-Plivo-Signature-V3-Nonce` value), keyed with the account's
/// `auth_token`. Returns standard padded base64.
pub fn signature_v3<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    method: &str,
    url: &str,
    params: &[(K, V)],
    nonce: &str,
) -> String {
    STANDARD.encode(
        mac_for(auth_token, method, url, params, nonce)
            .finalize()
            .into_bytes(),
    )
}

/// Verifies a received `X-Plivo-Signature-V3` header. The header may hold
/// several comma-separated signatures (one per active auth token); the request
/// is genuine when any of them matches. Each comparison is constant time.
pub fn verify_v3<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    method: &str,
    url: &str,
    params: &[(K, V)],
    nonce: &str,
    header: &str,
) -> bool {
    let mac = mac_for(auth_token, method, url, params, nonce);
    let mut matched = false;
    for candidate in header.split(',') {
        let Ok(sig) = STANDARD.decode(candidate.trim()) else {
            continue;
        };
        // `verify_slice` compares in constant time. Every candidate is checked
        // so that the position of a match does not show in the timing.
        matched |= mac.clone().verify_slice(&sig).is_ok();
    }
    matched
}

fn mac_for<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    method: &str,
    url: &str,
    params: &[(K, V)],
    nonce: &str,
) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    // The signed string goes into the MAC piece by piece, never built.
    write_signed_base(method, url, params, &mut |piece| {
        mac.update(piece.as_bytes());
    });
    mac.update(b".");
    mac.update(nonce.as_bytes());
    mac
}

/// The signed string without the trailing `"." + nonce`.
#[cfg(test)]
fn signed_base<K: AsRef<str>, V: AsRef<str>>(method: &str, url: &str, params: &[(K, V)]) -> String {
    let mut out = String::new();
    write_signed_base(method, url, params, &mut |piece| out.push_str(piece));
    out
}

/// Hands the signed string without the trailing `"." + nonce` to `out`, in
/// pieces: `scheme://authority/path` of `url` (scheme lower-cased, query
/// and fragment dropped), then the query and `params` as the module doc
/// says.
fn write_signed_base<K: AsRef<str>, V: AsRef<str>>(
    method: &str,
    url: &str,
    params: &[(K, V)],
    out: &mut impl FnMut(&str),
) {
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    match base.split_once("://") {
        Some((scheme, rest)) => {
            if scheme.bytes().any(|b| b.is_ascii_uppercase()) {
                out(&scheme.to_ascii_lowercase());
            } else {
                out(scheme);
            }
            out("://");
            out(rest);
        }
        None => out(base),
    }
    let decoded: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        form_urlencoded::parse(query.as_bytes()).collect();
    let mut query_pairs: Vec<(&str, &str)> = decoded.iter().map(|(k, v)| (&**k, &**v)).collect();
    let params = params.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));

    if method.eq_ignore_ascii_case("GET") {
        query_pairs.extend(params);
        query_pairs.sort_unstable();
        if !query_pairs.is_empty() {
            out("?");
            write_query(&query_pairs, out);
        }
    } else {
        query_pairs.sort_unstable();
        let mut sorted: Vec<(&str, &str)> = params.collect();
        sorted.sort_unstable();
        if !query_pairs.is_empty() || !sorted.is_empty() {
            out("?");
            write_query(&query_pairs, out);
        }
        if !query_pairs.is_empty() && !sorted.is_empty() {
            out(".");
        }
        for (k, v) in sorted {
            out(k);
            out(v);
        }
    }
}

/// `key=value` pairs joined with `&`, not encoded again.
fn write_query(pairs: &[(&str, &str)], out: &mut impl FnMut(&str)) {
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out("&");
        }
        out(k);
        out("=");
        out(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn post_without_query() {
        assert_eq!(
            signed_base(
                "POST",
                "https://a.example/answer",
                &p(&[("To", "1"), ("From", "2")])
            ),
            "https://a.example/answer?From2To1"
        );
    }

    #[test]
    fn post_with_query() {
        assert_eq!(
            signed_base(
                "POST",
                "https://a.example/x?c=d&a=b#frag",
                &p(&[("B", "2"), ("A", "1")])
            ),
            "https://a.example/x?a=b&c=d.A1B2"
        );
        assert_eq!(
            signed_base("POST", "https://a.example/x?c=d&a=b", &p(&[])),
            "https://a.example/x?a=b&c=d"
        );
        assert_eq!(
            signed_base("POST", "https://a.example/x", &p(&[])),
            "https://a.example/x"
        );
    }

    #[test]
    fn get_merges_query_and_params() {
        assert_eq!(
            signed_base(
                "GET",
                "HTTPS://a.example/x?z=1&a=b%20c",
                &p(&[("m", "2"), ("a", "a")])
            ),
            "https://a.example/x?a=a&a=b c&m=2&z=1"
        );
        assert_eq!(
            signed_base("get", "https://a.example/x?", &p(&[])),
            "https://a.example/x"
        );
    }

    #[test]
    fn repeated_keys_sort_by_value() {
        assert_eq!(
            signed_base("POST", "http://h/p", &p(&[("k", "b"), ("k", "a")])),
            "http://h/p?kakb"
        );
    }
}
