//! Inbound authentication over real SIP: every row of what a caller sees,
//! with sipp and raw sockets from caller namespaces, the edge in its own,
//! and an answer_url server that checks the signed callbacks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::calls::{id, until_edge_has};
use sipauth_tests::metric;
use sipauth_tests::peers::{
    Sipp, flood, flood_spoofed, invite, options, status, tx_packets, udp_replies,
};
use sipauth_tests::topo::{Link, Rig};

const REJECT: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup reason="rejected"/></Response>"#;
const ANSWER: &str = "127.0.0.1:8090";
/// Holds a call for two seconds, then rejects it.
const HOLD: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Wait length="2"/><Hangup reason="rejected"/></Response>"#;

fn sipp<'a>(c: &'a Link, scenario: &'a str, app: &'a str, v6: bool, tcp: bool) -> Sipp<'a> {
    let (local, edge) = if v6 {
        (c.v6, c.edge_v6)
    } else {
        (c.v4, c.edge_v4)
    };
    Sipp {
        ns: &c.ns,
        scenario,
        local,
        target: SocketAddr::new(edge, 5060),
        tcp,
        calls: 1,
        rate: 10,
        service: app,
        auth: None,
        // The scenarios that name a From user take it as a variable.
        vars: if scenario.starts_with("invite_6") || scenario.starts_with("invite_48") {
            vec![("from_user", "caller".to_owned())]
        } else {
            Vec::new()
        },
    }
}

fn start<'r>(rig: &'r Rig, opts: &Options) -> (Agent<'r>, AnswerServer) {
    let agent = Agent::start(rig, opts);
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), REJECT, RIG_AUTH_TOKEN);
    (agent, answer)
}

/// An ACL with the given networks.
fn acl(agent: &Agent<'_>, nets: &[(String, u8)]) -> String {
    let uuid = id(
        &agent.create("SipAuth/IpAccessControlList/", &json!({"name": "rig"})),
        "ip_acl_uuid",
    );
    for (ip, prefix) in nets {
        agent.create(
            &format!("SipAuth/IpAccessControlList/{uuid}/Entry/"),
            &json!({"ip": ip, "cidr_prefix": prefix}),
        );
    }
    uuid
}

/// A credential with password `Secret123`; its uuid.
fn credential(agent: &Agent<'_>, username: &str) -> String {
    id(
        &agent.create(
            "SipAuth/Credential/",
            &json!({"username": username, "password": "Secret123"}),
        ),
        "credential_uuid",
    )
}

fn app(
    agent: &Agent<'_>,
    answer: &AnswerServer,
    auth: &str,
    cred: Option<&str>,
    acl: Option<&str>,
) -> String {
    let mut body = json!({
        "app_name": "rig app",
        "answer_url": answer.url("/answer"),
        "hangup_url": answer.url("/hangup"),
        "sip_auth_type": auth,
    });
    if let Some(c) = cred {
        body["credential_uuid"] = json!(c);
    }
    if let Some(a) = acl {
        body["ip_acl_uuid"] = json!(a);
    }
    id(&agent.create("Application/", &body), "app_id")
}

#[test]
fn ip_acl_lets_listed_sources_in_and_denies_others() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, &Options::default());
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let acl = acl(&agent, &[(c1.v4.to_string(), 32), (c1.v6.to_string(), 128)]);
    let app = app(&agent, &answer, "ip_acl", None, Some(&acl));
    until_edge_has(&agent, &app);
    sipp(c1, "invite_603.xml", &app, false, false)
        .run()
        .unwrap();
    sipp(c1, "invite_603.xml", &app, true, true).run().unwrap();
    for (v6, tcp) in [(false, false), (true, false), (false, true)] {
        sipp(c2, "invite_403.xml", &app, v6, tcp).run().unwrap();
    }
    let hits = answer.wait_for(2);
    assert_eq!(hits.len(), 2, "{hits:?}");
    for h in &hits {
        assert!(h.signature_ok, "signature: {h:?}");
        assert_eq!(h.method, "POST");
        assert_eq!(h.params["SIPAuthType"], "ip_acl");
        assert_eq!(h.params["Direction"], "inbound");
        assert_eq!(h.params["To"], app);
        assert!(!h.params.contains_key("SIPAuthUser"));
    }
    assert_eq!(hits[0].params["SIPSourceIP"], c1.v4.to_string());
    assert_eq!(hits[1].params["SIPSourceIP"], c1.v6.to_string());
    // The hangup_url hears how each ended, signed too.
    std::thread::sleep(Duration::from_millis(300));
    let hangups = answer.hits_on("/hangup");
    assert_eq!(hangups.len(), 2, "{hangups:?}");
    assert!(
        hangups
            .iter()
            .all(|h| h.signature_ok && h.params["HangupCauseName"] == "rejected")
    );
    // Every call leaves a record.
    let (s, rec) = agent.api(
        "GET",
        &format!("Call/{}/", hits[0].params["CallUUID"]),
        None,
    );
    assert_eq!(s, 200, "{rec}");
    assert_eq!(rec["hangup_cause_name"], "rejected");
    let m = agent.metrics();
    assert_eq!(metric(&m, "sipauth_invites_denied_total"), 3, "{m}");
}

