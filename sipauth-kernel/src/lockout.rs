//! Which sources are locked out, and until when.
//!
//! With XDP on, the table is the program's pinned LRU map: the kernel drops
//! what it can, user space reads the same entries to answer 403, and both
//! survive an agent restart. With XDP off, the table lives in this process.
//! Either way an entry is a `CLOCK_MONOTONIC` deadline in nanoseconds, the
//! clock `bpf_ktime_get_ns` reads.
//!
//! A source is an IPv4 address or an IPv6 prefix (`lockout.ipv6_prefix`,
//! /64 by default: one customer's network, where an attacker has 2^64
//! addresses to move between). Sources on the never-lock list
//! ([`never_lock`]) are judged as always, but their failures are
//! only counted in metrics and no lockout ever stops them; an operator
//! cannot lock them out either ([`LockoutError::NeverLock`]).
#![forbid(unsafe_code)]

pub mod never_lock;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::{IpNet, Ipv6Net};
use sipauth_common::{addr, never_lock as knever};

use self::never_lock::{Entry, NeverLock, Origin};
use crate::maps::{self, LockoutPolicy as Policy, Xdp, XdpError};

pub struct Lockouts {
    store: Store,
    policy: Policy,
    /// Failures per source key within the current window.
    failures: Mutex<HashMap<IpAddr, Window>>,
    never_lock: NeverLock,
    /// Failures of never-lock sources judged in user space.
    never_lock_failures: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum LockoutError {
    #[error("{address} is on the never-lock list ({cidr}): remove it there first")]
    NeverLock { address: IpAddr, cidr: IpNet },
    #[error("{cidr} is not on the never-lock list")]
    NotListed { cidr: IpNet },
    #[error("{cidr} comes from lockout.never_lock in the config: remove it there")]
    FromConfig { cidr: IpNet },
    #[error("the never-lock list is full ({max} entries)")]
    Full { max: u32 },
    #[error(transparent)]
    Xdp(#[from] XdpError),
}

/// What adding a never-lock prefix did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub entry: Entry,
    /// False when the prefix was on the list already.
    pub created: bool,
    /// Lockouts inside the prefix that were lifted.
    pub lifted: usize,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: tokio::time::Instant,
    count: u32,
    /// Tells windows apart (for [`Lockouts::failure_windows`]).
    id: u64,
}

/// Ids of memory-store windows.
static WINDOW_IDS: AtomicU64 = AtomicU64::new(1);

fn fresh_window(now: tokio::time::Instant) -> Window {
    Window {
        start: now,
        count: 0,
        id: WINDOW_IDS.fetch_add(1, Relaxed),
    }
}

/// Counts one failure at `now`; returns the new window and whether it
/// reached the threshold (which starts a fresh window).
fn count_failure(w: Option<Window>, now: tokio::time::Instant, p: &Policy) -> (Window, bool) {
    let mut w = match w {
        Some(w) if w.count > 0 && now.duration_since(w.start) < p.window() => w,
        _ => fresh_window(now),
    };
    w.count += 1;
    if w.count >= p.threshold() {
        (fresh_window(now), true)
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
    /// An IPv4 address, or an IPv6 prefix (`2001:db8:1:2::/64`).
    pub address: String,
    /// Whole seconds left, rounded up.
    pub remaining_secs: u64,
}

/// Nanoseconds of `CLOCK_MONOTONIC`.
#[must_use]
pub fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The key `ip` is counted and locked out under: an IPv4 address, or an
/// IPv6 address masked to `v6_prefix` bits (the kernel's rule).
#[must_use]
pub fn source_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    maps::ip_of(addr::lockout_key(maps::key(ip), u32::from(v6_prefix)))
}

/// How a source key is shown: an IPv4 address, or an IPv6 prefix.
#[must_use]
pub fn show(key: IpAddr, v6_prefix: u8) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/{v6_prefix}"),
    }
}

/// The source key as a prefix, for containment tests.
fn key_net(key: IpAddr, v6_prefix: u8) -> IpNet {
    match key {
        IpAddr::V4(_) => IpNet::from(key),
        IpAddr::V6(v6) => {
            IpNet::V6(ipnet::Ipv6Net::new(v6, v6_prefix).unwrap_or_else(|_| Ipv6Net::from(v6)))
        }
    }
}

