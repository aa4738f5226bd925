//! Inbound calls: `bench-results/inbound.json`.
//!
//! 1. Authenticated call setups per second. sipp in caller 1 places calls
//!    to a `credential` application (MD5 challenged first): INVITE, 407,
//!    ACK, INVITE with credentials, then the edge fetches the answer_url
//!    (a local server in the edge namespace answering
//!    `<Hangup reason="rejected"/>`) and ends the call with 603; ACK. The
//!    setup latency runs from the first INVITE to the 603. The rate is
//!    stepped until more than 1% of the calls fail. The edge runs on CPU 0,
//!    sipp and the answer server on CPU 1.
//! 2. Legitimate calls under a flood. An `ip_acl` application allowing
//!    caller 1 only; caller 2 floods it with INVITEs (trafgen, each with its
//!    own Call-ID and branch) while caller 1 places calls at 100/s
//!    (INVITE, 603, ACK), with XDP in native mode and with XDP off. trafgen,
//!    sipp and the flood's XDP drops (veth runs XDP on the sender's CPU)
//!    share CPU 1; the answer server runs beside the edge on CPU 0. The
//!    same calls on the same edge just before the flood give the p99 the
//!    flood's is compared with.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sipauth_tests::agent::Options;
use sipauth_tests::metric;
use sipauth_tests::peers::{Sipp, invite};
use sipauth_tests::topo::{Link, Rig};

use crate::answer::QuickAnswer;
use crate::capture::Capture;
use crate::{
    EDGE_CPU, FAILURE_LIMIT, LOAD_CPU, cpu_secs, percentile, pin_thread, start_pinned, threads,
};
use sipauth_tests::calls::{id, until_edge_has};

const REJECT: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup reason="rejected"/></Response>"#;
const ANSWER: &str = "127.0.0.1:8090";
/// Calls per second asked of sipp, in order, until failures pass 1%.
const RATES: [u32; 7] = [200, 500, 1_000, 2_000, 4_000, 8_000, 16_000];
/// Seconds of calls per step, and at most this many calls.
const STEP_SECS: u32 = 5;
const MAX_CALLS: u32 = 40_000;
/// A call that waits longer than this for a message fails.
const RECV_TIMEOUT_MS: u32 = 5_000;
/// Packets of the flood, and the legitimate call rate during it: some
/// eight seconds of flood with XDP, so that several hundred calls make its
/// p99 (a few dozen would make it their slowest).
const FLOOD: u64 = 6_000_000;
const LEGIT_RATE: u32 = 100;
/// A flood that trafgen cannot finish sooner ends here.
const FLOOD_TIME_LIMIT: Duration = Duration::from_mins(1);

