//! The rig's topology:
//!
//! ```text
//!  caller1 eth0 10.201.1.2 fd00:201:1::2 ---- c1 10.201.1.1 fd00:201:1::1 \
//!                                                                          edge (sipauth, XDP on c1, c2)
//!  caller2 eth0 10.201.2.2 fd00:201:2::2 ---- c2 10.201.2.1 fd00:201:2::1 /
//! ```
//!
//! Neighbours are static, so no ARP or neighbour discovery runs during a
//! test. Addresses only exist inside the rig's namespaces.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::netns::{Netns, ip};

/// One caller and the edge side of its link.
pub struct Link {
    pub ns: Netns,
    /// Interface name in the caller namespace.
    pub dev: &'static str,
    pub mac: String,
    pub v4: IpAddr,
    pub v6: IpAddr,
    /// Interface name in the edge namespace.
    pub edge_dev: String,
    pub edge_mac: String,
    pub edge_v4: IpAddr,
    pub edge_v6: IpAddr,
}

pub struct Rig {
    pub callers: Vec<Link>,
    /// Declared last: dropped after the callers' namespaces.
    pub edge: Netns,
    /// bpffs directory of this rig's pinned maps.
    pub pin_dir: PathBuf,
}

impl Rig {
    /// Builds the edge and `n` callers (at most 9).
    #[must_use]
    pub fn new(n: u8) -> Self {
        crate::require_root();
        crate::sweep_pins();
        let edge = Netns::new("edge");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/sipauth-rig-{}-{}",
            std::process::id(),
            edge.name.rsplit('-').nth(1).unwrap_or("0")
        ));
        let callers = (1..=n).map(|i| link(&edge, i)).collect();
        Self {
            callers,
            edge,
            pin_dir,
        }
    }

    #[must_use]
    pub fn caller(&self, i: usize) -> &Link {
        &self.callers[i]
    }

    /// The edge interfaces, for `xdp.interfaces`.
    #[must_use]
    pub fn edge_devs(&self) -> Vec<String> {
        self.callers.iter().map(|c| c.edge_dev.clone()).collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Unpinning is deleting the files; the maps go with their last user.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["address"].as_str().expect("link address").to_owned()
}

fn link(edge: &Netns, i: u8) -> Link {
    let ns = Netns::new(&format!("caller{i}"));
    // Temporary names in the root namespace must be unique machine-wide.
    let tag = format!("{:x}{i}", std::process::id() % 0xfffff);
    let (a, b) = (format!("sa{tag}a"), format!("sa{tag}b"));
    ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    let edge_dev = format!("c{i}");
    ip(&["link", "set", &a, "netns", &ns.name]);
    ip(&["link", "set", &b, "netns", &edge.name]);
    ns.ip(&["link", "set", &a, "name", "eth0"]);
    edge.ip(&["link", "set", &b, "name", &edge_dev]);

    let v4 = format!("10.201.{i}.2");
    let v6 = format!("fd00:201:{i}::2");
    let edge_v4 = format!("10.201.{i}.1");
    let edge_v6 = format!("fd00:201:{i}::1");
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
    ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
    edge.ip(&["addr", "add", &format!("{edge_v4}/24"), "dev", &edge_dev]);
    edge.ip(&[
        "addr",
        "add",
        &format!("{edge_v6}/64"),
        "dev",
        &edge_dev,
        "nodad",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    edge.ip(&["link", "set", &edge_dev, "up"]);

    let mac = mac_of(&ns, "eth0");
    let edge_mac = mac_of(edge, &edge_dev);
    for (addr, dev, lladdr, side) in [
        (&edge_v4, "eth0", &edge_mac, &ns),
        (&edge_v6, "eth0", &edge_mac, &ns),
        (&v4, edge_dev.as_str(), &mac, edge),
        (&v6, edge_dev.as_str(), &mac, edge),
    ] {
        side.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            lladdr,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
    Link {
        ns,
        dev: "eth0",
        mac,
        v4: v4.parse().expect("v4"),
        v6: v6.parse().expect("v6"),
        edge_dev,
        edge_mac,
        edge_v4: edge_v4.parse().expect("v4"),
        edge_v6: edge_v6.parse().expect("v6"),
    }
}
