//! Map layouts shared by the XDP program (`sipauth-ebpf`) and the agent.
//!
//! Every map has one module here: its pinned name, its size and its
//! `#[repr(C)]` key and value. Shared structs carry no `bool` and no hidden
//! padding; each has a size assertion beside it. Bumping a layout means
//! bumping [`LAYOUT_VERSION`], which moves the pin directory so that an agent
//! never reuses a pinned map of another shape.
#![no_std]

/// Part of the pin path (`<pin_dir>/v<LAYOUT_VERSION>/`).
pub const LAYOUT_VERSION: u32 = 1;

/// Source addresses, IPv4 and IPv6 alike, as 16 bytes in network order.
/// IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so one map and one key
/// type serve both families.
pub mod addr {
    pub type Key = [u8; 16];

    #[must_use]
    pub const fn from_v4(octets: [u8; 4]) -> Key {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
        ]
    }
}

/// Sources that are locked out, with the instant the lockout ends.
pub mod lockout {
    pub const NAME: &str = "SIPAUTH_LOCKOUT";
    /// LRU: a flood of distinct sources evicts the oldest entries instead
    /// of failing inserts.
    pub const MAX_ENTRIES: u32 = 65_536;

    pub type Key = super::addr::Key;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Value {
        /// `CLOCK_MONOTONIC` nanoseconds (the clock of `bpf_ktime_get_ns`)
        /// at which the lockout ends.
        pub until_ns: u64,
    }
    const _: () = assert!(core::mem::size_of::<Value>() == 8);
}

/// Settings the agent writes at start-up: one entry, index 0.
pub mod config {
    pub const NAME: &str = "SIPAUTH_CONFIG";
    pub const MAX_PORTS: usize = 8;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        /// SIP ports in host order; unused slots are 0. UDP and TCP alike.
        pub sip_ports: [u16; MAX_PORTS],
        /// Packets per second from denied sources that may still reach
        /// user space (all sources together). 0 drops them all.
        pub budget_per_sec: u32,
        /// Keeps the layout explicit; always 0.
        pub pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<Config>() == 24);

    impl Config {
        #[must_use]
        pub fn is_sip_port(&self, port: u16) -> bool {
            port != 0 && self.sip_ports.contains(&port)
        }
    }
}

/// The global budget of packets from denied sources passed to user space.
/// One `u64` at index 0: the current second (high 32 bits) and how many
/// packets have been passed in it (low 32 bits), updated by compare-exchange.
pub mod budget {
    pub const NAME: &str = "SIPAUTH_BUDGET";

    /// Given the word and the current second, what the word becomes if one
    /// more packet is passed, or `None` when the budget of the second is
    /// spent. Kernel and user space share this rule.
    #[must_use]
    pub const fn take(word: u64, now_sec: u32, limit: u32) -> Option<u64> {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the word packs two u32 halves"
        )]
        let (sec, used) = ((word >> 32) as u32, word as u32);
        if sec != now_sec {
            if limit == 0 {
                return None;
            }
            Some(((now_sec as u64) << 32) | 1)
        } else if used >= limit {
            None
        } else {
            Some(word + 1)
        }
    }
}

/// Per-CPU packet counters, one slot per [`stats::Reason`].
pub mod stats {
    pub const NAME: &str = "SIPAUTH_STATS";

    /// Why the program gave its verdict. The discriminant is the slot.
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Reason {
        /// Not IPv4/IPv6 (ARP, LLDP, ...).
        NotIp = 0,
        /// IP, but not UDP/TCP to a SIP port.
        NotSip = 1,
        /// Headers shorter than they claim, or IP options we do not walk:
        /// passed for the kernel and user space to judge.
        Malformed = 2,
        /// SIP traffic from a source in good standing.
        Allowed = 3,
        /// From a locked-out source, passed within the budget.
        LockedBudget = 4,
        /// From a locked-out source, dropped.
        LockedDrop = 5,
    }

    pub const REASONS: [Reason; 6] = [
        Reason::NotIp,
        Reason::NotSip,
        Reason::Malformed,
        Reason::Allowed,
        Reason::LockedBudget,
        Reason::LockedDrop,
    ];
    #[expect(clippy::cast_possible_truncation, reason = "six reasons")]
    pub const MAX_ENTRIES: u32 = REASONS.len() as u32;

    impl Reason {
        #[must_use]
        pub const fn name(self) -> &'static str {
            match self {
                Reason::NotIp => "not_ip",
                Reason::NotSip => "not_sip",
                Reason::Malformed => "malformed",
                Reason::Allowed => "allowed",
                Reason::LockedBudget => "locked_out_budget",
                Reason::LockedDrop => "locked_out",
            }
        }

        /// Whether the program drops packets given this reason.
        #[must_use]
        pub const fn drops(self) -> bool {
            matches!(self, Reason::LockedDrop)
        }

        #[must_use]
        pub const fn verdict(self) -> &'static str {
            if self.drops() { "drop" } else { "pass" }
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers without padding (see the asserts).
    unsafe impl aya::Pod for super::lockout::Value {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::config::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_resets_each_second() {
        let w = budget::take(0, 7, 2).unwrap();
        assert_eq!(w, (7 << 32) | 1);
        let w = budget::take(w, 7, 2).unwrap();
        assert_eq!(budget::take(w, 7, 2), None);
        assert_eq!(budget::take(w, 8, 2), Some((8 << 32) | 1));
    }

    #[test]
    fn zero_budget_is_silent() {
        assert_eq!(budget::take(0, 1, 0), None);
        assert_eq!(budget::take(1 << 32, 1, 0), None);
    }

    #[test]
    fn v4_mapped() {
        assert_eq!(
            addr::from_v4([192, 0, 2, 1]),
            core::net::Ipv4Addr::new(192, 0, 2, 1)
                .to_ipv6_mapped()
                .octets()
        );
    }

    #[test]
    fn ports() {
        let mut c = config::Config::default();
        c.sip_ports[0] = 5060;
        assert!(c.is_sip_port(5060));
        assert!(!c.is_sip_port(0));
        assert!(!c.is_sip_port(5061));
    }
}
