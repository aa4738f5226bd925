//! RFC 3261 timers (17.1.1.1, 17.1.1.2, 17.1.2.2, 17.2.1, 13.3.1.4; the
//! table of appendix A) and the schedule on which a message is sent again
//! over an unreliable transport. No other module computes a retransmission
//! interval.
//!
//! T1 (500 ms) estimates the round trip, T2 (4 s) caps the interval of
//! non-INVITE requests and of responses, T4 (5 s) is the longest a message
//! stays in the network. Timers B, F, H and J are 64*T1 (32 s); an outbound
//! leg may be given a shorter Timer B and F.
//!
//! A [`Retransmit`] starts when the message is first sent:
//! - [`Retransmit::timer_a`], a client INVITE (17.1.1.2): sent again after
//!   T1, 2*T1, 4*T1, ... with no cap; a provisional response stops it and
//!   Timer B with it (the transaction's user decides how long a ringing
//!   INVITE may wait). Timer B gives up.
//! - [`Retransmit::timer_e`], a client non-INVITE (17.1.2.2): sent again
//!   after T1, doubling up to T2; once a provisional response came, each
//!   following interval is T2. Timer F gives up.
//! - [`Retransmit::timer_g`], a final response that waits for its ACK: a
//!   non-2xx to an INVITE after a provisional response (Timer G, 17.2.1),
//!   or a 2xx sent by a UAS core (13.3.1.4): sent again
//!   after T1, doubling up to T2. It gives up at the first retransmission
//!   due 64*T1 or later (Timer H): nothing is sent then.
//!
//! Over a reliable transport nothing is sent again: a request keeps only
//! its give-up deadline, a response has nothing left to wait for.
//!
//! A loop over a schedule waits until [`Retransmit::next_deadline`], asks
//! [`Retransmit::fire`] whether to send again (`false`: give up), and
//! sends.
#![forbid(unsafe_code)]

use std::time::Duration;

use tokio::time::Instant;

/// The RFC 3261 timer values of a set of transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// T1, the round-trip estimate: every retransmission interval starts
    /// here.
    pub t1: Duration,
    /// T2, the longest interval of a non-INVITE request or a response.
    pub t2: Duration,
    /// T4, the longest a message stays in the network (Timers I and K over
    /// UDP).
    pub t4: Duration,
    /// Timer B and Timer F: how long a client transaction waits for its
    /// final response. 64*T1 unless set otherwise.
    pub timer_b: Duration,
}

impl Timers {
    /// The values RFC 3261 recommends: T1 500 ms, T2 4 s, T4 5 s, Timer B
    /// 64*T1.
    pub const RFC: Self = Self::from_t1(
        Duration::from_millis(500),
        Duration::from_secs(4),
        Duration::from_secs(5),
    );

    /// T1, T2 and T4 as given, Timer B (and F) 64*T1.
    #[must_use]
    pub const fn from_t1(t1: Duration, t2: Duration, t4: Duration) -> Self {
        Self {
            t1,
            t2,
            t4,
            timer_b: t1.saturating_mul(64),
        }
    }

    /// Timer F: how long a non-INVITE client transaction waits; the same
    /// as Timer B.
    #[must_use]
    pub const fn timer_f(&self) -> Duration {
        self.timer_b
    }

    /// Timer H: how long a final response waits for its ACK, 64*T1; the
    /// 2xx of a UAS core waits as long (13.3.1.4).
    #[must_use]
    pub const fn timer_h(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer I: how long an INVITE server transaction absorbs
    /// retransmissions of the ACK of its final response over an
    /// unreliable transport, T4 (zero over a reliable one).
    #[must_use]
    pub const fn timer_i(&self) -> Duration {
        self.t4
    }

    /// Timer J: how long a non-INVITE server transaction absorbs
    /// retransmissions of its request, 64*T1.
    #[must_use]
    pub const fn timer_j(&self) -> Duration {
        self.timer_h()
    }

    /// How long a cancelled INVITE waits for its final response once the
    /// CANCEL got its own: 8*T1. RFC 3261 9.1 allows 64*T1, but the UAS
    /// sends the 487 together with the CANCEL's 200 (9.2).
    #[must_use]
    pub const fn cancel_wait(&self) -> Duration {
        self.t1.saturating_mul(8)
    }
}

impl Default for Timers {
    fn default() -> Self {
        Self::RFC
    }
}

/// Which timers drive a [`Retransmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Timer A and Timer B.
    InviteRequest,
    /// Timer E and Timer F.
    Request,
    /// Timer G (or the 2xx schedule of 13.3.1.4) and Timer H.
    Response,
}

