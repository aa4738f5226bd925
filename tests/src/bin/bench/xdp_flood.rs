//! A trafgen flood of INVITEs from a locked-out caller, the same flood
//! four ways in one run: dropped by XDP in native mode, by XDP in generic
//! mode, by an `iptables -t raw` rule with XDP off, and with XDP off and no
//! rule (user space answering 403 within its limits). Written to
//! `bench-results/xdp-flood.json`. Compare the rows of one run with each
//! other; absolute rates vary with the machine's load.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::agent::{Agent, Options};
use sipauth_tests::metric;
use sipauth_tests::netns::sh;
use sipauth_tests::peers::{flood, invite};
use sipauth_tests::topo::Rig;

use crate::{cpu_secs, machine_busy_secs};

const FLOOD: u64 = 2_000_000;
const BUDGET: u32 = 10;

struct Row {
    mode: &'static str,
    sent: u64,
    secs: f64,
    dropped: u64,
    reached_user_space: u64,
    edge_cpu: f64,
    machine_busy: f64,
}

fn iptables_drops(rig: &Rig) -> u64 {
    let out =
        sh(rig
            .edge
            .cmd("iptables")
            .args(["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("DROP"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn measure(rig: &Rig, mode: &'static str) -> Row {
    let c = rig.caller(0);
    let opts = Options {
        xdp_mode: match mode {
            "xdp" => "native",
            "xdp-generic" => "generic",
            _ => "off",
        },
        budget_per_sec: BUDGET,
        ..Options::default()
    };
    let agent = Agent::start(rig, &opts);
    agent.lock_out(c.v4, 3600);
    let rule = [
        "PREROUTING",
        "-s",
        &c.v4.to_string(),
        "-p",
        "udp",
        "--dport",
        "5060",
        "-j",
        "DROP",
    ];
    if mode == "iptables" {
        sh(rig
            .edge
            .cmd("iptables")
            .args(["-t", "raw", "-A"])
            .args(rule));
    }
    let payload = invite(
        "bench",
        SocketAddr::new(c.v4, 5090),
        SocketAddr::new(c.edge_v4, 5060),
        "bench",
    );
    let before = agent.metrics();
    let (cpu0, busy0) = (cpu_secs(agent.pid()), machine_busy_secs());
    let start = Instant::now();
    flood(c, 5090, 5060, payload.as_bytes(), FLOOD);
    let secs = start.elapsed().as_secs_f64();
    // Let user space drain its socket queue before reading its counters.
    std::thread::sleep(Duration::from_millis(500));
    let (cpu1, busy1) = (cpu_secs(agent.pid()), machine_busy_secs());
    let after = agent.metrics();
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    let reached = delta(r#"sipauth_sip_requests_total{method="INVITE"}"#);
    let dropped = match mode {
        "xdp" | "xdp-generic" => {
            delta(r#"sipauth_xdp_packets_total{verdict="drop",reason="locked_out"}"#)
        }
        "iptables" => iptables_drops(rig),
        _ => FLOOD.saturating_sub(reached),
    };
    if mode == "iptables" {
        sh(rig
            .edge
            .cmd("iptables")
            .args(["-t", "raw", "-D"])
            .args(rule));
    }
    drop(agent);
    Row {
        mode,
        sent: FLOOD,
        secs,
        dropped,
        reached_user_space: reached,
        edge_cpu: cpu1 - cpu0,
        machine_busy: busy1 - busy0,
    }
}

/// The four rows, in one rig.
pub fn run(out: &Path) -> anyhow::Result<()> {
    let rig = Rig::new(1);
    let rows: Vec<Row> = ["xdp", "xdp-generic", "iptables", "user-space"]
        .into_iter()
        .map(|m| measure(&rig, m))
        .collect();
    println!(
        "{:<11} {:>10} {:>8} {:>13} {:>14} {:>12} {:>14}",
        "mode", "sent", "secs", "dropped/s", "user space/s", "edge CPU s", "machine busy s"
    );
    let mut results = Vec::new();
    for r in &rows {
        println!(
            "{:<11} {:>10} {:>8.2} {:>13.0} {:>14.1} {:>12.2} {:>14.2}",
            r.mode,
            r.sent,
            r.secs,
            r.dropped as f64 / r.secs,
            r.reached_user_space as f64 / r.secs,
            r.edge_cpu,
            r.machine_busy
        );
        results.push(json!({
            "mode": r.mode,
            "packets_sent": r.sent,
            "seconds": r.secs,
            "sent_pps": r.sent as f64 / r.secs,
            "dropped": r.dropped,
            "dropped_pps": r.dropped as f64 / r.secs,
            "reached_user_space": r.reached_user_space,
            "reached_user_space_pps": r.reached_user_space as f64 / r.secs,
            "edge_cpu_seconds": r.edge_cpu,
            "machine_busy_cpu_seconds": r.machine_busy,
        }));
    }
    let file = out.join("xdp-flood.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "benchmark": "INVITE flood from a locked-out source, one trafgen process",
            "budget_per_sec": BUDGET,
            "results": results,
        }))?,
    )?;
    println!("written to {}", file.display());
    crate::pictures::draw(out, "xdp-flood")
}