#[test]
fn credentials_right_wrong_tcp_and_ipv6() {
    let rig = Rig::new(1);
    let (agent, answer) = start(&rig, &Options::default());
    let c = rig.caller(0);
    let cred = credential(&agent, "pbx-user");
    let app = app(&agent, &answer, "credential", Some(&cred), None);
    until_edge_has(&agent, &app);
    for (v6, tcp) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut ok = sipp(c, "auth_603.xml", &app, v6, tcp);
        ok.auth = Some(("pbx-user", "Secret123"));
        ok.run()
            .unwrap_or_else(|e| panic!("right password v6={v6} tcp={tcp}: {e}"));
    }
    let mut wrong = sipp(c, "auth_403.xml", &app, false, false);
    wrong.auth = Some(("pbx-user", "Wrong9999"));
    wrong.run().unwrap();
    let mut stranger = sipp(c, "auth_403.xml", &app, true, true);
    stranger.auth = Some(("somebody", "Secret123"));
    stranger.run().unwrap();
    let hits = answer.wait_for(4);
    assert_eq!(hits.len(), 4);
    for h in &hits {
        assert!(h.signature_ok);
        assert_eq!(h.params["SIPAuthType"], "credential");
        assert_eq!(h.params["SIPAuthUser"], "pbx-user");
        assert!(!h.raw.contains("Secret123"), "no password in callbacks");
    }
}

/// The ACK of a challenge never reaches user space: the XDP program knows
/// it by the 407's To-tag and drops it (a stateless UAS ignores it), while
/// the ACK of the stateful 603 that ends each call still goes up. Over
/// IPv4 and IPv6, with the calls themselves unchanged.
#[test]
fn the_ack_of_a_challenge_stays_in_the_kernel() {
    const CALLS: u32 = 20;
    let rig = Rig::new(1);
    let (agent, answer) = start(&rig, &Options::default());
    let c = rig.caller(0);
    let cred = credential(&agent, "pbx-user");
    let app = app(&agent, &answer, "credential", Some(&cred), None);
    until_edge_has(&agent, &app);
    let before = agent.metrics();
    for v6 in [false, true] {
        let mut calls = sipp(c, "auth_603.xml", &app, v6, false);
        calls.auth = Some(("pbx-user", "Secret123"));
        calls.calls = CALLS;
        calls.rate = 50;
        calls.run().unwrap_or_else(|e| panic!("v6={v6}: {e}"));
    }
    assert_eq!(
        answer.wait_for(2 * CALLS as usize).len(),
        2 * CALLS as usize
    );
    let after = agent.metrics();
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    let dropped =
        delta(r#"sipauth_xdp_packets_total{verdict="drop",reason="ack_of_stateless_answer"}"#);
    let acks = delta(r#"sipauth_sip_requests_total{method="ACK"}"#);
    let challenges = delta(r#"sipauth_sip_responses_total{code="407"}"#);
    eprintln!("{challenges} challenges, {dropped} ACKs dropped in XDP, {acks} ACKs in user space");
    assert_eq!(challenges, u64::from(2 * CALLS), "{after}");
    assert_eq!(dropped, u64::from(2 * CALLS), "{after}");
    // Only the 603s' ACKs.
    assert_eq!(acks, u64::from(2 * CALLS), "{after}");
}

#[test]
fn acl_and_credential_checks_the_acl_first() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, &Options::default());
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let cred = credential(&agent, "both-user");
    let acl = acl(&agent, &[("10.201.1.0".to_owned(), 24)]);
    let app = app(
        &agent,
        &answer,
        "ip_acl_and_credential",
        Some(&cred),
        Some(&acl),
    );
    until_edge_has(&agent, &app);
    let mut ok = sipp(c1, "auth_603.xml", &app, false, false);
    ok.auth = Some(("both-user", "Secret123"));
    ok.run().unwrap();
    // From outside the ACL: 403 at once, no challenge.
    sipp(c2, "invite_403.xml", &app, false, false)
        .run()
        .unwrap();
    let mut wrong = sipp(c1, "auth_403.xml", &app, false, true);
    wrong.auth = Some(("both-user", "Nope12345"));
    wrong.run().unwrap();
    let hits = answer.wait_for(1);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].params["SIPAuthType"], "ip_acl_and_credential");
    assert_eq!(hits[0].params["SIPAuthUser"], "both-user");
}

