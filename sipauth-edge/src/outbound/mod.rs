//! Outbound call legs: the edge as a user agent client.
//!
//! A leg INVITEs a SIP or SIPS URI (names resolved as RFC 3263 says, see
//! [`resolve`]), answers the far end's 401 / 407 digest challenges with the
//! credentials it was given, and ends answered or with a hangup cause.
//!
//! Each leg has its own socket: a UDP socket on an ephemeral port, connected
//! to the target (the kernel picks the edge's address on the route to it),
//! or a TCP connection when the URI says `transport=tcp`, or a TLS one for
//! `sips:` and `transport=tls` (see [`crate::tls`]). Responses and
//! in-dialog requests come back on that socket, so they never mix with the
//! inbound traffic on port 5060.
//!
//! Credentials live in memory for the life of the leg; their `Debug` is
//! redacted and no log line, record or callback carries them.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod conn;
pub mod dialog;
pub mod fork;
pub mod leg;
pub mod make_call;
pub mod message;
pub mod resolve;
pub mod txn;

use std::net::SocketAddr;
use std::time::Duration;

pub use leg::{Dialog, Held, Leg, LegEnd};
pub use make_call::MakeCall;

pub use crate::outcome::Outcome;

pub use crate::sip::Timers;

/// How long an INVITE that got a provisional response waits for its final
/// one before it is cancelled, unless the call says otherwise.
pub const RING_TIMEOUT: Duration = Duration::from_mins(1);

/// What every outbound leg shares.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// RFC 3261 timers; `timer_b` may be set shorter than 64*T1.
    pub timers: Timers,
    /// The URI template of `<Number>` targets (`{number}` replaced);
    /// `None`: numbers cannot be dialled.
    pub number_gateway: Option<String>,
    /// Where names in targets are looked up.
    pub resolver: resolve::Resolver,
    /// How TLS targets' certificates are checked; `None`: TLS targets
    /// cannot be reached.
    pub tls: Option<crate::tls::ClientTls>,
    /// UDP sockets of ended legs, for the next legs to the same targets.
    pub udp: conn::UdpPool,
}

pub use sipauth_model::{Credentials, Secret};

pub use crate::transport::Transport;

/// Where a leg goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Request-URI, as given.
    pub uri: String,
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The host of the URI: the name a TLS server's certificate must be
    /// valid for (RFC 5922 7.2), and its SNI.
    pub host: String,
}

/// Why a URI cannot be dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("not a SIP URI")]
    NotSipUri,
    #[error("transport {0} is not supported (udp or tcp)")]
    Transport(&'static str),
    #[error("URI headers (?...) are not accepted")]
    Headers,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let c = Credentials {
            username: "pbx-user".to_owned(),
            password: Secret::new("Secret123".to_owned()),
        };
        let s = format!("{c:?}");
        assert!(!s.contains("Secret123") && !s.contains("pbx-user"), "{s}");
    }
}
