//! The network-namespace rig: real namespaces joined by veth pairs, the
//! real `sipauth` binary with XDP attached in the edge namespace, and real
//! peers (sipp, trafgen, sockets opened inside the namespaces).
//!
//! Everything the rig makes is deleted by guards when they drop, also when
//! a test panics; namespaces left by a killed run are swept by the next.
//! Needs root. Tests run with `--test-threads=1`.

#![forbid(unsafe_code)]

pub mod agent;
pub mod answer;
pub mod control;
pub mod http;
pub mod netns;
pub mod peers;
pub mod pg;
pub mod topo;

/// Stops the test with a clear message when not root.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the rig creates network namespaces and loads XDP programs: run as root (cargo xtask test)"
    );
}

/// The value of one sample of a Prometheus text exposition, 0 if absent.
#[must_use]
pub fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or(0)
}
