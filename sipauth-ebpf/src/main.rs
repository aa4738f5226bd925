//! The sipauth XDP program.
//!
//! It looks only at UDP and TCP packets to the configured SIP ports, over
//! IPv4 and IPv6, with or without one 802.1Q/802.1ad tag. A packet from a
//! locked-out source is dropped unless the global budget of the current
//! second still has room, in which case it goes up so that user space can
//! answer 403.
//!
//! A UDP INVITE whose Request-URI user part names an application with an IP
//! ACL (`SIPAUTH_APPS`), from a source outside that ACL (`SIPAUTH_ACL_V4`,
//! `SIPAUTH_ACL_V6`), is a denial. Within the same budget it goes up, and
//! user space answers it and counts the failure. Beyond the budget it is
//! dropped and counted here, in `SIPAUTH_FAILURES`: the failure that reaches
//! the threshold within the window writes a lockout. Each denial is thus
//! counted once, by whoever saw it last.
//!
//! IPv4 sources are counted and locked out per address, IPv6 sources per
//! prefix (`Config::ipv6_prefix`, see `sipauth_common::addr::lockout_key`):
//! the lockout and failure maps are keyed by the masked address.
//!
//! Sources in `SIPAUTH_NEVER_LOCK` are judged like any other, but their
//! denials are never counted towards a lockout (they are counted in
//! `stats`), and a lockout entry that covers them (an IPv6 prefix locked
//! out because of a neighbour) does not drop them.
//!
//! A UDP ACK of one of the edge's stateless answers (a challenge, 404,
//! 400: their To-tag says so, see `sipauth_common::ack`) is dropped from a
//! source in good standing too: user space would only ignore it (RFC 3261
//! 8.2.7), and each one would cost it a wakeup. Telling one means walking
//! the ACK's headers; that walk is a program of its own, `sipauth_ack`,
//! reached by a tail call, so that the verifier walks it once rather than
//! once for each way through the header parsing here.
//!
//! Everything else passes: user space decides, and re-checks what was let
//! through.
//!
//! A second program, `sipauth_record`, is never attached: the agent runs it
//! through `BPF_PROG_TEST_RUN` to count a failure it judged itself (see
//! `sipauth_common::record`). It goes through [`record_failure`], the very
//! code the packet path uses, so the two never lose each other's updates.
//!
//! Fallback verdict: when the program cannot read what it needs (a header
//! shorter than it claims, a map that is missing), it returns `XDP_PASS` and
//! counts the packet as `malformed`. The kernel and user space then reject
//! what is really broken; the program never drops what it did not judge.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic compare-exchange on a map value")]

mod parse;
mod sip;

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST,
        xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS},
    },
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, lpm_trie::Key as LpmKey,
    },
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use sipauth_common::{
    ack, acl, addr, apps, budget, config, failures, lockout, never_lock, record, stats,
};

use crate::parse::{Flow, Malformed, Packet};

#[map(name = "SIPAUTH_LOCKOUT")]
static LOCKOUT: LruHashMap<lockout::Key, lockout::Value> =
    LruHashMap::pinned(lockout::MAX_ENTRIES, 0);

#[map(name = "SIPAUTH_CONFIG")]
static CONFIG: Array<config::Config> = Array::pinned(1, 0);

#[map(name = "SIPAUTH_BUDGET")]
static BUDGET: Array<u64> = Array::pinned(1, 0);

#[map(name = "SIPAUTH_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stats::MAX_ENTRIES, 0);

#[map(name = "SIPAUTH_APPS")]
static APPS: HashMap<apps::Key, apps::Value> = HashMap::pinned(apps::MAX_ENTRIES, 0);

#[map(name = "SIPAUTH_ACL_V4")]
static ACL_V4: LpmTrie<acl::V4Key, acl::Value> = LpmTrie::pinned(acl::MAX_ENTRIES, 0);

#[map(name = "SIPAUTH_ACL_V6")]
static ACL_V6: LpmTrie<acl::V6Key, acl::Value> = LpmTrie::pinned(acl::MAX_ENTRIES, 0);

#[map(name = "SIPAUTH_FAILURES")]
static FAILURES: LruHashMap<failures::Key, u64> = LruHashMap::pinned(failures::MAX_ENTRIES, 0);

