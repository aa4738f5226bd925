//! Just enough of a SIP request to find the application of an INVITE
//! (`INVITE `, then a `sip:` or `sips:` Request-URI, then its user part),
//! and to tell an ACK of one of the edge's stateless answers
//! ([`sipauth_common::ack`]).
//!
//! Anything else (another method, another scheme, a user part longer than
//! [`apps::MAX_USER_LEN`], a payload cut short) gives `None` and the packet
//! is judged as before: user space parses it properly.
//!
//! The bytes are copied to the stack with `bpf_xdp_load_bytes` rather than
//! read in place. The payload offset differs on every path through the
//! header walk (VLAN tag or not, IPv4 options, IPv6 extension headers);
//! read in place, the verifier would walk the 64-byte loop once per path.
//! As a helper argument the offset stays imprecise, the states after the
//! copy are equivalent, and the loop is verified once.

use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::generated::{bpf_loop, bpf_xdp_get_buff_len, bpf_xdp_load_bytes};
use aya_ebpf::programs::XdpContext;
use sipauth_common::{ack, apps, fnv};

/// An ACK handed to `sipauth_ack`, in a per-CPU map (too many bytes for
/// the stack). Room beyond [`ack::SCAN_LEN`] so that the walk's
/// look-ahead from any byte it reads stays inside the map value, whatever
/// the verifier knows of the length.
#[repr(C)]
pub struct AckScan {
    /// An offset in the frame: the transport header's while `sipauth`
    /// judges the packet (read back through the map so that the verifier
    /// knows it only by its range), the UDP payload's when it hands an ACK
    /// to `sipauth_ack`.
    pub off: u32,
    bytes: [u8; ack::SCAN_LEN + 16],
}

/// What the `bpf_loop` callback walks and what it found.
struct AckLoop<'a> {
    msg: &'a [u8],
    scan: ack::Scan,
    found: bool,
}

const INVITE: [u8; 7] = *b"INVITE ";
/// `INVITE ` and `sips:`.
const HEAD: usize = 12;
/// The longest user part and the byte that ends it.
const USER_BUF: usize = apps::MAX_USER_LEN + 1;

/// ASCII lower case, for the URI scheme (case-insensitive, RFC 3261 19.1.4).
#[inline(always)]
fn lower(b: u8) -> u8 {
    if b.is_ascii_uppercase() { b | 0x20 } else { b }
}

/// Copies `len` bytes (1..=N) at `off` into `buf`.
#[inline(always)]
fn load<const N: usize>(ctx: &XdpContext, off: usize, buf: &mut [u8; N], len: usize) -> Option<()> {
    let off = u32::try_from(off).ok()?;
    // Checked on the very value passed to the helper: the verifier needs
    // 1..=N there, and LLVM would otherwise fold this test into earlier ones.
    let len = core::hint::black_box(len);
    if len == 0 || len > N {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "len <= N, a small constant"
    )]
    // SAFETY: `buf` holds at least `len` bytes; the helper checks the packet
    // bounds and fails rather than read beyond them.
    let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, off, buf.as_mut_ptr().cast(), len as u32) };
    (r == 0).then_some(())
}

/// The FNV-1a hash of the Request-URI user part of an INVITE whose payload
/// starts at `off`.
#[inline(always)]
pub fn invite_user_hash(ctx: &XdpContext, off: usize) -> Option<u64> {
    // An INVITE with fewer bytes than `INVITE sips:` has no user part worth
    // looking at.
    let mut head = [0u8; HEAD];
    load(ctx, off, &mut head, HEAD)?;
    if head[..INVITE.len()] != INVITE {
        return None;
    }
    let scheme = &head[INVITE.len()..];
    if lower(scheme[0]) != b's' || lower(scheme[1]) != b'i' || lower(scheme[2]) != b'p' {
        return None;
    }
    let user_off = match (lower(scheme[3]), scheme[4]) {
        (b':', _) => off + INVITE.len() + 4,
        (b's', b':') => off + INVITE.len() + 5,
        _ => return None,
    };

    // SAFETY: reads the context the kernel passed in.
    #[expect(clippy::cast_possible_truncation, reason = "a frame length")]
    let total = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let len = total.checked_sub(user_off)?.min(USER_BUF);
    let mut user = [0u8; USER_BUF];
    load(ctx, user_off, &mut user, len)?;
    let mut hash = fnv::OFFSET_BASIS;
    for (n, &b) in user.iter().enumerate() {
        if n >= len {
            // The packet ends inside the user part.
            return None;
        }
        if apps::ends_user(b) {
            return if n == 0 { None } else { Some(hash) };
        }
        hash = fnv::step(hash, b);
    }
    // Longer than any application id the maps can hold.
    None
}

/// Whether the UDP payload at `off` starts with the ACK method.
#[inline(always)]
pub fn is_ack(ctx: &XdpContext, off: usize) -> bool {
    let mut head = [0u8; ack::METHOD.len()];
    load(ctx, off, &mut head, ack::METHOD.len()).is_some() && ack::is_ack(&head)
}

/// Whether the UDP payload at `scan.off` is an ACK of a stateless answer:
/// its first [`ack::SCAN_LEN`] bytes are copied into `scan` and walked in
/// `bpf_loop`.
#[inline(always)]
pub fn is_ack_of_stateless(ctx: &XdpContext, scan: &mut AckScan) -> bool {
    let off = scan.off as usize;
    // SAFETY: reads the context the kernel passed in.
    #[expect(clippy::cast_possible_truncation, reason = "a frame length")]
    let total = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let Some(len) = total.checked_sub(off) else {
        return false;
    };
    let len = len.min(ack::SCAN_LEN);
    if load(ctx, off, &mut scan.bytes, len).is_none() {
        return false;
    }
    let Some(msg) = scan.bytes.get(..len) else {
        return false;
    };
    let mut walk = AckLoop {
        msg,
        scan: ack::Scan::default(),
        found: false,
    };
    #[expect(clippy::cast_possible_truncation, reason = "len <= SCAN_LEN")]
    // SAFETY: the callback gets `walk` back as its context, alive for the
    // helper's run.
    unsafe {
        bpf_loop(
            len as u32,
            ack_step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        );
    }
    walk.found
}

/// One byte of the ACK walk: 0 to go on, 1 to stop.
unsafe extern "C" fn ack_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `AckLoop` that `is_ack_of_stateless` passed.
    let walk = unsafe { &mut *ctx.cast::<AckLoop<'_>>() };
    #[expect(clippy::cast_possible_truncation, reason = "i < SCAN_LEN")]
    match walk.scan.step(walk.msg, i as usize) {
        ack::Step::Next => 0,
        ack::Step::Found => {
            walk.found = true;
            1
        }
        ack::Step::Done => 1,
    }
}
