//! `<Dial>`: its targets turned into legs, all rung at once.
//!
//! Every `<User>` and `<Number>` of a `<Dial>` is INVITEd at the same time
//! (a parallel fork, RFC 3261 16.1 in spirit): the first leg to answer is
//! the one the call gets, the others are cancelled, and one that answers
//! anyway is ACKed and hung up. When no leg answers, the call gets the
//! best of their failures (RFC 3261 16.7: a 6xx if any, else the lowest
//! class, the first of it to arrive).
//!
//! A `<User>` is a SIP URI (a host name is looked up when its leg is
//! placed, see [`super::resolve`]); a `<Number>` goes to the
//! configured number gateway (`sip.number_gateway`), and ends with
//! `dial_not_available` when there is none.
#![forbid(unsafe_code)]

use std::time::Duration;

use sipauth_callback::{Dial, DialTarget};
use sipauth_sip::OwnedMessage;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::resolve::Dest;
use super::txn::Hooks;
use super::{Credentials, Dialog, Leg, LegEnd, Outcome, RING_TIMEOUT, Secret, Settings};

/// What the legs of one `<Dial>` share.
pub struct Plan<'a> {
    /// The From user part unless the `<Dial callerId>` says otherwise.
    pub from_user: &'a str,
    /// Render `sipHeaders` as `X-{key}` (the inbound leg used SIP auth)
    /// rather than `X-PH-{key}`.
    pub raw_headers: bool,
    /// The offer every leg carries; `None` INVITEs without one (the far
    /// end offers in its 2xx and the ACK carries the answer).
    pub sdp: Option<Vec<u8>>,
    pub settings: &'a Settings,
}

/// The longest `<Number>` the gateway is given (E.164 allows 15 digits).
const MAX_NUMBER: usize = 20;

/// The gateway URI of `number`: digits with an optional leading `+` (the
/// XML parser already refused anything else; this keeps the gateway URI
/// safe whatever the caller).
fn number_uri(gateway: &str, number: &str) -> Option<String> {
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty() || digits.len() > MAX_NUMBER || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(gateway.replace("{number}", number))
}

/// Where a number goes: the gateway's URI for it, or why it cannot be
/// dialled (no gateway: `dial_not_available`; not a number:
/// `invalid_destination`).
pub fn number_target(settings: &Settings, number: &str) -> Result<Dest, Outcome> {
    let Some(gateway) = settings.number_gateway.as_deref() else {
        tracing::info!("a number to dial without a number gateway configured");
        return Err(Outcome::DIAL_UNAVAILABLE);
    };
    let uri = number_uri(gateway, number.trim()).ok_or(Outcome::INVALID_DESTINATION)?;
    Dest::parse(&uri).map_err(|_| Outcome::INVALID_DESTINATION)
}

/// The legs of `dial`, and the outcomes of targets that cannot be dialled
/// at all (they count as failed legs).
#[must_use]
pub fn legs(dial: Dial, plan: &Plan<'_>) -> (Vec<Leg>, Vec<Outcome>) {
    let timers = plan.settings.timers;
    let ring_timeout = dial
        .timeout_secs
        .filter(|t| *t > 0)
        .map_or(RING_TIMEOUT, |t| Duration::from_secs(u64::from(t)));
    let from_user = dial.caller_id.as_deref().unwrap_or(plan.from_user);
    let mut legs = Vec::new();
    let mut failed = Vec::new();
    for target in dial.targets {
        let (uri, credentials, headers) = match target {
            DialTarget::User {
                uri,
                sip_auth_username,
                sip_auth_password,
                sip_headers,
            } => {
                let credentials = match (sip_auth_username, sip_auth_password) {
                    (Some(username), Some(password)) => Some(Credentials {
                        username,
                        password: Secret::new(password),
                    }),
                    _ => None,
                };
                (uri, credentials, sip_headers)
            }
            DialTarget::Number {
                number,
                sip_headers,
            } => match number_target(plan.settings, &number) {
                Ok(dest) => (dest.uri, None, sip_headers),
                Err(o) => {
                    failed.push(o);
                    continue;
                }
            },
        };
        let dest = match Dest::parse(&uri) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(error = %e, "Dial target cannot be dialled");
                failed.push(Outcome::INVALID_DESTINATION);
                continue;
            }
        };
        legs.push(Leg {
            dest,
            resolver: plan.settings.resolver.clone(),
            tls: plan.settings.tls.clone(),
            udp: plan.settings.udp.clone(),
            from_user: from_user.to_owned(),
            credentials,
            headers: sipauth_callback::render_sip_headers(&headers, plan.raw_headers),
            sdp: plan.sdp.clone(),
            timers,
            ring_timeout,
            hooks: Hooks::default(),
        });
    }
    (legs, failed)
}

/// What [`Fork::next`] saw.
#[derive(Debug)]
pub enum Ring {
    /// A 180 / 183 of some leg, to relay.
    Progress(OwnedMessage),
    /// The first leg to answer; the others are being cancelled.
    Answered(Box<Dialog>),
    /// Every leg ended unanswered: the best of their outcomes.
    Failed(Outcome),
}

/// Legs ringing at once.
pub struct Fork {
    legs: JoinSet<LegEnd>,
    cancel: watch::Sender<bool>,
    progress: mpsc::UnboundedReceiver<OwnedMessage>,
    failures: Vec<Outcome>,
    cancelled: bool,
}

impl Fork {
    /// Starts every leg; `failed` are targets that already failed.
    #[must_use]
    pub fn start(legs: Vec<Leg>, failed: Vec<Outcome>) -> Self {
        let (cancel, cancel_rx) = watch::channel(false);
        let (progress_tx, progress) = mpsc::unbounded_channel();
        let mut set = JoinSet::new();
        for mut leg in legs {
            leg.hooks = Hooks {
                progress: Some(progress_tx.clone()),
                cancel: Some(cancel_rx.clone()),
            };
            set.spawn(leg.place());
        }
        Self {
            legs: set,
            cancel,
            progress,
            failures: failed,
            cancelled: false,
        }
    }

