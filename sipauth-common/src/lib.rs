//! Map layouts shared by the XDP program (`sipauth-ebpf`) and the agent.
//!
//! Every map has one module here: its pinned name, its size and its
//! `#[repr(C)]` key and value. Shared structs carry no `bool` and no hidden
//! padding; each has a size assertion beside it. Bumping a layout means
//! bumping [`LAYOUT_VERSION`], which moves the pin directory so that an agent
//! never reuses a pinned map of another shape.
#![no_std]

/// Part of the pin path (`<pin_dir>/v<LAYOUT_VERSION>/`).
pub const LAYOUT_VERSION: u32 = 4;

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

    /// The two big-endian halves of a key.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "part of the XDP program's per-packet path"
    )]
    #[inline(always)]
    const fn halves(key: &Key) -> (u64, u64) {
        (
            u64::from_be_bytes([
                key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
            ]),
            u64::from_be_bytes([
                key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15],
            ]),
        )
    }

    /// Whether `key` is an IPv4 source (IPv4-mapped).
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "part of the XDP program's per-packet path"
    )]
    #[inline(always)]
    pub const fn is_v4(key: &Key) -> bool {
        let (hi, lo) = halves(key);
        hi == 0 && (lo >> 32) == 0xffff
    }

    /// The key under which a source is counted and locked out: an IPv4
    /// source as it is (one /32), an IPv6 source masked to its first
    /// `v6_prefix` bits, so that one /64 (by default) is one source. A
    /// prefix of 0 (settings not written yet) or above 128 means 128.
    /// Kernel and user space share this rule; it has no loop and two
    /// branches, which keeps the verifier's work small.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "part of the XDP program's per-packet path"
    )]
    #[inline(always)]
    pub const fn lockout_key(key: Key, v6_prefix: u32) -> Key {
        if is_v4(&key) || v6_prefix == 0 || v6_prefix >= 128 {
            return key;
        }
        let (hi, lo) = halves(&key);
        let (hi_mask, lo_mask) = if v6_prefix >= 64 {
            let lo_mask = if v6_prefix == 64 {
                0
            } else {
                u64::MAX << (128 - v6_prefix)
            };
            (u64::MAX, lo_mask)
        } else {
            (u64::MAX << (64 - v6_prefix), 0)
        };
        let h = (hi & hi_mask).to_be_bytes();
        let l = (lo & lo_mask).to_be_bytes();
        [
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5],
            l[6], l[7],
        ]
    }
}

/// Sources that are never locked out, whatever their failures: an LPM trie
/// of prefixes over [`addr::Key`] (an IPv4 CIDR `a.b.c.d/n` is the mapped
/// address with prefix length `96 + n`). The program consults it before it
/// counts a failure or drops a locked-out source; the agent writes it from
/// `lockout.never_lock` and `/admin/never-lock`.
pub mod never_lock {
    pub const NAME: &str = "SIPAUTH_NEVER_LOCK";
    pub const MAX_ENTRIES: u32 = 4096;

    pub type Key = super::addr::Key;
    /// Where the entry comes from: [`ORIGIN_CONFIG`] or [`ORIGIN_RUNTIME`].
    pub type Value = u32;

    /// Written from `lockout.never_lock` at start-up.
    pub const ORIGIN_CONFIG: Value = 1;
    /// Added through `/admin/never-lock`; kept across agent restarts.
    pub const ORIGIN_RUNTIME: Value = 2;
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

/// Settings the agent writes at start-up and rewrites when the lockout
/// policy changes or an ACL generation is flipped: one entry, index 0.
pub mod config {
    pub const NAME: &str = "SIPAUTH_CONFIG";
    pub const MAX_PORTS: usize = 8;

