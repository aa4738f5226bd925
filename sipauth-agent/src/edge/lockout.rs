//! Which sources are locked out, and until when.
//!
//! With XDP on, the table is the program's pinned LRU map: the kernel drops
//! what it can, user space reads the same entries to answer 403, and both
//! survive an agent restart. With XDP off, the table lives in this process.
//! Either way an entry is a `CLOCK_MONOTONIC` deadline in nanoseconds, the
//! clock `bpf_ktime_get_ns` reads.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::maps::{Xdp, XdpError};

pub struct Lockouts {
    store: Store,
    policy: Policy,
    /// Failures per source within the current window.
    failures: Mutex<HashMap<IpAddr, Window>>,
}

/// When failures lock a source out: `threshold` of them within `window`
/// lock it out for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub threshold: u32,
    pub window: Duration,
    pub duration: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            threshold: 10,
            window: Duration::from_mins(1),
            duration: Duration::from_mins(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: tokio::time::Instant,
    count: u32,
}

/// Counts one failure at `now`; returns the new window and whether it
/// reached the threshold (which starts a fresh window).
fn count_failure(w: Option<Window>, now: tokio::time::Instant, p: &Policy) -> (Window, bool) {
    let mut w = match w {
        Some(w) if now.duration_since(w.start) < p.window => w,
        _ => Window {
            start: now,
            count: 0,
        },
    };
    w.count += 1;
    if w.count >= p.threshold {
        (
            Window {
                start: now,
                count: 0,
            },
            true,
        )
    } else {
        (w, false)
    }
}

enum Store {
    Kernel(Arc<Xdp>),
    Memory(Mutex<HashMap<IpAddr, u64>>),
}

/// One active lockout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lockout {
    pub address: IpAddr,
    /// Whole seconds left, rounded up.
    pub remaining_secs: u64,
}

/// Nanoseconds of `CLOCK_MONOTONIC`.
#[must_use]
pub fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

// === impl Lockouts ===

