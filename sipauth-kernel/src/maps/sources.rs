//! The per-source maps: lockouts, failure counters and the never-lock
//! trie, each read and written here and nowhere else in user space.
#![forbid(unsafe_code)]

use std::net::IpAddr;

use aya::TestRun as _;
use aya::maps::MapError;
use aya::maps::lpm_trie::Key as LpmKey;
use aya::programs::TestRunOptions;
use ipnet::IpNet;
use sipauth_common::{addr, failures, lockout, never_lock, record};

use super::{
    RECORD_RUNS, XDP_PASS, Xdp, XdpError, ip_of, key, map_err, monotonic_secs, net_key, net_of,
};

impl Xdp {
    // --- lockout map ---

    /// The key `ip` is counted and locked out under (see
    /// [`addr::lockout_key`]).
    pub fn lockout_key(&self, ip: IpAddr) -> lockout::Key {
        addr::lockout_key(key(ip), self.settings().ipv6_prefix)
    }

    /// When the lockout of `ip` (its prefix, for IPv6) ends, if it has one.
    pub fn lockout_get(&self, ip: IpAddr) -> Result<Option<u64>, XdpError> {
        let k = self.lockout_key(ip);
        let map = self.lockout.lock().expect("lockout map lock");
        match map.get(&k, 0) {
            Ok(v) => Ok(Some(v.until_ns)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(lockout::NAME)(e)),
        }
    }

    pub fn lockout_set(&self, ip: IpAddr, until_ns: u64) -> Result<(), XdpError> {
        let k = self.lockout_key(ip);
        let mut map = self.lockout.lock().expect("lockout map lock");
        map.insert(k, lockout::Value { until_ns }, 0)
            .map_err(map_err(lockout::NAME))
    }

    /// Removes the entry of `ip` (its prefix, for IPv6); false when there
    /// was none.
    pub fn lockout_remove(&self, ip: IpAddr) -> Result<bool, XdpError> {
        let k = self.lockout_key(ip);
        let mut map = self.lockout.lock().expect("lockout map lock");
        match map.remove(&k) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
                Ok(false)
            }
            Err(e) => Err(map_err(lockout::NAME)(e)),
        }
    }

    /// Every entry: the lockout key as an address (an IPv6 one is the
    /// first address of its prefix) and the lockout's end.
    pub fn lockout_list(&self) -> Result<Vec<(IpAddr, u64)>, XdpError> {
        let map = self.lockout.lock().expect("lockout map lock");
        map.iter()
            .map(|r| r.map(|(k, v)| (ip_of(k), v.until_ns)))
            .collect::<Result<_, _>>()
            .map_err(map_err(lockout::NAME))
    }

    // --- failures ---

    /// Counts one failure of `ip` judged by user space, in the counter the
    /// program uses for its own ACL denials. When this failure reaches the
    /// threshold the source is locked out, and the lockout's end
    /// (`CLOCK_MONOTONIC` ns) is returned. A source locked out already is
    /// not counted and its lockout is not extended (`Ok(None)`).
    ///
    /// The update runs in the kernel (`sipauth_record` through
    /// `BPF_PROG_TEST_RUN`, see the module documentation), so it never
    /// loses an increment made concurrently by the program.
    pub fn record_failure(&self, ip: IpAddr) -> Result<Option<u64>, XdpError> {
        let program = self.record_program();
        let mut frame = [0u8; record::FRAME_LEN];
        frame[12..14].copy_from_slice(&record::ETHERTYPE.to_be_bytes());
        frame[record::ADDR_OFF..record::ADDR_OFF + 16].copy_from_slice(&key(ip));
        for _ in 0..RECORD_RUNS {
            let mut out = [0u8; record::FRAME_LEN];
            let r = program.test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..Default::default()
            })?;
            if r.return_value != XDP_PASS {
                return Err(XdpError::Record("the program rejected the frame"));
            }
            let le64 = |off: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&out[off..off + 8]);
                u64::from_le_bytes(b)
            };
            match record::Outcome::from_u8(out[record::OUTCOME_OFF]) {
                record::Outcome::Counted
                | record::Outcome::AlreadyLocked
                | record::Outcome::NeverLock => return Ok(None),
                record::Outcome::Locked => return Ok(Some(le64(record::UNTIL_OFF))),
                // Nothing was written: running again is safe.
                record::Outcome::Contended => {}
                record::Outcome::Invalid => {
                    return Err(XdpError::Record("the failure map could not be updated"));
                }
            }
        }
        Err(XdpError::Record("the failure counter kept changing"))
    }

    /// Every open failure window: (source key, window start in
    /// `CLOCK_MONOTONIC` seconds, failures in it). Closed windows and
    /// words reset by a lockout (count 0) are left out.
    pub fn failure_list(&self) -> Result<Vec<(IpAddr, u32, u32)>, XdpError> {
        let window = self.settings().failure_window_secs;
        let now = monotonic_secs();
        let map = self.failures.lock().expect("failure map lock");
        let words = map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(failures::NAME))?;
        Ok(words
            .into_iter()
            .filter(|&(_, word)| failures::current(word, now, window) > 0)
            .map(|(k, word)| {
                let (start, count) = failures::unpack(word);
                (ip_of(k), start, count)
            })
            .collect())
    }

    /// Failures of `ip` in its open window (0 when none or closed).
    pub fn failure_count(&self, ip: IpAddr) -> Result<u32, XdpError> {
        let window = self.settings().failure_window_secs;
        let k = self.lockout_key(ip);
        match self.failures.lock().expect("failure map lock").get(&k, 0) {
            Ok(word) => Ok(failures::current(word, monotonic_secs(), window)),
            Err(MapError::KeyNotFound) => Ok(0),
            Err(e) => Err(map_err(failures::NAME)(e)),
        }
    }

    // --- never-lock list ---

    /// Every never-lock prefix with its origin
    /// ([`never_lock::ORIGIN_CONFIG`] or [`never_lock::ORIGIN_RUNTIME`]).
    pub fn never_lock_list(&self) -> Result<Vec<(IpNet, never_lock::Value)>, XdpError> {
        let map = self.never_lock.lock().expect("never-lock map lock");
        map.iter()
            .map(|r| r.map(|(k, origin)| (net_of(k.prefix_len(), k.data()), origin)))
            .collect::<Result<_, _>>()
            .map_err(map_err(never_lock::NAME))
    }

    /// Adds or replaces `net` with its origin.
    pub fn never_lock_insert(&self, net: IpNet, origin: never_lock::Value) -> Result<(), XdpError> {
        let (len, k) = net_key(net);
        let mut map = self.never_lock.lock().expect("never-lock map lock");
        map.insert(&LpmKey::new(len, k), origin, 0)
            .map_err(map_err(never_lock::NAME))
    }

    /// Removes `net`; false when it was not there.
    pub fn never_lock_remove(&self, net: IpNet) -> Result<bool, XdpError> {
        let (len, k) = net_key(net);
        let mut map = self.never_lock.lock().expect("never-lock map lock");
        match map.remove(&LpmKey::new(len, k)) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
                Ok(false)
            }
            Err(e) => Err(map_err(never_lock::NAME)(e)),
        }
    }
}
