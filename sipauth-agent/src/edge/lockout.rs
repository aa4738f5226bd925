//! Which sources are locked out, and until when.
//!
//! With XDP on, the table is the program's pinned LRU map: the kernel drops
//! what it can, user space reads the same entries to answer 403, and both
//! survive an agent restart. With XDP off, the table lives in this process.
//! Either way an entry is a `CLOCK_MONOTONIC` deadline in nanoseconds, the
//! clock `bpf_ktime_get_ns` reads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::maps::{Xdp, XdpError};

pub struct Lockouts {
    store: Store,
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
    pub fn kernel(xdp: Arc<Xdp>) -> Self {
        Self {
            store: Store::Kernel(xdp),
        }
    }

    #[must_use]
    pub fn memory() -> Self {
        Self {
            store: Store::Memory(Mutex::new(HashMap::new())),
        }
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
        let t = Lockouts::memory();
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
        let t = Lockouts::memory();
        t.lock("192.0.2.9".parse().unwrap(), Duration::from_secs(5))
            .unwrap();
        assert!(t.is_locked("::ffff:192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn zero_duration_is_not_locked() {
        let t = Lockouts::memory();
        let a: IpAddr = "192.0.2.8".parse().unwrap();
        t.lock(a, Duration::ZERO).unwrap();
        assert!(!t.is_locked(a));
        assert!(t.list().unwrap().is_empty());
        assert!(!t.lift(a).unwrap());
    }
}
