//! Server side: nonces, replay tracking, verification and challenges.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::{RngCore as _, TryRngCore as _};
use sha2::Sha256;
use sipauth_sip::DigestCredentials;
use subtle::ConstantTimeEq as _;

use crate::{Algorithm, Ha1Set, push_quoted, response};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation for the nonce seal, so the key cannot be used to forge
/// anything else computed with the same HMAC.
const NONCE_TAG: &[u8] = b"sipauth-digest nonce v1\0";
const TIME_LEN: usize = 8;
const INSTANCE_LEN: usize = 8;
const RANDOM_LEN: usize = 16;
const SEAL_LEN: usize = 16;
const NONCE_BYTES: usize = TIME_LEN + RANDOM_LEN + SEAL_LEN;
/// Length of the base64url (unpadded) text of a nonce: ceil(40 * 4 / 3).
const NONCE_CHARS: usize = (NONCE_BYTES * 4).div_ceil(3);
/// A nonce issued up to this many seconds in the future (clock skew between
/// edges) is still accepted.
const FUTURE_SKEW_SECS: u64 = 5;

/// Why a nonce was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Made by this key for this realm, but too old (or too far in the
    /// future). The client should retry with a fresh nonce (`stale=true`).
    #[error("nonce is stale")]
    Stale,
    /// Not made by this key for this realm, or malformed.
    #[error("nonce is invalid")]
    Invalid,
}

/// The secret that seals stateless nonces, and the instance that uses it.
///
/// A nonce is the base64url text (no padding, 54 characters) of 40 bytes:
///
/// ```text
/// [issue time: 8 bytes, seconds since the Unix epoch, big-endian]
/// [instance: 8 bytes, random per NonceKey made]
/// [8 random bytes]
/// [first 16 bytes of HMAC-SHA256(secret, tag || time || instance || random || realm)]
/// ```
///
/// where `tag` is the constant `"sipauth-digest nonce v1\0"`.
///
/// A nonce is accepted only by the instance that issued it, because only
/// that instance holds its nonce counts ([`NcTracker`]): that is what makes
/// a (nonce, nc) pair good once. Another instance holding the same secret
/// (another edge of the fleet, or this edge after a restart) recognises the
/// seal and reports [`NonceError::Stale`], so a client with the right
/// credentials is asked again with `stale=true` and a nonce of its own
/// (RFC 7616 3.3), without counting a failure.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
    instance: [u8; INSTANCE_LEN],
}

impl NonceKey {
    /// A key from a shared secret, for a new instance.
    pub fn new(secret: [u8; 32]) -> Self {
        let mut instance = [0u8; INSTANCE_LEN];
        rand::rng().fill_bytes(&mut instance);
        NonceKey { secret, instance }
    }

