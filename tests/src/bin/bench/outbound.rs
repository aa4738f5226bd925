//! Outbound calls: `bench-results/outbound.json`.
//!
//! Authenticated outbound call setups per second. An API client in this
//! process sends Make Call requests (`POST /v1/Account/{auth_id}/Call/`
//! with `sip_auth_username` / `sip_auth_password`) to `sipauth run` at a
//! fixed rate over keep-alive connections; each call goes to a sipp UAS in
//! caller 1's namespace (`bench_provider_407.xml`): INVITE, 407, ACK,
//! INVITE with Proxy-Authorization, 200, ACK; the edge fetches the
//! answer_url (a local server answering `<Hangup/>`), sends BYE, gets 200,
//! writes the call record and POSTs the hangup_url. The edge (control plane
//! and edge in one process) runs on CPU 0; sipp, the API client and the
//! answer server on CPU 1.
//!
//! Latencies, measured in this process on one clock: setup is the Make Call
//! request sent to the answer_url request received; call is the request
//! sent to the hangup_url callback received (after BYE and its 200); API
//! is the request sent to its 201 received. A call is completed when its
//! hangup_url callback says `CallStatus=completed`; every other attempted
//! call (API error, other status, no callback within the drain time) has
//! failed. The rate is stepped until more than 3% of the calls fail or the
//! client cannot send at the asked rate.
//!
//! `SIPAUTH_BENCH_OUTBOUND_RATES` (comma-separated calls per second) and
//! `SIPAUTH_BENCH_OUTBOUND_SECS` (1 to 10) replace the default steps, for
//! short runs.

use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_ID, RIG_AUTH_TOKEN};
use sipauth_tests::metric;
use sipauth_tests::netns::Netns;
use sipauth_tests::peers::scenario;
use sipauth_tests::topo::{Link, Rig};

use crate::answer::{Observer, QuickAnswer};
use crate::{EDGE_CPU, LOAD_CPU, cpu_secs, percentile, pin_thread, start_pinned, threads};

const HANGUP: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#;
const ANSWER: &str = "127.0.0.1:8090";
const USER: &str = "prov-user";
const PASSWORD: &str = "Prov-Pass-7781";
/// The provider's first port; each step has its own.
const PROVIDER_PORT: u16 = 5090;
/// Calls per second asked, in order, until a step fails.
const RATES: [u32; 6] = [200, 1_000, 2_000, 4_000, 8_000, 10_000];
/// Seconds of offered load per step (at most 10), and at most this many
/// calls.
const STEP_SECS: u32 = 5;
const MAX_CALLS: u32 = 50_000;
/// Requests not sent this long after the step's last due time are not sent.
const SEND_GRACE: Duration = Duration::from_secs(2);
/// How long after the last request the calls may take to end.
const DRAIN: Duration = Duration::from_secs(15);
/// The edge's Timer B (and F): a leg the provider never answers ends
/// within the drain time.
const TIMER_B_MS: u64 = 5_000;
/// sipp aborts a call that waits longer than this for a message.
const RECV_TIMEOUT_MS: u32 = 5_000;
/// API client connections (one thread each).
const CONNECTIONS: usize = 64;
/// API connect, read and write timeouts.
const API_TIMEOUT: Duration = Duration::from_secs(5);
const FAILURE_LIMIT: f64 = 0.03;
/// A CPU busy this share of a step is saturated.
const SATURATED: f64 = 0.95;
/// The targets the figures are compared with: edge CPU per call at
/// [`TARGET_CPU_RATE`], and the rate one core completes.
const TARGET_CPU_US: f64 = 120.0;
const TARGET_CPU_RATE: u32 = 2_000;
const TARGET_RATE: f64 = 8_000.0;

pub fn run(out: &Path) -> anyhow::Result<()> {
    let (rates, secs) = plan()?;
    let bench = setups(&rates, secs);
    pin_thread(std::process::id(), &crate::all_cpus());
    print(&bench, secs);
    let file = out.join("outbound.json");
    std::fs::write(&file, serde_json::to_string_pretty(&bench.json(secs))?)?;
    println!("written to {}", file.display());
    crate::pictures::draw(out, "outbound")
}