    /// Failures within the window that lock a source out.
    pub const DEFAULT_LOCKOUT_THRESHOLD: u32 = 10;
    pub const DEFAULT_FAILURE_WINDOW_SECS: u32 = 60;
    pub const DEFAULT_LOCKOUT_SECS: u64 = 60;
    pub const DEFAULT_IPV6_PREFIX: u32 = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        /// SIP ports in host order; unused slots are 0. UDP and TCP alike.
        pub sip_ports: [u16; MAX_PORTS],
        /// Packets per second from denied sources that may still reach
        /// user space (all sources together). 0 drops them all.
        pub budget_per_sec: u32,
        /// The live generation (0 or 1) of `SIPAUTH_APPS` and the ACL
        /// tries: the program reads it once per packet and looks up only
        /// entries of that generation. See [`super::apps`].
        pub generation: u32,
        /// Failures within [`Self::failure_window_secs`] that lock a source
        /// out; 0 counts failures but never locks.
        pub lockout_threshold: u32,
        /// Length of a failure-counting window, in seconds.
        pub failure_window_secs: u32,
        /// How long a lockout lasts, in nanoseconds.
        pub lockout_ns: u64,
        /// IPv6 sources are counted and locked out per prefix of this
        /// length (see [`super::addr::lockout_key`]); IPv4 per address.
        pub ipv6_prefix: u32,
        /// Always 0.
        pub pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<Config>() == 48);

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

/// FNV-1a, 64 bits: the hash of a Request-URI user part. The program hashes
/// the bytes as it walks them; the agent hashes application ids with
/// [`fnv::hash`] and gets the same value.
pub mod fnv {
    pub const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    pub const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// Folds one byte into the hash.
    #[must_use]
    #[inline]
    pub const fn step(hash: u64, byte: u8) -> u64 {
        (hash ^ byte as u64).wrapping_mul(PRIME)
    }

    #[must_use]
    pub const fn hash(bytes: &[u8]) -> u64 {
        let mut h = OFFSET_BASIS;
        let mut i = 0;
        while i < bytes.len() {
            h = step(h, bytes[i]);
            i += 1;
        }
        h
    }
}

/// Applications whose `sip_auth_type` uses an IP ACL, by the hash of their
/// id (the Request-URI user part, `sip:{app_id}@{domain}`).
///
/// Generations: the application map and both ACL tries hold two
/// generations side by side. An entry of `SIPAUTH_APPS` carries its
/// generation in the key, and an ACL id carries it in its top bit
/// ([`super::acl::GENERATION_BIT`]), so the ACL entries an application
/// points at belong to the same generation. The agent writes a whole new
/// generation, flips [`super::config::Config::generation`], then deletes
/// the old one: a packet sees either the old set or the new one.
pub mod apps {
    pub const NAME: &str = "SIPAUTH_APPS";
    /// Both generations together.
    pub const MAX_ENTRIES: u32 = 65_536;
    /// Longest user part the program hashes.
    pub const MAX_USER_LEN: usize = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Key {
        /// [`super::fnv::hash`] of the application id.
        pub hash: u64,
        /// 0 or 1.
        pub generation: u32,
        /// Always 0.
        pub pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<Key>() == 16);

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Value {
        /// The ACL in `SIPAUTH_ACL_V4`/`SIPAUTH_ACL_V6`, generation bit
        /// included.
        pub acl_id: u32,
        /// Reserved; always 0.
        pub flags: u32,
    }
    const _: () = assert!(core::mem::size_of::<Value>() == 8);

    /// Bytes that end the user part of a Request-URI for the program.
    #[must_use]
    #[inline]
    pub const fn ends_user(b: u8) -> bool {
        matches!(b, b'@' | b';' | b'>' | b':' | b' ')
    }

    /// The map hash of an application id, or `None` when the program could
    /// never produce it (empty, longer than [`MAX_USER_LEN`], or holding a
    /// byte that ends the user part).
    #[must_use]
    pub const fn hash_of(app_id: &[u8]) -> Option<u64> {
        if app_id.is_empty() || app_id.len() > MAX_USER_LEN {
            return None;
        }
        let mut i = 0;
        while i < app_id.len() {
            if ends_user(app_id[i]) {
                return None;
            }
            i += 1;
        }
        Some(super::fnv::hash(app_id))
    }
}

/// IP ACLs as two LPM tries keyed by (ACL id, address): IPv4 entries (and
/// IPv4-mapped sources) in `SIPAUTH_ACL_V4`, IPv6 in `SIPAUTH_ACL_V6`. The
/// ACL id comes first, big-endian, and is matched in full (prefix length
/// 32 + CIDR), so a lookup with prefix 32 + 32 (or 32 + 128) finds the
/// longest entry of that ACL only. Values are unused (always 1).
pub mod acl {
    pub const V4_NAME: &str = "SIPAUTH_ACL_V4";
    pub const V6_NAME: &str = "SIPAUTH_ACL_V6";
    /// Entries per trie, both generations together.
    pub const MAX_ENTRIES: u32 = 262_144;
    /// The top bit of an ACL id is its generation; the agent assigns ids
    /// below it.
    pub const GENERATION_BIT: u32 = 1 << 31;