// === impl Lockouts ===

impl Lockouts {
    /// The table in the XDP program's maps. The never-lock trie gets the
    /// config's prefixes; prefixes added at run time before a restart are
    /// kept, prefixes the config no longer names are removed.
    pub fn kernel(xdp: Arc<Xdp>, policy: Policy, never_lock: &[IpNet]) -> Result<Self, XdpError> {
        let list = NeverLock::default();
        // Entries the config names are overwritten in place (never absent
        // from the trie); other config entries go, runtime ones stay.
        for (cidr, origin) in xdp.never_lock_list()? {
            if never_lock.contains(&cidr) {
                continue;
            }
            if Origin::from_wire(origin) == Some(Origin::Runtime) {
                list.put(Entry {
                    cidr,
                    origin: Origin::Runtime,
                });
            } else {
                xdp.never_lock_remove(cidr)?;
            }
        }
        for &cidr in never_lock {
            xdp.never_lock_insert(cidr, knever::ORIGIN_CONFIG)?;
            list.put(Entry {
                cidr,
                origin: Origin::Config,
            });
        }
        let t = Self {
            store: Store::Kernel(xdp),
            policy,
            failures: Mutex::new(HashMap::new()),
            never_lock: list,
            never_lock_failures: AtomicU64::new(0),
        };
        let cidrs: Vec<IpNet> = t.never_lock.list().iter().map(|e| e.cidr).collect();
        t.lift_inside(&cidrs)?;
        if !t.never_lock.is_empty() {
            tracing::info!(
                prefixes = t.never_lock.len(),
                "never-lock list loaded (config and kept runtime additions)"
            );
        }
        Ok(t)
    }

    /// The table in this process; the never-lock list is the config's.
    #[must_use]
    pub fn memory(policy: Policy, never_lock: &[IpNet]) -> Self {
        let list = NeverLock::default();
        for &cidr in never_lock {
            list.put(Entry {
                cidr,
                origin: Origin::Config,
            });
        }
        Self {
            store: Store::Memory(Mutex::new(HashMap::new())),
            policy,
            failures: Mutex::new(HashMap::new()),
            never_lock: list,
            never_lock_failures: AtomicU64::new(0),
        }
    }