/// The rates and the seconds per step: the defaults, or the environment's.
fn plan() -> anyhow::Result<(Vec<u32>, u32)> {
    let rates = match std::env::var("SIPAUTH_BENCH_OUTBOUND_RATES") {
        Ok(v) => v
            .split(',')
            .map(|r| r.trim().parse::<u32>().ok().filter(|r| *r > 0))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| anyhow::anyhow!("SIPAUTH_BENCH_OUTBOUND_RATES: {v:?}"))?,
        Err(_) => RATES.to_vec(),
    };
    let secs = match std::env::var("SIPAUTH_BENCH_OUTBOUND_SECS") {
        Ok(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|s| (1..=10).contains(s))
            .ok_or_else(|| anyhow::anyhow!("SIPAUTH_BENCH_OUTBOUND_SECS: {v:?} (1 to 10)"))?,
        Err(_) => STEP_SECS,
    };
    Ok((rates, secs))
}

fn print(b: &Bench, secs: u32) {
    println!(
        "outbound call setups: edge on CPU {EDGE_CPU} ({} threads, {:.1}% of a CPU when idle), \
         sipp, API client ({CONNECTIONS} keep-alive connections) and answer server on CPU {LOAD_CPU}; \
         {secs} s per step; setup = API request sent -> answer_url request received, \
         call = API request sent -> hangup_url callback received; CPU columns in % of one CPU",
        b.edge_threads,
        b.edge_idle_cpu * 100.0
    );
    println!(
        "{:>7} {:>10} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>13} {:>10} {:>5} {:>5} {:>6} {:>6}  limit",
        "asked/s",
        "achieved/s",
        "attempted",
        "completed",
        "failed",
        "setup50",
        "setup99",
        "call50",
        "call99",
        "edge CPU/call",
        "wakes/call",
        "edge",
        "sipp",
        "client",
        "answer"
    );
    for s in &b.steps {
        println!(
            "{:>7} {:>10.0} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>13} {:>10} {:>4.0}% {:>4.0}% {:>5.0}% {:>5.0}%  {}",
            s.rate,
            s.achieved,
            s.attempted,
            s.completed,
            s.failed,
            ms(s.setup.p50),
            ms(s.setup.p99),
            ms(s.call.p50),
            ms(s.call.p99),
            s.edge_cpu_us_per_call
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.0} us")),
            s.edge_wakes_per_call
                .map_or_else(|| "-".to_owned(), |w| format!("{w:.1}")),
            s.edge_share * 100.0,
            s.sipp_share * 100.0,
            s.client_share * 100.0,
            s.answer_share * 100.0,
            s.limit
        );
    }
    let t = b.targets();
    println!(
        "targets: edge CPU per call at {TARGET_CPU_RATE} calls/s <= {TARGET_CPU_US:.0} us: measured {} ({}); \
         >= {TARGET_RATE:.0} calls/s on one core: highest achieved with <= {:.0}% failures {:.0}/s ({})",
        t.cpu_at_rate
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.0} us")),
        if t.cpu_met { "met" } else { "not met" },
        FAILURE_LIMIT * 100.0,
        t.best_rate,
        if t.rate_met { "met" } else { "not met" },
    );
}

/// Latencies in ms with a tenth of a ms.
fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

// === the rig and the steps ===

struct Bench {
    steps: Vec<Step>,
    edge_threads: usize,
    edge_idle_cpu: f64,
}

struct Targets {
    /// Edge CPU per call in the step at [`TARGET_CPU_RATE`], when it ran
    /// within the failure limit.
    cpu_at_rate: Option<f64>,
    cpu_met: bool,
    best_rate: f64,
    rate_met: bool,
}

impl Bench {
    fn targets(&self) -> Targets {
        let cpu_at_rate = self
            .steps
            .iter()
            .filter(|s| s.rate == TARGET_CPU_RATE && s.failure_share() <= FAILURE_LIMIT)
            .find_map(|s| s.edge_cpu_us_per_call);
        let best_rate = self
            .steps
            .iter()
            .filter(|s| s.failure_share() <= FAILURE_LIMIT)
            .map(|s| s.achieved)
            .fold(0.0, f64::max);
        Targets {
            cpu_at_rate,
            cpu_met: cpu_at_rate.is_some_and(|us| us <= TARGET_CPU_US),
            best_rate,
            rate_met: best_rate >= TARGET_RATE,
        }
    }