/// What `sipauth` hands `sipauth_ack`, and the bytes that walks; not
/// pinned.
#[map(name = "SIPAUTH_ACK_SCAN")]
static ACK_SCAN: PerCpuArray<sip::AckScan> = PerCpuArray::with_max_entries(1, 0);

/// Slot [`sipauth_common::ack::TAIL_SLOT`]: `sipauth_ack`, set by the agent
/// at load; not pinned (the entry holds the program).
#[map(name = "SIPAUTH_TAIL")]
static TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map(name = "SIPAUTH_NEVER_LOCK")]
static NEVER_LOCK: LpmTrie<never_lock::Key, never_lock::Value> =
    LpmTrie::pinned(never_lock::MAX_ENTRIES, 0);

const NS_PER_SEC: u64 = 1_000_000_000;

/// Compare-exchange attempts on the budget word before giving up (and
/// dropping): contention beyond this means the budget is being raced for by
/// a flood anyway.
const BUDGET_TRIES: usize = 4;

#[xdp]
pub fn sipauth(ctx: XdpContext) -> u32 {
    let reason = match try_sipauth(&ctx) {
        Ok(reason) => reason,
        Err(Malformed) => stats::Reason::Malformed,
    };
    count(reason);
    if reason.drops() { XDP_DROP } else { XDP_PASS }
}

fn try_sipauth(ctx: &XdpContext) -> Result<stats::Reason, Malformed> {
    let Some(cfg) = CONFIG.get(0) else {
        return Err(Malformed);
    };
    let pkt = match parse::packet(ctx)? {
        Packet::NotIp => return Ok(stats::Reason::NotIp),
        Packet::Ip(pkt) => pkt,
    };
    if !cfg.is_sip_port(pkt.dst_port) {
        return Ok(stats::Reason::NotSip);
    }

    let key = addr::lockout_key(pkt.src, cfg.ipv6_prefix);
    if let Some(until) = locked_until(&key) {
        let now = unsafe { bpf_ktime_get_ns() };
        if until > now && !never_locked(&pkt.src) {
            return Ok(if take_budget(now, cfg.budget_per_sec) {
                stats::Reason::LockedBudget
            } else {
                debug!(ctx, "drop: locked out, port {}", pkt.dst_port);
                stats::Reason::LockedDrop
            });
        }
    }

    // Every way through the header walk ends here with its own exact
    // transport offset; past this point the verifier sees one range, so
    // what follows is verified once instead of once per way (about
    // 900,000 instructions of the 1,000,000 allowed, against 58,000).
    let pkt = Flow {
        l4_off: imprecise(pkt.l4_off),
        ..pkt
    };
    if !acl_denies(ctx, cfg, &pkt) {
        if pkt.proto == parse::IPPROTO_UDP {
            scan_if_ack(ctx, pkt.l4_off + parse::UDP_HLEN);
        }
        return Ok(stats::Reason::Allowed);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if take_budget(now, cfg.budget_per_sec) {
        // User space re-checks the ACL, answers 403 and counts the failure.
        return Ok(stats::Reason::AclDeniedBudget);
    }
    if never_locked(&pkt.src) {
        return Ok(stats::Reason::AclDeniedNeverLock);
    }
    if let record::Outcome::Locked = record_failure(&key, now, cfg).outcome {
        debug!(ctx, "lockout: ACL denials, port {}", pkt.dst_port);
    }
    Ok(stats::Reason::AclDenied)
}

/// When the lockout of a source's key (see [`addr::lockout_key`]) ends, if
/// it has an entry.
#[inline(always)]
fn locked_until(key: &lockout::Key) -> Option<u64> {
    // SAFETY: the value is only read, and a concurrent update of a 64-bit
    // aligned field is a single store.
    unsafe { LOCKOUT.get(key) }.map(|v| v.until_ns)
}

/// Whether the (unmasked) source address is on the never-lock list.
#[inline(always)]
fn never_locked(src: &addr::Key) -> bool {
    NEVER_LOCK.get(LpmKey::new(128, *src)).is_some()
}

/// `v`, as the verifier sees a value read from a map: by its range only.
#[inline(always)]
fn imprecise(v: usize) -> usize {
    let Some(scan) = ACK_SCAN.get_ptr_mut(0) else {
        return v;
    };
    #[expect(clippy::cast_possible_truncation, reason = "an offset in a frame")]
    // SAFETY: this CPU's slot; volatile so that the read is not folded
    // into the store.
    unsafe {
        core::ptr::write_volatile(&raw mut (*scan).off, v as u32);
        core::ptr::read_volatile(&raw const (*scan).off) as usize
    }
}

/// When the UDP payload at `off` is an ACK, goes on in `sipauth_ack`,
/// which gives the verdict and counts it. Returns when it is not, or when
/// the tail call fails (no program in the slot): the packet is allowed.
#[inline(always)]
fn scan_if_ack(ctx: &XdpContext, off: usize) {
    if !sip::is_ack(ctx, off) {
        return;
    }
    let Some(scan) = ACK_SCAN.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; the run that fills it is the one that reads
    // it, in the program tail-called next.
    #[expect(clippy::cast_possible_truncation, reason = "an offset in a frame")]
    unsafe {
        (*scan).off = off as u32;
    }
    // SAFETY: on success control passes to `sipauth_ack` for good.
    let _ = unsafe { TAIL.tail_call(ctx, ack::TAIL_SLOT) };
}

/// The rest of an ACK's judgement, tail-called from `sipauth`: drops an
/// ACK of a stateless answer, allows anything else.
#[xdp]
pub fn sipauth_ack(ctx: XdpContext) -> u32 {
    let reason = match ACK_SCAN.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, filled by the `sipauth` run that called.
        Some(scan) if sip::is_ack_of_stateless(&ctx, unsafe { &mut *scan }) => {
            stats::Reason::AckOfStateless
        }
        _ => stats::Reason::Allowed,
    };
    count(reason);
    if reason.drops() { XDP_DROP } else { XDP_PASS }
}