    /// A key from the operating system's random source (for a single edge,
    /// or tests).
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .expect("operating system random source failed");
        Self::new(secret)
    }

    fn mac(&self, head: &[u8], realm: &str) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(NONCE_TAG);
        mac.update(head);
        mac.update(realm.as_bytes());
        mac
    }

    /// A fresh nonce for `realm`, issued at `now_unix_secs`.
    pub fn issue(&self, realm: &str, now_unix_secs: u64) -> String {
        let mut raw = [0u8; NONCE_BYTES];
        raw[..TIME_LEN].copy_from_slice(&now_unix_secs.to_be_bytes());
        raw[TIME_LEN..TIME_LEN + INSTANCE_LEN].copy_from_slice(&self.instance);
        rand::rng().fill_bytes(&mut raw[TIME_LEN + INSTANCE_LEN..TIME_LEN + RANDOM_LEN]);
        let tag = self
            .mac(&raw[..TIME_LEN + RANDOM_LEN], realm)
            .finalize()
            .into_bytes();
        raw[TIME_LEN + RANDOM_LEN..].copy_from_slice(&tag[..SEAL_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce: `Ok(issued_at)` when this instance sealed it for
    /// `realm` and it is at most `ttl_secs` old; [`NonceError::Stale`] when
    /// sealed right but older than that, issued more than 5 s in the future,
    /// or issued by another instance holding the same secret;
    /// [`NonceError::Invalid`] otherwise (other key, other realm, altered,
    /// malformed).
    pub fn check(
        &self,
        nonce: &str,
        realm: &str,
        now_unix_secs: u64,
        ttl_secs: u64,
    ) -> Result<u64, NonceError> {
        if nonce.len() != NONCE_CHARS {
            return Err(NonceError::Invalid);
        }
        let mut raw = [0u8; NONCE_BYTES];
        // The engine rejects non-zero trailing bits, so exactly one text
        // decodes to a given nonce: NcTracker can key on the text.
        match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(NONCE_BYTES) => {}
            _ => return Err(NonceError::Invalid),
        }
        let (head, seal) = raw.split_at(TIME_LEN + RANDOM_LEN);
        self.mac(head, realm)
            .verify_truncated_left(seal)
            .map_err(|_| NonceError::Invalid)?;
        let mut time = [0u8; TIME_LEN];
        time.copy_from_slice(&head[..TIME_LEN]);
        let issued = u64::from_be_bytes(time);
        if head[TIME_LEN..TIME_LEN + INSTANCE_LEN] != self.instance {
            return Err(NonceError::Stale);
        }
        if issued > now_unix_secs.saturating_add(FUTURE_SKEW_SECS)
            || now_unix_secs.saturating_sub(issued) > ttl_secs
        {
            return Err(NonceError::Stale);
        }
        Ok(issued)
    }
}

/// The secret is never printed.
impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Replay protection: per nonce, the nonce count must strictly increase.
///
/// An entry lives `ttl_secs` from the first time its nonce is seen (at
/// least as long as the nonce itself is accepted, since a nonce is first
/// seen after it was issued). At most `capacity` entries are kept; when full,
/// the oldest entry is dropped, which only lets that nonce's counts be
/// replayed again. Entries are made only by [`verify`] after a correct
/// response, so the table cannot be filled without valid credentials.
pub struct NcTracker {
    ttl_secs: u64,
    capacity: usize,
    inner: Mutex<NcInner>,
}

#[derive(Default)]
struct NcInner {
    /// Nonce -> highest nc seen.
    seen: HashMap<String, u32>,
    /// Nonces in the order they were first seen; expiry times do not
    /// decrease along the queue because `now` is clamped to be monotonic.
    order: VecDeque<(String, u64)>,
    /// The latest time passed in, so a caller's clock stepping back does
    /// not disorder the queue.
    now: u64,
}

impl NcTracker {
    /// A tracker whose entries expire after `ttl_secs` and which holds at
    /// most `capacity` nonces (at least one).
    pub fn new(ttl_secs: u64, capacity: usize) -> Self {
        NcTracker {
            ttl_secs,
            capacity: capacity.max(1),
            inner: Mutex::new(NcInner::default()),
        }
    }

    /// `true` when `nc` is greater than every count seen for `nonce` (and
    /// records it); `false` for a replay.
    pub fn accept(&self, nonce: &str, nc: u32, now_unix_secs: u64) -> bool {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inner = &mut *inner;
        inner.now = inner.now.max(now_unix_secs);
        let now = inner.now;
        while inner.order.front().is_some_and(|&(_, exp)| exp <= now) {
            if let Some((old, _)) = inner.order.pop_front() {
                inner.seen.remove(&old);
            }
        }
        if let Some(max_nc) = inner.seen.get_mut(nonce) {
            if nc > *max_nc {
                *max_nc = nc;
                return true;
            }
            return false;
        }
        while inner.seen.len() >= self.capacity {
            match inner.order.pop_front() {
                Some((old, _)) => {
                    inner.seen.remove(&old);
                }
                None => break,
            }
        }
        let expires = now.saturating_add(self.ttl_secs);
        inner.seen.insert(nonce.to_owned(), nc);
        inner.order.push_back((nonce.to_owned(), expires));
        true
    }

    /// Number of nonces tracked (expired entries are dropped lazily, on the
    /// next [`NcTracker::accept`]).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seen
            .len()
    }

    /// Whether no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for NcTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NcTracker")
            .field("ttl_secs", &self.ttl_secs)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// What the server concluded about a set of credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The response is right and the nonce count is new.
    Ok,
    /// The response does not match the stored credential.
    WrongResponse,
    /// No credential for this username.
    UnknownUser,
    /// The nonce was sealed with our secret but has expired or was issued
    /// by another instance, and the response was right for it: challenge
    /// again with `stale=true`.
    Stale,
    /// The nonce was not made by this key for this realm.
    InvalidNonce,
    /// The nonce count was already used with this nonce.
    Replay,
    /// The credentials are malformed or ask for something not offered
    /// (realm mismatch, unsupported algorithm, missing qop/cnonce/nc).
    BadRequest(&'static str),
}

/// Verifies credentials against the expected `realm` for a request with
/// `method`.
///
/// Checks, in order: the realm equals `realm` ([`Verdict::BadRequest`]); the
/// algorithm is supported ([`Verdict::BadRequest`]); the nonce seal
/// ([`Verdict::InvalidNonce`]); qop is `auth` with cnonce and nc present
/// ([`Verdict::BadRequest`]); `lookup(username)` finds a credential
/// ([`Verdict::UnknownUser`]); the response matches, compared in constant
/// time ([`Verdict::WrongResponse`]); the nonce's age ([`Verdict::Stale`]:
/// right credentials, old nonce); the nonce count is new
/// ([`Verdict::Replay`]).
///
/// The response is computed over `c.uri` as the client sent it, which need
/// not equal the Request-URI (clients often put the server's address there).
#[expect(
    clippy::too_many_arguments,
    reason = "the edge passes its per-request context explicitly; time is an argument for testability"
)]
pub fn verify<H: std::borrow::Borrow<Ha1Set>>(
    c: &DigestCredentials<'_>,
    method: &str,
    realm: &str,
    key: &NonceKey,
    nc: &NcTracker,
    now_unix_secs: u64,
    ttl_secs: u64,
    lookup: impl FnOnce(&str) -> Option<H>,
) -> Verdict {
    if c.realm != realm {
        return Verdict::BadRequest("realm mismatch");
    }
    let Some((alg, sess)) = Algorithm::parse(c.algorithm) else {
        return Verdict::BadRequest("unsupported algorithm");
    };
    // An expired nonce of ours is only reported stale when the response
    // is right for it (RFC 7616 3.3: stale=true tells the client its
    // credentials were good), so it is checked like a fresh one first.
    let stale = match key.check(c.nonce, realm, now_unix_secs, ttl_secs) {
        Ok(_) => false,
        Err(NonceError::Stale) => true,
        Err(NonceError::Invalid) => return Verdict::InvalidNonce,
    };
    let Some(qop) = c.qop else {
        return Verdict::BadRequest("missing qop");
    };
    if !qop.eq_ignore_ascii_case("auth") {
        return Verdict::BadRequest("unsupported qop");
    }
    let Some(cnonce) = c.cnonce.filter(|s| !s.is_empty()) else {
        return Verdict::BadRequest("missing cnonce");
    };
    let Some(count) = c.nc else {
        return Verdict::BadRequest("missing nc");
    };
    let Some(set) = lookup(c.username) else {
        return Verdict::UnknownUser;
    };
    let expected = response(
        alg,
        sess,
        set.borrow().get(alg),
        c.nonce,
        Some(count),
        Some(cnonce),
        Some(qop),
        method,
        c.uri,
    );
    let given = c.response.to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Verdict::WrongResponse;
    }
    if stale {
        return Verdict::Stale;
    }
    if !nc.accept(c.nonce, count, now_unix_secs) {
        return Verdict::Replay;
    }
    Verdict::Ok
}

/// The `WWW-Authenticate` / `Proxy-Authenticate` value:
/// `Digest realm="..", nonce="..", opaque="..", algorithm=SHA-256, qop="auth"`,
/// with `, stale=true` appended when `stale`. `opaque` is left out when
/// `None`.
pub fn challenge(
    alg: Algorithm,
    realm: &str,
    nonce: &str,
    opaque: Option<&str>,
    stale: bool,
) -> String {
    let mut out = String::with_capacity(128 + realm.len() + nonce.len());
    out.push_str("Digest realm=");
    push_quoted(&mut out, realm);
    out.push_str(", nonce=");
    push_quoted(&mut out, nonce);
    if let Some(opaque) = opaque {
        out.push_str(", opaque=");
        push_quoted(&mut out, opaque);
    }
    out.push_str(", algorithm=");
    out.push_str(alg.name());
    out.push_str(", qop=\"auth\"");
    if stale {
        out.push_str(", stale=true");
    }
    out
}
