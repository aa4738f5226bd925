//! Kamailio beside sipauth, in one run: `bench-results/kamailio.json`.
//!
//! The same authenticated call (`bench_auth_603.xml`: INVITE, 407, ACK,
//! INVITE with MD5 digest credentials, 603, ACK), the same rig, pinning
//! (the server on CPU 0, sipp on CPU 1) and rate steps, one system after
//! the other, in rounds ([`rounds`]; each round's order the reverse of
//! the one before):
//!
//! - Kamailio 5.6 (Debian's package) running the project's scripts of
//!   `tests/kamailio/`: `stateless` (challenge and 603 without a
//!   transaction, no replay check) and `stateful` (a transaction per
//!   INVITE, `nonce_count` replay protection);
//! - sipauth with everything a call costs it: the challenge, the replay
//!   check, the signed answer_url fetch, the call record and the signed
//!   hangup_url.
//!
//! A figure is the median over the rounds, and each is also given as a
//! sipauth/Kamailio ratio at the same asked rate: the median of the
//! rounds' own ratios, so that a ratio only ever compares figures taken
//! minutes apart, whatever this machine's mood between rounds. Latency runs from the first INVITE to the 603, from packet
//! timestamps on the caller's interface ([`crate::capture`]); sipp's own
//! response times (whole ms, off a 4 ms clock) stay in the steps' records.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sipauth_tests::topo::Rig;

use crate::inbound::{Step, Subject, setups_with, step};
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

/// How many rounds of the three sweeps a run makes:
/// `SIPAUTH_BENCH_KAMAILIO_ROUNDS`, 3 unless given.
fn rounds() -> usize {
    std::env::var("SIPAUTH_BENCH_KAMAILIO_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// One round: each system's sweep of [`RATES`].
struct Round {
    sipauth: Vec<Step>,
    stateless: Vec<Step>,
    stateful: Vec<Step>,
}

impl Round {
    /// Round `n`. Every other round runs sipauth first and Kamailio
    /// stateless last, the others the other way round, so that the
    /// machine drifting over a round weighs on each system alike.
    fn run(n: usize) -> Self {
        if n.is_multiple_of(2) {
            let stateless = kamailio_steps(Profile::Stateless);
            let stateful = kamailio_steps(Profile::Stateful);
            let sipauth = setups_with(&RATES, false).steps;
            Self {
                sipauth,
                stateless,
                stateful,
            }
        } else {
            let sipauth = setups_with(&RATES, false).steps;
            let stateful = kamailio_steps(Profile::Stateful);
            let stateless = kamailio_steps(Profile::Stateless);
            Self {
                sipauth,
                stateless,
                stateful,
            }
        }
    }

    fn json(&self) -> Value {
        let steps = |s: &[Step]| s.iter().map(Step::json).collect::<Vec<_>>();
        json!({
            "sipauth_steps": steps(&self.sipauth),
            "kamailio_stateless_steps": steps(&self.stateless),
            "kamailio_stateful_steps": steps(&self.stateful),
        })
    }
}

/// The three systems, as named in the JSON's keys.
const SYSTEMS: [&str; 3] = ["sipauth", "kamailio_stateless", "kamailio_stateful"];

fn of<'a>(round: &'a Round, system: &str) -> &'a [Step] {
    match system {
        "sipauth" => &round.sipauth,
        "kamailio_stateless" => &round.stateless,
        _ => &round.stateful,
    }
}

/// The step of `steps` at `rate`, when the system kept up with it: at
/// most 1% failed and 95% of the rate asked completed (as the pictures
/// draw them). Past that a figure measures the backlog, not the call.
fn kept_up(steps: &[Step], rate: u32) -> Option<&Step> {
    steps
        .iter()
        .find(|s| s.rate == rate)
        .filter(|s| s.failure_share() <= FAILURE_LIMIT && s.achieved >= 0.95 * f64::from(rate))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    })
}

/// Per round, `figure` of `system` at `rate` (rounds it did not keep up
/// in left out).
fn by_round(rounds: &[Round], system: &str, rate: u32, figure: fn(&Step) -> f64) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|r| kept_up(of(r, system), rate).map(figure))
        .collect()
}

/// Per round where both kept up, `figure` of sipauth over `figure` of
/// `other`.
fn ratios(rounds: &[Round], other: &str, rate: u32, figure: fn(&Step) -> f64) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|r| {
            let a = figure(kept_up(&r.sipauth, rate)?);
            let b = figure(kept_up(of(r, other), rate)?);
            (b > 0.0).then(|| a / b)
        })
        .collect()
}

/// The most calls per second a system completed in a step that failed
/// at most 1%: past its capacity, a system still completes the calls
/// asked of it, later (sipp waits), so the asked rate says nothing.
fn max_within_limit(steps: &[Step]) -> Option<f64> {
    steps
        .iter()
        .filter(|s| s.failure_share() <= FAILURE_LIMIT)
        .map(|s| s.achieved.round())
        .reduce(f64::max)
}