    fn json(&self, secs: u32) -> Value {
        let t = self.targets();
        json!({
            "benchmark": "outbound calls: Make Call API requests to a provider that challenges with 407, \
                authenticated call setups per second",
            "call_flow": "per call: POST /v1/Account/{auth_id}/Call/ (from, to=sip:bob@PROVIDER:PORT, \
                answer_url, hangup_url, sip_auth_username, sip_auth_password) -> 201; the edge writes the \
                queued record to its SQLite store, sends INVITE (UDP) -> 407 (MD5, qop=auth) -> ACK -> \
                INVITE with Proxy-Authorization -> 200 (SDP) -> ACK, POSTs the answer_url (signed), which \
                answers <Hangup/>, sends BYE -> 200, writes the call record and POSTs the hangup_url. The \
                provider (sipp 3.6.1 UAS) does not verify the digest answer.",
            "latency": {
                "setup": "Make Call request sent by the client -> answer_url request received by the answer server",
                "call": "Make Call request sent by the client -> hangup_url callback received by the answer server",
                "api": "Make Call request sent -> its 201 response received",
                "clock": "one monotonic clock in the benchmark process; ms"
            },
            "completed": "a hangup_url callback with CallStatus=completed arrived for the call's request_uuid \
                within the drain time; failed = attempted - completed",
            "edge_cpu_per_call": "utime+stime of the sipauth process (/proc/PID/stat, 10 ms ticks; control \
                plane and edge, all threads) from the step's start to its end, divided by the completed calls",
            "cpus": {"edge": EDGE_CPU, "sipp_api_client_and_answer_server": LOAD_CPU},
            "edge_threads": self.edge_threads,
            "edge_idle_cpu_share": self.edge_idle_cpu,
            "api_client_connections": CONNECTIONS,
            "step_seconds": secs,
            "max_calls_per_step": MAX_CALLS,
            "send_grace_seconds": SEND_GRACE.as_secs(),
            "drain_seconds": DRAIN.as_secs(),
            "edge_outbound_timer_b_ms": TIMER_B_MS,
            "sipp_recv_timeout_ms": RECV_TIMEOUT_MS,
            "failure_limit_share": FAILURE_LIMIT,
            "targets": {
                "edge_cpu_us_per_call_max": TARGET_CPU_US,
                "edge_cpu_judged_at_calls_per_sec": TARGET_CPU_RATE,
                "calls_per_sec_min": TARGET_RATE,
                "edge_cpu_us_per_call_at_that_rate": t.cpu_at_rate,
                "edge_cpu_met": t.cpu_met,
                "highest_rate_achieved": t.best_rate,
                "rate_met": t.rate_met,
                "note": "steps with more than failure_limit_share of failed calls are not counted"
            },
            "steps": self.steps.iter().map(Step::json).collect::<Vec<_>>(),
        })
    }
}

