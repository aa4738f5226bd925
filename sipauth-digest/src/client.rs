//! Client side: answering an upstream's 401/407 challenge.

use std::borrow::Cow;
use std::fmt::Write as _;

use rand::RngCore as _;

use sipauth_sip::DigestChallenge;

use crate::{Algorithm, ha1, push_quoted, response};

/// Index of the challenge with the strongest supported algorithm
/// (SHA-512-256 over SHA-256 over MD5, `-sess` variants counting as their
/// base algorithm); the first one on a tie. `None` when no challenge names a
/// supported algorithm.
pub fn pick_challenge(challenges: &[DigestChallenge<'_>]) -> Option<usize> {
    let mut best: Option<(usize, u8)> = None;
    for (i, ch) in challenges.iter().enumerate() {
        let Some((alg, _)) = Algorithm::parse(ch.algorithm) else {
            continue;
        };
        if best.is_none_or(|(_, s)| alg.strength() > s) {
            best = Some((i, alg.strength()));
        }
    }
    best.map(|(i, _)| i)
}

/// The `Authorization` / `Proxy-Authorization` value answering `ch`, a
/// challenge as `sipauth_sip::parse_challenge` read it: `realm`, `nonce` and
/// `opaque` are the text between their quotes, backslash escapes included;
/// the answer hashes their unquoted values (RFC 7616 3.4; RFC 3261 25.1
/// quoted-pair) and quotes them again once.
///
/// Carries username, realm, nonce, uri, response, the algorithm as the
/// challenge named it (left out when the challenge had none) and opaque when
/// given. When the challenge offers `qop=auth`, the answer uses it with a
/// fresh random cnonce and nonce count `nc`; when the challenge has no qop,
/// the RFC 2069 form is sent.
///
/// `None` when the algorithm is not supported, when the challenge offers qop
/// options but not `auth`, for a `-sess` algorithm without qop (no cnonce
/// may be sent then), or when a value holds a CR, LF or NUL.
pub fn authorization(
    ch: &DigestChallenge<'_>,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> Option<String> {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    authorization_with_cnonce(ch, username, password, method, uri, nc, &hex::encode(raw))
}

/// [`authorization`] with the cnonce given, for tests.
#[doc(hidden)]
pub fn authorization_with_cnonce(
    ch: &DigestChallenge<'_>,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> Option<String> {
    let (alg, sess) = Algorithm::parse(ch.algorithm)?;
    let qop = if ch.qop.is_empty() {
        None
    } else {
        Some(
            *ch.qop
                .iter()
                .find(|q| q.trim().eq_ignore_ascii_case("auth"))?,
        )
    };
    if sess && qop.is_none() {
        return None;
    }
    let values = [username, ch.realm, ch.nonce, uri, ch.opaque.unwrap_or("")];
    if values
        .iter()
        .any(|v| v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)))
    {
        return None;
    }
    let qop = qop.map(str::trim);
    let (cnonce, nc) = match qop {
        Some(_) => (Some(cnonce), Some(nc)),
        None => (None, None),
    };
    let realm = unescape(ch.realm);
    let nonce = unescape(ch.nonce);
    let secret = ha1(alg, username, &realm, password);
    let resp = response(alg, sess, &secret, &nonce, nc, cnonce, qop, method, uri);

    let mut out = String::with_capacity(256);
    out.push_str("Digest username=");
    push_quoted(&mut out, username);
    out.push_str(", realm=");
    push_quoted(&mut out, &realm);
    out.push_str(", nonce=");
    push_quoted(&mut out, &nonce);
    out.push_str(", uri=");
    push_quoted(&mut out, uri);
    out.push_str(", response=");
    push_quoted(&mut out, &resp);
    if let Some(name) = ch.algorithm {
        // Parsed above, so a known token.
        out.push_str(", algorithm=");
        out.push_str(name);
    }
    if let Some(opaque) = ch.opaque {
        out.push_str(", opaque=");
        push_quoted(&mut out, &unescape(opaque));
    }
    if let (Some(qop), Some(cnonce), Some(nc)) = (qop, cnonce, nc) {
        out.push_str(", qop=");
        out.push_str(qop);
        out.push_str(", cnonce=");
        push_quoted(&mut out, cnonce);
        out.push_str(", nc=");
        let _ = write!(out, "{nc:08x}");
    }
    Some(out)
}

/// A quoted-string's content with its quoted-pairs (`\x`) resolved to the
/// characters they stand for; borrowed when there are none.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // A lone backslash at the end stands for itself.
            out.push(chars.next().unwrap_or('\\'));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}