    /// Cancels every leg still ringing; [`Fork::next`] then runs until
    /// they have ended and gives [`Ring::Failed`].
    pub fn cancel(&mut self) {
        self.cancelled = true;
        let _ = self.cancel.send(true);
    }

    /// The next thing that happens to the ringing legs.
    pub async fn next(&mut self) -> Ring {
        loop {
            tokio::select! {
                biased;
                Some(resp) = self.progress.recv(), if !self.cancelled => return Ring::Progress(resp),
                joined = self.legs.join_next() => match joined {
                    None => return Ring::Failed(self.best()),
                    Some(Ok(LegEnd::Answered(dialog))) if !self.cancelled => {
                        self.cancel();
                        return Ring::Answered(dialog);
                    }
                    // Answered as the CANCEL crossed it.
                    Some(Ok(LegEnd::Answered(mut dialog))) => dialog.bye().await,
                    Some(Ok(LegEnd::Failed(o))) => self.failures.push(o),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "outbound leg task failed");
                        self.failures.push(Outcome::NETWORK_ERROR);
                    }
                },
            }
        }
    }

    /// RFC 3261 16.7 step 6: a 6xx if any, else the lowest class; the
    /// first to arrive within it.
    fn best(&self) -> Outcome {
        let rank = |o: &Outcome| if o.code >= 600 { 0 } else { o.code / 100 };
        self.failures
            .iter()
            .enumerate()
            .min_by_key(|(i, o)| (rank(o), *i))
            .map_or(Outcome::DIAL_UNAVAILABLE, |(_, o)| *o)
    }
}

impl Drop for Fork {
    /// Legs still ringing are cancelled and left to end on their own
    /// (a `JoinSet` dropped would abort them before their CANCEL).
    fn drop(&mut self) {
        if self.legs.is_empty() {
            return;
        }
        let _ = self.cancel.send(true);
        let mut legs = std::mem::take(&mut self.legs);
        // Outside a runtime (it is going away) the legs go with it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            while let Some(end) = legs.join_next().await {
                if let Ok(LegEnd::Answered(mut dialog)) = end {
                    dialog.bye().await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uri: &str) -> DialTarget {
        DialTarget::User {
            uri: uri.to_owned(),
            sip_auth_username: Some("u".to_owned()),
            sip_auth_password: Some("p".to_owned()),
            sip_headers: vec![("k".to_owned(), "v".to_owned())],
        }
    }

    fn number(n: &str) -> DialTarget {
        DialTarget::Number {
            number: n.to_owned(),
            sip_headers: Vec::new(),
        }
    }

    fn dial(targets: Vec<DialTarget>) -> Dial {
        Dial {
            timeout_secs: Some(7),
            time_limit_secs: None,
            caller_id: None,
            action_url: None,
            action_method: None,
            redirect: true,
            targets,
        }
    }

    #[test]
    fn targets_become_legs_or_outcomes() {
        let settings = Settings {
            number_gateway: Some("sip:{number}@192.0.2.7:5070;transport=tcp".to_owned()),
            ..Settings::default()
        };
        let plan = Plan {
            from_user: "caller",
            raw_headers: false,
            sdp: None,
            settings: &settings,
        };
        let (legs, failed) = legs(
            dial(vec![
                user("sip:bob@192.0.2.2"),
                number("+15550109999"),
                user("sip:bob@provider.example"),
                number("call me"),
            ]),
            &plan,
        );
        // A name is looked up when its leg is placed.
        assert_eq!(legs.len(), 3);
        assert_eq!(legs[2].dest.host, "provider.example");
        assert_eq!(
            legs[0].dest.literal().unwrap().addr,
            "192.0.2.2:5060".parse().unwrap()
        );
        assert!(legs[0].credentials.is_some());
        assert_eq!(legs[0].headers, vec![("X-PH-k".to_owned(), "v".to_owned())]);
        assert_eq!(legs[0].ring_timeout, Duration::from_secs(7));
        assert_eq!(
            legs[1].dest.uri,
            "sip:+15550109999@192.0.2.7:5070;transport=tcp"
        );
        assert_eq!(legs[1].dest.transport, Some(super::super::Transport::Tcp));
        assert!(legs[1].credentials.is_none());
        assert_eq!(failed, vec![Outcome::INVALID_DESTINATION]);

        let no_gateway = Settings::default();
        let plan = Plan {
            settings: &no_gateway,
            ..plan
        };
        let (legs, failed) = super::legs(dial(vec![number("15550109999")]), &plan);
        assert!(legs.is_empty());
        assert_eq!(failed, vec![Outcome::DIAL_UNAVAILABLE]);
    }

    #[test]
    fn best_failure() {
        let fork = |failures: Vec<Outcome>| Fork {
            legs: JoinSet::new(),
            cancel: watch::channel(false).0,
            progress: mpsc::unbounded_channel().1,
            failures,
            cancelled: false,
        };
        let busy = Outcome::of_status(486);
        let unavailable = Outcome::of_status(503);
        let decline = Outcome::of_status(603);
        assert_eq!(fork(vec![unavailable, busy]).best(), busy);
        assert_eq!(fork(vec![busy, decline, unavailable]).best(), decline);
        assert_eq!(
            fork(vec![Outcome::AUTH_FAILED, busy]).best(),
            Outcome::AUTH_FAILED
        );
        assert_eq!(fork(Vec::new()).best(), Outcome::DIAL_UNAVAILABLE);
    }
}
