//! TCP exhaustion: 10,000 idle connections from one source are refused
//! past the per-source cap, idle and silent ones are closed on time, a
//! locked-out source's connections are closed, and a caller from another
//! address still registers and calls over TCP meanwhile.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::calls::{id, until_edge_has};
use sipauth_tests::metric;
use sipauth_tests::peers::Sipp;
use sipauth_tests::topo::Rig;
use sipauth_tests::wire::{Wire, token};

const REJECT: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup reason="rejected"/></Response>"#;
const FLOOD: usize = 10_000;
const PER_SOURCE: u64 = 32;
const IDLE: Duration = Duration::from_secs(4);
/// Long enough that the flood's first connections are still within it when
/// the last one is made.
const FIRST_MESSAGE: Duration = Duration::from_secs(20);

/// Enough open files for the flood in this process: the soft limit up to
/// the hard one, and the hard one raised to 65,536 only when it is too low
/// (raising it needs CAP_SYS_RESOURCE, which a container's root may lack).
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let needed = FLOOD as u64 + 512;
    let mut l = getrlimit(Resource::Nofile);
    if l.maximum.is_some_and(|m| m < needed) {
        l.maximum = Some(65_536);
    }
    l.current = l.maximum;
    setrlimit(Resource::Nofile, l).expect("raise RLIMIT_NOFILE");
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now >= needed,
        "RLIMIT_NOFILE {now} is too low for {FLOOD} connections"
    );
}