impl Lockouts {
    #[must_use]
    pub fn kernel(xdp: Arc<Xdp>, policy: Policy) -> Self {
        Self {
            store: Store::Kernel(xdp),
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    #[must_use]
    pub fn memory(policy: Policy) -> Self {
        Self {
            store: Store::Memory(Mutex::new(HashMap::new())),
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a denied request from `ip` (an ACL or credential denial, once
    /// per request); the threshold-th within the window locks it out for the
    /// policy's duration. Attempts during a lockout are not failures: the
    /// caller checks [`Lockouts::is_locked`] first. Returns true when this
    /// failure locked the source out.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if let Store::Kernel(xdp) = &self.store {
            // One counter per source, shared with the XDP program's own
            // denials, updated in the kernel.
            return match xdp.record_failure(ip) {
                Ok(locked) => {
                    if locked.is_some() {
                        tracing::info!(src = %ip, secs = self.policy.duration.as_secs(), "locked out");
                    }
                    locked.is_some()
                }
                Err(e) => {
                    tracing::error!(src = %ip, error = %e, "recording a failure failed");
                    false
                }
            };
        }
        let now = tokio::time::Instant::now();
        let locked = {
            let mut m = self.failures.lock().expect("failure table");
            if m.len() > 1_000_000 {
                m.retain(|_, w| now.duration_since(w.start) < self.policy.window);
            }
            let (w, locked) = count_failure(m.get(&ip).copied(), now, &self.policy);
            m.insert(ip, w);
            locked
        };
        if locked && let Err(e) = self.lock(ip, self.policy.duration) {
            tracing::error!(src = %ip, error = %e, "locking out failed");
        }
        locked
    }

    fn deadline(&self, ip: IpAddr) -> Result<Option<u64>, XdpError> {
        match &self.store {
            Store::Kernel(xdp) => xdp.lockout_get(ip),
            Store::Memory(m) => Ok(m.lock().expect("lockout table").get(&ip).copied()),
        }
    }

    /// Whether `ip` is locked out now. A map that cannot be read is logged
    /// and treated as "not locked out": user space never refuses a caller on
    /// a failure of its own.
    #[must_use]
    pub fn is_locked(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match self.deadline(ip) {
            Ok(Some(until)) => until > now_ns(),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(src = %ip, error = %e, "lockout lookup failed");
                false
            }
        }
    }

    /// Locks `ip` out for `duration` from now, replacing any earlier entry.
    pub fn lock(&self, ip: IpAddr, duration: Duration) -> Result<(), XdpError> {
        let ip = canonical(ip);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let until = now_ns().saturating_add(nanos);
        match &self.store {
            Store::Kernel(xdp) => xdp.lockout_set(ip, until)?,
            Store::Memory(m) => {
                m.lock().expect("lockout table").insert(ip, until);
            }
        }
        tracing::info!(src = %ip, secs = duration.as_secs(), "locked out");
        Ok(())
    }

    /// Lifts the lockout of `ip`; false when it had none that was active.
    pub fn lift(&self, ip: IpAddr) -> Result<bool, XdpError> {
        let ip = canonical(ip);
        let active = self.deadline(ip)?.is_some_and(|until| until > now_ns());
        let removed = match &self.store {
            Store::Kernel(xdp) => xdp.lockout_remove(ip)?,
            Store::Memory(m) => m.lock().expect("lockout table").remove(&ip).is_some(),
        };
        if removed && active {
            tracing::info!(src = %ip, "lockout lifted");
        }
        Ok(removed && active)
    }

    /// Active lockouts, soonest to end first. Expired entries are left for
    /// the LRU (kernel) or dropped here (memory).
    pub fn list(&self) -> Result<Vec<Lockout>, XdpError> {
        let now = now_ns();
        let entries = match &self.store {
            Store::Kernel(xdp) => xdp.lockout_list()?,
            Store::Memory(m) => {
                let mut m = m.lock().expect("lockout table");
                m.retain(|_, until| *until > now);
                m.iter().map(|(ip, until)| (*ip, *until)).collect()
            }
        };
        let mut active: Vec<Lockout> = entries
            .into_iter()
            .filter(|&(_, until)| until > now)
            .map(|(address, until)| Lockout {
                address,
                remaining_secs: (until - now).div_ceil(1_000_000_000),
            })
            .collect();
        active.sort_by_key(|l| (l.remaining_secs, l.address));
        Ok(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_list_lift() {
        let t = Lockouts::memory(Policy::default());
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        assert!(!t.is_locked(a));
        t.lock(a, Duration::from_mins(1)).unwrap();
        t.lock(b, Duration::from_secs(30)).unwrap();
        assert!(t.is_locked(a));
        assert!(t.is_locked(b));
        let l = t.list().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].address, b);
        assert!(l[0].remaining_secs <= 30 && l[0].remaining_secs >= 29);
        assert!(t.lift(a).unwrap());
        assert!(!t.lift(a).unwrap());
        assert!(!t.is_locked(a));
        assert!(t.is_locked(b));
    }

    #[test]
    fn v4_mapped_source_is_the_v4_source() {
        let t = Lockouts::memory(Policy::default());
        t.lock("192.0.2.9".parse().unwrap(), Duration::from_secs(5))
            .unwrap();
        assert!(t.is_locked("::ffff:192.0.2.9".parse().unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn tenth_failure_in_the_window_locks_out() {
        let p = Policy::default();
        let t = Lockouts::memory(p);
        let a: IpAddr = "192.0.2.50".parse().unwrap();
        for _ in 0..9 {
            assert!(!t.record_failure(a));
        }
        assert!(!t.is_locked(a));
        assert!(t.record_failure(a));
        assert!(t.is_locked(a));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_beyond_the_window_do_not_lock() {
        let t = Lockouts::memory(Policy::default());
        let a: IpAddr = "192.0.2.51".parse().unwrap();
        for _ in 0..9 {
            t.record_failure(a);
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        for _ in 0..9 {
            assert!(!t.record_failure(a));
        }
        assert!(!t.is_locked(a));
        // Other sources have their own counters.
        let b: IpAddr = "2001:db8::51".parse().unwrap();
        assert!(!t.record_failure(b));
    }

    #[test]
    fn counter_state_machine() {
        let p = Policy {
            threshold: 3,
            window: Duration::from_secs(10),
            duration: Duration::from_secs(5),
        };
        let t0 = tokio::time::Instant::now();
        let (w, l) = count_failure(None, t0, &p);
        assert_eq!((w.count, l), (1, false));
        let (w, l) = count_failure(Some(w), t0 + Duration::from_secs(9), &p);
        assert_eq!((w.count, l), (2, false));
        let (w2, l) = count_failure(Some(w), t0 + Duration::from_secs(9), &p);
        assert!(l);
        assert_eq!(w2.count, 0);
        // A window that has passed starts again at 1.
        let (w3, l) = count_failure(Some(w), t0 + Duration::from_secs(10), &p);
        assert_eq!((w3.count, l), (1, false));
    }

    #[test]
    fn zero_duration_is_not_locked() {
        let t = Lockouts::memory(Policy::default());
        let a: IpAddr = "192.0.2.8".parse().unwrap();
        t.lock(a, Duration::ZERO).unwrap();
        assert!(!t.is_locked(a));
        assert!(t.list().unwrap().is_empty());
        assert!(!t.lift(a).unwrap());
    }
}
