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
pub mod caller;
pub mod calls;
pub mod control;
pub mod fleet;
pub mod http;
pub mod netns;
pub mod openapi;
pub mod peers;
pub mod pg;
pub mod pki;
pub mod provider;
pub mod topo;
pub mod ua;
pub mod wire;

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

/// Removes bpffs pin directories (`/sys/fs/bpf/sipauth-<kind>-<pid>-<n>`)
/// of earlier test runs whose process is gone, as the namespace sweep does
/// for namespaces.
pub fn sweep_pins() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| {
            n.strip_prefix("sipauth-testrun-")
                .or_else(|| n.strip_prefix("sipauth-rig-"))
        }) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