/// Both halves, written to one file. `SIPAUTH_BENCH_INBOUND_RATES`
/// (comma-separated calls per second) replaces the steps and leaves the
/// flood half out: a short run, for profiling.
pub fn run(out: &Path) -> anyhow::Result<()> {
    let rates: Vec<u32> = match std::env::var("SIPAUTH_BENCH_INBOUND_RATES") {
        Ok(v) => v
            .split(',')
            .map(|r| r.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("SIPAUTH_BENCH_INBOUND_RATES: {e}"))?,
        Err(_) => RATES.to_vec(),
    };
    let short = rates != RATES;
    let setups = setups(&rates);
    let flood: Vec<Flooded> = if short {
        Vec::new()
    } else {
        ["native", "off"].into_iter().map(under_flood).collect()
    };
    pin_thread(std::process::id(), &crate::all_cpus());

    println!(
        "authenticated call setups: edge on CPU {EDGE_CPU} ({} threads, {:.1}% of a CPU when idle), \
         sipp and answer server on CPU {LOAD_CPU}; latency from packet timestamps; \
         last columns: CPU used during the step, in % of one CPU",
        setups.edge_threads,
        setups.edge_idle_cpu * 100.0
    );
    println!(
        "{:>7} {:>10} {:>6} {:>6} {:>6} {:>6} {:>7} {:>13} {:>10} {:>7} {:>5} {:>5} {:>6}",
        "asked/s",
        "achieved/s",
        "calls",
        "failed",
        "p50 ms",
        "p99 ms",
        "answers",
        "edge CPU/call",
        "wakes/call",
        "RSS MiB",
        "edge",
        "sipp",
        "answer"
    );
    for s in &setups.steps {
        println!(
            "{:>7} {:>10.0} {:>6} {:>6} {:>6.2} {:>6.2} {:>7} {:>10.0} us {:>10.1} {:>7.0} {:>4.0}% {:>4.0}% {:>5.0}%",
            s.rate,
            s.achieved,
            s.calls,
            s.failed,
            s.wire_p50_ms,
            s.wire_p99_ms,
            s.answers,
            s.edge_cpu_us_per_call,
            s.edge_wakes_per_call,
            s.edge_rss_mib.unwrap_or(0.0),
            s.edge_share * 100.0,
            s.sipp_share * 100.0,
            s.answer_share * 100.0
        );
    }
    println!(
        "legitimate calls at {LEGIT_RATE}/s under a flood of {FLOOD} INVITEs from a source outside the ACL"
    );
    println!(
        "{:<7} {:>10} {:>7} {:>9} {:>8} {:>9} {:>9} {:>12} {:>13} {:>10}",
        "XDP",
        "flood pps",
        "calls",
        "succeeded",
        "share",
        "p50 ms",
        "p99 ms",
        "p99 no flood",
        "flood in user",
        "edge CPU s"
    );
    for f in &flood {
        println!(
            "{:<7} {:>10.0} {:>7} {:>9} {:>7.1}% {:>9.2} {:>9.2} {:>12.2} {:>13} {:>10.2}",
            f.xdp,
            f.flood_pps,
            f.calls,
            f.succeeded,
            f.share() * 100.0,
            f.during_wire_ms.0,
            f.during_wire_ms.1,
            f.quiet_wire_ms.1,
            f.invites_in_user_space,
            f.edge_cpu
        );
    }
    let file = out.join(if short {
        "inbound-short.json"
    } else {
        "inbound.json"
    });
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "benchmark": "inbound calls: authenticated setups per second, legitimate calls under a flood",
            "setup_transaction": "UDP, per call: INVITE -> 407 (MD5 challenge), ACK, INVITE with digest \
                credentials -> (100) -> edge POSTs the answer_url, which answers <Hangup reason=\"rejected\"/> \
                -> 603 -> ACK; the edge also writes the call record to its SQLite store and POSTs the \
                hangup_url. Latency: first INVITE sent to 603 received, from packet timestamps on the \
                caller's interface (wire_setup_*; sipp's own whole-ms figures are setup_*).",
            "cpus": {"edge": EDGE_CPU, "sipp_trafgen_and_answer_server": LOAD_CPU},
            "edge_threads": setups.edge_threads,
            "edge_idle_cpu_share": setups.edge_idle_cpu,
            "latency_resolution_ms": {"setup": 1, "wire_setup": 0.000_001},
            "step_seconds": STEP_SECS,
            "max_calls_per_step": MAX_CALLS,
            "recv_timeout_ms": RECV_TIMEOUT_MS,
            "setups": setups.steps.iter().map(Step::json).collect::<Vec<_>>(),
            "under_flood": flood.iter().map(Flooded::json).collect::<Vec<_>>(),
        }))?,
    )?;
    println!("written to {}", file.display());
    if short {
        return Ok(());
    }
    crate::pictures::draw(out, "inbound")
}

/// Busy and total jiffies of each CPU, from /proc/stat.
fn cpu_jiffies() -> Vec<(u64, u64)> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// Busy share of each CPU between two readings.
fn busy_shares(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|((b0, t0), (b1, t1))| (b1 - b0) as f64 / (t1 - t0).max(1) as f64)
        .collect()
}