#[test]
fn ten_failures_lock_out_and_the_lockout_ends_on_time_and_survives_acl_changes() {
    let rig = Rig::new(2);
    let opts = Options {
        lockout: (10, 60, 4),
        ..Options::default()
    };
    let (agent, answer) = start(&rig, &opts);
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let acl = acl(&agent, &[(c1.v4.to_string(), 32)]);
    let app = app(&agent, &answer, "ip_acl", None, Some(&acl));
    until_edge_has(&agent, &app);
    let mut ten = sipp(c2, "invite_403.xml", &app, false, false);
    ten.calls = 10;
    ten.rate = 50;
    ten.run().unwrap();
    let (_, list) = agent.admin("GET", "/admin/lockouts", None);
    assert!(list.contains(&c2.v4.to_string()), "locked after 10: {list}");
    // Allowing it now does not clear the lockout.
    agent.create(
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        &json!({"ip": c2.v4.to_string(), "cidr_prefix": 32}),
    );
    std::thread::sleep(Duration::from_millis(300));
    sipp(c2, "invite_403.xml", &app, false, false)
        .run()
        .unwrap();
    // Attempts during the lockout do not extend it: it ends 4 s after it began.
    std::thread::sleep(Duration::from_secs(4));
    let (_, list) = agent.admin("GET", "/admin/lockouts", None);
    assert!(!list.contains(&c2.v4.to_string()), "released: {list}");
    sipp(c2, "invite_603.xml", &app, false, false)
        .run()
        .unwrap();
}

#[test]
fn acl_changes_are_enforced_within_a_second_in_user_space_and_xdp() {
    let rig = Rig::new(2);
    let opts = Options {
        lockout: (1_000_000, 60, 60),
        budget_per_sec: 5,
        ..Options::default()
    };
    let (agent, answer) = start(&rig, &opts);
    let c2 = rig.caller(1);
    let acl = acl(&agent, &[("192.0.2.0".to_owned(), 24)]);
    let app = app(&agent, &answer, "ip_acl", None, Some(&acl));
    until_edge_has(&agent, &app);
    let denied_xdp = r#"sipauth_xdp_packets_total{verdict="drop",reason="acl_denied"}"#;
    let allowed_xdp = r#"sipauth_xdp_packets_total{verdict="pass",reason="allowed"}"#;
    let payload = invite(
        &app,
        SocketAddr::new(c2.v4, 5095),
        SocketAddr::new(c2.edge_v4, 5060),
        "aclflood",
    );
    let before = agent.metrics();
    flood(c2, 5095, 5060, payload.as_bytes(), 2_000);
    let after = agent.metrics();
    let dropped = metric(&after, denied_xdp) - metric(&before, denied_xdp);
    assert!(
        dropped >= 1_980,
        "XDP dropped {dropped} of 2000 denied INVITEs"
    );

    agent.create(
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        &json!({"ip": c2.v4.to_string(), "cidr_prefix": 32}),
    );
    let t = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let msg = invite(
            &app,
            SocketAddr::new(c2.v4, 5096),
            SocketAddr::new(c2.edge_v4, 5060),
            &format!("chg{n}"),
        );
        let replies = udp_replies(
            &c2.ns,
            c2.v4,
            SocketAddr::new(c2.edge_v4, 5060),
            msg.as_bytes(),
            Duration::from_millis(800),
        );
        if replies.last().is_some_and(|r| status(r) == 603) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "ACL change not enforced: {replies:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        t.elapsed() < Duration::from_secs(1) + Duration::from_millis(800),
        "took {:?}",
        t.elapsed()
    );
    let before = agent.metrics();
    flood(c2, 5095, 5060, payload.as_bytes(), 2_000);
    let after = agent.metrics();
    assert_eq!(
        metric(&after, denied_xdp),
        metric(&before, denied_xdp),
        "no denials after the change"
    );
    // The flood stops once less than 1% is left unsent (see peers::flood).
    let allowed = metric(&after, allowed_xdp) - metric(&before, allowed_xdp);
    assert!(
        allowed >= 1_980,
        "XDP passed {allowed} of 2000 allowed INVITEs"
    );
}