    pub type V4Key = [u8; 8];
    pub type V6Key = [u8; 20];
    pub type Value = u32;

    /// `id` (below [`GENERATION_BIT`]) as written in generation `generation`.
    #[must_use]
    pub const fn wire_id(id: u32, generation: u32) -> u32 {
        (id & !GENERATION_BIT)
            | if generation & 1 == 1 {
                GENERATION_BIT
            } else {
                0
            }
    }

    #[must_use]
    pub const fn generation_of(wire_id: u32) -> u32 {
        wire_id >> 31
    }

    #[must_use]
    #[inline]
    pub const fn v4_key(wire_id: u32, octets: [u8; 4]) -> V4Key {
        let id = wire_id.to_be_bytes();
        [
            id[0], id[1], id[2], id[3], octets[0], octets[1], octets[2], octets[3],
        ]
    }

    #[must_use]
    #[inline]
    pub const fn v6_key(wire_id: u32, octets: [u8; 16]) -> V6Key {
        let mut k = [0u8; 20];
        let id = wire_id.to_be_bytes();
        let mut i = 0;
        while i < 4 {
            k[i] = id[i];
            i += 1;
        }
        while i < 20 {
            k[i] = octets[i - 4];
            i += 1;
        }
        k
    }

    /// The ACL id of a trie key.
    #[must_use]
    pub const fn id_of(key: &[u8]) -> u32 {
        u32::from_be_bytes([key[0], key[1], key[2], key[3]])
    }
}

/// Failures per source: one `u64` word, the start of the counting window in
/// seconds of `CLOCK_MONOTONIC` (high 32 bits) and the failures counted in
/// it (low 32 bits). The program updates it by compare-exchange with
/// [`failures::record`]; the agent never writes it directly but runs the
/// `sipauth_record` program (see [`record`]), so both go through the same
/// atomic update.
pub mod failures {
    pub const NAME: &str = "SIPAUTH_FAILURES";
    /// LRU, like the lockout map.
    pub const MAX_ENTRIES: u32 = 65_536;

    pub type Key = super::addr::Key;

    /// What a word becomes with one more failure.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Recorded {
        pub word: u64,
        /// This failure reached the threshold: the source is to be locked
        /// out, and counting starts afresh (the word's count is 0).
        pub locks: bool,
    }

    #[must_use]
    pub const fn pack(window_start: u32, count: u32) -> u64 {
        ((window_start as u64) << 32) | count as u64
    }

    /// `(window start, count)`.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the word packs two u32 halves"
    )]
    pub const fn unpack(word: u64) -> (u32, u32) {
        ((word >> 32) as u32, word as u32)
    }

    /// One more failure at `now_sec`. A window opens with the first
    /// failure after the previous one closed (`window_secs` later) or after
    /// a lockout; the failure that brings the count to `threshold` locks
    /// (never when `threshold` is 0).
    #[must_use]
    pub const fn record(word: u64, now_sec: u32, window_secs: u32, threshold: u32) -> Recorded {
        let (start, count) = unpack(word);
        let open = count != 0 && now_sec.wrapping_sub(start) < window_secs;
        let (start, count) = if open {
            (start, count.saturating_add(1))
        } else {
            (now_sec, 1)
        };
        if threshold != 0 && count >= threshold {
            Recorded {
                word: pack(now_sec, 0),
                locks: true,
            }
        } else {
            Recorded {
                word: pack(start, count),
                locks: false,
            }
        }
    }

    /// Failures that count at `now_sec` (0 once the window has closed).
    #[must_use]
    pub const fn current(word: u64, now_sec: u32, window_secs: u32) -> u32 {
        let (start, count) = unpack(word);
        if now_sec.wrapping_sub(start) < window_secs {
            count
        } else {
            0
        }
    }
}