/// The sipp command of `sipp`, on the load CPU, with statistics and
/// response times written to `dir` and a per-message receive timeout.
fn sipp_command(sipp: &Sipp<'_>, dir: &Path, timeout_secs: u32) -> Command {
    let base = sipp.command();
    let args: Vec<&OsStr> = base.get_args().collect();
    let (target, options) = args.split_last().expect("sipp has a target");
    let mut c = Command::new("taskset");
    c.args(["-c", LOAD_CPU])
        .arg(base.get_program())
        .args(options)
        .args(["-timeout", &format!("{timeout_secs}s")])
        .args(["-recv_timeout", &RECV_TIMEOUT_MS.to_string()])
        .args(["-trace_stat", "-fd", "1", "-stf"])
        .arg(dir.join("stat.csv"))
        .args(["-trace_rtt", "-rtt_freq", "100"])
        .args(["-buff_size", "4194304"])
        .arg(target)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// What one sipp run reports.
struct SippRun {
    created: u64,
    succeeded: u64,
    failed: u64,
    retransmissions: u64,
    /// Response time 1 of each successful call, ms, sorted.
    rtt_ms: Vec<f64>,
    /// From the first call's start to the last call's end, seconds.
    span_secs: f64,
    cpu_secs: f64,
}

impl SippRun {
    fn read(dir: &Path) -> Self {
        let stat = std::fs::read_to_string(dir.join("stat.csv")).unwrap_or_default();
        let mut lines = stat.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
        let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
        let field = |name: &str| -> u64 {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| last.get(i)?.trim().parse().ok())
                .unwrap_or(0)
        };
        // `<scenario>_<pid>_rtt.csv`: date (ms);response time (ms);rtd name.
        let mut ends = Vec::new();
        let mut rtt_ms = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with("_rtt.csv") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                let f: Vec<&str> = line.split(';').collect();
                let (Some(date), Some(rt)) = (
                    f.first().and_then(|v| v.trim().parse::<f64>().ok()),
                    f.get(1).and_then(|v| v.trim().parse::<f64>().ok()),
                ) else {
                    continue;
                };
                ends.push((date, rt));
                rtt_ms.push(rt);
            }
        }
        rtt_ms.sort_by(f64::total_cmp);
        let first = ends
            .iter()
            .map(|(d, r)| d - r)
            .fold(f64::INFINITY, f64::min);
        let last_end = ends
            .iter()
            .map(|(d, _)| *d)
            .fold(f64::NEG_INFINITY, f64::max);
        Self {
            created: field("TotalCallCreated"),
            succeeded: field("SuccessfulCall(C)"),
            failed: field("FailedCall(C)"),
            retransmissions: field("Retransmissions(C)"),
            rtt_ms,
            span_secs: if ends.is_empty() {
                0.0
            } else {
                (last_end - first) / 1000.0
            },
            cpu_secs: 0.0,
        }
    }
}

/// Waits for sipp and returns what it wrote to `dir`, with the CPU seconds
/// it used (sampled every 20 ms until it exits).
fn finish(mut child: Child, dir: &Path) -> SippRun {
    let mut cpu = 0.0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sipp") {
            break status;
        }
        cpu = cpu_secs(child.id());
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut run = SippRun::read(dir);
    run.cpu_secs = cpu;
    if run.created == 0 {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("sipp placed no call ({status}): {err}");
    }
    run
}

pub(crate) struct Step {
    pub(crate) rate: u32,
    calls: u32,
    created: u64,
    succeeded: u64,
    failed: u64,
    /// Calls sipp itself counted as failed (timeouts, unexpected messages).
    sipp_failed: u64,
    retransmissions: u64,
    pub(crate) achieved: f64,
    p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// The same from packet timestamps on the caller's interface
    /// ([`crate::capture`]), of the setups seen whole there.
    wire_p50_ms: f64,
    pub(crate) wire_p99_ms: f64,
    wire_setups: usize,
    /// The parts of the setups measured there ([`crate::capture::Pieces`]).
    wire_pieces: Value,
    capture_dropped: u64,
    answers: u64,
    hangups: u64,
    /// Busy share of each CPU (user, system, softirq) during the step,
    /// whoever used it.
    busy: Vec<f64>,
    /// CPU used during the step by the edge, sipp, and this process (the
    /// answer server), in share of one CPU.
    edge_share: f64,
    sipp_share: f64,
    answer_share: f64,
    pub(crate) edge_cpu_us_per_call: f64,
    /// The edge's wakeups during the step (and the 300 ms after it) per
    /// call.
    pub(crate) edge_wakes_per_call: f64,
    /// The edge's resident memory 300 ms after the step's last call.
    edge_rss_mib: Option<f64>,
}

