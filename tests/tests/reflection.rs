//! The edge is no reflector: INVITEs from forged sources get one reply each
//! at most (none retransmitted), all such replies stay within
//! `sip.unproven_replies_per_sec`, and a final response ACKed at once is
//! not sent again. Replies are counted on the way out of the edge's
//! namespace by an iptables rule, not by the edge's own word.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::calls::{id, until_edge_has};
use sipauth_tests::metric;
use sipauth_tests::peers::{SentCounter, Sipp, flood_spoofed, invite, status, udp_replies};
use sipauth_tests::topo::{Link, Rig};

const REJECT: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup reason="rejected"/></Response>"#;
const ANSWER: &str = "127.0.0.1:8090";
/// Forged sources: random addresses of this /16, routed towards caller 2.
const FORGED: [u8; 2] = [10, 202];

fn start<'r>(rig: &'r Rig, xdp: &'static str, replies_per_sec: u32) -> (Agent<'r>, AnswerServer) {
    let opts = Options {
        xdp_mode: xdp,
        sip_extra: format!(
            "challenge_algorithms = [\"MD5\", \"SHA-256\"]\nunproven_replies_per_sec = {replies_per_sec}\n"
        ),
        ..Options::default()
    };
    let agent = Agent::start(rig, &opts);
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), REJECT, RIG_AUTH_TOKEN);
    (agent, answer)
}

/// A `credential` application (user `pbx-user`) or an `ip_acl` one that
/// lets `allowed` in.
fn app(agent: &Agent<'_>, answer: &AnswerServer, kind: &str, allowed: &Link) -> String {
    let mut body = json!({
        "app_name": "reflection",
        "answer_url": answer.url("/answer"),
        "hangup_url": answer.url("/hangup"),
        "sip_auth_type": kind,
    });
    if kind == "credential" {
        let cred = agent.create(
            "SipAuth/Credential/",
            &json!({"username": "pbx-user", "password": "Secret123"}),
        );
        body["credential_uuid"] = json!(id(&cred, "credential_uuid"));
    } else {
        let acl = id(
            &agent.create("SipAuth/IpAccessControlList/", &json!({"name": "rig"})),
            "ip_acl_uuid",
        );
        agent.create(
            &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
            &json!({"ip": allowed.v4.to_string(), "cidr_prefix": 32}),
        );
        body["ip_acl_uuid"] = json!(acl);
    }
    let app = id(&agent.create("Application/", &body), "app_id");
    until_edge_has(agent, &app);
    app
}