/// Digest by hand: the right answer, a replay of it, and a stale nonce.
#[test]
fn replayed_and_stale_credentials() {
    let rig = Rig::new(1);
    let opts = Options {
        sip_extra: "challenge_algorithms = [\"SHA-256\", \"MD5\"]\nnonce_ttl_secs = 2\n".to_owned(),
        ..Options::default()
    };
    let (agent, answer) = start(&rig, &opts);
    let c = rig.caller(0);
    let cred = credential(&agent, "replay-user");
    let app = app(&agent, &answer, "credential", Some(&cred), None);
    until_edge_has(&agent, &app);
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let from = SocketAddr::new(c.v4, 5097);
    let send = |id: &str, auth: Option<&str>| -> Vec<String> {
        let mut msg = invite(&app, from, edge, id);
        if let Some(a) = auth {
            msg = msg.replacen(
                "Max-Forwards: 70\r\n",
                &format!("Max-Forwards: 70\r\nProxy-Authorization: {a}\r\n"),
                1,
            );
        }
        udp_replies(&c.ns, c.v4, edge, msg.as_bytes(), Duration::from_secs(2))
    };
    let first = send("r1", None);
    assert_eq!(status(&first[0]), 407);
    // Both challenges, SHA-256 first as configured.
    let challenges: Vec<&str> = first[0]
        .lines()
        .filter_map(|l| l.strip_prefix("Proxy-Authenticate: "))
        .collect();
    assert_eq!(challenges.len(), 2, "{}", first[0]);
    assert!(challenges[0].contains("algorithm=SHA-256") && challenges[1].contains("algorithm=MD5"));
    let ch = sipauth_sip::parse_challenge(challenges[0]).unwrap();
    // The uri is the server's address, as many clients write it.
    let uri = format!("sip:{}", c.edge_v4);
    let auth =
        sipauth_digest::authorization(&ch, "replay-user", "Secret123", "INVITE", &uri, 1).unwrap();
    let ok = send("r2", Some(&auth));
    assert_eq!(ok.last().map(|r| status(r)), Some(603), "{ok:?}");
    // The same credentials again, in a new request: a replay.
    let replay = send("r3", Some(&auth));
    assert_eq!(replay.last().map(|r| status(r)), Some(403), "{replay:?}");
    // After the nonce's lifetime: a fresh challenge marked stale, not a 403.
    // Nonce ages are whole seconds: wait past the next one.
    std::thread::sleep(Duration::from_millis(3_200));
    let late =
        sipauth_digest::authorization(&ch, "replay-user", "Secret123", "INVITE", &uri, 2).unwrap();
    let stale = send("r4", Some(&late));
    assert_eq!(status(&stale[0]), 407, "{stale:?}");
    assert!(stale[0].contains("stale=true"), "{}", stale[0]);
    let m = agent.metrics();
    assert_eq!(
        metric(&m, "sipauth_invites_denied_total"),
        1,
        "only the replay counted: {m}"
    );
}