/// When a message is sent again, and when its sender gives up.
#[derive(Debug, Clone)]
pub struct Retransmit {
    kind: Kind,
    t2: Duration,
    /// The wait after the last sending.
    interval: Duration,
    /// When the message is due again; `None`: never again.
    next: Option<Instant>,
    /// When the sender gives up; `None`: never.
    give_up: Option<Instant>,
    /// A non-INVITE request got a provisional response.
    provisional: bool,
}

impl Retransmit {
    fn new(kind: Kind, timers: &Timers, start: Instant, reliable: bool, give_up: Duration) -> Self {
        Self {
            kind,
            t2: timers.t2,
            interval: timers.t1,
            next: (!reliable).then(|| start + timers.t1),
            give_up: Some(start + give_up),
            provisional: false,
        }
    }

    /// A client INVITE first sent at `start` (Timer A, Timer B).
    #[must_use]
    pub fn timer_a(timers: &Timers, start: Instant, reliable: bool) -> Self {
        Self::new(Kind::InviteRequest, timers, start, reliable, timers.timer_b)
    }

    /// A client non-INVITE request first sent at `start` (Timer E, Timer
    /// F).
    #[must_use]
    pub fn timer_e(timers: &Timers, start: Instant, reliable: bool) -> Self {
        Self::new(Kind::Request, timers, start, reliable, timers.timer_f())
    }

    /// A final response first sent at `start` that waits for its ACK
    /// (Timer G, or the 2xx of 13.3.1.4; Timer H).
    #[must_use]
    pub fn timer_g(timers: &Timers, start: Instant, reliable: bool) -> Self {
        Self::new(Kind::Response, timers, start, reliable, timers.timer_h())
    }

    /// When to wake next: the next retransmission, or the give-up deadline
    /// when a request's comes first. `None`: nothing is left to wait for.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.kind {
            // A response gives up only when it would be sent again.
            Kind::Response => self.next,
            Kind::InviteRequest | Kind::Request => match (self.next, self.give_up) {
                (Some(next), Some(give_up)) => Some(next.min(give_up)),
                (next, give_up) => next.or(give_up),
            },
        }
    }

    /// The give-up deadline; `None`: none (an INVITE that got a
    /// provisional response).
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.give_up
    }

    /// Called at [`Self::next_deadline`]: `true` when the message is to be
    /// sent again now (the next retransmission is then scheduled), `false`
    /// when the sender gives up (the deadline has passed, or nothing was
    /// left to send).
    pub fn fire(&mut self, now: Instant) -> bool {
        if self.give_up.is_some_and(|g| now >= g) || self.next.is_none() {
            self.next = None;
            return false;
        }
        self.interval = match self.kind {
            Kind::InviteRequest => self.interval.saturating_mul(2),
            Kind::Request if self.provisional => self.t2,
            Kind::Request | Kind::Response => self.interval.saturating_mul(2).min(self.t2),
        };
        self.next = Some(now + self.interval);
        true
    }

    /// A provisional response arrived. An INVITE is not sent again and
    /// Timer B no longer applies (17.1.1.2); a non-INVITE request is sent
    /// again every T2 after its next retransmission (17.1.2.2).
    pub fn provisional(&mut self) {
        match self.kind {
            Kind::InviteRequest => {
                self.next = None;
                self.give_up = None;
            }
            Kind::Request => self.provisional = true,
            Kind::Response => {}
        }
    }

    /// Nothing more is sent; the give-up deadline stays.
    pub fn stop(&mut self) {
        self.next = None;
    }

    /// Gives up at `at` if that comes before the deadline.
    pub fn give_up_by(&mut self, at: Instant) {
        self.give_up = Some(self.give_up.map_or(at, |g| g.min(at)));
    }

    /// Puts the next retransmission one current interval after `now`, for
    /// a sender that re-arms its timer on whatever it hears.
    pub fn restart(&mut self, now: Instant) {
        if self.next.is_some() {
            self.next = Some(now + self.interval);
        }
    }
}