pub fn run(out: &Path) -> anyhow::Result<()> {
    let n = rounds();
    let rounds: Vec<Round> = (0..n).map(Round::run).collect();
    let cpu: fn(&Step) -> f64 = |s| s.edge_cpu_us_per_call;
    let p99: fn(&Step) -> f64 = |s| s.wire_p99_ms;
    let wakes: fn(&Step) -> f64 = |s| s.edge_wakes_per_call;
    println!(
        "authenticated call setups, one CPU each, {n} rounds: medians of edge CPU per call (us) \
         and p99 setup (ms, from packet timestamps); ratios are sipauth / Kamailio, the median \
         of the rounds' own (lowest-highest)"
    );
    println!(
        "{:>7} {:>11} {:>10} {:>10} {:>16} {:>16} {:>7} {:>7} {:>7}",
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
    let show = |x: Option<f64>, digits: usize| {
        x.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
    };
    let range = |v: &[f64]| match (median(v.to_vec()), v.iter().copied().reduce(f64::min)) {
        (Some(m), Some(lo)) => {
            let hi = v.iter().copied().fold(lo, f64::max);
            format!("{m:.2} ({lo:.2}-{hi:.2})")
        }
        _ => "-".to_owned(),
    };
    let mut rows = Vec::new();
    for rate in RATES {
        let med = |system: &str, figure| median(by_round(&rounds, system, rate, figure));
        if SYSTEMS.iter().all(|s| med(s, cpu).is_none()) {
            continue;
        }
        let cpu_vs_stateless = ratios(&rounds, "kamailio_stateless", rate, cpu);
        let cpu_vs_stateful = ratios(&rounds, "kamailio_stateful", rate, cpu);
        let p99_vs_stateless = ratios(&rounds, "kamailio_stateless", rate, p99);
        let p99_vs_stateful = ratios(&rounds, "kamailio_stateful", rate, p99);
        println!(
            "{rate:>7} {:>11} {:>10} {:>10} {:>16} {:>16} {:>7} {:>7} {:>7}",
            show(med("sipauth", cpu), 0),
            show(med("kamailio_stateless", cpu), 0),
            show(med("kamailio_stateful", cpu), 0),
            range(&cpu_vs_stateless),
            range(&cpu_vs_stateful),
            show(med("sipauth", p99), 2),
            show(med("kamailio_stateless", p99), 2),
            show(med("kamailio_stateful", p99), 2),
        );
        let mut row = serde_json::Map::new();
        row.insert("rate_asked".to_owned(), json!(rate));
        for system in SYSTEMS {
            row.insert(format!("{system}_cpu_us_per_call"), json!(med(system, cpu)));
            row.insert(format!("{system}_p99_ms"), json!(med(system, p99)));
            row.insert(
                format!("{system}_wakes_per_call"),
                json!(med(system, wakes)),
            );
            row.insert(
                format!("{system}_rounds_kept_up"),
                json!(by_round(&rounds, system, rate, cpu).len()),
            );
        }
        for (key, v) in [
            ("cpu_ratio_vs_stateless", cpu_vs_stateless),
            ("cpu_ratio_vs_stateful", cpu_vs_stateful),
            ("p99_ratio_vs_stateless", p99_vs_stateless),
            ("p99_ratio_vs_stateful", p99_vs_stateful),
        ] {
            row.insert(key.to_owned(), json!(median(v.clone())));
            row.insert(format!("{key}_by_round"), json!(v));
        }
        rows.push(Value::Object(row));
    }
    let max: serde_json::Map<String, Value> = SYSTEMS
        .iter()
        .map(|&system| {
            let each: Vec<f64> = rounds
                .iter()
                .filter_map(|r| max_within_limit(of(r, system)))
                .collect();
            (
                system.to_owned(),
                json!({"median": median(each.clone()), "by_round": each}),
            )
        })
        .collect();
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
            "rounds": n,
            "round_order": "each round sweeps the rates with each system in turn: even rounds (from 0) Kamailio stateless, Kamailio stateful, sipauth; odd rounds sipauth, Kamailio stateful, Kamailio stateless",
            "by_rate_figures": "medians over the rounds in which the system kept up with the rate (at most 1% failed, 95% of the rate asked completed); a ratio is the median of the rounds' own ratios, each between figures of the same round, listed in *_by_round",
            "max_achieved_rate_within_1pct_failed": max,
            "by_rate": rows,
            "round_steps": rounds.iter().map(Round::json).collect::<Vec<_>>(),
        }))?,
    )?;
    println!("written to {}", file.display());
    crate::pictures::draw(out, "kamailio")
}