fn setups(rates: &[u32], secs: u32) -> Bench {
    let rig = Rig::new(1);
    let mut opts = Options::default();
    opts.sip_extra = format!("{}outbound_timer_b_ms = {TIMER_B_MS}\n", opts.sip_extra);
    let agent = start_pinned(&rig, &opts);
    let seen = Arc::new(Seen::default());
    let observer: Observer = {
        let seen = seen.clone();
        Arc::new(move |req: &[u8]| seen.observe(req))
    };
    let answer = QuickAnswer::observed(
        &rig.edge,
        ANSWER.parse().expect("addr"),
        HANGUP,
        Some(observer),
    );
    let provider = rig.caller(0);
    let mut port = PROVIDER_PORT;
    // Warm up: the API connections, the callback client's connections, the
    // store, sipp's caches.
    let _ = step(&rig, &agent, &answer, &seen, provider, port, 200, 200);
    port += 1;
    std::thread::sleep(Duration::from_secs(1));
    let idle0 = cpu_secs(agent.pid());
    std::thread::sleep(Duration::from_secs(2));
    let edge_idle_cpu = (cpu_secs(agent.pid()) - idle0) / 2.0;
    let edge_threads = threads(agent.pid());
    let mut steps = Vec::new();
    for &rate in rates {
        let calls = rate.saturating_mul(secs).min(MAX_CALLS);
        let s = step(&rig, &agent, &answer, &seen, provider, port, rate, calls);
        port += 1;
        println!(
            "  {rate}/s: {} of {} calls completed ({})",
            s.completed, s.attempted, s.limit
        );
        let stop = s.failure_share() > FAILURE_LIMIT || s.unsent_share() > FAILURE_LIMIT;
        steps.push(s);
        if stop {
            break;
        }
        // Let the edge finish writing records before the next step.
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(answer);
    drop(agent);
    Bench {
        steps,
        edge_threads,
        edge_idle_cpu,
    }
}

/// What the answer server saw of one step's calls, by CallUUID.
#[derive(Default)]
struct Seen {
    inner: Mutex<SeenInner>,
}

#[derive(Default)]
struct SeenInner {
    answers: HashMap<String, Instant>,
    /// When the hangup_url callback arrived, and its CallStatus.
    hangups: HashMap<String, (Instant, String)>,
}

impl Seen {
    fn observe(&self, req: &[u8]) {
        let at = Instant::now();
        let text = String::from_utf8_lossy(req);
        let Some(uuid) = form_value(&text, "CallUUID") else {
            return;
        };
        let answer = text
            .split(' ')
            .nth(1)
            .is_some_and(|p| p.starts_with("/answer"));
        let mut s = self.inner.lock().expect("seen");
        if answer {
            s.answers.entry(uuid.to_owned()).or_insert(at);
        } else {
            let status = form_value(&text, "CallStatus").unwrap_or("").to_owned();
            s.hangups.entry(uuid.to_owned()).or_insert((at, status));
        }
    }

    fn take(&self) -> SeenInner {
        std::mem::take(&mut *self.inner.lock().expect("seen"))
    }

    /// Whether every call of `uuids` has had its hangup_url callback.
    fn all_ended(&self, uuids: &HashMap<String, Instant>) -> bool {
        let s = self.inner.lock().expect("seen");
        s.hangups.len() >= uuids.len() && uuids.keys().all(|u| s.hangups.contains_key(u))
    }
}

/// The value of `name` in the form-encoded body of a callback (CallUUID
/// and CallStatus need no decoding).
fn form_value<'a>(req: &'a str, name: &str) -> Option<&'a str> {
    let body = req.split_once("\r\n\r\n")?.1;
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Percentiles of one latency, in ms; None without samples.
#[derive(Clone, Copy, Default)]
struct Latency {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Self {
        if ms.is_empty() {
            return Self::default();
        }
        ms.sort_by(f64::total_cmp);
        Self {
            p50: Some(percentile(&ms, 50)),
            p99: Some(percentile(&ms, 99)),
            max: ms.last().copied(),
        }
    }