impl Step {
    pub(crate) fn failure_share(&self) -> f64 {
        self.failed as f64 / f64::from(self.calls)
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "rate_asked": self.rate,
            "rate_achieved": self.achieved,
            "calls": self.calls,
            "calls_placed": self.created,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failure_share": self.failure_share(),
            "failed_in_sipp": self.sipp_failed,
            "retransmissions": self.retransmissions,
            "setup_p50_ms": self.p50_ms,
            "setup_p99_ms": self.p99_ms,
            "wire_setup_p50_ms": self.wire_p50_ms,
            "wire_setup_p99_ms": self.wire_p99_ms,
            "wire_setups_measured": self.wire_setups,
            "wire_setup_parts_ms": self.wire_pieces,
            "capture_dropped_packets": self.capture_dropped,
            "answer_url_requests": self.answers,
            "hangup_url_requests": self.hangups,
            "machine_cpu_busy_share": self.busy,
            "edge_cpu_share": self.edge_share,
            "sipp_cpu_share": self.sipp_share,
            "answer_server_cpu_share": self.answer_share,
            "edge_cpu_us_per_call": self.edge_cpu_us_per_call,
            "edge_wakes_per_call": self.edge_wakes_per_call,
            "edge_rss_mib": self.edge_rss_mib,
        })
    }
}

pub(crate) struct Setups {
    pub(crate) steps: Vec<Step>,
    edge_threads: usize,
    /// The edge's CPU use while idle, in share of a CPU, over 2 s.
    edge_idle_cpu: f64,
}

fn setups(rates: &[u32]) -> Setups {
    setups_with(rates, false)
}

/// Setups at `rates`; with `fleet`, the edge is joined to a Redis of its
/// own (in its namespace), as an edge of a fleet is.
pub(crate) fn setups_with(rates: &[u32], fleet: bool) -> Setups {
    let rig = Rig::new(1);
    let redis = fleet.then(|| {
        sipauth_tests::fleet::Redis::start(&rig.edge, std::net::Ipv4Addr::LOCALHOST, 6391)
    });
    let opts = Options {
        sip_extra: "challenge_algorithms = [\"MD5\", \"SHA-256\"]\n".to_owned(),
        // A step past saturation must not lock the caller out of the next.
        lockout: (1_000_000, 60, 60),
        sections: if fleet {
            "[cluster]\nredis_url = \"redis://127.0.0.1:6391/0\"\n".to_owned()
        } else {
            String::new()
        },
        ..Options::default()
    };
    let agent = start_pinned(&rig, &opts);
    let answer = QuickAnswer::start(&rig.edge, ANSWER.parse().expect("addr"), REJECT);
    let cred = id(
        &agent.create(
            "SipAuth/Credential/",
            &json!({"username": "bench-user", "password": "Secret123"}),
        ),
        "credential_uuid",
    );
    let app = id(
        &agent.create(
            "Application/",
            &json!({
                "app_name": "bench",
                "answer_url": answer.url("/answer"),
                "hangup_url": answer.url("/hangup"),
                "sip_auth_type": "credential",
                "credential_uuid": cred,
            }),
        ),
        "app_id",
    );
    until_edge_has(&agent, &app);
    let c = rig.caller(0);
    let subject = Subject {
        pids: &[agent.pid()],
        answer: Some(&answer),
    };
    // Warm up: the callback client's connections, the store, sipp's caches.
    step(c, &subject, &app, 100, 200);
    std::thread::sleep(Duration::from_secs(1));
    let idle0 = cpu_secs(agent.pid());
    std::thread::sleep(Duration::from_secs(2));
    let edge_idle_cpu = (cpu_secs(agent.pid()) - idle0) / 2.0;
    let edge_threads = threads(agent.pid());
    let mut steps = Vec::new();
    for &rate in rates {
        let calls = (rate * STEP_SECS).min(MAX_CALLS);
        let s = step(c, &subject, &app, rate, calls);
        let over = s.failure_share() > FAILURE_LIMIT;
        steps.push(s);
        if over {
            break;
        }
        // Let the edge finish writing records before the next step.
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(agent);
    drop(redis);
    Setups {
        steps,
        edge_threads,
        edge_idle_cpu,
    }
}

/// The system a step measures: its processes, and its answer_url server
/// when it has one.
pub(crate) struct Subject<'a> {
    pub(crate) pids: &'a [u32],
    pub(crate) answer: Option<&'a QuickAnswer>,
}

