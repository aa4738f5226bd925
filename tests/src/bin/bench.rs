//! `cargo xtask bench`: figures measured in the netns rig, written to
//! `bench-results/` (and printed).
//!
//! `sipauth-bench [PART...]` runs the named parts, all of them without an
//! argument:
//!
//! - `propagation`: API write to a remote edge's applied view;
//! - `xdp-flood`: a flood from a locked-out caller, dropped four ways;
//! - `inbound`: authenticated call setups per second, and legitimate calls
//!   under a flood with XDP on and off;
//! - `outbound`: Make Call API requests answered by a provider that
//!   challenges with 407, in authenticated call setups per second, with
//!   the edge's CPU time per call;
//! - `reflection`: replies per forged INVITE received, in datagrams and
//!   bytes, with XDP off and on;
//! - `fleet`: a lockout's spread from the tenth failure to every edge's
//!   kernel map, and the edge's CPU per authenticated call with and
//!   without Redis;
//! - `kamailio`: authenticated call setups against Kamailio 5.6
//!   (stateless, and stateful with replay protection) and sipauth in one
//!   run, with sipauth/Kamailio ratios.
//!
//! Each part draws its pictures (SVG) beside its JSON; `sipauth-bench
//! pictures` draws them all again from the JSON already there (no rig, no
//! root).

// The crate root is `bench.rs`, not a `main.rs`: its modules live in
// `bench/` by path.
#[path = "bench/answer.rs"]
mod answer;
#[path = "bench/capture.rs"]
mod capture;
#[path = "bench/fleet.rs"]
mod fleet;
#[path = "bench/inbound.rs"]
mod inbound;
#[path = "bench/kamailio.rs"]
mod kamailio;
#[path = "bench/outbound.rs"]
mod outbound;
#[path = "bench/pictures.rs"]
mod pictures;
#[path = "bench/plot.rs"]
mod plot;
#[path = "bench/propagation.rs"]
mod propagation;
#[path = "bench/reflection.rs"]
mod reflection;
#[path = "bench/xdp_flood.rs"]
mod xdp_flood;

use std::path::{Path, PathBuf};

/// A part: runs, writes its file under the given directory, prints.
type Part = fn(&Path) -> anyhow::Result<()>;

const PARTS: [(&str, Part); 7] = [
    ("propagation", propagation::run),
    ("xdp-flood", xdp_flood::run),
    ("inbound", inbound::run),
    ("outbound", outbound::run),
    ("reflection", reflection::run),
    ("fleet", fleet::run),
    ("kamailio", kamailio::run),
];

/// The CPU the edge is pinned to in the rate benchmarks, and the one
/// everything else (sipp, clients, answer servers) runs on.
pub(crate) const EDGE_CPU: &str = "0";
pub(crate) const LOAD_CPU: &str = "1";

/// The share of failed call setups past which a step of the inbound and
/// Kamailio runs is over the system's capacity: the rates stop there, and
/// such a step is neither counted towards a maximum nor drawn.
pub(crate) const FAILURE_LIMIT: f64 = 0.01;

pub(crate) fn all_cpus() -> String {
    let n = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    format!("0-{}", n - 1)
}

/// Starts the agent on [`EDGE_CPU`] alone, as `taskset -c 0 sipauth run`
/// would (its runtime sizes itself for the one CPU it may use), makes sure
/// every thread of it stays there, and moves this process's main thread to
/// [`LOAD_CPU`]: threads and children made from here on (sipp, trafgen,
/// clients, answer servers) inherit it.
pub(crate) fn start_pinned<'r>(
    rig: &'r sipauth_tests::topo::Rig,
    opts: &sipauth_tests::agent::Options,
) -> sipauth_tests::agent::Agent<'r> {
    pin_thread(std::process::id(), EDGE_CPU);
    let agent = sipauth_tests::agent::Agent::start(rig, opts);
    pin_process(agent.pid(), EDGE_CPU);
    pin_thread(std::process::id(), LOAD_CPU);
    agent
}

/// `taskset -pc`: one thread (the main thread when `pid` is a process).
pub(crate) fn pin_thread(pid: u32, cpus: &str) {
    sipauth_tests::netns::sh(std::process::Command::new("taskset").args([
        "-pc",
        cpus,
        &pid.to_string(),
    ]));
}

/// `taskset -apc`: every thread of a process.
pub(crate) fn pin_process(pid: u32, cpus: &str) {
    sipauth_tests::netns::sh(std::process::Command::new("taskset").args([
        "-apc",
        cpus,
        &pid.to_string(),
    ]));
}

/// Threads of a process.
pub(crate) fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// User plus system CPU seconds of a process (all its threads).
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

/// Times the threads of a process gave up their CPU to wait and were
/// woken again (voluntary context switches, all its threads): on a
/// virtual machine each wakeup of an idle CPU costs tens of microseconds.
pub(crate) fn wakes(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| status_number(&t.path().join("status"), "voluntary_ctxt_switches"))
        .sum()
}

/// Resident memory of a process, in MiB (`VmRSS`).
pub(crate) fn rss_mib(pid: u32) -> f64 {
    status_number(Path::new(&format!("/proc/{pid}/status")), "VmRSS")
        .map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// The number of field `name` in a `/proc` status file (`VmRSS:  5120
/// kB` gives 5120).
fn status_number(file: &Path, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(file).ok()?;
    status.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Busy CPU seconds of the whole machine (all but idle and iowait), which
/// includes the softirq time where XDP and netfilter run.
pub(crate) fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    busy / clock_ticks()
}

fn clock_ticks() -> f64 {
    100.0
}

/// Nearest-rank percentile of sorted samples; 0 when there are none.
pub(crate) fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(sorted.len() * p).div_ceil(100).saturating_sub(1)]
}

fn main() -> anyhow::Result<()> {
    let asked: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    if asked == ["pictures"] {
        return pictures::draw_all(&out);
    }
    if let Some(unknown) = asked
        .iter()
        .find(|a| !PARTS.iter().any(|(name, _)| name == a))
    {
        let names: Vec<&str> = PARTS.iter().map(|(name, _)| *name).collect();
        anyhow::bail!(
            "unknown part {unknown:?}; usage: sipauth-bench [{}]... or sipauth-bench pictures",
            names.join("|")
        );
    }
    sipauth_tests::require_root();
    std::fs::create_dir_all(&out)?;
    for (name, run) in PARTS {
        if asked.is_empty() || asked.iter().any(|a| a == name) {
            run(&out)?;
        }
    }
    Ok(())
}