/// Whether this is a UDP INVITE to an application with an IP ACL from a
/// source outside the ACL.
#[inline(always)]
fn acl_denies(ctx: &XdpContext, cfg: &config::Config, pkt: &Flow) -> bool {
    if pkt.proto != parse::IPPROTO_UDP {
        return false;
    }
    let Some(hash) = sip::invite_user_hash(ctx, pkt.l4_off + parse::UDP_HLEN) else {
        return false;
    };
    // One read per packet: every lookup below uses the same generation.
    // SAFETY: `cfg` points into the map value; the agent flips the field
    // with a single aligned store.
    let generation = unsafe { core::ptr::read_volatile(&raw const cfg.generation) } & 1;
    let key = apps::Key {
        hash,
        generation,
        pad: 0,
    };
    // SAFETY: read only; the agent replaces entries, it never edits them.
    let Some(app) = (unsafe { APPS.get(&key) }) else {
        return false;
    };
    let acl_id = app.acl_id;
    let src = &pkt.src;
    let matched = if src[..12] == addr::from_v4([0; 4])[..12] {
        let key = acl::v4_key(acl_id, [src[12], src[13], src[14], src[15]]);
        ACL_V4.get(LpmKey::new(64, key)).is_some()
    } else {
        ACL_V6
            .get(LpmKey::new(160, acl::v6_key(acl_id, *src)))
            .is_some()
    };
    !matched
}

/// What [`record_failure`] did.
struct Recorded {
    outcome: record::Outcome,
    /// The lockout end, with [`record::Outcome::Locked`].
    until_ns: u64,
    /// The failure word after the update.
    word: u64,
}

impl Recorded {
    #[inline(always)]
    const fn failed(outcome: record::Outcome) -> Self {
        Self {
            outcome,
            until_ns: 0,
            word: 0,
        }
    }
}