#[test]
fn an_application_challenges_with_its_own_algorithms() {
    let rig = Rig::new(1);
    // The edge offers SHA-256 then MD5; this application only MD5, for
    // phones that give up on any other challenge.
    let opts = Options {
        sip_extra: "challenge_algorithms = [\"SHA-256\", \"MD5\"]\n".to_owned(),
        ..Options::default()
    };
    let (agent, answer) = start(&rig, &opts);
    let c = rig.caller(0);
    let cred = credential(&agent, "md5-phone");
    let app = app(&agent, &answer, "credential", Some(&cred), None);
    let (s, v) = agent.api(
        "POST",
        &format!("Application/{app}/"),
        Some(&json!({"challenge_algorithms": "MD5"})),
    );
    assert_eq!(s, 202, "{v}");
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let from = SocketAddr::new(c.v4, 5098);
    let t = Instant::now();
    loop {
        let replies = udp_replies(
            &c.ns,
            c.v4,
            edge,
            invite(&app, from, edge, &format!("alg{}", t.elapsed().as_millis())).as_bytes(),
            Duration::from_secs(2),
        );
        let offered: Vec<&str> = replies[0]
            .lines()
            .filter(|l| l.starts_with("Proxy-Authenticate: "))
            .collect();
        if offered.len() == 1 {
            assert!(offered[0].contains("algorithm=MD5"), "{offered:?}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "{replies:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn non_auth_mode_needs_a_registered_endpoint() {
    let rig = Rig::new(1);
    let (agent, answer) = start(&rig, &Options::default());
    let c = rig.caller(0);
    let app = app(&agent, &answer, "", None, None);
    let ep = agent.create(
        "Endpoint/",
        &json!({"username": "desk", "password": "Desk12345", "alias": "Desk", "app_id": app}),
    );
    let user = id(&ep, "username");
    until_edge_has(&agent, &user);
    // Not registered yet: 486.
    let mut early = sipp(c, "invite_486.xml", &app, false, false);
    early.vars = vec![("from_user", user.clone())];
    early.run().unwrap();
    let mut reg = sipp(c, "register.xml", &app, false, false);
    reg.auth = Some((&user, "Desk12345"));
    reg.vars = vec![("user", user.clone())];
    reg.run().unwrap();
    // The API shows the registration this process's edge holds.
    let (s, shown) = agent.api(
        "GET",
        &format!("Endpoint/{}/", id(&ep, "endpoint_id")),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(shown["sip_registered"], "true", "{shown}");
    assert!(
        shown["sip_contact"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("sip:{user}@"))),
        "{shown}"
    );
    let mut registered = sipp(c, "invite_603.xml", &app, false, false);
    registered.vars = vec![("from_user", user.clone())];
    registered.run().unwrap();
    // An unknown From user: 486.
    let mut unknown = sipp(c, "invite_486.xml", &app, false, true);
    unknown.vars = vec![("from_user", "nobody".to_owned())];
    unknown.run().unwrap();
    let hits = answer.wait_for(1);
    assert_eq!(hits.len(), 1);
    assert!(!hits[0].params.contains_key("SIPAuthType"));
    assert_eq!(hits[0].params["From"], user);
}

#[test]
fn a_retransmitted_invite_is_answered_again_and_counted_once() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, &Options::default());
    let c2 = rig.caller(1);
    let acl = acl(&agent, &[("192.0.2.0".to_owned(), 24)]);
    let app = app(&agent, &answer, "ip_acl", None, Some(&acl));
    until_edge_has(&agent, &app);
    let edge = SocketAddr::new(c2.edge_v4, 5060);
    let msg = invite(&app, SocketAddr::new(c2.v4, 5098), edge, "rtx");
    for _ in 0..3 {
        let r = udp_replies(
            &c2.ns,
            c2.v4,
            edge,
            msg.as_bytes(),
            Duration::from_millis(500),
        );
        assert_eq!(r.last().map(|x| status(x)), Some(403));
    }
    let m = agent.metrics();
    assert_eq!(metric(&m, "sipauth_invites_denied_total"), 1, "{m}");
    assert!(metric(&m, "sipauth_sip_retransmissions_total") >= 2, "{m}");
}

/// An agent with `opts`, an answer_url that holds each call (`HOLD`), and
/// an `ip_acl` application that lets caller 0 in; the application's id.
fn holding<'r>(rig: &'r Rig, opts: &Options) -> (Agent<'r>, AnswerServer, String) {
    let agent = Agent::start(rig, opts);
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), HOLD, RIG_AUTH_TOKEN);
    let c = rig.caller(0);
    let acl = acl(&agent, &[(c.v4.to_string(), 32)]);
    let app = app(&agent, &answer, "ip_acl", None, Some(&acl));
    until_edge_has(&agent, &app);
    (agent, answer, app)
}