impl Subject<'_> {
    fn counts(&self) -> (u64, u64) {
        self.answer.map_or((0, 0), |a| (a.answers(), a.others()))
    }

    /// CPU seconds used so far, all processes and threads.
    fn cpu_secs(&self) -> f64 {
        self.pids.iter().map(|&p| cpu_secs(p)).sum()
    }

    /// Wakeups so far ([`crate::wakes`]), all processes.
    fn wakes(&self) -> u64 {
        self.pids.iter().map(|&p| crate::wakes(p)).sum()
    }

    /// Resident memory, when one process holds it: several processes
    /// sharing memory (Kamailio's) each count the shared pages again.
    fn rss_mib(&self) -> Option<f64> {
        match self.pids {
            [pid] => Some(crate::rss_mib(*pid)),
            _ => None,
        }
    }
}

/// `calls` authenticated calls from caller `c` at `rate` to the system on
/// the edge side of its link (UDP 5060), application `app`.
pub(crate) fn step(c: &Link, subject: &Subject<'_>, app: &str, rate: u32, calls: u32) -> Step {
    let dir = tempfile::tempdir().expect("temp dir");
    let sipp = Sipp {
        ns: &c.ns,
        scenario: "bench_auth_603.xml",
        local: c.v4,
        target: SocketAddr::new(c.edge_v4, 5060),
        tcp: false,
        calls,
        rate,
        service: app,
        auth: Some(("bench-user", "Secret123")),
        vars: Vec::new(),
    };
    // Twice the nominal duration, and the receive timeout on top.
    let timeout = 2 * calls / rate + RECV_TIMEOUT_MS / 1000 + 5;
    let (answers0, hangups0) = subject.counts();
    let wakes0 = subject.wakes();
    let (cpu0, own0, jiffies0) = (
        subject.cpu_secs(),
        cpu_secs(std::process::id()),
        cpu_jiffies(),
    );
    let capture = Capture::start(c);
    let start = Instant::now();
    let child = sipp_command(&sipp, dir.path(), timeout)
        .spawn()
        .expect("start sipp");
    let run = finish(child, dir.path());
    let wall = start.elapsed().as_secs_f64();
    let busy = busy_shares(&jiffies0, &cpu_jiffies());
    let own1 = cpu_secs(std::process::id());
    // Calls end at the 603; the record is written just after.
    std::thread::sleep(Duration::from_millis(300));
    let (answers1, hangups1) = subject.counts();
    let cpu1 = subject.cpu_secs();
    let wakes1 = subject.wakes();
    let rss_mib = subject.rss_mib();
    // Read after the CPU figures: parsing the capture is this process's.
    let wire = capture.finish();
    Step {
        rate,
        calls,
        created: run.created,
        succeeded: run.succeeded,
        // Calls sipp never placed (it ran out of time) count as failed.
        failed: u64::from(calls).saturating_sub(run.succeeded),
        sipp_failed: run.failed,
        retransmissions: run.retransmissions,
        achieved: if run.span_secs > 0.0 {
            run.succeeded as f64 / run.span_secs
        } else {
            0.0
        },
        p50_ms: percentile(&run.rtt_ms, 50),
        p99_ms: percentile(&run.rtt_ms, 99),
        wire_p50_ms: percentile(&wire.setup_ms, 50),
        wire_p99_ms: percentile(&wire.setup_ms, 99),
        wire_setups: wire.setup_ms.len(),
        wire_pieces: wire.pieces.json(),
        capture_dropped: wire.dropped,
        answers: answers1 - answers0,
        hangups: hangups1 - hangups0,
        busy,
        edge_share: (cpu1 - cpu0) / wall,
        sipp_share: run.cpu_secs / wall,
        answer_share: (own1 - own0) / wall,
        edge_cpu_us_per_call: (cpu1 - cpu0) * 1e6 / f64::from(calls.max(1)),
        edge_wakes_per_call: wakes1.saturating_sub(wakes0) as f64 / f64::from(calls.max(1)),
        edge_rss_mib: rss_mib,
    }
}