/// Whether the edge closed `s` (EOF or reset), without waiting.
fn is_closed(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn tcp_metric(agent: &Agent<'_>, name: &str, reason: &str) -> u64 {
    metric(
        &agent.metrics(),
        &format!("{name}{{transport=\"tcp\",reason=\"{reason}\"}}"),
    )
}

fn open_now(agent: &Agent<'_>) -> u64 {
    metric(
        &agent.metrics(),
        "sipauth_connections_open{transport=\"tcp\"}",
    )
}

/// An OPTIONS over `w`; its status.
fn options(w: &mut Wire, edge: SocketAddr) -> u16 {
    let local = w.local();
    let msg = format!(
        "OPTIONS sip:{edge} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{t}\r\n\
         From: <sip:probe@{local}>;tag={t}\r\nTo: <sip:{edge}>\r\nCall-ID: {t}@rig\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        t = token()
    );
    w.send(msg.as_bytes());
    w.recv(Duration::from_secs(3))
        .and_then(|(raw, _)| sipauth_sip::parse(&raw).ok()?.status())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_idle_connections_from_one_source_do_not_shut_out_another_caller() {
    let rig = Rig::new(2);
    let opts = Options {
        sip_extra: format!(
            "challenge_algorithms = [\"MD5\", \"SHA-256\"]\n[tcp]\nmax_per_source = {PER_SOURCE}\n\
             idle_timeout_secs = {}\nfirst_message_secs = {}\n",
            IDLE.as_secs(),
            FIRST_MESSAGE.as_secs()
        ),
        // User space alone: with XDP a locked-out source's packets are
        // dropped before they reach a socket, beyond a small budget.
        xdp_mode: "off",
        ..Options::default()
    };
    let agent = Agent::start(&rig, &opts);
    let answer = AnswerServer::start(
        &rig.edge,
        "127.0.0.1:8090".parse().unwrap(),
        REJECT,
        RIG_AUTH_TOKEN,
    );
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let edge1 = SocketAddr::new(c1.edge_v4, 5060);
    let edge2 = SocketAddr::new(c2.edge_v4, 5060);
    raise_nofile();

    // The flood: 10,000 connections from caller 1 that never send a byte.
    let started = Instant::now();
    let (mut flood, reset, failed) = c1.ns.enter(|| {
        let mut ok = Vec::with_capacity(FLOOD);
        let (mut reset, mut failed) = (0, Vec::new());
        for _ in 0..FLOOD {
            match TcpStream::connect_timeout(&edge1, Duration::from_secs(3)) {
                Ok(s) => ok.push(s),
                // Accepted and reset by the edge before connect() returned.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset += 1,
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, reset, failed)
    });
    let took = started.elapsed();
    println!(
        "{FLOOD} connections made in {took:.2?}: {} connected, {reset} reset during connect",
        flood.len()
    );
    assert!(
        failed.is_empty(),
        "connect failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        took < FIRST_MESSAGE.saturating_sub(Duration::from_secs(5)),
        "the flood took {took:?}: the deadline would free slots during it"
    );
    // The edge closed all but the cap at accept, without reading.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tcp_metric(&agent, "sipauth_connections_refused_total", "per_source")
        < (FLOOD as u64 - PER_SOURCE)
    {
        assert!(Instant::now() < deadline, "{}", agent.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let closed = flood.iter().filter(|s| is_closed(s)).count() + reset;
    let open = FLOOD - closed;
    println!("accepted and kept: {open}, closed at accept: {closed}");
    assert_eq!(open as u64, PER_SOURCE);
    assert_eq!(closed as u64, FLOOD as u64 - PER_SOURCE);
    assert_eq!(
        tcp_metric(&agent, "sipauth_connections_refused_total", "per_source"),
        FLOOD as u64 - PER_SOURCE
    );
    assert_eq!(open_now(&agent), PER_SOURCE);
    // The refused ones are gone on the client side too.
    flood.retain(|s| !is_closed(s));

    // Meanwhile caller 2 registers an endpoint and calls over TCP.
    let app = id(
        &agent.create(
            "Application/",
            &json!({"app_name": "tcp", "answer_url": answer.url("/answer"),
                    "hangup_url": answer.url("/hangup"), "sip_auth_type": ""}),
        ),
        "app_id",
    );
    let ep = agent.create(
        "Endpoint/",
        &json!({"username": "deskt", "password": "Desk12345", "alias": "Desk", "app_id": app}),
    );
    let user = id(&ep, "username");
    until_edge_has(&agent, &user);
    let sipp = |scenario: &'static str, vars: Vec<(&'static str, String)>| Sipp {
        ns: &c2.ns,
        scenario,
        local: c2.v4,
        target: edge2,
        tcp: true,
        calls: 1,
        rate: 10,
        service: "",
        auth: None,
        vars,
    };
    let mut reg = sipp("register.xml", vec![("user", user.clone())]);
    reg.service = &app;
    reg.auth = Some((&user, "Desk12345"));
    reg.run().unwrap();
    let mut call = sipp("invite_603.xml", vec![("from_user", user.clone())]);
    call.service = &app;
    call.run().unwrap();
    assert_eq!(
        answer.wait_for(1).len(),
        1,
        "the call reached its answer_url"
    );

    // A connection that brought one message is closed when idle.
    let mut talker = Wire::connect(&c2.ns, edge2);
    assert_eq!(options(&mut talker, edge2), 200);
    let t = Instant::now();
    assert!(talker.recv(IDLE * 3).is_none());
    let idle_took = t.elapsed();
    println!("idle connection closed after {idle_took:.2?}");
    assert!(
        idle_took >= IDLE.saturating_sub(Duration::from_millis(200)) && idle_took < IDLE * 2,
        "{idle_took:?}"
    );
    assert!(tcp_metric(&agent, "sipauth_connections_closed_total", "idle") >= 1);

    // The flood's survivors are closed at the first-message deadline.
    let deadline = started + FIRST_MESSAGE + Duration::from_secs(5);
    while !flood.iter().all(is_closed) {
        assert!(Instant::now() < deadline, "silent connections still open");
        std::thread::sleep(Duration::from_millis(100));
    }
    let silent_took = started.elapsed();
    println!("silent connections closed {silent_took:.2?} after the flood began");
    assert!(silent_took >= FIRST_MESSAGE.saturating_sub(Duration::from_millis(200)));
    assert_eq!(
        tcp_metric(&agent, "sipauth_connections_closed_total", "first_message"),
        PER_SOURCE
    );
    drop(flood);

    // A locked-out source: its open connection is closed, new ones too.
    let mut held = Wire::connect(&c2.ns, edge2);
    assert_eq!(options(&mut held, edge2), 200);
    agent.lock_out(c2.v4, 60);
    let t = Instant::now();
    assert!(held.recv(Duration::from_secs(5)).is_none());
    println!("locked-out connection closed after {:.2?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Reset at accept: seen during connect() or at the first read.
    match c2
        .ns
        .enter(|| TcpStream::connect_timeout(&edge2, Duration::from_secs(2)))
    {
        Ok(again) => {
            std::thread::sleep(Duration::from_millis(200));
            assert!(is_closed(&again));
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(
        tcp_metric(&agent, "sipauth_connections_closed_total", "locked_out"),
        1
    );
    assert_eq!(
        tcp_metric(&agent, "sipauth_connections_refused_total", "locked_out"),
        1
    );
    // Another source is not affected.
    let mut other = Wire::connect(&c1.ns, edge1);
    assert_eq!(options(&mut other, edge1), 200);
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_now(&agent) > 0 {
        assert!(Instant::now() < deadline, "{}", agent.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
}