/// One INVITE of call `id` from `c` to `app` over UDP, and every reply
/// within `wait` (up to the final one).
fn call_replies(c: &Link, app: &str, id: &str, wait: Duration) -> Vec<String> {
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let msg = invite(app, SocketAddr::new(c.v4, 5098), edge, id);
    udp_replies(&c.ns, c.v4, edge, msg.as_bytes(), wait)
}

/// OPTIONS ping `id` from `c` to the edge, and its replies.
fn ping(c: &Link, id: &str) -> Vec<String> {
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let msg = options(SocketAddr::new(c.v4, 5098), edge, id);
    udp_replies(&c.ns, c.v4, edge, msg.as_bytes(), Duration::from_secs(1))
}

fn statuses(replies: &[String]) -> Vec<u16> {
    replies.iter().map(|r| status(r)).collect()
}

/// The one reply of a refused caller: 503 with Retry-After.
fn expect_unavailable(replies: &[String]) {
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(status(&replies[0]), 503, "{}", replies[0]);
    assert!(
        replies[0].contains("\r\nRetry-After: 5\r\n"),
        "{}",
        replies[0]
    );
}

/// An edge carrying `sip.max_inbound_calls` calls answers one more caller,
/// let in by its ACL, 503 with `Retry-After` and nothing else; the slot a
/// call frees at its end takes the next caller.
#[test]
fn past_max_inbound_calls_a_caller_gets_503_with_retry_after() {
    let rig = Rig::new(1);
    let opts = Options {
        sip_extra: format!("{}max_inbound_calls = 1\n", Options::default().sip_extra),
        ..Options::default()
    };
    let (agent, answer, app) = holding(&rig, &opts);
    let c = rig.caller(0);
    std::thread::scope(|s| {
        let first = s.spawn(|| call_replies(c, &app, "cap1", Duration::from_secs(5)));
        // The first call waits in its <Wait>: the edge is full.
        assert_eq!(answer.wait_for(1).len(), 1);
        expect_unavailable(&call_replies(c, &app, "cap2", Duration::from_secs(1)));
        let m = agent.metrics();
        assert_eq!(metric(&m, "sipauth_inbound_calls"), 1, "{m}");
        assert_eq!(statuses(&first.join().unwrap()), vec![100, 603]);
    });
    let t = Instant::now();
    while metric(&agent.metrics(), "sipauth_inbound_calls") != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the first call's slot is freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let third = call_replies(c, &app, "cap3", Duration::from_secs(5));
    assert_eq!(statuses(&third), vec![100, 603]);
    let m = agent.metrics();
    assert_eq!(metric(&m, "sipauth_invites_unavailable_total"), 1, "{m}");
    assert_eq!(metric(&m, "sipauth_invites_allowed_total"), 2, "{m}");
    assert_eq!(answer.hits_on("/answer").len(), 2);
}