struct Flooded {
    xdp: &'static str,
    flood_secs: f64,
    /// Packets the flooding caller's interface sent during the flood (the
    /// legitimate caller is another interface): trafgen stops early when
    /// its TX ring finds the link's queue full.
    flood_sent: u64,
    flood_pps: f64,
    calls: u64,
    succeeded: u64,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
    xdp_dropped: u64,
    invites_in_user_space: u64,
    edge_cpu: f64,
    /// Setup p50/p99 (ms) from packet timestamps: the same calls on the
    /// same edge just before the flood, and during it.
    quiet_wire_ms: (f64, f64),
    during_wire_ms: (f64, f64),
}

impl Flooded {
    fn share(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.calls as f64
        }
    }

    fn json(&self) -> Value {
        json!({
            "xdp_mode": self.xdp,
            "flood_packets_asked": FLOOD,
            "flood_packets_sent": self.flood_sent,
            "flood_seconds": self.flood_secs,
            "flood_pps": self.flood_pps,
            "legitimate_rate": LEGIT_RATE,
            "legitimate_calls": self.calls,
            "legitimate_succeeded": self.succeeded,
            "legitimate_failed": self.failed,
            "legitimate_success_share": self.share(),
            "legitimate_p50_ms": self.p50_ms,
            "legitimate_p99_ms": self.p99_ms,
            "legitimate_wire_p50_ms": self.during_wire_ms.0,
            "legitimate_wire_p99_ms": self.during_wire_ms.1,
            "no_flood_wire_p50_ms": self.quiet_wire_ms.0,
            "no_flood_wire_p99_ms": self.quiet_wire_ms.1,
            "wire_p99_ratio_flood_to_none": if self.quiet_wire_ms.1 > 0.0 {
                json!(self.during_wire_ms.1 / self.quiet_wire_ms.1)
            } else {
                Value::Null
            },
            "flood_dropped_by_xdp": self.xdp_dropped,
            "invites_reaching_user_space": self.invites_in_user_space,
            "edge_cpu_seconds": self.edge_cpu,
        })
    }
}