    fn json(self) -> Value {
        json!({"p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max})
    }
}

struct Step {
    rate: u32,
    /// Calls the step asked for.
    calls: u32,
    /// Make Call requests sent.
    attempted: u64,
    /// Requests the client could not send in time.
    unsent: u64,
    created: u64,
    api_errors: u64,
    answered: u64,
    completed: u64,
    failed: u64,
    /// Calls whose hangup_url callback never came.
    unfinished: u64,
    /// Hangup callbacks by CallStatus.
    statuses: HashMap<String, u64>,
    /// Requests sent per second, first to last.
    sent_rate: f64,
    /// Completed calls per second, first request to last completed
    /// callback.
    achieved: f64,
    setup: Latency,
    call: Latency,
    api: Latency,
    /// How late requests left the client after their due time.
    lateness: Latency,
    wall_secs: f64,
    /// Busy share of each CPU during the step, whoever used it, and the
    /// part of it spent in interrupts and softirqs (the network stack).
    busy: Vec<Busy>,
    edge_share: f64,
    sipp_share: f64,
    client_share: f64,
    answer_share: f64,
    edge_cpu_secs: f64,
    edge_cpu_us_per_call: Option<f64>,
    /// The edge's wakeups ([`crate::wakes`]) during the step per call
    /// completed.
    edge_wakes_per_call: Option<f64>,
    sipp: SippStats,
    records_dropped: u64,
    limit: String,
}

impl Step {
    fn failure_share(&self) -> f64 {
        if self.attempted == 0 {
            1.0
        } else {
            self.failed as f64 / self.attempted as f64
        }
    }

    fn unsent_share(&self) -> f64 {
        self.unsent as f64 / f64::from(self.calls.max(1))
    }

    fn json(&self) -> Value {
        json!({
            "rate_asked": self.rate,
            "calls_asked": self.calls,
            "calls_attempted": self.attempted,
            "calls_not_sent_by_client": self.unsent,
            "api_201": self.created,
            "api_errors": self.api_errors,
            "calls_answered": self.answered,
            "calls_completed": self.completed,
            "calls_failed": self.failed,
            "calls_without_hangup_callback": self.unfinished,
            "hangup_call_status": self.statuses,
            "failure_share": self.failure_share(),
            "rate_sent": self.sent_rate,
            "rate_achieved": self.achieved,
            "setup_latency": self.setup.json(),
            "call_latency": self.call.json(),
            "api_latency": self.api.json(),
            "client_send_lateness": self.lateness.json(),
            "step_wall_seconds": self.wall_secs,
            "machine_cpu_busy_share": self.busy.iter().map(|b| b.busy).collect::<Vec<_>>(),
            "machine_cpu_irq_softirq_share": self.busy.iter().map(|b| b.irq).collect::<Vec<_>>(),
            "edge_cpu_share": self.edge_share,
            "sipp_cpu_share": self.sipp_share,
            "api_client_cpu_share": self.client_share,
            "answer_server_cpu_share": self.answer_share,
            "edge_cpu_seconds": self.edge_cpu_secs,
            "edge_cpu_us_per_call": self.edge_cpu_us_per_call,
            "edge_wakes_per_call": self.edge_wakes_per_call,
            "sipp": self.sipp.json(),
            "edge_call_records_dropped": self.records_dropped,
            "limited_by": self.limit,
        })
    }
}

/// One Make Call request as the client saw it.
struct Sent {
    at: Instant,
    /// Lateness after the due time.
    late: Duration,
    /// 0 when no response came.
    status: u16,
    uuid: Option<String>,
    replied: Option<Instant>,
}

#[derive(Default)]
struct ClientOut {
    sent: Vec<Sent>,
    unsent: u64,
    cpu_secs: f64,
}

#[allow(clippy::too_many_arguments)]
fn step(
    rig: &Rig,
    agent: &Agent<'_>,
    answer: &QuickAnswer,
    seen: &Seen,
    provider: &Link,
    port: u16,
    rate: u32,
    calls: u32,
) -> Step {
    let dir = tempfile::tempdir().expect("temp dir");
    let offered = Duration::from_secs_f64(f64::from(calls) / f64::from(rate));
    let sipp_timeout = offered + SEND_GRACE + DRAIN + Duration::from_secs(5);
    let mut sipp = start_provider(provider, dir.path(), port, calls, sipp_timeout);
    let request = make_call_request(
        agent.http,
        &format!("sip:bob@{}:{port}", provider.v4),
        &answer.url("/answer"),
        &answer.url("/hangup"),
    );
    let _ = seen.take();
    let metrics0 = agent.metrics();
    let wakes0 = crate::wakes(agent.pid());
    let (edge0, own0, children0, jiffies0) = (
        cpu_secs(agent.pid()),
        cpu_secs(std::process::id()),
        children_cpu_secs(),
        cpu_jiffies(),
    );
    let start = Instant::now();
    // Connections first, then the first request on the next 50 ms.
    let conns: Vec<Option<TcpStream>> = (0..CONNECTIONS)
        .map(|_| connect(&rig.edge, agent.http).ok())
        .collect();
    let t0 = Instant::now() + Duration::from_millis(50);
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let stop_at = t0 + offered + SEND_GRACE;
    let next = AtomicU32::new(0);
    let outs: Vec<ClientOut> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                let (next, request, edge) = (&next, &request, &rig.edge);
                let http = agent.http;
                s.spawn(move || client(edge, http, conn, request, next, calls, t0, period, stop_at))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let client_cpu: f64 = outs.iter().map(|o| o.cpu_secs).sum();
    let unsent: u64 = outs.iter().map(|o| o.unsent).sum();
    let sent: Vec<Sent> = outs.into_iter().flat_map(|o| o.sent).collect();
    let last_sent = sent.iter().map(|s| s.at).max().unwrap_or(t0);
    let first_sent = sent.iter().map(|s| s.at).min().unwrap_or(t0);
    let uuids: HashMap<String, Instant> = sent
        .iter()
        .filter_map(|s| Some((s.uuid.clone()?, s.at)))
        .collect();
    // Until every created call has ended, or the drain time is over.
    let drain_end = last_sent + DRAIN;
    while Instant::now() < drain_end && !seen.all_ended(&uuids) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The last records are written just before their callbacks.
    std::thread::sleep(Duration::from_millis(300));
    let wall = start.elapsed().as_secs_f64();
    let edge1 = cpu_secs(agent.pid());
    let wakes1 = crate::wakes(agent.pid());
    let own1 = cpu_secs(std::process::id());
    let busy = busy_shares(&jiffies0, &cpu_jiffies());
    let stats = stop_provider(&mut sipp, dir.path());
    // sipp is the only child reaped during the step; it may have ended
    // before the step did.
    let sipp_cpu = children_cpu_secs() - children0;
    let metrics1 = agent.metrics();
    let got = seen.take();

    let created = uuids.len() as u64;
    let attempted = sent.len() as u64;
    let mut statuses: HashMap<String, u64> = HashMap::new();
    let (mut setup, mut call, mut completed, mut last_done) =
        (Vec::new(), Vec::new(), 0, first_sent);
    let mut answered = 0;
    for (uuid, at) in &uuids {
        if let Some(a) = got.answers.get(uuid) {
            answered += 1;
            setup.push(a.duration_since(*at).as_secs_f64() * 1e3);
        }
        if let Some((h, status)) = got.hangups.get(uuid) {
            *statuses.entry(status.clone()).or_default() += 1;
            if status == "completed" {
                completed += 1;
                call.push(h.duration_since(*at).as_secs_f64() * 1e3);
                last_done = last_done.max(*h);
            }
        }
    }
    let ended: u64 = statuses.values().sum();
    let api: Vec<f64> = sent
        .iter()
        .filter_map(|s| Some(s.replied?.duration_since(s.at).as_secs_f64() * 1e3))
        .collect();
    let lateness: Vec<f64> = sent.iter().map(|s| s.late.as_secs_f64() * 1e3).collect();
    let edge_cpu = edge1 - edge0;
    let own = own1 - own0;
    let span = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
    let mut step = Step {
        rate,
        calls,
        attempted,
        unsent,
        created,
        api_errors: sent.iter().filter(|s| s.status != 201).count() as u64,
        answered,
        completed,
        failed: attempted - completed,
        unfinished: created - ended,
        statuses,
        sent_rate: if attempted > 1 {
            (attempted - 1) as f64 / span(first_sent, last_sent).max(1e-9)
        } else {
            0.0
        },
        achieved: if completed > 0 {
            completed as f64 / span(first_sent, last_done).max(1e-9)
        } else {
            0.0
        },
        setup: Latency::of(setup),
        call: Latency::of(call),
        api: Latency::of(api),
        lateness: Latency::of(lateness),
        wall_secs: wall,
        busy,
        edge_share: edge_cpu / wall,
        sipp_share: sipp_cpu / wall,
        client_share: client_cpu / wall,
        answer_share: (own - client_cpu).max(0.0) / wall,
        edge_cpu_secs: edge_cpu,
        edge_cpu_us_per_call: (completed > 0).then(|| edge_cpu * 1e6 / completed as f64),
        edge_wakes_per_call: (completed > 0)
            .then(|| wakes1.saturating_sub(wakes0) as f64 / completed as f64),
        sipp: stats,
        records_dropped: metric(&metrics1, "sipauth_call_records_dropped_total")
            .saturating_sub(metric(&metrics0, "sipauth_call_records_dropped_total")),
        limit: String::new(),
    };
    step.limit = limit(&step);
    step
}

/// What held a step back, as far as the CPU shares tell: the edge process
/// using its whole CPU, or sipp, the client and the answer server using
/// theirs; a CPU also busy with work that is not the benchmark's (other
/// processes on the machine) is named as such.
fn limit(s: &Step) -> String {
    let busy = |cpu: &str| {
        cpu.parse::<usize>()
            .ok()
            .and_then(|i| s.busy.get(i).copied())
            .unwrap_or_default()
    };
    let load = s.sipp_share + s.client_share + s.answer_share;
    let lagged = s.unsent_share() > 0.01 || s.lateness.p99.is_some_and(|ms| ms > 100.0);
    let mut why = Vec::new();
    if s.edge_share >= 0.9 {
        why.push(format!(
            "edge process {:.0}% of CPU {EDGE_CPU}",
            s.edge_share * 100.0
        ));
    }
    if load >= 0.9 {
        why.push(format!(
            "load {:.0}% of CPU {LOAD_CPU} (sipp {:.0}%, client {:.0}%, answer server {:.0}%)",
            load * 100.0,
            s.sipp_share * 100.0,
            s.client_share * 100.0,
            s.answer_share * 100.0
        ));
    }
    for (cpu, ours) in [(EDGE_CPU, s.edge_share), (LOAD_CPU, load)] {
        let b = busy(cpu);
        let others = b.busy - b.irq - ours;
        if b.busy >= SATURATED && others > 0.1 {
            why.push(format!(
                "CPU {cpu} {:.0}% busy: {:.0}% softirq, {:.0}% other tasks (other processes, ksoftirqd)",
                b.busy * 100.0,
                b.irq * 100.0,
                others * 100.0
            ));
        }
    }
    if lagged {
        why.push(format!(
            "API client fell behind ({CONNECTIONS} connections, API p99 {} ms)",
            ms(s.api.p99)
        ));
    }
    if s.records_dropped > 0 {
        // Work the edge skipped: its CPU per call is lower for it.
        why.push(format!(
            "the edge dropped {} call records (its record queue was full)",
            s.records_dropped
        ));
    }
    if why.is_empty() {
        "none".to_owned()
    } else {
        why.join("; ")
    }
}

// === the API client ===

/// The Make Call request, the same for every call.
fn make_call_request(api: SocketAddr, to: &str, answer_url: &str, hangup_url: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body = json!({
        "from": "15550001111",
        "to": to,
        "answer_url": answer_url,
        "hangup_url": hangup_url,
        "sip_auth_username": USER,
        "sip_auth_password": PASSWORD,
    })
    .to_string();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{RIG_AUTH_ID}:{RIG_AUTH_TOKEN}"));
    format!(
        "POST /v1/Account/{RIG_AUTH_ID}/Call/ HTTP/1.1\r\nHost: {api}\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn connect(ns: &Netns, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = ns.enter(|| TcpStream::connect_timeout(&addr, API_TIMEOUT))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(API_TIMEOUT))?;
    s.set_write_timeout(Some(API_TIMEOUT))?;
    Ok(s)
}

/// One connection's share of the requests: takes the next index, waits for
/// its due time (`t0 + i * period`), sends, reads the answer. Requests
/// whose turn comes after `stop_at` are counted, not sent.
#[allow(clippy::too_many_arguments)]
fn client(
    ns: &Netns,
    api: SocketAddr,
    mut conn: Option<TcpStream>,
    request: &[u8],
    next: &AtomicU32,
    calls: u32,
    t0: Instant,
    period: Duration,
    stop_at: Instant,
) -> ClientOut {
    let cpu0 = thread_run_secs();
    let mut out = ClientOut::default();
    let mut buf = Vec::with_capacity(4096);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= calls {
            break;
        }
        let due = t0 + period * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let at = Instant::now();
        if at > stop_at {
            out.unsent += 1;
            continue;
        }
        if conn.is_none() {
            conn = connect(ns, api).ok();
        }
        let mut sent = Sent {
            at,
            late: at.saturating_duration_since(due),
            status: 0,
            uuid: None,
            replied: None,
        };
        if let Some(stream) = conn.as_mut() {
            match stream
                .write_all(request)
                .and_then(|()| read_response(stream, &mut buf))
            {
                Ok(r) => {
                    sent.replied = Some(Instant::now());
                    sent.status = r.status;
                    if r.status == 201 {
                        sent.uuid = json_string(&r.body, "request_uuid");
                    }
                    if r.close {
                        conn = None;
                    }
                }
                Err(_) => conn = None,
            }
        }
        out.sent.push(sent);
    }
    out.cpu_secs = thread_run_secs() - cpu0;
    out
}

struct Response {
    status: u16,
    body: String,
    close: bool,
}

/// Reads one HTTP/1.1 response with a Content-Length body; `buf` keeps
/// whatever follows it.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Response> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..head]).into_owned();
            let mut lines = text.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
            let (mut len, mut close) = (0usize, false);
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let (name, value) = (name.trim(), value.trim());
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
            let end = head + 4 + len;
            if buf.len() >= end {
                let body = String::from_utf8_lossy(&buf[head + 4..end]).into_owned();
                buf.drain(..end);
                return Ok(Response {
                    status,
                    body,
                    close,
                });
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                buf.clear();
                return Err(e);
            }
        }
    }
}

