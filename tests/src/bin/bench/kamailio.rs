//! Kamailio beside sipauth, in one run: `bench-results/kamailio.json`.
//!
//! The same authenticated call (`bench_auth_603.xml`: INVITE, 407, ACK,
//! INVITE with MD5 digest credentials, 603, ACK), the same rig, pinning
//! (the server on CPU 0, sipp on CPU 1) and rate steps, one system after
//! the other:
//!
//! - Kamailio 5.6 (Debian's package) running the project's scripts of
//!   `tests/kamailio/`: `stateless` (challenge and 603 without a
//!   transaction, no replay check) and `stateful` (a transaction per
//!   INVITE, `nonce_count` replay protection);
//! - sipauth with everything a call costs it: the challenge, the replay
//!   check, the signed answer_url fetch, the call record and the signed
//!   hangup_url.
//!
//! Each figure is also given as a sipauth/Kamailio ratio at the same
//! asked rate. Latency runs from the first INVITE to the 603, from packet
//! timestamps on the caller's interface ([`crate::capture`]); sipp's own
//! response times (whole ms, off a 4 ms clock) stay in the steps' records.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sipauth_tests::topo::Rig;

use crate::inbound::{Setups, Step, Subject, setups_with, step};
use crate::{EDGE_CPU, FAILURE_LIMIT, LOAD_CPU};

/// Calls per second asked, in order, until failures pass 1%.
const RATES: [u32; 8] = [200, 500, 1_000, 2_000, 4_000, 6_000, 8_000, 12_000];
const STEP_SECS: u32 = 5;
/// The user the benchmark's sipp authenticates as, in the realm both
/// systems challenge with.
const USER: &str = "bench-user";
const PASSWORD: &str = "Secret123";
const REALM: &str = "app.plivo.com";
/// Kamailio's UDP workers. On one CPU more only add context switches.
const CHILDREN: u32 = 2;

/// A Kamailio script of `tests/kamailio/`.
#[derive(Clone, Copy)]
enum Profile {
    Stateless,
    Stateful,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Self::Stateless => "stateless",
            Self::Stateful => "stateful",
        }
    }
}

/// Kamailio in the rig's edge namespace on [`EDGE_CPU`], ended when
/// dropped.
struct Kamailio {
    child: Child,
    dir: tempfile::TempDir,
}

impl Kamailio {
    fn start(rig: &Rig, profile: Profile, listen: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("kamailio")
            .join(format!("{}.cfg", profile.name()));
        let ha1 = sipauth_digest::ha1(sipauth_digest::Algorithm::Md5, USER, REALM, PASSWORD);
        let cfg = std::fs::read_to_string(&script)
            .expect("Kamailio script")
            .replace("__LISTEN__", &listen.to_string())
            .replace("__CHILDREN__", &CHILDREN.to_string())
            .replace("__REALM__", REALM)
            .replace("__USER__", USER)
            .replace("__HA1__", &ha1);
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, cfg).expect("write the Kamailio script");
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log");
        let child = rig
            .edge
            .cmd("taskset")
            .args(["-c", EDGE_CPU, "kamailio", "-DD", "-E", "-m", "512", "-f"])
            .arg(&path)
            .arg("-w")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("kamailio (cargo xtask setup installs it)");
        let k = Self { child, dir };
        k.wait_ready(rig, listen);
        k
    }

    /// Until an OPTIONS gets its 405.
    fn wait_ready(&self, rig: &Rig, listen: SocketAddr) {
        let c = rig.caller(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = format!(
                "OPTIONS sip:{listen} SIP/2.0\r\nVia: SIP/2.0/UDP {}:5999;rport;branch=z9hG4bKready{}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{}>;tag=1\r\nTo: <sip:{listen}>\r\n\
                 Call-ID: ready@bench\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                c.v4,
                sipauth_tests::wire::token(),
                c.v4
            );
            let replies = sipauth_tests::peers::udp_replies(
                &c.ns,
                c.v4,
                listen,
                probe.as_bytes(),
                Duration::from_millis(300),
            );
            if replies.iter().any(|r| r.starts_with("SIP/2.0 405")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Kamailio did not answer in 10 s:\n{}",
                std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
            );
        }
    }

    /// Every process of this Kamailio: the main one and the workers it
    /// forked.
    fn pids(&self) -> Vec<u32> {
        let main = self.child.id();
        let mut pids = vec![main];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
            if after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
                == Some(main)
            {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0))
                .expect("pid"),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rate steps against Kamailio with `profile`.
