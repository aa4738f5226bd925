//! The never-lock list: prefixes whose sources are judged like any other
//! but never locked out (carriers, your own networks), as fail2ban's
//! `ignoreip` and Kamailio's pike whitelists do.
//!
//! Matching works on the 16-byte source key the XDP program uses (IPv4
//! mapped into IPv6, see `sipauth_common::addr`), so a prefix means the
//! same sources here as in the kernel's trie: `::/0` covers IPv4 too.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::RwLock;

use ipnet::IpNet;

use crate::maps;

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `lockout.never_lock` in the config: replaced at every start, not
    /// removable at run time.
    Config,
    /// `POST /admin/never-lock`.
    Runtime,
}

impl Origin {
    #[must_use]
    pub fn wire(self) -> sipauth_common::never_lock::Value {
        match self {
            Self::Config => sipauth_common::never_lock::ORIGIN_CONFIG,
            Self::Runtime => sipauth_common::never_lock::ORIGIN_RUNTIME,
        }
    }

    #[must_use]
    pub fn from_wire(v: sipauth_common::never_lock::Value) -> Option<Self> {
        match v {
            sipauth_common::never_lock::ORIGIN_CONFIG => Some(Self::Config),
            sipauth_common::never_lock::ORIGIN_RUNTIME => Some(Self::Runtime),
            _ => None,
        }
    }
}

/// One prefix of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub cidr: IpNet,
    pub origin: Origin,
}

/// The list as user space holds it (with XDP on, a mirror of the pinned
/// trie). Lookups are a scan: the list is short and is asked only when a
/// source fails or turns out to be locked out.
#[derive(Default)]
pub struct NeverLock {
    entries: RwLock<Vec<Entry>>,
}

/// `ip` as a 128-bit number over the shared source key.
fn bits(ip: IpAddr) -> u128 {
    u128::from_be_bytes(maps::key(ip.to_canonical()))
}

/// A prefix's network and its length over the shared source key.
fn net_bits(net: IpNet) -> (u128, u32) {
    let (len, key) = maps::net_key(net);
    (u128::from_be_bytes(key), len)
}

fn mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128))
    }
}

/// Whether `inner` lies wholly inside `outer`.
#[must_use]
pub fn covers(outer: IpNet, inner: IpNet) -> bool {
    let (o, olen) = net_bits(outer);
    let (i, ilen) = net_bits(inner);
    olen <= ilen && (i & mask(olen)) == o
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{text:?} is not an IPv4 or IPv6 CIDR")]
    Syntax { text: String },
    #[error("{net} has host bits set (the prefix is {prefix})")]
    HostBits { net: IpNet, prefix: IpNet },
}

/// A prefix as the list holds it: host bits must be 0, a bare address is
/// a /32 or /128, and an IPv4-mapped IPv6 prefix is its IPv4 prefix.
pub fn parse(text: &str) -> Result<IpNet, CidrError> {
    let text = text.trim();
    let syntax = || CidrError::Syntax {
        text: text.to_owned(),
    };
    let net = if text.contains('/') {
        text.parse::<IpNet>().map_err(|_| syntax())?
    } else {
        IpNet::from(text.parse::<IpAddr>().map_err(|_| syntax())?.to_canonical())
    };
    let net = match net {
        IpNet::V6(n) if n.addr().to_ipv4_mapped().is_some() && n.prefix_len() >= 96 => {
            let v4 = n.addr().to_ipv4_mapped().expect("mapped");
            IpNet::V4(ipnet::Ipv4Net::new(v4, n.prefix_len() - 96).expect("at most 32"))
        }
        n => n,
    };
    if net.trunc() != net {
        return Err(CidrError::HostBits {
            net,
            prefix: net.trunc(),
        });
    }
    Ok(net)
}

// === impl NeverLock ===

