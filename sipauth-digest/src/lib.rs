//! SIP digest authentication: RFC 2617, RFC 7616 (SHA-256, SHA-512-256),
//! RFC 8760 (their use in SIP) and RFC 3261 section 22.
//!
//! The crate works on plain strings, not on SIP messages: the caller parses
//! `Authorization` / `WWW-Authenticate` headers and hands over the fields.
//!
//! Server side (the edge challenging its own users):
//! - [`NonceKey`] issues and checks stateless nonces; a nonce is accepted
//!   by the instance that issued it, and reported stale (a re-challenge, not
//!   a failure) by any other instance holding the same secret;
//! - [`NcTracker`] rejects a replayed nonce count;
//! - [`verify`] checks one set of [`DigestCredentials`] and returns a [`Verdict`];
//! - [`challenge`] formats the `WWW-Authenticate` / `Proxy-Authenticate` value.
//!
//! Client side (the edge answering an upstream provider's 401/407):
//! [`pick_challenge`] chooses the strongest challenge and [`authorization`]
//! formats the answer.
//!
//! Only `qop=auth` (and the RFC 2069 form without qop) is computed;
//! `qop=auth-int` and `userhash=true` are not supported.
#![forbid(unsafe_code)]

mod client;
mod server;

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

#[doc(hidden)]
pub use client::authorization_with_cnonce;
pub use client::{authorization, pick_challenge};
pub use server::{NcTracker, NonceError, NonceKey, Verdict, challenge, verify};
/// The parsed headers the server side verifies and the client side answers.
pub use sipauth_sip::{DigestChallenge, DigestCredentials};

/// A digest hash algorithm. The `-sess` variants are the same algorithm with
/// a session HA1 and are carried as a separate flag (see [`Algorithm::parse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5 (RFC 2617). The default when the `algorithm` parameter is absent.
    Md5,
    /// SHA-256 (RFC 7616).
    Sha256,
    /// SHA-512/256 (RFC 7616).
    Sha512_256,
}

impl Algorithm {
    /// Parses the `algorithm` parameter value: `MD5`, `SHA-256`,
    /// `SHA-512-256`, each optionally with `-sess`, compared
    /// case-insensitively. Returns the algorithm and whether it is a `-sess`
    /// variant. An absent parameter (`None`) means MD5. `None` is returned
    /// for any other value.
    pub fn parse(v: Option<&str>) -> Option<(Algorithm, bool)> {
        let Some(v) = v else {
            return Some((Algorithm::Md5, false));
        };
        let (base, sess) = match v.len().checked_sub(5) {
            Some(cut) if v.is_char_boundary(cut) && v[cut..].eq_ignore_ascii_case("-sess") => {
                (&v[..cut], true)
            }
            _ => (v, false),
        };
        [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256]
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(base))
            .map(|a| (a, sess))
    }

    /// The parameter value naming the algorithm (without `-sess`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// Length of a hex digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 | Algorithm::Sha512_256 => 64,
        }
    }

    /// Lowercase hex digest of `data`.
    pub fn hash_hex(self, data: &[u8]) -> String {
        self.hash_parts(&[data])
    }

    /// Lowercase hex digest of the concatenation of `parts`.
    fn hash_parts(self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 => hex::encode(digest_parts::<Md5>(parts)),
            Algorithm::Sha256 => hex::encode(digest_parts::<Sha256>(parts)),
            Algorithm::Sha512_256 => hex::encode(digest_parts::<Sha512_256>(parts)),
        }
    }

    /// Rank used to prefer one algorithm over another: higher is stronger.
    fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 => 0,
            Algorithm::Sha256 => 1,
            Algorithm::Sha512_256 => 2,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn digest_parts<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
    let mut d = D::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().to_vec()
}

/// HA1 = H(username ":" realm ":" password), lowercase hex.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash_parts(&[
        username.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ])
}

/// The HA1 values stored for one credential, one per algorithm, so the
/// password itself need not be stored.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ha1Set {
    /// H(username:realm:password) with MD5.
    pub md5: String,
    /// H(username:realm:password) with SHA-256.
    pub sha256: String,
    /// H(username:realm:password) with SHA-512/256.
    pub sha512_256: String,
}

impl Ha1Set {
    /// Computes the three HA1 values.
    pub fn new(username: &str, realm: &str, password: &str) -> Self {
        Ha1Set {
            md5: ha1(Algorithm::Md5, username, realm, password),
            sha256: ha1(Algorithm::Sha256, username, realm, password),
            sha512_256: ha1(Algorithm::Sha512_256, username, realm, password),
        }
    }

    /// The HA1 for `alg`.
    pub fn get(&self, alg: Algorithm) -> &str {
        match alg {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
            Algorithm::Sha512_256 => &self.sha512_256,
        }
    }
}

/// HA1 values are password equivalents: they are never printed.
impl fmt::Debug for Ha1Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ha1Set(..)")
    }
}

/// The `response` value.
///
/// With a qop (`auth`): H(HA1' ":" nonce ":" nc ":" cnonce ":" qop ":" HA2);
/// without qop (RFC 2069): H(HA1' ":" nonce ":" HA2), where
/// HA2 = H(method ":" uri). HA1' is `ha1` itself, or for a `-sess`
/// algorithm H(HA1 ":" nonce ":" cnonce). `nc` is written as 8 lowercase hex
/// digits. A missing `nc` or `cnonce` where one is needed is taken as 0 or
/// the empty string; [`verify`] rejects such credentials before computing.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the fields of the digest computation one to one"
)]
pub fn response(
    alg: Algorithm,
    sess: bool,
    ha1: &str,
    nonce: &str,
    nc: Option<u32>,
    cnonce: Option<&str>,
    qop: Option<&str>,
    method: &str,
    uri: &str,
) -> String {
    let cnonce = cnonce.unwrap_or("");
    let session_ha1;
    let ha1 = if sess {
        session_ha1 = alg.hash_parts(&[
            ha1.as_bytes(),
            b":",
            nonce.as_bytes(),
            b":",
            cnonce.as_bytes(),
        ]);
        session_ha1.as_str()
    } else {
        ha1
    };
    let ha2 = alg.hash_parts(&[method.as_bytes(), b":", uri.as_bytes()]);
    match qop {
        Some(qop) => {
            let nc = format!("{:08x}", nc.unwrap_or(0));
            alg.hash_parts(&[
                ha1.as_bytes(),
                b":",
                nonce.as_bytes(),
                b":",
                nc.as_bytes(),
                b":",
                cnonce.as_bytes(),
                b":",
                qop.as_bytes(),
                b":",
                ha2.as_bytes(),
            ])
        }
        None => alg.hash_parts(&[ha1.as_bytes(), b":", nonce.as_bytes(), b":", ha2.as_bytes()]),
    }
}

/// Appends `v` as a quoted-string: `"` and `\` are escaped, control
/// characters other than HTAB (which a quoted-string cannot carry) dropped.
fn push_quoted(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