fn kamailio_steps(profile: Profile) -> Vec<Step> {
    let rig = Rig::new(1);
    let c = rig.caller(0);
    let listen = SocketAddr::new(c.edge_v4, 5060);
    let kamailio = Kamailio::start(&rig, profile, listen);
    crate::pin_thread(std::process::id(), LOAD_CPU);
    let pids = kamailio.pids();
    let subject = Subject {
        pids: &pids,
        answer: None,
    };
    // Warm up, as for sipauth.
    let _ = step(c, &subject, "bench", 100, 200);
    let mut steps = Vec::new();
    for rate in RATES {
        let s = step(c, &subject, "bench", rate, rate * STEP_SECS);
        let over = s.failure_share() > FAILURE_LIMIT;
        steps.push(s);
        if over {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(kamailio);
    crate::pin_thread(std::process::id(), &crate::all_cpus());
    steps
}

/// `a / b`, or null when either is missing or `b` is 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

/// The step of `steps` at `rate`.
fn at(steps: &[Step], rate: u32) -> Option<&Step> {
    steps.iter().find(|s| s.rate == rate)
}

pub fn run(out: &Path) -> anyhow::Result<()> {
    let stateless = kamailio_steps(Profile::Stateless);
    let stateful = kamailio_steps(Profile::Stateful);
    let sipauth: Setups = setups_with(&RATES, false);
    println!(
        "authenticated call setups, one CPU each: edge CPU per call (us) and p99 setup (ms, from \
         packet timestamps); ratios are sipauth / Kamailio"
    );
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "rate/s",
        "sipauth us",
        "kam-sl us",
        "kam-sf us",
        "vs sl",
        "vs sf",
        "p99 sa",
        "p99 sl",
        "p99 sf"
    );
    let mut rows = Vec::new();
    for rate in RATES {
        let (sa, sl, sf) = (
            at(&sipauth.steps, rate),
            at(&stateless, rate),
            at(&stateful, rate),
        );
        if sa.is_none() && sl.is_none() && sf.is_none() {
            continue;
        }
        let cpu_of = |s: Option<&Step>| s.map(|s| s.edge_cpu_us_per_call);
        let p99_of = |s: Option<&Step>| s.map(|s| s.wire_p99_ms);
        let wakes_of = |s: Option<&Step>| s.map(|s| s.edge_wakes_per_call);
        let cpu = |s| cpu_of(s).map_or_else(|| "-".to_owned(), |us| format!("{us:.0}"));
        let p99 = |s| p99_of(s).map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}"));
        let r = |a, b| {
            ratio(cpu_of(a), cpu_of(b))
                .as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
        };
        println!(
            "{rate:>7} {:>12} {:>12} {:>12} {:>9} {:>9} {:>8} {:>8} {:>8}",
            cpu(sa),
            cpu(sl),
            cpu(sf),
            r(sa, sl),
            r(sa, sf),
            p99(sa),
            p99(sl),
            p99(sf)
        );
        rows.push(json!({
            "rate_asked": rate,
            "sipauth_cpu_us_per_call": cpu_of(sa),
            "kamailio_stateless_cpu_us_per_call": cpu_of(sl),
            "kamailio_stateful_cpu_us_per_call": cpu_of(sf),
            "cpu_ratio_vs_stateless": ratio(cpu_of(sa), cpu_of(sl)),
            "cpu_ratio_vs_stateful": ratio(cpu_of(sa), cpu_of(sf)),
            "sipauth_p99_ms": p99_of(sa),
            "kamailio_stateless_p99_ms": p99_of(sl),
            "kamailio_stateful_p99_ms": p99_of(sf),
            "p99_ratio_vs_stateless": ratio(p99_of(sa), p99_of(sl)),
            "p99_ratio_vs_stateful": ratio(p99_of(sa), p99_of(sf)),
            "sipauth_wakes_per_call": wakes_of(sa),
            "kamailio_stateless_wakes_per_call": wakes_of(sl),
            "kamailio_stateful_wakes_per_call": wakes_of(sf),
        }));
    }
    // The most calls per second a system completed in a step that failed
    // at most 1%: past its capacity, a system still completes the calls
    // asked of it, later (sipp waits), so the asked rate says nothing.
    let max = |steps: &[Step]| {
        steps
            .iter()
            .filter(|s| s.failure_share() <= FAILURE_LIMIT)
            .map(|s| s.achieved.round())
            .reduce(f64::max)
    };
    let file = out.join("kamailio.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "benchmark": "sipauth beside Kamailio 5.6: authenticated inbound call setups, same rig, same sipp scenario, same pinning, one run",
            "call": "UDP: INVITE -> 407 (MD5, qop=auth), ACK, INVITE with credentials -> 603, ACK",
            "sipauth_does": "challenge, nonce-count replay check, signed answer_url fetch (its <Hangup reason=\"rejected\"/> gives the 603), call record, signed hangup_url",
            "kamailio_stateless_does": "challenge and 603 from the script, sl replies, no transaction, no replay check (tests/kamailio/stateless.cfg)",
            "kamailio_stateful_does": "a tm transaction per INVITE, challenge, nonce_count replay check, 603 by t_reply (tests/kamailio/stateful.cfg)",
            "kamailio_children": CHILDREN,
            "cpus": {"server": EDGE_CPU, "sipp": LOAD_CPU},
            "latency": "first INVITE leaving the caller to the 603 reaching it, kernel timestamps of a capture on the caller's interface (tcpdump, ns); p99 in ms",
            "step_seconds": STEP_SECS,
            "max_achieved_rate_within_1pct_failed": {
                "sipauth": max(&sipauth.steps),
                "kamailio_stateless": max(&stateless),
                "kamailio_stateful": max(&stateful),
            },
            "by_rate": rows,
            "sipauth_steps": sipauth.steps.iter().map(Step::json).collect::<Vec<_>>(),
            "kamailio_stateless_steps": stateless.iter().map(Step::json).collect::<Vec<_>>(),
            "kamailio_stateful_steps": stateful.iter().map(Step::json).collect::<Vec<_>>(),
        }))?,
    )?;
    println!("written to {}", file.display());
    crate::pictures::draw(out, "kamailio")
}