    /// The key `ip` is counted and locked out under (see [`source_key`]).
    #[must_use]
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        source_key(ip.to_canonical(), self.policy.ipv6_prefix())
    }

    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Every open failure window: (source key, an id of the window that
    /// changes when a new one opens, failures in it). A fleet reads this to
    /// add the failures counted here, by user space and by the XDP program
    /// alike, to its own count.
    pub fn failure_windows(&self) -> Result<Vec<(IpAddr, u64, u32)>, XdpError> {
        match &self.store {
            Store::Kernel(xdp) => Ok(xdp
                .failure_list()?
                .into_iter()
                .map(|(key, start, count)| (key, u64::from(start), count))
                .collect()),
            Store::Memory(_) => {
                let now = tokio::time::Instant::now();
                let m = self.failures.lock().expect("failure table");
                Ok(m.iter()
                    .filter(|(_, w)| {
                        w.count > 0 && now.duration_since(w.start) < self.policy.window()
                    })
                    .map(|(key, w)| (*key, w.id, w.count))
                    .collect())
            }
        }
    }

    /// Active lockouts as (source key, time left).
    pub fn active(&self) -> Result<Vec<(IpAddr, Duration)>, XdpError> {
        let now = now_ns();
        Ok(self
            .entries()?
            .into_iter()
            .filter(|&(_, until)| until > now)
            .map(|(key, until)| (key, Duration::from_nanos(until - now)))
            .collect())
    }

    /// Time left of the lockout of `ip`'s source key, if any.
    pub fn remaining(&self, ip: IpAddr) -> Result<Option<Duration>, XdpError> {
        let now = now_ns();
        Ok(self
            .deadline(self.key(ip))?
            .filter(|&until| until > now)
            .map(|until| Duration::from_nanos(until - now)))
    }

    /// Failures of never-lock sources judged in user space (each would
    /// have counted towards a lockout).
    #[must_use]
    pub fn never_lock_failures(&self) -> u64 {
        self.never_lock_failures.load(Relaxed)
    }

    /// Counts a denied request from `ip` (an ACL or credential denial, once
    /// per request); the threshold-th within the window locks it out for the
    /// policy's duration. Attempts during a lockout are not failures: the
    /// caller checks [`Lockouts::is_locked`] first. Returns true when this
    /// failure locked the source out. A never-lock source is only counted
    /// in [`Lockouts::never_lock_failures`].
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if let Some(e) = self.never_lock.find(ip) {
            self.never_lock_failures.fetch_add(1, Relaxed);
            tracing::debug!(src = %ip, never_lock = %e.cidr, "failure of a never-lock source: not counted towards a lockout");
            return false;
        }
        if let Store::Kernel(xdp) = &self.store {
            // One counter per source, shared with the XDP program's own
            // denials, updated in the kernel.
            return match xdp.record_failure(ip) {
                Ok(locked) => {
                    if locked.is_some() {
                        tracing::info!(src = %ip, secs = self.policy.duration().as_secs(), "locked out");
                    }
                    locked.is_some()
                }
                Err(e) => {
                    tracing::error!(src = %ip, error = %e, "recording a failure failed");
                    false
                }
            };
        }
        let key = self.key(ip);
        let now = tokio::time::Instant::now();
        let locked = {
            let mut m = self.failures.lock().expect("failure table");
            if m.len() > 1_000_000 {
                m.retain(|_, w| now.duration_since(w.start) < self.policy.window());
            }
            let (w, locked) = count_failure(m.get(&key).copied(), now, &self.policy);
            m.insert(key, w);
            locked
        };
        if locked && let Err(e) = self.set(key, self.policy.duration()) {
            tracing::error!(src = %ip, error = %e, "locking out failed");
        }
        locked
    }

    /// The lockout end of a source key.
    fn deadline(&self, key: IpAddr) -> Result<Option<u64>, XdpError> {
        match &self.store {
            Store::Kernel(xdp) => xdp.lockout_get(key),
            Store::Memory(m) => Ok(m.lock().expect("lockout table").get(&key).copied()),
        }
    }

    /// Whether `ip` is locked out now (its own lockout, or its IPv6
    /// prefix's), and not on the never-lock list. A map that cannot be
    /// read is logged and treated as "not locked out": user space never
    /// refuses a caller on a failure of its own.
    #[must_use]
    pub fn is_locked(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self.deadline(self.key(ip)) {
            Ok(Some(until)) => until > now_ns() && !self.never_lock.contains(ip),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(src = %ip, error = %e, "lockout lookup failed");
                false
            }
        }
    }

    /// Locks `ip` out (its prefix, for IPv6) for `duration` from now,
    /// replacing any earlier entry; returns the source as listed. A
    /// never-lock address is refused. Never-lock addresses inside a locked
    /// IPv6 prefix stay exempt.
    pub fn lock(&self, ip: IpAddr, duration: Duration) -> Result<String, LockoutError> {
        let ip = ip.to_canonical();
        if let Some(e) = self.never_lock.find(ip) {
            return Err(LockoutError::NeverLock {
                address: ip,
                cidr: e.cidr,
            });
        }
        let key = self.key(ip);
        self.set(key, duration)?;
        Ok(show(key, self.policy.ipv6_prefix()))
    }

    fn set(&self, key: IpAddr, duration: Duration) -> Result<(), XdpError> {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let until = now_ns().saturating_add(nanos);
        match &self.store {
            Store::Kernel(xdp) => xdp.lockout_set(key, until)?,
            Store::Memory(m) => {
                m.lock().expect("lockout table").insert(key, until);
            }
        }
        let src = show(key, self.policy.ipv6_prefix());
        tracing::info!(src = %src, secs = duration.as_secs(), "locked out");
        Ok(())
    }

    /// Lifts the lockout of `ip` (its prefix, for IPv6); false when it had
    /// none that was active.
    pub fn lift(&self, ip: IpAddr) -> Result<bool, XdpError> {
        let key = self.key(ip.to_canonical());
        let active = self.deadline(key)?.is_some_and(|until| until > now_ns());
        let removed = match &self.store {
            Store::Kernel(xdp) => xdp.lockout_remove(key)?,
            Store::Memory(m) => m.lock().expect("lockout table").remove(&key).is_some(),
        };
        if removed && active {
            let src = show(key, self.policy.ipv6_prefix());
            tracing::info!(src = %src, "lockout lifted");
        }
        Ok(removed && active)
    }

    /// Every lockout entry, expired ones included.
    fn entries(&self) -> Result<Vec<(IpAddr, u64)>, XdpError> {
        Ok(match &self.store {
            Store::Kernel(xdp) => xdp.lockout_list()?,
            Store::Memory(m) => {
                let now = now_ns();
                let mut m = m.lock().expect("lockout table");
                m.retain(|_, until| *until > now);
                m.iter().map(|(ip, until)| (*ip, *until)).collect()
            }
        })
    }

    /// Active lockouts, soonest to end first. Expired entries are left for
    /// the LRU (kernel) or dropped here (memory).
    pub fn list(&self) -> Result<Vec<Lockout>, XdpError> {
        let now = now_ns();
        let mut active: Vec<(u64, IpAddr)> = self
            .entries()?
            .into_iter()
            .filter(|&(_, until)| until > now)
            .map(|(key, until)| ((until - now).div_ceil(1_000_000_000), key))
            .collect();
        active.sort_unstable();
        Ok(active
            .into_iter()
            .map(|(remaining_secs, key)| Lockout {
                address: show(key, self.policy.ipv6_prefix()),
                remaining_secs,
            })
            .collect())
    }

    // --- never-lock list ---

    /// The never-lock list, IPv4 first.
    #[must_use]
    pub fn never_lock(&self) -> Vec<Entry> {
        self.never_lock.list()
    }

    /// Adds `cidr` (host bits 0, see [`never_lock::parse`]) to the
    /// never-lock list at run time and lifts the lockouts inside it. A
    /// prefix on the list already keeps its origin.
    pub fn never_lock_add(&self, cidr: IpNet) -> Result<Added, LockoutError> {
        let (entry, created) = if let Some(e) = self.never_lock.get(cidr) {
            (e, false)
        } else {
            if self.never_lock.len() >= knever::MAX_ENTRIES as usize {
                return Err(LockoutError::Full {
                    max: knever::MAX_ENTRIES,
                });
            }
            let e = Entry {
                cidr,
                origin: Origin::Runtime,
            };
            if let Store::Kernel(xdp) = &self.store {
                xdp.never_lock_insert(cidr, e.origin.wire())?;
            }
            self.never_lock.put(e);
            tracing::info!(cidr = %cidr, "added to the never-lock list");
            (e, true)
        };
        let lifted = self.lift_inside(&[cidr])?;
        Ok(Added {
            entry,
            created,
            lifted,
        })
    }

    /// Removes a prefix added at run time; those of the config stay.
    pub fn never_lock_remove(&self, cidr: IpNet) -> Result<(), LockoutError> {
        match self.never_lock.get(cidr) {
            None => return Err(LockoutError::NotListed { cidr }),
            Some(e) if e.origin == Origin::Config => {
                return Err(LockoutError::FromConfig { cidr });
            }
            Some(_) => {}
        }
        if let Store::Kernel(xdp) = &self.store {
            xdp.never_lock_remove(cidr)?;
        }
        self.never_lock.remove(cidr);
        tracing::info!(cidr = %cidr, "removed from the never-lock list");
        Ok(())
    }

    /// Lifts every lockout whose source lies inside one of `cidrs`; the
    /// number of active ones lifted. A locked IPv6 prefix wider than a
    /// never-lock prefix stays: the never-lock sources in it are exempt at
    /// lookup.
    fn lift_inside(&self, cidrs: &[IpNet]) -> Result<usize, XdpError> {
        if cidrs.is_empty() {
            return Ok(0);
        }
        let now = now_ns();
        let p = self.policy.ipv6_prefix();
        let mut lifted = 0;
        for (key, until) in self.entries()? {
            let source = key_net(key, p);
            let Some(&cidr) = cidrs.iter().find(|c| never_lock::covers(**c, source)) else {
                continue;
            };
            let removed = match &self.store {
                Store::Kernel(xdp) => xdp.lockout_remove(key)?,
                Store::Memory(m) => m.lock().expect("lockout table").remove(&key).is_some(),
            };
            if removed && until > now {
                lifted += 1;
                tracing::info!(src = %show(key, p), never_lock = %cidr, "lockout lifted: inside a never-lock prefix");
            }
        }
        Ok(lifted)
    }
}

#[cfg(test)]
mod tests;
