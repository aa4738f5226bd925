//! A Make Call request as the control plane hands it to an edge, and the
//! outbound digest credentials it may carry (never printed).

use std::fmt;
use std::time::Duration;

/// An answered call is ended by the edge after this long unless the
/// request's `time_limit` says otherwise.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_hours(4);
/// One `POST Call/` request, as the edge needs it.
pub struct MakeCall {
    pub call_uuid: String,
    pub account: String,
    /// Signs the callbacks.
    pub auth_token: String,
    pub from: String,
    pub to: String,
    pub answer_url: String,
    pub answer_method: String,
    pub hangup_url: String,
    pub credentials: Option<Credentials>,
    /// Parsed `sip_headers` (rendered `X-PH-{key}` on the INVITE).
    pub sip_headers: Vec<(String, String)>,
    /// How long the far end may ring (`ring_timeout`); `None`: the edge's
    /// default.
    pub ring_timeout: Option<Duration>,
    /// The longest the answered call may last (`time_limit`).
    pub time_limit: Duration,
    pub created_at: i64,
}

impl fmt::Debug for MakeCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeCall")
            .field("call_uuid", &self.call_uuid)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// A digest password; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(s: String) -> Self {
        Self(s)
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Digest credentials for the far end's challenges.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &"<redacted>")
            .field("password", &self.password)
            .finish()
    }
}