/// Counts one failure under `key` (the source's lockout key) at `now_ns`
/// in `SIPAUTH_FAILURES`, and writes a lockout when it reaches the
/// threshold.
///
/// The caller has checked that the source is neither locked out nor on the
/// never-lock list (the packet path handles locked-out sources first;
/// `sipauth_record` checks both).
#[inline(always)]
fn record_failure(src: &lockout::Key, now_ns: u64, cfg: &config::Config) -> Recorded {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "seconds of uptime fit in 32 bits"
    )]
    let now_sec = (now_ns / NS_PER_SEC) as u32;
    let word = match FAILURES.get_ptr_mut(src) {
        Some(w) => w,
        None => {
            // Either this insert or a concurrent one creates the entry; both
            // then go through the compare-exchange below.
            let _ = FAILURES.insert(src, &0, u64::from(BPF_NOEXIST));
            match FAILURES.get_ptr_mut(src) {
                Some(w) => w,
                None => return Recorded::failed(record::Outcome::Invalid),
            }
        }
    };
    for _ in 0..record::CXCHG_TRIES {
        // SAFETY: `word` points into the map value, valid for the program's
        // run; atomic loads do not compile for BPF, a volatile load does.
        let old = unsafe { core::ptr::read_volatile(word) };
        let next = failures::record(old, now_sec, cfg.failure_window_secs, cfg.lockout_threshold);
        // SAFETY: as above; compare-exchange needs BPF CPU v3.
        let (_, swapped) = unsafe {
            core::intrinsics::atomic_cxchg::<
                u64,
                { core::intrinsics::AtomicOrdering::SeqCst },
                { core::intrinsics::AtomicOrdering::SeqCst },
            >(word, old, next.word)
        };
        if !swapped {
            continue;
        }
        if !next.locks {
            return Recorded {
                outcome: record::Outcome::Counted,
                until_ns: 0,
                word: next.word,
            };
        }
        // Only the update that reached the threshold gets here.
        let until_ns = now_ns.saturating_add(cfg.lockout_ns);
        let _ = LOCKOUT.insert(src, &lockout::Value { until_ns }, 0);
        return Recorded {
            outcome: record::Outcome::Locked,
            until_ns,
            word: next.word,
        };
    }
    Recorded::failed(record::Outcome::Contended)
}

/// Counts a failure judged by user space; see `sipauth_common::record` for
/// the frame. Never attached.
#[xdp]
pub fn sipauth_record(ctx: XdpContext) -> u32 {
    if try_record(&ctx).is_ok() {
        XDP_PASS
    } else {
        XDP_ABORTED
    }
}

fn try_record(ctx: &XdpContext) -> Result<(), Malformed> {
    let start = ctx.data();
    if start + record::FRAME_LEN > ctx.data_end() {
        return Err(Malformed);
    }
    let ethertype: [u8; 2] = parse::read(ctx, 12)?;
    if u16::from_be_bytes(ethertype) != record::ETHERTYPE {
        return Err(Malformed);
    }
    let src: addr::Key = parse::read(ctx, record::ADDR_OFF)?;
    let Some(cfg) = CONFIG.get(0) else {
        return Err(Malformed);
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let key = addr::lockout_key(src, cfg.ipv6_prefix);
    let done = if never_locked(&src) {
        Recorded::failed(record::Outcome::NeverLock)
    } else {
        match locked_until(&key) {
            Some(until_ns) if until_ns > now => Recorded {
                outcome: record::Outcome::AlreadyLocked,
                until_ns,
                word: 0,
            },
            _ => record_failure(&key, now, cfg),
        }
    };
    // SAFETY: FRAME_LEN bytes were checked above; unaligned byte stores.
    unsafe {
        let out = start as *mut u8;
        *out.add(record::OUTCOME_OFF) = done.outcome as u8;
        core::ptr::write_unaligned(
            out.add(record::UNTIL_OFF).cast::<[u8; 8]>(),
            done.until_ns.to_le_bytes(),
        );
        core::ptr::write_unaligned(
            out.add(record::WORD_OFF).cast::<[u8; 8]>(),
            done.word.to_le_bytes(),
        );
    }
    Ok(())
}

/// Takes one packet from the budget of the current second.
#[inline(always)]
fn take_budget(now_ns: u64, limit: u32) -> bool {
    let Some(word) = BUDGET.get_ptr_mut(0) else {
        return false;
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "seconds of uptime fit in 32 bits"
    )]
    let now_sec = (now_ns / NS_PER_SEC) as u32;
    for _ in 0..BUDGET_TRIES {
        // SAFETY: `word` points into the map value, valid for the program's
        // run; atomic loads do not compile for BPF, a volatile load does.
        let old = unsafe { core::ptr::read_volatile(word) };
        let Some(new) = budget::take(old, now_sec, limit) else {
            return false;
        };
        // SAFETY: as above; compare-exchange needs BPF CPU v3.
        let (_, swapped) = unsafe {
            core::intrinsics::atomic_cxchg::<
                u64,
                { core::intrinsics::AtomicOrdering::SeqCst },
                { core::intrinsics::AtomicOrdering::SeqCst },
            >(word, old, new)
        };
        if swapped {
            return true;
        }
    }
    false
}

#[inline(always)]
fn count(reason: stats::Reason) {
    if let Some(slot) = STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