/// SIGTERM: the edge refuses new callers (503 with Retry-After; OPTIONS
/// and `/ready` say so too), lets the call in progress end, tells its
/// hangup_url, and exits.
#[test]
fn a_stopping_edge_refuses_new_calls_and_lets_those_in_progress_end() {
    let rig = Rig::new(1);
    let (mut agent, answer, app) = holding(&rig, &Options::default());
    let c = rig.caller(0);
    let first = std::thread::scope(|s| {
        let first = s.spawn(|| call_replies(c, &app, "drain1", Duration::from_secs(5)));
        // The first call waits in its <Wait> while the edge is told to stop.
        let hit = answer.wait_for(1);
        assert_eq!(hit.len(), 1);
        assert_eq!(agent.ready(), 200);
        assert_eq!(statuses(&ping(c, "ping1")), vec![200]);
        agent.sigterm();
        let t = Instant::now();
        while !agent.log().contains("new calls are refused") {
            assert!(t.elapsed() < Duration::from_secs(2), "{}", agent.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        expect_unavailable(&call_replies(c, &app, "drain2", Duration::from_secs(1)));
        // Load balancers that check over HTTP, and proxies that ping with
        // OPTIONS, see it too.
        assert_eq!(agent.ready(), 503);
        expect_unavailable(&ping(c, "ping2"));
        let m = agent.metrics();
        assert_eq!(metric(&m, "sipauth_invites_unavailable_total"), 1, "{m}");
        assert_eq!(statuses(&first.join().unwrap()), vec![100, 603]);
        hit[0].params["CallUUID"].clone()
    });
    // Its hangup_url is told before the edge exits, and it exits cleanly.
    let exit = agent.exit_within(Duration::from_secs(4));
    let log = agent.log();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{log}");
    assert!(log.contains("calls ended, their records written"), "{log}");
    let told = answer.hits_on("/hangup");
    assert!(
        told.iter()
            .any(|h| h.params["CallUUID"] == first && h.params["HangupCauseName"] == "rejected"),
        "{told:?}"
    );
    assert_eq!(
        answer.hits_on("/answer").len(),
        1,
        "the refused caller reached no answer_url"
    );
}

/// The headline: a flood of INVITEs from spoofed sources (random addresses
/// of a /16 behind caller 2) to an `ip_acl` application reaches user space
/// only within the budget, and legitimate calls from caller 1 all succeed
/// meanwhile.
#[test]
fn spoofed_flood_stays_in_the_kernel_while_legitimate_calls_succeed() {
    const BUDGET: u32 = 10;
    const FLOOD: u64 = 1_000_000;
    let rig = Rig::new(2);
    let opts = Options {
        budget_per_sec: BUDGET,
        ..Options::default()
    };
    let (agent, answer) = start(&rig, &opts);
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let acl = acl(&agent, &[(c1.v4.to_string(), 32)]);
    let app = app(&agent, &answer, "ip_acl", None, Some(&acl));
    until_edge_has(&agent, &app);
    rig.edge
        .ip(&["route", "add", "10.202.0.0/16", "via", &c2.v4.to_string()]);
    let payload = invite(
        &app,
        SocketAddr::new(c2.v4, 5060),
        SocketAddr::new(c2.edge_v4, 5060),
        "spoof",
    );
    let before = agent.metrics();
    let mut legit = sipp(c1, "invite_603.xml", &app, false, false);
    legit.calls = 60;
    legit.rate = 20;
    let legit = legit.command().spawn().expect("sipp");
    let tx = tx_packets(c2);
    let took = flood_spoofed(c2, [10, 202], 5060, payload.as_bytes(), FLOOD);
    let sent = tx_packets(c2) - tx;
    let legit = legit.wait_with_output().expect("sipp");
    std::thread::sleep(Duration::from_millis(300));
    let after = agent.metrics();
    let d = |name: &str| metric(&after, name) - metric(&before, name);
    // Sources denied ten times are locked out: the rest of their packets
    // are dropped by the lockout rule.
    let dropped = d(r#"sipauth_xdp_packets_total{verdict="drop",reason="acl_denied"}"#)
        + d(r#"sipauth_xdp_packets_total{verdict="drop",reason="locked_out"}"#);
    let passed_locked =
        d(r#"sipauth_xdp_packets_total{verdict="pass",reason="locked_out_budget"}"#);
    let passed = d(r#"sipauth_xdp_packets_total{verdict="pass",reason="acl_denied_budget"}"#);
    let seen = d(r#"sipauth_sip_requests_total{method="INVITE"}"#);
    let secs = took.as_secs() + 2;
    eprintln!(
        "spoofed flood of {sent} in {took:?}: XDP dropped {dropped}, passed {passed}; user space saw {seen} INVITEs"
    );
    assert!(
        legit.status.success(),
        "legitimate calls failed: {}",
        String::from_utf8_lossy(&legit.stdout)
    );
    let passed = passed + passed_locked;
    assert!(
        passed <= u64::from(BUDGET) * secs,
        "passed {passed} in {secs} s"
    );
    // trafgen stops early when the veth queue stays full (each spoofed
    // source costs the program map updates); a fifth of the flood is
    // plenty to judge by.
    assert!(sent * 5 >= FLOOD, "trafgen sent only {sent}");
    assert!(
        dropped * 100 >= (sent - passed) * 99,
        "dropped {dropped} of {sent}"
    );
    // The legitimate INVITEs plus at most the budget.
    assert!(
        seen <= 60 + u64::from(BUDGET) * secs,
        "user space saw {seen}"
    );
    assert_eq!(answer.wait_for(60).len(), 60);
}
