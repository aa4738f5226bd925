//! The one lockout policy: `threshold` failures from one source within
//! `window` lock it out for `duration`; IPv6 sources are counted and
//! locked out per prefix of `ipv6_prefix` bits.
//!
//! The XDP program reads it from its settings map ([`LockoutPolicy::apply`])
//! and user space's lockout table counts by it, so with XDP on or off a
//! source is locked out by the same rule. A value of this type is always
//! valid: the threshold is at least 1 (a source that must never be locked
//! out belongs on the never-lock list), the window and the duration are
//! whole seconds of at least 1, and the prefix is 1 to 128 bits.

use std::num::NonZeroU32;
use std::time::Duration;

use sipauth_common::config as kconfig;

const NS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    threshold: NonZeroU32,
    /// Whole seconds; the program counts in seconds.
    window_secs: u32,
    duration_secs: u64,
    ipv6_prefix: u8,
}

/// Why settings do not make a policy; each names the setting's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("threshold must be at least 1 (list a source in never_lock to never lock it out)")]
    Threshold,
    #[error("window_secs must be from 1 to 4294967295")]
    Window,
    #[error("duration_secs must be at least 1")]
    Duration,
    #[error("ipv6_prefix must be a prefix length from 1 to 128")]
    Ipv6Prefix,
}

// === impl LockoutPolicy ===

impl LockoutPolicy {
    pub fn new(
        threshold: u32,
        window_secs: u64,
        duration_secs: u64,
        ipv6_prefix: u8,
    ) -> Result<Self, PolicyError> {
        let threshold = NonZeroU32::new(threshold).ok_or(PolicyError::Threshold)?;
        let window_secs = u32::try_from(window_secs)
            .ok()
            .filter(|w| *w >= 1)
            .ok_or(PolicyError::Window)?;
        if duration_secs == 0 {
            return Err(PolicyError::Duration);
        }
        if !(1..=128).contains(&ipv6_prefix) {
            return Err(PolicyError::Ipv6Prefix);
        }
        Ok(Self {
            threshold,
            window_secs,
            duration_secs,
            ipv6_prefix,
        })
    }

    /// Failures within the window that lock the source out.
    #[must_use]
    pub fn threshold(&self) -> u32 {
        self.threshold.get()
    }

    #[must_use]
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_secs))
    }

    /// How long a lockout lasts.
    #[must_use]
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }

    #[must_use]
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// Writes the policy into the program's settings.
    pub(super) fn apply(&self, c: &mut kconfig::Config) {
        c.lockout_threshold = self.threshold.get();
        c.failure_window_secs = self.window_secs;
        c.lockout_ns = self.duration_secs.saturating_mul(NS_PER_SEC);
        c.ipv6_prefix = u32::from(self.ipv6_prefix);
    }
}

impl Default for LockoutPolicy {
    /// 10 failures within 60 s lock a source out for 60 s; IPv6 per /64.
    fn default() -> Self {
        Self::new(
            kconfig::DEFAULT_LOCKOUT_THRESHOLD,
            u64::from(kconfig::DEFAULT_FAILURE_WINDOW_SECS),
            kconfig::DEFAULT_LOCKOUT_SECS,
            64,
        )
        .expect("the defaults are a valid policy")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ten_in_a_minute_for_a_minute() {
        let p = LockoutPolicy::default();
        assert_eq!(p.threshold(), 10);
        assert_eq!(p.window(), Duration::from_mins(1));
        assert_eq!(p.duration(), Duration::from_mins(1));
        assert_eq!(p.ipv6_prefix(), 64);
    }

    #[test]
    fn settings_outside_their_rule_make_no_policy() {
        assert_eq!(
            LockoutPolicy::new(0, 60, 60, 64),
            Err(PolicyError::Threshold)
        );
        assert_eq!(LockoutPolicy::new(1, 0, 60, 64), Err(PolicyError::Window));
        assert_eq!(
            LockoutPolicy::new(1, 1 << 32, 60, 64),
            Err(PolicyError::Window)
        );
        assert_eq!(LockoutPolicy::new(1, 60, 0, 64), Err(PolicyError::Duration));
        assert_eq!(
            LockoutPolicy::new(1, 60, 60, 0),
            Err(PolicyError::Ipv6Prefix)
        );
        assert_eq!(
            LockoutPolicy::new(1, 60, 60, 129),
            Err(PolicyError::Ipv6Prefix)
        );
        assert!(LockoutPolicy::new(1, 1, 1, 128).is_ok());
    }

    #[test]
    fn the_program_reads_the_same_rule() {
        let p = LockoutPolicy::new(3, 30, 5, 56).unwrap();
        let mut c = kconfig::Config::default();
        p.apply(&mut c);
        assert_eq!(c.lockout_threshold, 3);
        assert_eq!(c.failure_window_secs, 30);
        assert_eq!(c.lockout_ns, 5_000_000_000);
        assert_eq!(c.ipv6_prefix, 56);
    }
}