/// The frame the agent hands to the `sipauth_record` program through
/// `BPF_PROG_TEST_RUN` to count one failure in the kernel. The program is
/// never attached; it reads the source address, performs the same update
/// as the packet path and writes the outcome back into the frame, which
/// the kernel returns as the test run's output data.
///
/// ```text
/// 0..14   Ethernet header, ethertype ETHERTYPE (other bytes 0)
/// 14..30  source address (addr::Key, unmasked: the program masks it)
/// 30      out: Outcome
/// 31..38  0
/// 38..46  out: lockout end (until_ns, little-endian) with Outcome::Locked
///         or Outcome::AlreadyLocked, else 0
/// 46..54  out: the failure word after the update (little-endian), or 0
/// ```
pub mod record {
    /// IEEE 802 "local experimental" ethertype 1.
    pub const ETHERTYPE: u16 = 0x88b5;
    pub const ADDR_OFF: usize = 14;
    pub const OUTCOME_OFF: usize = 30;
    pub const UNTIL_OFF: usize = 38;
    pub const WORD_OFF: usize = 46;
    pub const FRAME_LEN: usize = 54;

    #[repr(u8)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Outcome {
        /// The frame was not understood, or the maps are missing.
        Invalid = 0,
        /// Counted.
        Counted = 1,
        /// Counted, and this failure locked the source out.
        Locked = 2,
        /// The source is locked out already: not counted, and the lockout
        /// is not extended.
        AlreadyLocked = 3,
        /// The word kept changing under the compare-exchange (more than
        /// `CXCHG_TRIES` concurrent updates of one source).
        Contended = 4,
        /// The source is on the never-lock list: not counted, never locked
        /// out.
        NeverLock = 5,
    }

    /// Compare-exchange attempts on a failure word.
    pub const CXCHG_TRIES: usize = 16;

    impl Outcome {
        #[must_use]
        pub const fn from_u8(b: u8) -> Self {
            match b {
                1 => Self::Counted,
                2 => Self::Locked,
                3 => Self::AlreadyLocked,
                4 => Self::Contended,
                5 => Self::NeverLock,
                _ => Self::Invalid,
            }
        }
    }
}

pub mod ack;

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
        /// A UDP INVITE to an application with an IP ACL, from outside the
        /// ACL, passed within the budget (user space judges and counts it).
        AclDeniedBudget = 6,
        /// The same, dropped and counted as a failure of the source.
        AclDenied = 7,
        /// The same from a never-lock source: dropped, not counted towards
        /// a lockout.
        AclDeniedNeverLock = 8,
        /// A UDP ACK of one of the edge's stateless answers (see
        /// [`super::ack`]): dropped, as user space would ignore it.
        AckOfStateless = 9,
    }

    pub const REASONS: [Reason; 10] = [
        Reason::NotIp,
        Reason::NotSip,
        Reason::Malformed,
        Reason::Allowed,
        Reason::LockedBudget,
        Reason::LockedDrop,
        Reason::AclDeniedBudget,
        Reason::AclDenied,
        Reason::AclDeniedNeverLock,
        Reason::AckOfStateless,
    ];
    #[expect(clippy::cast_possible_truncation, reason = "ten reasons")]
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
                Reason::AclDeniedBudget => "acl_denied_budget",
                Reason::AclDenied => "acl_denied",
                Reason::AclDeniedNeverLock => "acl_denied_never_lock",
                Reason::AckOfStateless => "ack_of_stateless_answer",
            }
        }

        /// Whether the program drops packets given this reason.
        #[must_use]
        pub const fn drops(self) -> bool {
            matches!(
                self,
                Reason::LockedDrop
                    | Reason::AclDenied
                    | Reason::AclDeniedNeverLock
                    | Reason::AckOfStateless
            )
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::apps::Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::apps::Value {}
}

#[cfg(test)]
mod tests;
