//! `cargo xtask bench`: figures measured in the netns rig, written to
//! `bench-results/xdp-flood.json` (and printed).
//!
//! A trafgen flood of INVITEs from a locked-out caller, the same flood
//! four ways in one run: dropped by XDP in native mode, by XDP in generic
//! mode, by an `iptables -t raw` rule with XDP off, and with XDP off and no rule (user space answering
//! 403 within its limits). Compare the rows of one run with each other;
//! absolute rates vary with the machine's load.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::agent::{Agent, Options};
use sipauth_tests::metric;
use sipauth_tests::netns::sh;
use sipauth_tests::peers::{flood, invite};
use sipauth_tests::topo::Rig;

const FLOOD: u64 = 2_000_000;
const BUDGET: u32 = 10;

/// User plus system CPU seconds of a process.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

/// Busy CPU seconds of the whole machine (all but idle and iowait), which
/// includes the softirq time where XDP and netfilter run.
fn machine_busy_secs() -> f64 {
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

/// API write to edge-applied latency: 200 changes of an ACL entry through
/// the API of a control plane, each timed until a remote edge's view shows
/// it (polled every 2 ms).
fn propagation(backend: &str) -> serde_json::Value {
    use reqwest::blocking::Client;
    use sipauth_tests::control::{Control, EdgeProc};
    let pg = (backend == "postgres").then(sipauth_tests::pg::Postgres::start);
    let url = pg.as_ref().map(|p| p.database("bench"));
    let control = Control::start(url.as_deref(), "");
    let state = tempfile::tempdir().expect("state dir");
    let edge = EdgeProc::start(&control.base, &control.edge_token, state.path());
    let http = Client::new();
    let a = &control.accounts[0];
    let api = |path: &str, body: serde_json::Value| -> serde_json::Value {
        let r = http
            .post(format!("{}/v1/Account/{}/{path}", control.base, a.auth_id))
            .basic_auth(&a.auth_id, Some(&a.auth_token))
            .json(&body)
            .send()
            .expect("API");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().expect("JSON")
    };
    let acl = api("SipAuth/IpAccessControlList/", json!({"name": "bench"}))["ip_acl_uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let entry = api(
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        json!({"ip": "10.0.0.0", "cidr_prefix": 24}),
    )["entry_uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let mut lat = Vec::new();
    for i in 1..=200u32 {
        let net = format!("10.{}.{}.0", i / 256, i % 256);
        let t = Instant::now();
        api(
            &format!("SipAuth/IpAccessControlList/{acl}/Entry/{entry}/"),
            json!({"ip": net, "cidr_prefix": 24}),
        );
        let want = format!("{net}/24");
        loop {
            let s = edge.snapshot(&http);
            let seen = s["acls"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x["uuid"] == acl.as_str() && x["entries"][0] == want.as_str());
            if seen {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "change {i} never reached the edge"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    // Nearest rank over 200 samples: p50 is the 100th, p99 the 198th.
    let pct = |p: usize| lat[(lat.len() * p).div_ceil(100).saturating_sub(1)];
    let (p50, p99, max) = (pct(50), pct(99), lat[lat.len() - 1]);
    println!(
        "propagation {backend:<9} p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms  (200 changes)"
    );
    json!({ "backend": backend, "changes": lat.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max })
}

fn main() -> anyhow::Result<()> {
    sipauth_tests::require_root();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    std::fs::create_dir_all(&out)?;
    let prop: Vec<serde_json::Value> = ["sqlite", "postgres"]
        .into_iter()
        .map(propagation)
        .collect();
    let file = out.join("propagation.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "benchmark": "API write (ACL entry change) to a remote edge's applied view",
            "results": prop,
        }))?,
    )?;
    println!("written to {}", file.display());

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
    Ok(())
}