/// Sleeps until `at`; forever when `None`.
pub async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `schedule` as a loop would: the times (from `start`, in ms) at
    /// which the message is sent again, and when it gives up.
    fn run(mut schedule: Retransmit, start: Instant) -> (Vec<u128>, Option<u128>) {
        let mut sent = Vec::new();
        while let Some(at) = schedule.next_deadline() {
            let ms = (at - start).as_millis();
            if !schedule.fire(at) {
                return (sent, Some(ms));
            }
            sent.push(ms);
            assert!(sent.len() < 100, "runaway schedule: {sent:?}");
        }
        (sent, None)
    }

    /// The intervals between successive sendings, the first sending at 0.
    fn intervals(sent: &[u128]) -> Vec<u128> {
        std::iter::once(0)
            .chain(sent.iter().copied())
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect()
    }

    #[test]
    fn rfc_values() {
        let t = Timers::default();
        assert_eq!(t, Timers::RFC);
        assert_eq!(t.t1, Duration::from_millis(500));
        assert_eq!(t.t2, Duration::from_secs(4));
        assert_eq!(t.t4, Duration::from_secs(5));
        assert_eq!(t.timer_b, Duration::from_secs(32));
        assert_eq!(t.timer_f(), Duration::from_secs(32));
        assert_eq!(t.timer_h(), Duration::from_secs(32));
        assert_eq!(t.timer_j(), Duration::from_secs(32));
        assert_eq!(t.cancel_wait(), Duration::from_secs(4));
        // A shorter Timer B leaves Timer H at 64*T1.
        let short = Timers {
            timer_b: Duration::from_secs(4),
            ..Timers::RFC
        };
        assert_eq!(short.timer_f(), Duration::from_secs(4));
        assert_eq!(short.timer_h(), Duration::from_secs(32));
        let fast = Timers::from_t1(
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        assert_eq!(fast.timer_b, Duration::from_millis(6400));
        assert_eq!(fast.cancel_wait(), Duration::from_millis(800));
    }

    #[test]
    fn timer_a_doubles_without_cap_until_timer_b() {
        let start = Instant::now();
        let (sent, gave_up) = run(Retransmit::timer_a(&Timers::RFC, start, false), start);
        assert_eq!(sent, [500, 1500, 3500, 7500, 15_500, 31_500]);
        assert_eq!(intervals(&sent), [500, 1000, 2000, 4000, 8000, 16_000]);
        assert_eq!(gave_up, Some(32_000));
    }

    #[test]
    fn timer_a_with_a_short_timer_b() {
        let start = Instant::now();
        let timers = Timers {
            timer_b: Duration::from_secs(4),
            ..Timers::RFC
        };
        let (sent, gave_up) = run(Retransmit::timer_a(&timers, start, false), start);
        assert_eq!(sent, [500, 1500, 3500]);
        assert_eq!(gave_up, Some(4000));
    }

    #[test]
    fn a_provisional_stops_timer_a_and_timer_b() {
        let start = Instant::now();
        let mut s = Retransmit::timer_a(&Timers::RFC, start, false);
        assert!(s.fire(start + Duration::from_millis(500)));
        assert_eq!(s.next_deadline(), Some(start + Duration::from_millis(1500)));
        s.provisional();
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn timer_e_doubles_up_to_t2_until_timer_f() {
        let start = Instant::now();
        let (sent, gave_up) = run(Retransmit::timer_e(&Timers::RFC, start, false), start);
        assert_eq!(
            intervals(&sent),
            [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000]
        );
        assert_eq!(sent.last(), Some(&31_500));
        assert_eq!(gave_up, Some(32_000));
    }

    #[test]
    fn timer_e_after_a_provisional_is_t2() {
        let start = Instant::now();
        let mut s = Retransmit::timer_e(&Timers::RFC, start, false);
        assert!(s.fire(start + Duration::from_millis(500)));
        // The provisional comes at 0.7 s: the retransmission already due at
        // 1.5 s stays, every one after it is T2 later.
        s.provisional();
        let (sent, gave_up) = run(s, start);
        assert_eq!(
            sent,
            [1500, 5500, 9500, 13_500, 17_500, 21_500, 25_500, 29_500]
        );
        assert_eq!(gave_up, Some(32_000));
    }

    #[test]
    fn timer_g_doubles_up_to_t2_and_gives_up_when_next_due() {
        let start = Instant::now();
        let (sent, gave_up) = run(Retransmit::timer_g(&Timers::RFC, start, false), start);
        assert_eq!(
            intervals(&sent),
            [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000]
        );
        assert_eq!(sent.last(), Some(&31_500));
        // Timer H (32 s) is noticed when the next one falls due.
        assert_eq!(gave_up, Some(35_500));
    }

    #[test]
    fn a_reliable_transport_keeps_only_the_deadline() {
        let start = Instant::now();
        for s in [
            Retransmit::timer_a(&Timers::RFC, start, true),
            Retransmit::timer_e(&Timers::RFC, start, true),
        ] {
            assert_eq!(s.next_deadline(), Some(start + Duration::from_secs(32)));
            assert_eq!(run(s, start), (vec![], Some(32_000)));
        }
        let s = Retransmit::timer_g(&Timers::RFC, start, true);
        assert_eq!(s.next_deadline(), None);
        assert_eq!(run(s, start), (vec![], None));
    }

    #[test]
    fn stopped_with_an_earlier_deadline() {
        let start = Instant::now();
        let timers = Timers::RFC;
        let mut s = Retransmit::timer_e(&timers, start, false);
        assert!(s.fire(start + Duration::from_millis(500)));
        // At 1 s the CANCEL's own final response: no more CANCELs, the
        // INVITE's may take 8*T1 more.
        s.stop();
        s.give_up_by(start + Duration::from_secs(1) + timers.cancel_wait());
        assert_eq!(run(s, start), (vec![], Some(5000)));
        // A later deadline does not postpone the give-up.
        let mut s = Retransmit::timer_e(&timers, start, false);
        s.give_up_by(start + Duration::from_mins(1));
        assert_eq!(s.deadline(), Some(start + Duration::from_secs(32)));
    }

    #[test]
    fn restart_keeps_the_interval() {
        let start = Instant::now();
        let mut s = Retransmit::timer_e(&Timers::RFC, start, false);
        assert!(s.fire(start + Duration::from_millis(500)));
        s.restart(start + Duration::from_millis(800));
        assert_eq!(s.next_deadline(), Some(start + Duration::from_millis(1800)));
        s.stop();
        s.restart(start + Duration::from_secs(1));
        assert_eq!(s.next_deadline(), Some(start + Duration::from_secs(32)));
    }

    /// A loop on the paused clock: wait, fire, send.
    #[tokio::test(start_paused = true)]
    async fn a_loop_on_the_clock() {
        let start = Instant::now();
        let mut s = Retransmit::timer_a(&Timers::RFC, start, false);
        let mut sent = vec![0];
        loop {
            wait_until(s.next_deadline()).await;
            if !s.fire(Instant::now()) {
                break;
            }
            sent.push(start.elapsed().as_millis());
        }
        assert_eq!(sent, [0, 500, 1500, 3500, 7500, 15_500, 31_500]);
        assert_eq!(start.elapsed(), Duration::from_secs(32));
    }
}
