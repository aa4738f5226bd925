//! What the edge sends back to the network: every response counted as it
//! leaves, and replies over UDP to sources that have not proven themselves
//! held to a budget.
//!
//! A UDP source address proves nothing (RFC 3261 26.1.5): whoever forges it
//! can aim the edge's answers at the address's owner. The edge therefore
//! answers such requests as a stateless UAS would (RFC 3261 8.2.7): at most
//! one datagram per datagram received, no Timer G. On top of that, all
//! replies to unproven sources together stay within
//! `sip.unproven_replies_per_sec`, so a flood from forged sources is met by
//! a trickle. A source proves itself by passing admission (an INVITE let
//! in, a REGISTER accepted); it then stays proven for [`PROVEN_FOR`].
//! Stream transports prove the source by their handshake and are not
//! metered.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use tokio::time::{Duration, Instant};

use crate::metrics::Metrics;

/// How long a source stays proven after it last passed admission.
pub const PROVEN_FOR: Duration = Duration::from_hours(1);
/// Proven sources remembered at most; past it, a new one is not
/// remembered until older ones expire (it is metered like any other).
const MAX_PROVEN: usize = 65_536;

pub struct Egress {
    pub metrics: Arc<Metrics>,
    /// Replies per second to unproven sources, all together; also the
    /// burst.
    rate: u32,
    proven: Mutex<HashMap<IpAddr, Instant>>,
    bucket: Mutex<Bucket>,
}

/// A token bucket of `rate` tokens a second holding at most `rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate),
            last: now,
        }
    }

    /// Refills for the time since the last call, then takes one token.
    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = elapsed.mul_add(rate, self.tokens).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

// === impl Egress ===

impl Egress {
    #[must_use]
    pub fn new(metrics: Arc<Metrics>, unproven_replies_per_sec: u32) -> Self {
        Self {
            metrics,
            rate: unproven_replies_per_sec,
            proven: Mutex::new(HashMap::new()),
            bucket: Mutex::new(Bucket::full(unproven_replies_per_sec, Instant::now())),
        }
    }

    /// `ip` passed admission: its replies are no longer metered.
    pub fn prove(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let until = Instant::now() + PROVEN_FOR;
        let mut proven = self.proven.lock().expect("proven sources");
        if proven.len() >= MAX_PROVEN && !proven.contains_key(&ip) {
            let now = Instant::now();
            proven.retain(|_, t| *t > now);
            if proven.len() >= MAX_PROVEN {
                return;
            }
        }
        proven.insert(ip, until);
    }

    pub fn is_proven(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.proven
            .lock()
            .expect("proven sources")
            .get(&ip.to_canonical())
            .is_some_and(|t| *t > now)
    }

    /// Whether a reply over UDP to `dst` may go: always to a proven
    /// source, to others while the budget lasts. Counted either way.
    pub fn may_reply(&self, dst: IpAddr) -> bool {
        if self.is_proven(dst) {
            return true;
        }
        let ok = self
            .bucket
            .lock()
            .expect("reply budget")
            .take(self.rate, Instant::now());
        if ok {
            self.metrics.unproven_replies.fetch_add(1, Relaxed);
        } else {
            self.metrics.unproven_suppressed.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Forgets sources whose proof expired; run every second.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.proven
            .lock()
            .expect("proven sources")
            .retain(|_, t| *t > now);
    }

    pub fn proven_len(&self) -> usize {
        self.proven.lock().expect("proven sources").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_at_its_rate_and_holds_one_second() {
        let e = Egress::new(Arc::new(Metrics::new()), 100);
        let sent = (0..1000)
            .filter(|_| e.may_reply(ip("198.51.100.1")))
            .count();
        assert_eq!(sent, 100, "the burst is one second's worth");
        tokio::time::advance(Duration::from_millis(500)).await;
        let sent = (0..1000)
            .filter(|_| e.may_reply(ip("198.51.100.2")))
            .count();
        assert_eq!(sent, 50);
        // A long pause refills no more than the burst.
        tokio::time::advance(Duration::from_mins(1)).await;
        let sent = (0..1000)
            .filter(|_| e.may_reply(ip("198.51.100.3")))
            .count();
        assert_eq!(sent, 100);
        assert_eq!(e.metrics.unproven_replies.load(Relaxed), 250);
        assert_eq!(e.metrics.unproven_suppressed.load(Relaxed), 2750);
    }

    #[tokio::test(start_paused = true)]
    async fn proven_sources_are_not_metered_until_their_proof_expires() {
        let e = Egress::new(Arc::new(Metrics::new()), 0);
        assert!(
            !e.may_reply(ip("192.0.2.7")),
            "0: nothing to unproven sources"
        );
        e.prove(ip("192.0.2.7"));
        assert!((0..1000).all(|_| e.may_reply(ip("192.0.2.7"))));
        // The IPv4-mapped form is the same source.
        assert!(e.may_reply(ip("::ffff:192.0.2.7")));
        assert!(!e.may_reply(ip("192.0.2.8")));
        tokio::time::advance(PROVEN_FOR + Duration::from_secs(1)).await;
        assert!(!e.may_reply(ip("192.0.2.7")));
        e.sweep();
        assert_eq!(e.proven_len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_proven_table_is_bounded() {
        let e = Egress::new(Arc::new(Metrics::new()), 0);
        for i in 0..=MAX_PROVEN {
            let i = u32::try_from(i).unwrap();
            e.prove(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        }
        assert_eq!(e.proven_len(), MAX_PROVEN);
        // Expired entries make room.
        tokio::time::advance(PROVEN_FOR + Duration::from_secs(1)).await;
        e.prove(ip("203.0.113.1"));
        assert_eq!(e.proven_len(), 1);
    }
}
