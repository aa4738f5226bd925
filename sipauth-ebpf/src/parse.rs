//! Header walking: Ethernet (one VLAN tag), IPv4/IPv6, UDP/TCP.
//!
//! Every read goes through [`ptr_at`], which checks the bound the verifier
//! wants to see.

use aya_ebpf::programs::XdpContext;
use sipauth_common::addr;

/// A header the packet claims but does not contain.
pub struct Malformed;

pub enum Packet {
    NotIp,
    Ip(Flow),
}

/// What the verdict needs: who sent it, and to which port. Packets that are
/// not UDP/TCP, and fragments after the first, have port 0.
pub struct Flow {
    pub src: addr::Key,
    pub dst_port: u16,
    /// The transport protocol when `dst_port` is set, else 0.
    pub proto: u8,
    /// Offset of the transport header in the frame (meaningful with
    /// `dst_port` set).
    pub l4_off: usize,
}

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const UDP_HLEN: usize = 8;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up (and passing the packet).
const IPV6_MAX_EXT: usize = 4;

/// Pointer to `T` at `offset`, if the packet holds all of it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, Malformed> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Malformed);
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, Malformed> {
    // SAFETY: ptr_at checked the bounds; unaligned read of plain bytes.
    Ok(unsafe { core::ptr::read_unaligned(ptr_at::<T>(ctx, offset)?) })
}

#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Result<u16, Malformed> {
    Ok(u16::from_be_bytes(read::<[u8; 2]>(ctx, offset)?))
}

#[inline(always)]
pub fn packet(ctx: &XdpContext) -> Result<Packet, Malformed> {
    let mut off = ETH_HLEN;
    let mut proto = be16(ctx, 12)?;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = be16(ctx, ETH_HLEN + 2)?;
        off += VLAN_HLEN;
    }
    match proto {
        ETH_P_IP => ipv4(ctx, off).map(Packet::Ip),
        ETH_P_IPV6 => ipv6(ctx, off).map(Packet::Ip),
        _ => Ok(Packet::NotIp),
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, off: usize) -> Result<Flow, Malformed> {
    let vihl: u8 = read(ctx, off)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(Malformed);
    }
    let frag = be16(ctx, off + 6)?;
    let proto: u8 = read(ctx, off + 9)?;
    let src = addr::from_v4(read::<[u8; 4]>(ctx, off + 12)?);
    // Only the first fragment carries the ports.
    if frag & 0x1fff != 0 {
        return Ok(Flow::portless(src));
    }
    transport(ctx, src, proto, off + ihl)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, off: usize) -> Result<Flow, Malformed> {
    let src: [u8; 16] = read(ctx, off + 8)?;
    let mut next: u8 = read(ctx, off + 6)?;
    let mut l4 = off + 40;
    for _ in 0..IPV6_MAX_EXT {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let hdr: [u8; 2] = read(ctx, l4)?;
                next = hdr[0];
                l4 += (usize::from(hdr[1]) + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let hdr: [u8; 4] = read(ctx, l4)?;
                next = hdr[0];
                l4 += 8;
                if u16::from_be_bytes([hdr[2], hdr[3]]) & 0xfff8 != 0 {
                    return Ok(Flow::portless(src));
                }
            }
            _ => break,
        }
    }
    transport(ctx, src, next, l4)
}

impl Flow {
    #[inline(always)]
    fn portless(src: addr::Key) -> Self {
        Self {
            src,
            dst_port: 0,
            proto: 0,
            l4_off: 0,
        }
    }
}

#[inline(always)]
fn transport(ctx: &XdpContext, src: addr::Key, proto: u8, off: usize) -> Result<Flow, Malformed> {
    match proto {
        // The destination port is at the same place in both.
        IPPROTO_UDP | IPPROTO_TCP => Ok(Flow {
            src,
            dst_port: be16(ctx, off + 2)?,
            proto,
            l4_off: off,
        }),
        _ => Ok(Flow::portless(src)),
    }
}
