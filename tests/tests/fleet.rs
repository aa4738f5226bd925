//! A fleet of three edges acts as one: failures counted across edges lock a
//! source out on every edge's XDP program, operator lockouts and lifts
//! reach every edge, a REGISTER through one edge admits calls through
//! another, an Authorization accepted at one edge is no good at another,
//! and the fleet rides out Redis going away and an edge restarting.
//! Each on a single Redis and (the lockout test) on a Redis Cluster.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::fleet::{Backend, CALLER, Edge, Fleet};
use sipauth_tests::metric;
use sipauth_tests::peers::{invite, status, udp_replies};

const LOCKED_DROP: &str = r#"sipauth_xdp_packets_total{verdict="drop",reason="locked_out"}"#;

fn id(v: &serde_json::Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        .to_owned()
}

/// Waits until `pred` holds for every edge; returns the time it took.
fn until_all(fleet: &Fleet, what: &str, limit: Duration, pred: impl Fn(&Edge) -> bool) -> Duration {
    let t = Instant::now();
    while !fleet.edges.iter().all(&pred) {
        assert!(
            t.elapsed() < limit,
            "{what}: not on every edge within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

fn from(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(CALLER), port)
}

fn spread_failures_lock_out_everywhere(backend: Backend) {
    let fleet = Fleet::start(backend);
    let app = fleet.acl_app();
    // 4 + 3 + 2: nine failures, on no edge more than four.
    for (e, n) in [(0, 4), (1, 3), (2, 2)] {
        fleet.fire(CALLER, &fleet.edges[e], &app, n, &format!("s{e}-"));
    }
    std::thread::sleep(Duration::from_millis(800));
    for e in &fleet.edges {
        assert!(!e.lists(CALLER), "nine failures lock nobody out");
    }
    // The tenth, on the third edge: locked out on all three within 1 s.
    fleet.fire(CALLER, &fleet.edges[2], &app, 1, "tenth");
    let took = until_all(&fleet, "lockout", Duration::from_secs(1), |e| {
        e.lists(CALLER)
    });
    eprintln!("{backend:?}: locked out on every edge {took:?} after the tenth failure");
    // Each edge's XDP program drops the source.
    for (i, e) in fleet.edges.iter().enumerate() {
        let before = metric(&e.metrics(), LOCKED_DROP);
        fleet.fire(CALLER, e, &app, 5, &format!("locked{i}-"));
        let dropped = metric(&e.metrics(), LOCKED_DROP) - before;
        assert_eq!(dropped, 5, "edge {} dropped {dropped} of 5 in XDP", i + 1);
    }
    // Lifted through one edge: lifted on every edge.
    let (s, body) = fleet.edges[1].admin("DELETE", &format!("/admin/lockouts/{CALLER}"), None);
    assert_eq!(s, 204, "{body}");
    until_all(&fleet, "lift", Duration::from_secs(1), |e| !e.lists(CALLER));
}

#[test]
fn failures_spread_over_edges_lock_the_source_out_in_every_kernel() {
    spread_failures_lock_out_everywhere(Backend::Single);
}

#[test]
fn failures_spread_over_edges_lock_the_source_out_on_a_redis_cluster() {
    spread_failures_lock_out_everywhere(Backend::Cluster);
}

#[test]
fn lockouts_survive_redis_going_away_and_an_edge_restarting() {
    let mut fleet = Fleet::start(Backend::Single);
    let cred = id(
        &fleet.create(
            "SipAuth/Credential/",
            &json!({"username": "apart-user", "password": "Secret123"}),
        ),
        "credential_uuid",
    );
    let app = id(
        &fleet.create(
            "Application/",
            &json!({"app_name": "apart", "answer_url": "http://192.0.2.1/answer",
                    "sip_auth_type": "credential", "credential_uuid": cred}),
        ),
        "app_id",
    );
    fleet.until_known(&app);
    let body = format!("{{\"address\":\"{CALLER}\",\"duration_secs\":300}}");
    fleet.stop_redis();
    std::thread::sleep(Duration::from_millis(500));
    // Calls are served meanwhile: a credential application's caller gets
    // its challenge from every edge.
    for e in &fleet.edges {
        let replies = udp_replies(
            &fleet.caller,
            IpAddr::V4(CALLER),
            e.sip(),
            invite(&app, from(5072), e.sip(), &format!("apart{}", e.addr)).as_bytes(),
            Duration::from_secs(2),
        );
        assert_eq!(replies.first().map(|r| status(r)), Some(407), "{replies:?}");
    }
    // Apart: the operator's lockout holds where it was made, at once.
    let t = Instant::now();
    let (s, out) = fleet.edges[0].admin("POST", "/admin/lockouts", Some(&body));
    assert_eq!(s, 201, "{out}");
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(fleet.edges[0].lists(CALLER));
    assert!(!fleet.edges[1].lists(CALLER));
    for e in &fleet.edges {
        assert!(e.metrics().contains("sipauth_cluster_up 0\n"));
    }
    // Back: it reaches the others.
    fleet.restart_redis();
    until_all(&fleet, "catch-up", Duration::from_secs(5), |e| {
        e.lists(CALLER)
    });
    for e in &fleet.edges {
        assert!(e.metrics().contains("sipauth_cluster_up 1\n"));
    }
    // A restarted edge still enforces it (its pinned map), and follows a
    // lift made elsewhere while it was down.
    fleet.stop_edge(2);
    let (s, out) = fleet.edges[0].admin("DELETE", &format!("/admin/lockouts/{CALLER}"), None);
    assert_eq!(s, 204, "{out}");
    fleet.start_edge(2);
    until_all(&fleet, "lift after restart", Duration::from_secs(5), |e| {
        !e.lists(CALLER)
    });
    let log: String = fleet.edges.iter().map(Edge::log).collect();
    assert!(!log.contains("fleet-edge-token") && !log.contains("fleet-admin-token"));
}

/// A REGISTER (digest, two rounds) from the caller through `edge`;
/// returns the final status and the Authorization it sent.
fn register(
    edge: &Edge,
    fleet: &Fleet,
    user: &str,
    password: &str,
    expires: u32,
    tag: &str,
) -> (u16, String) {
    let msg = |cseq: u32, auth: Option<&str>| {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:fleet.test SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER}:5070;branch=z9hG4bK{tag}{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@fleet.test>;tag=r{tag}\r\nTo: <sip:{user}@fleet.test>\r\n\
             Call-ID: reg-{tag}@fleet\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{CALLER}:5070>\r\n\
             Expires: {expires}\r\nUser-Agent: fleet-phone/1.0\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let first = udp_replies(
        &fleet.caller,
        IpAddr::V4(CALLER),
        edge.sip(),
        msg(1, None).as_bytes(),
        Duration::from_secs(2),
    );
    assert_eq!(first.last().map(|r| status(r)), Some(401), "{first:?}");
    let challenge = first[0]
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .expect("challenge");
    let ch = sipauth_sip::parse_challenge(challenge).expect("parse challenge");
    let auth = sipauth_digest::authorization(&ch, user, password, "REGISTER", "sip:fleet.test", 1)
        .expect("authorization");
    (
        send_register(fleet, edge, &msg(2, Some(&auth))),
        msg(3, Some(&auth)),
    )
}

fn send_register(fleet: &Fleet, edge: &Edge, msg: &str) -> u16 {
    let replies = udp_replies(
        &fleet.caller,
        IpAddr::V4(CALLER),
        edge.sip(),
        msg.as_bytes(),
        Duration::from_secs(2),
    );
    replies.last().map_or(0, |r| status(r))
}

/// The first reply to an INVITE from `user` through `edge`.
fn call(fleet: &Fleet, edge: &Edge, app: &str, user: &str, tag: &str) -> u16 {
    let msg =
        invite(app, from(5071), edge.sip(), tag).replace("<sip:caller@", &format!("<sip:{user}@"));
    let replies = udp_replies(
        &fleet.caller,
        IpAddr::V4(CALLER),
        edge.sip(),
        msg.as_bytes(),
        Duration::from_millis(600),
    );
    replies.first().map_or(0, |r| status(r))
}

#[test]
fn a_registration_through_one_edge_admits_calls_through_another() {
    registration_through_one_edge_admits_calls_through_another(Backend::Single);
}

#[test]
fn a_registration_through_one_edge_admits_calls_through_another_on_a_redis_cluster() {
    registration_through_one_edge_admits_calls_through_another(Backend::Cluster);
}

fn registration_through_one_edge_admits_calls_through_another(backend: Backend) {
    let fleet = Fleet::start(backend);
    let app = id(
        &fleet.create(
            "Application/",
            &json!({"app_name": "desk", "answer_url": "http://192.0.2.1/answer"}),
        ),
        "app_id",
    );
    let ep = fleet.create(
        "Endpoint/",
        &json!({"username": "desk", "password": "Desk12345", "alias": "Desk", "app_id": app}),
    );
    let user = id(&ep, "username");
    let endpoint = format!("Endpoint/{}/", id(&ep, "endpoint_id"));
    fleet.until_known(&user);
    let (s, shown) = fleet.api("GET", &endpoint, None);
    assert_eq!(
        (s, &shown["sip_registered"]),
        (200, &json!("false")),
        "{shown}"
    );
    let (a, b, c) = (&fleet.edges[0], &fleet.edges[1], &fleet.edges[2]);
    assert_eq!(
        call(&fleet, b, &app, &user, "before"),
        486,
        "not registered yet"
    );

    let (s, replay) = register(a, &fleet, &user, "Desk12345", 120, "a");
    assert_eq!(s, 200);
    // The accepted Authorization again: a replay at the edge that took it,
    // a stale nonce (a fresh challenge, not a failure) at another.
    assert_eq!(send_register(&fleet, a, &replay), 403);
    let elsewhere = udp_replies(
        &fleet.caller,
        IpAddr::V4(CALLER),
        b.sip(),
        replay.as_bytes(),
        Duration::from_secs(2),
    );
    assert_eq!(
        elsewhere.last().map(|r| status(r)),
        Some(401),
        "{elsewhere:?}"
    );
    assert!(elsewhere[0].contains("stale=true"), "{}", elsewhere[0]);

    let t = Instant::now();
    loop {
        match call(
            &fleet,
            b,
            &app,
            &user,
            &format!("after{}", t.elapsed().as_millis()),
        ) {
            100 => break,
            486 if t.elapsed() < Duration::from_secs(1) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            s => panic!("INVITE through another edge after REGISTER: {s}"),
        }
    }
    // The control plane shows the binding, from the fleet's Redis.
    let t = Instant::now();
    let shown = loop {
        let (_, shown) = fleet.api("GET", &endpoint, None);
        if shown["sip_registered"] == "true" {
            break shown;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{shown}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(shown["sip_contact"], format!("sip:{user}@{CALLER}:5070"));
    assert_eq!(shown["sip_user_agent"], "fleet-phone/1.0");
    assert!(
        shown["sip_expires"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{shown}"
    );
    // Expires: 0 through a third edge: gone everywhere.
    let (s, _) = register(c, &fleet, &user, "Desk12345", 0, "c");
    assert_eq!(s, 200);
    let t = Instant::now();
    while call(
        &fleet,
        b,
        &app,
        &user,
        &format!("gone{}", t.elapsed().as_millis()),
    ) != 486
    {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "binding removed through another edge"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    while fleet.api("GET", &endpoint, None).1["sip_registered"] != "false" {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "control still shows the binding"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