/// Sum of the samples of a metric whose name and labels start with `prefix`.
fn metric_sum(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

fn under_flood(xdp: &'static str) -> Flooded {
    // A rig of its own: pinned lockouts must not carry over between modes.
    let rig = Rig::new(2);
    let agent = start_pinned(
        &rig,
        &Options {
            xdp_mode: xdp,
            ..Options::default()
        },
    );
    // The answer server beside the edge: the flood's XDP drops run on the
    // load CPU (veth runs XDP where the sender sends), which must not
    // also delay the answer_url of the calls measured.
    pin_thread(std::process::id(), EDGE_CPU);
    let answer = QuickAnswer::start(&rig.edge, ANSWER.parse().expect("addr"), REJECT);
    pin_thread(std::process::id(), LOAD_CPU);
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let acl = id(
        &agent.create("SipAuth/IpAccessControlList/", &json!({"name": "bench"})),
        "ip_acl_uuid",
    );
    agent.create(
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        &json!({"ip": c1.v4.to_string(), "cidr_prefix": 32}),
    );
    let app = id(
        &agent.create(
            "Application/",
            &json!({
                "app_name": "bench",
                "answer_url": answer.url("/answer"),
                "hangup_url": answer.url("/hangup"),
                "sip_auth_type": "ip_acl",
                "ip_acl_uuid": acl,
            }),
        ),
        "app_id",
    );
    until_edge_has(&agent, &app);

    // The legitimate caller's calls, `calls` of them at LEGIT_RATE.
    let legit = |calls: u32| Sipp {
        ns: &c1.ns,
        scenario: "bench_invite_603.xml",
        local: c1.v4,
        target: SocketAddr::new(c1.edge_v4, 5060),
        tcp: false,
        calls,
        rate: LEGIT_RATE,
        service: &app,
        auth: None,
        vars: vec![("from_user", "caller".to_owned())],
    };
    // The same calls without a flood first: the p99 the flood is held to.
    let quiet_dir = tempfile::tempdir().expect("temp dir");
    let quiet = legit(LEGIT_RATE * 4);
    let capture = Capture::start(c1);
    let quiet_run = finish(
        sipp_command(&quiet, quiet_dir.path(), 30)
            .spawn()
            .expect("start sipp"),
        quiet_dir.path(),
    );
    let quiet_wire = capture.finish();
    assert_eq!(
        quiet_run.succeeded,
        u64::from(LEGIT_RATE * 4),
        "calls without a flood"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    // At most two minutes of calls; stopped when the flood ends.
    let sipp = legit(LEGIT_RATE * 120);
    let before = agent.metrics();
    let cpu0 = cpu_secs(agent.pid());
    let capture = Capture::start(c1);
    let child = sipp_command(&sipp, dir.path(), 150)
        .spawn()
        .expect("start sipp");
    let (flood_time, flood_sent) = varying_flood(c2, &app, FLOOD);
    let flood_secs = flood_time.as_secs_f64();
    // No new calls; the ones in progress finish or time out.
    if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::USR1);
    }
    let run = finish(child, dir.path());
    let cpu1 = cpu_secs(agent.pid());
    let flooded_wire = capture.finish();
    let after = agent.metrics();
    let delta = |prefix: &str| metric_sum(&after, prefix) - metric_sum(&before, prefix);
    // The flood's drops: not the ACKs of challenges the program drops too.
    let xdp_dropped = delta(r#"sipauth_xdp_packets_total{verdict="drop""#)
        - delta(r#"sipauth_xdp_packets_total{verdict="drop",reason="ack_of_stateless_answer"}"#);
    let invites = metric(&after, r#"sipauth_sip_requests_total{method="INVITE"}"#)
        - metric(&before, r#"sipauth_sip_requests_total{method="INVITE"}"#);
    drop(agent);
    Flooded {
        xdp,
        flood_secs,
        flood_pps: flood_sent as f64 / flood_secs,
        flood_sent,
        calls: run.created,
        succeeded: run.succeeded,
        failed: run.created.saturating_sub(run.succeeded),
        p50_ms: percentile(&run.rtt_ms, 50),
        p99_ms: percentile(&run.rtt_ms, 99),
        xdp_dropped,
        // The legitimate INVITEs (and their retransmissions) are in the
        // count too; they are a few hundred at most.
        invites_in_user_space: invites,
        edge_cpu: cpu1 - cpu0,
        quiet_wire_ms: (
            percentile(&quiet_wire.setup_ms, 50),
            percentile(&quiet_wire.setup_ms, 99),
        ),
        during_wire_ms: (
            percentile(&flooded_wire.setup_ms, 50),
            percentile(&flooded_wire.setup_ms, 99),
        ),
    }
}

/// A trafgen flood of `count` INVITEs from `link` to `app`, each with its
/// own branch, tag and Call-ID (five counters of coprime periods: about six
/// million distinct values per run of trafgen, and each run's own prefix),
/// so that user space sees new transactions, not retransmissions. The UDP
/// checksum is 0 (none, allowed over IPv4), since the payload changes per
/// packet. trafgen gives up when a flush of its TX ring finds the link's
/// queue full; it is started again for what is left, within
/// [`FLOOD_TIME_LIMIT`]. Returns how long the flood took and the packets
/// the interface sent ([`tx_packets`]).
fn varying_flood(link: &Link, app: &str, count: u64) -> (Duration, u64) {
    let sent0 = tx_packets(link);
    let start = Instant::now();
    let mut false_starts = 0;
    for run in 1.. {
        let sent = tx_packets(link) - sent0;
        if sent >= count || start.elapsed() > FLOOD_TIME_LIMIT {
            break;
        }
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), flood_config(link, app, run)).expect("write trafgen config");
        let started = Instant::now();
        let mut child = link
            .ns
            .cmd("trafgen")
            .args(["-o", link.dev, "-i"])
            .arg(file.path())
            .args(["-n", &(count - sent).to_string(), "--cpus", "1", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start trafgen");
        pin_to_load_cpu(&mut child);
        let status = child.wait().expect("wait for trafgen");
        if status.success() {
            continue;
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(
            err.contains("Flushing TX_RING failed"),
            "trafgen failed ({status}): {err}"
        );
        if started.elapsed() < Duration::from_millis(100) {
            false_starts += 1;
            assert!(false_starts < 5, "trafgen could not start a flood: {err}");
        }
        println!(
            "trafgen stopped after {} of {count} packets ({}); again for the rest",
            tx_packets(link) - sent0,
            err.trim()
        );
    }
    (start.elapsed(), tx_packets(link) - sent0)
}

/// trafgen's packet for run `run` of a flood (see [`varying_flood`]).
fn flood_config(link: &Link, app: &str, run: u32) -> String {
    const MARK: &str = "~~~~~";
    let payload = invite(
        app,
        SocketAddr::new(link.v4, 5095),
        SocketAddr::new(link.edge_v4, 5060),
        &format!("r{run}{MARK}"),
    );
    let counters = [26u8, 25, 23, 21, 19]
        .map(|period| format!("dinc(0x61, {:#04x}, 1)", b'a' + period - 1))
        .join(", ");
    let parts: Vec<String> = payload
        .split(MARK)
        .map(|p| {
            p.bytes()
                .map(|b| format!("0x{b:02x}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (link.v4, link.edge_v4) else {
        unreachable!("rig links have IPv4 addresses")
    };
    format!(
        "{{\n  eth(da={}, sa={}),\n  ipv4(sa={src}, da={dst}, ttl=64),\n  udp(sp=5095, dp=5060, csum=0),\n  {}\n}}\n",
        link.edge_mac,
        link.mac,
        parts.join(&format!(", {counters}, "))
    )
}

/// Packets `link`'s caller interface has sent (`/proc/net/dev` read in
/// its namespace: 8 receive counters, then transmit bytes and packets).
fn tx_packets(link: &Link) -> u64 {
    let out = link
        .ns
        .cmd("cat")
        .arg("/proc/net/dev")
        .output()
        .expect("read the interface counters");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (name, counters) = l.split_once(':')?;
            (name.trim() == link.dev).then(|| counters.split_whitespace().nth(9)?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no counters of {} in its namespace", link.dev))
}

/// trafgen pins the worker it forks to a CPU of its own choosing (the
/// first, with one worker): moved to the load CPU as soon as it exists.
fn pin_to_load_cpu(child: &mut Child) {
    let parent = child.id();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let kids = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        let kids: Vec<u32> = kids
            .split_whitespace()
            .filter_map(|k| k.parse().ok())
            .collect();
        if !kids.is_empty() {
            for k in kids {
                let _ = Command::new("taskset")
                    .args(["-apc", LOAD_CPU, &k.to_string()])
                    .stdout(Stdio::null())
                    .status();
            }
            return;
        }
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