impl NeverLock {
    /// The most specific entry covering `ip`.
    #[must_use]
    pub fn find(&self, ip: IpAddr) -> Option<Entry> {
        let ip = bits(ip);
        self.entries
            .read()
            .expect("never-lock list")
            .iter()
            .filter(|e| {
                let (net, len) = net_bits(e.cidr);
                (ip & mask(len)) == net
            })
            .max_by_key(|e| net_bits(e.cidr).1)
            .copied()
    }

    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.find(ip).is_some()
    }

    /// The entry for exactly `cidr`.
    #[must_use]
    pub fn get(&self, cidr: IpNet) -> Option<Entry> {
        self.entries
            .read()
            .expect("never-lock list")
            .iter()
            .find(|e| e.cidr == cidr)
            .copied()
    }

    /// Every entry, IPv4 first, in address order.
    #[must_use]
    pub fn list(&self) -> Vec<Entry> {
        let mut v = self.entries.read().expect("never-lock list").clone();
        v.sort_by_key(|e| (e.cidr.addr().is_ipv6(), e.cidr));
        v
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.read().expect("never-lock list").len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `entry`, replacing an entry of the same prefix.
    pub fn put(&self, entry: Entry) {
        let mut v = self.entries.write().expect("never-lock list");
        v.retain(|e| e.cidr != entry.cidr);
        v.push(entry);
    }

    /// Removes the entry of `cidr`; the removed entry, if any.
    pub fn remove(&self, cidr: IpNet) -> Option<Entry> {
        let mut v = self.entries.write().expect("never-lock list");
        let i = v.iter().position(|e| e.cidr == cidr)?;
        Some(v.swap_remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn finds_the_most_specific_prefix_of_either_family() {
        let l = NeverLock::default();
        for (c, o) in [
            ("203.0.113.0/24", Origin::Config),
            ("203.0.113.128/25", Origin::Runtime),
            ("2001:db8:1::/48", Origin::Runtime),
        ] {
            l.put(Entry {
                cidr: net(c),
                origin: o,
            });
        }
        assert_eq!(
            l.find(ip("203.0.113.5")).unwrap().cidr,
            net("203.0.113.0/24")
        );
        assert_eq!(
            l.find(ip("203.0.113.200")).unwrap().cidr,
            net("203.0.113.128/25")
        );
        assert_eq!(
            l.find(ip("::ffff:203.0.113.5")).unwrap().origin,
            Origin::Config
        );
        assert!(l.contains(ip("2001:db8:1:ffff::1")));
        assert!(!l.contains(ip("2001:db8:2::1")));
        assert!(!l.contains(ip("203.0.114.1")));
        // An IPv4 prefix does not match the IPv6 address that embeds it.
        assert!(!l.contains(ip("::203.0.113.5")));
        assert_eq!(l.len(), 3);
        assert_eq!(
            l.remove(net("203.0.113.128/25")).unwrap().origin,
            Origin::Runtime
        );
        assert_eq!(
            l.find(ip("203.0.113.200")).unwrap().cidr,
            net("203.0.113.0/24")
        );
        // ::/0 covers IPv4 sources as well, as in the kernel's trie.
        l.put(Entry {
            cidr: net("::/0"),
            origin: Origin::Runtime,
        });
        assert!(l.contains(ip("198.51.100.1")));
    }

    #[test]
    fn parse_accepts_cidrs_and_bare_addresses_and_refuses_host_bits() {
        assert_eq!(parse("203.0.113.0/24").unwrap(), net("203.0.113.0/24"));
        assert_eq!(parse(" 203.0.113.9 ").unwrap(), net("203.0.113.9/32"));
        assert_eq!(parse("2001:db8::1").unwrap(), net("2001:db8::1/128"));
        assert_eq!(
            parse("::ffff:203.0.113.0/120").unwrap(),
            net("203.0.113.0/24")
        );
        let e = parse("203.0.113.7/24").unwrap_err();
        assert!(e.to_string().contains("203.0.113.0/24"), "{e}");
        assert!(parse("203.0.113.0/33").is_err());
        assert!(parse("example.com").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn covers_is_containment_over_the_shared_key() {
        assert!(covers(net("203.0.113.0/24"), net("203.0.113.9/32")));
        assert!(!covers(net("203.0.113.9/32"), net("203.0.113.0/24")));
        assert!(covers(net("2001:db8::/32"), net("2001:db8:1:2::/64")));
        assert!(!covers(
            net("2001:db8:1:2::1/128"),
            net("2001:db8:1:2::/64")
        ));
        assert!(covers(net("::/0"), net("192.0.2.1/32")));
        assert!(!covers(net("192.0.2.0/24"), net("2001:db8::/64")));
    }
}
