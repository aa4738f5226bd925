//! The fleet: `bench-results/fleet.json`.
//!
//! - Lockout spread: three XDP edges on one LAN sharing a Redis; for each
//!   of 100 sources, nine failures spread over the edges, then the tenth
//!   on the first edge, timed from its send until the other two edges'
//!   kernel maps hold the lockout (their `/admin/lockouts` reads the map
//!   the XDP program drops by), polled back to back (about 1 ms apart).
//! - Edge CPU per authenticated call at one rate, with the edge joined to
//!   a Redis and alone, in the same run, in the order alone, fleet, fleet,
//!   alone (so that what drifts during the run weighs on both alike).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::fleet::{Backend, Fleet};

use crate::percentile;

const SOURCES: u8 = 100;
/// The rate of the CPU comparison (calls per second).
const CPU_RATE: u32 = 2_000;

pub fn run(out: &Path) -> anyhow::Result<()> {
    let spread = lockout_spread();
    let runs: Vec<(bool, crate::inbound::Setups)> = [false, true, true, false]
        .into_iter()
        .map(|fleet| (fleet, crate::inbound::setups_with(&[CPU_RATE], fleet)))
        .collect();
    let per_call =
        |s: &crate::inbound::Setups| s.steps.first().map_or(0.0, |st| st.edge_cpu_us_per_call);
    let of = |fleet: bool| -> Vec<f64> {
        runs.iter()
            .filter(|(f, _)| *f == fleet)
            .map(|(_, s)| per_call(s))
            .collect()
    };
    let (each_alone, each_joined) = (of(false), of(true));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (cpu_alone, cpu_joined) = (mean(&each_alone), mean(&each_joined));
    let first_step = |fleet: bool| {
        runs.iter()
            .find(|(f, _)| *f == fleet)
            .and_then(|(_, s)| s.steps.first().map(crate::inbound::Step::json))
    };
    let ratio = if cpu_alone > 0.0 {
        cpu_joined / cpu_alone
    } else {
        0.0
    };
    println!(
        "fleet lockout spread over {} sources: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (tenth failure to both other edges' kernel maps)",
        spread.len(),
        percentile(&spread, 50),
        percentile(&spread, 99),
        spread.last().copied().unwrap_or(0.0)
    );
    println!(
        "edge CPU per authenticated call at {CPU_RATE}/s (runs alone, fleet, fleet, alone): \
         alone {cpu_alone:.0} us {each_alone:.0?}, in a fleet {cpu_joined:.0} us {each_joined:.0?} ({:+.1}%)",
        (ratio - 1.0) * 100.0
    );
    let file = out.join("fleet.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "benchmark": "fleet: lockout spread across edges, and the edge's CPU with Redis on and off",
            "lockout_spread_ms": {
                "sources": spread.len(),
                "what": "tenth failure (sent to edge 1) to the lockout in the kernel maps of edges 2 and 3; \
                         nine earlier failures spread 3/3/3 over the three edges; Redis single server",
                "p50": percentile(&spread, 50),
                "p99": percentile(&spread, 99),
                "max": spread.last().copied().unwrap_or(0.0),
            },
            "cpu_per_authenticated_call_us": {
                "rate_per_sec": CPU_RATE,
                "order": "alone, fleet, fleet, alone",
                "alone": cpu_alone,
                "in_a_fleet": cpu_joined,
                "alone_runs": each_alone,
                "in_a_fleet_runs": each_joined,
                "ratio": ratio,
                "alone_step": first_step(false),
                "in_a_fleet_step": first_step(true),
            },
        }))?,
    )?;
    println!("written to {}", file.display());
    crate::pictures::draw(out, "fleet")
}

/// Milliseconds from each source's tenth failure to its lockout on the
/// other two edges, sorted.
fn lockout_spread() -> Vec<f64> {
    let fleet = Fleet::start(Backend::Single);
    let app = fleet.acl_app();
    let mut lat = Vec::new();
    for i in 0..SOURCES {
        let src = Ipv4Addr::new(10, 203, 0, 101 + i);
        fleet
            .caller
            .ip(&["addr", "add", &format!("{src}/24"), "dev", "eth0"]);
        for (e, edge) in fleet.edges.iter().enumerate() {
            fleet.fire(src, edge, &app, 3, &format!("b{i}-{e}-"));
        }
        // The nine are handed over (every 200 ms) before the tenth, which
        // goes out at a phase of the hand-over period that differs from
        // source to source (37 ms steps), as failures do.
        std::thread::sleep(Duration::from_millis(400 + (u64::from(i) * 37) % 200));
        let sock = fleet
            .caller
            .enter(|| std::net::UdpSocket::bind((std::net::IpAddr::V4(src), 0)).expect("bind"));
        let edge = &fleet.edges[0];
        let msg = sipauth_tests::peers::invite(
            &app,
            sock.local_addr().expect("local address"),
            edge.sip(),
            &format!("b{i}-tenth"),
        );
        let t = Instant::now();
        sock.send_to(msg.as_bytes(), edge.sip()).expect("send");
        let mut seen = [false; 2];
        while !seen.iter().all(|s| *s) {
            for (k, edge) in fleet.edges[1..].iter().enumerate() {
                if !seen[k] && edge.lists(src) {
                    seen[k] = true;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "source {src} never locked out on every edge"
            );
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    lat
}
