//! The sipauth XDP program.
//!
//! It looks only at UDP and TCP packets to the configured SIP ports, over
//! IPv4 and IPv6, with or without one 802.1Q/802.1ad tag. A packet from a
//! locked-out source is dropped unless the global budget of the current
//! second still has room, in which case it goes up so that user space can
//! answer 403. Everything else passes: user space decides, and re-checks what
//! was let through.
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

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use sipauth_common::{budget, config, lockout, stats};

use crate::parse::{Malformed, Packet};

#[map(name = "SIPAUTH_LOCKOUT")]
static LOCKOUT: LruHashMap<lockout::Key, lockout::Value> =
    LruHashMap::pinned(lockout::MAX_ENTRIES, 0);

#[map(name = "SIPAUTH_CONFIG")]
static CONFIG: Array<config::Config> = Array::pinned(1, 0);

#[map(name = "SIPAUTH_BUDGET")]
static BUDGET: Array<u64> = Array::pinned(1, 0);

#[map(name = "SIPAUTH_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stats::MAX_ENTRIES, 0);

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

    // SAFETY: the value is only read, and a concurrent update of a 64-bit
    // aligned field by user space is a single store.
    let Some(entry) = (unsafe { LOCKOUT.get(&pkt.src) }) else {
        return Ok(stats::Reason::Allowed);
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if entry.until_ns <= now {
        return Ok(stats::Reason::Allowed);
    }
    if take_budget(now, cfg.budget_per_sec) {
        Ok(stats::Reason::LockedBudget)
    } else {
        debug!(ctx, "drop: locked out, port {}", pkt.dst_port);
        Ok(stats::Reason::LockedDrop)
    }
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