/// A string field of a JSON object body.
fn json_string(body: &str, field: &str) -> Option<String> {
    serde_json::from_str::<Value>(body).ok()?[field]
        .as_str()
        .map(str::to_owned)
}

// === the provider ===

/// A sipp UAS on `port` in the provider's namespace, on the load CPU, for
/// at most `calls` calls and `timeout`; statistics go to `dir`.
fn start_provider(p: &Link, dir: &Path, port: u16, calls: u32, timeout: Duration) -> Child {
    let mut c = Command::new("taskset");
    c.args(["-c", LOAD_CPU, "nsenter"])
        .arg(format!("--net={}", p.ns.path().display()))
        .args(["--", "sipp", "-sf"])
        .arg(scenario("bench_provider_407.xml"))
        .args(["-t", "u1", "-i", &p.v4.to_string(), "-p", &port.to_string()])
        .args(["-m", &calls.to_string()])
        .args(["-timeout", &format!("{}s", timeout.as_secs())])
        .args(["-recv_timeout", &RECV_TIMEOUT_MS.to_string()])
        .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
        .arg(dir.join("stat.csv"))
        .args(["-buff_size", "4194304"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start sipp");
    // sipp listens within a few milliseconds of starting.
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = child.try_wait() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        panic!("sipp provider exited at once ({status}): {err}");
    }
    child
}

/// sipp's own count of the calls.
#[derive(Default)]
struct SippStats {
    exited: bool,
    created: u64,
    succeeded: u64,
    failed: u64,
    retransmissions: u64,
    unexpected: u64,
}

impl SippStats {
    fn json(&self) -> Value {
        json!({
            "exited_by_itself": self.exited,
            "calls": self.created,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retransmissions": self.retransmissions,
            "unexpected_messages": self.unexpected,
        })
    }
}

/// Stops sipp (it exits by itself once it has seen all its calls) and
/// reads its last statistics line.
fn stop_provider(sipp: &mut Child, dir: &Path) -> SippStats {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut exited = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = sipp.try_wait() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !exited {
        let _ = sipp.kill();
        let _ = sipp.wait();
    }
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
    SippStats {
        exited,
        created: field("TotalCallCreated"),
        succeeded: field("SuccessfulCall(C)"),
        failed: field("FailedCall(C)"),
        retransmissions: field("Retransmissions(C)"),
        unexpected: field("FailedUnexpectedMessage(C)"),
    }
}

// === CPUs ===

/// Seconds the calling thread has run, to the nanosecond (schedstat): the
/// client threads run a few microseconds at a time, below the 10 ms ticks
/// of utime and stime.
fn thread_run_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// Busy, interrupt and softirq, and total jiffies of each CPU, from
/// /proc/stat.
fn cpu_jiffies() -> Vec<[u64; 3]> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            // user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            let total: u64 = v.iter().sum();
            [total - at(3) - at(4), at(5) + at(6), total]
        })
        .collect()
}

#[derive(Clone, Copy, Default)]
struct Busy {
    busy: f64,
    irq: f64,
}

/// Busy and interrupt shares of each CPU between two readings.
fn busy_shares(before: &[[u64; 3]], after: &[[u64; 3]]) -> Vec<Busy> {
    before
        .iter()
        .zip(after)
        .map(|([b0, i0, t0], [b1, i1, t1])| {
            let total = (t1 - t0).max(1) as f64;
            Busy {
                busy: (b1 - b0) as f64 / total,
                irq: (i1 - i0) as f64 / total,
            }
        })
        .collect()
}

/// User plus system CPU seconds of this process's children that have been
/// waited for (/proc/self/stat cutime and cstime).
fn children_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(13).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(14).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[cfg(test)]
mod tests {
    use super::form_value;

    #[test]
    fn reads_form_values_of_the_body() {
        let req = "POST /hangup HTTP/1.1\r\nHost: x\r\n\r\nCallUUID=ab-12&CallStatus=completed&To=sip%3Ab";
        assert_eq!(form_value(req, "CallUUID"), Some("ab-12"));
        assert_eq!(form_value(req, "CallStatus"), Some("completed"));
        assert_eq!(form_value(req, "From"), None);
    }
}