/// 20,000 INVITEs from forged sources, each answered once at most and
/// never again later, whatever the answer (407 challenge or 403 denial)
/// and with XDP on or off. The budget is set out of the way here.
#[test]
fn a_forged_invite_costs_one_reply_at_most() {
    const FLOOD: u64 = 20_000;
    for (xdp, kind) in [
        ("off", "credential"),
        ("native", "credential"),
        ("off", "ip_acl"),
    ] {
        let rig = Rig::new(2);
        let (agent, answer) = start(&rig, xdp, 1_000_000);
        let (c1, c2) = (rig.caller(0), rig.caller(1));
        let app = app(&agent, &answer, kind, c1);
        rig.edge
            .ip(&["route", "add", "10.202.0.0/16", "via", &c2.v4.to_string()]);
        let replies = SentCounter::new(&rig.edge, "10.202.0.0/16");
        let payload = invite(
            &app,
            SocketAddr::new(c2.v4, 5060),
            SocketAddr::new(c2.edge_v4, 5060),
            "forged",
        );
        let before = agent.metrics();
        flood_spoofed(c2, FORGED, 5060, payload.as_bytes(), FLOOD);
        // Timer G would have resent each final at 0.5, 1.5 and 3.5 s.
        std::thread::sleep(Duration::from_secs(4));
        let after = agent.metrics();
        let d = |name: &str| metric(&after, name) - metric(&before, name);
        let seen = d(r#"sipauth_sip_requests_total{method="INVITE"}"#);
        let sent = replies.packets();
        eprintln!("{xdp}/{kind}: {seen} forged INVITEs reached the edge, {sent} replies left it");
        assert!(seen >= 1000, "{xdp}/{kind}: only {seen} reached user space");
        assert!(
            sent <= seen,
            "{xdp}/{kind}: {sent} replies to {seen} requests"
        );
        // Each reached INVITE was answered (the budget is out of the way).
        assert!(
            sent * 100 >= seen * 99,
            "{xdp}/{kind}: {sent} replies to {seen} requests"
        );
        let code = if kind == "credential" { "407" } else { "403" };
        let counted = d(&format!("sipauth_sip_responses_total{{code=\"{code}\"}}"));
        assert_eq!(counted, sent, "{xdp}/{kind}: every datagram is counted");
    }
}

/// With the budget at 200/s, a flood from forged sources gets at most
/// 200 replies a second (plus the one-second burst), while a caller that
/// has proven itself keeps getting its challenges and calls through.
#[test]
fn replies_to_unproven_sources_stay_within_the_budget() {
    const BUDGET: u64 = 200;
    const FLOOD: u64 = 400_000;
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, "off", u32::try_from(BUDGET).unwrap());
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let app = app(&agent, &answer, "credential", c1);
    rig.edge
        .ip(&["route", "add", "10.202.0.0/16", "via", &c2.v4.to_string()]);
    let replies = SentCounter::new(&rig.edge, "10.202.0.0/16");
    let caller = |calls: u32| Sipp {
        ns: &c1.ns,
        scenario: "auth_603.xml",
        local: c1.v4,
        target: SocketAddr::new(c1.edge_v4, 5060),
        tcp: false,
        calls,
        rate: 20,
        service: &app,
        auth: Some(("pbx-user", "Secret123")),
        vars: Vec::new(),
    };
    // The caller proves itself with one call let in.
    caller(1).run().expect("first call");
    let payload = invite(
        &app,
        SocketAddr::new(c2.v4, 5060),
        SocketAddr::new(c2.edge_v4, 5060),
        "budget",
    );
    let legit = caller(40).command().spawn().expect("sipp");
    let before = agent.metrics();
    let started = std::time::Instant::now();
    flood_spoofed(c2, FORGED, 5060, payload.as_bytes(), FLOOD);
    let legit = legit.wait_with_output().expect("sipp");
    let secs = started.elapsed().as_secs() + 1;
    let after = agent.metrics();
    let d = |name: &str| metric(&after, name) - metric(&before, name);
    let sent = replies.packets();
    let suppressed = d("sipauth_sip_unproven_suppressed_total");
    let seen = d(r#"sipauth_sip_requests_total{method="INVITE"}"#);
    eprintln!(
        "budget {BUDGET}/s over {secs} s: {seen} INVITEs reached the edge, {sent} replies to forged sources, {suppressed} held back"
    );
    assert!(
        legit.status.success(),
        "the proven caller's calls failed: {}",
        String::from_utf8_lossy(&legit.stdout)
    );
    assert!(sent <= BUDGET * (secs + 1), "{sent} replies in {secs} s");
    assert!(sent <= seen);
    assert!(suppressed > 0, "the budget held nothing back");
    assert_eq!(
        d("sipauth_sip_unproven_replies_total"),
        sent,
        "the metric agrees with the wire"
    );
}

/// A 407 is small: its bytes per request byte, for a plain INVITE and for
/// one with an SDP offer (printed, and bounded).
#[test]
fn a_challenge_is_small() {
    let rig = Rig::new(1);
    let (agent, answer) = start(&rig, "off", 1000);
    let c = rig.caller(0);
    let app = app(&agent, &answer, "credential", c);
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let with_sdp = invite(&app, SocketAddr::new(c.v4, 5070), edge, "small1");
    let bare = format!(
        "INVITE sip:{app}@{ip} SIP/2.0\r\nVia: SIP/2.0/UDP {me}:5070;branch=z9hG4bKsmall2\r\n\
         From: <sip:a@{me}>;tag=1\r\nTo: <sip:{app}@{ip}>\r\nCall-ID: small2\r\nCSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ip = c.edge_v4,
        me = c.v4
    );
    for (label, req) in [("with SDP", with_sdp), ("bare", bare)] {
        let r = udp_replies(&c.ns, c.v4, edge, req.as_bytes(), Duration::from_secs(2));
        let resp = r.last().expect("a reply");
        assert_eq!(status(resp), 407, "{resp}");
        let ratio = resp.len() as f64 / req.len() as f64;
        eprintln!(
            "407 to a {label} INVITE: {} bytes for {} ({ratio:.2}x)",
            resp.len(),
            req.len()
        );
        assert!(ratio < 2.5, "{label}: {ratio:.2}x");
    }
}

/// Callers that ACK the final response the moment it arrives (sipp does)
/// never get it again: 200 calls rejected with 603 after the answer_url,
/// and exactly 200 603s leave the edge.
#[test]
fn a_final_response_acked_at_once_is_not_sent_again() {
    const CALLS: u32 = 200;
    let rig = Rig::new(1);
    let (agent, answer) = start(&rig, "native", 1000);
    let c = rig.caller(0);
    let app = app(&agent, &answer, "ip_acl", c);
    let replies = SentCounter::new(&rig.edge, &c.v4.to_string());
    let sipp = Sipp {
        ns: &c.ns,
        scenario: "invite_603.xml",
        local: c.v4,
        target: SocketAddr::new(c.edge_v4, 5060),
        tcp: false,
        calls: CALLS,
        rate: 50,
        service: &app,
        auth: None,
        vars: vec![("from_user", "caller".to_owned())],
    };
    sipp.run().expect("calls");
    // Timer G would resend a 603 whose ACK was missed after 0.5 s.
    std::thread::sleep(Duration::from_secs(2));
    let m = agent.metrics();
    let finals = metric(&m, r#"sipauth_sip_responses_total{code="603"}"#);
    let trying = metric(&m, r#"sipauth_sip_responses_total{code="100"}"#);
    let sent = replies.packets();
    eprintln!("{CALLS} calls: {trying} 100 Trying and {finals} 603 sent, {sent} datagrams");
    assert_eq!(finals, u64::from(CALLS), "{m}");
    assert_eq!(trying, u64::from(CALLS), "{m}");
    assert_eq!(sent, u64::from(CALLS) * 2);
}
