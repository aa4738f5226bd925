//! `<Dial><User>` bridging over real SIP: caller 1 calls an `ip_acl`
//! application whose answer_url dials a provider in caller 2's namespace (a
//! sipp UAS that challenges with 407). The edge answers the challenge with
//! the `<User>` credentials, carries the caller's SDP, relays 180 and the
//! 200 with the provider's SDP, and a BYE from the caller ends both legs.
//! The provider checks what reached it (raw `X-` sipHeaders, no header of
//! the caller's credentials); the record and the hangup_url tell how the
//! call ended, and the Dial password shows nowhere.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::{AnswerServer, Hit};
use sipauth_tests::peers::{Sipp, scenario};
use sipauth_tests::topo::{Link, Rig};

const ANSWER: &str = "127.0.0.1:8090";
const USER: &str = "prov-user";
/// The password the provider scenarios expect (they check the username
/// and the shape of the response).
const PASSWORD: &str = "Dial-Pass-4417";

fn dial_xml(p: &Link, port: u16) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><User sipAuthUsername="{USER}" sipAuthPassword="{PASSWORD}" sipHeaders="Team=rig,PH-Secret=dropped">sip:bob@{}:{port}</User></Dial></Response>"#,
        p.v4
    )
}

fn id(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        .to_owned()
}

/// An `ip_acl` application letting `c` in, seen by the edge.
fn acl_app(agent: &Agent<'_>, answer: &AnswerServer, c: &Link) -> String {
    let acl = id(
        &agent.create("SipAuth/IpAccessControlList/", &json!({"name": "rig"})),
        "ip_acl_uuid",
    );
    agent.create(
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        &json!({"ip": c.v4.to_string(), "cidr_prefix": 32}),
    );
    let app = id(
        &agent.create(
            "Application/",
            &json!({
                "app_name": "dial app",
                "answer_url": answer.url("/answer"),
                "hangup_url": answer.url("/hangup"),
                "sip_auth_type": "ip_acl",
                "ip_acl_uuid": acl,
            }),
        ),
        "app_id",
    );
    let t = Instant::now();
    loop {
        let (_, s) = agent.admin("GET", "/admin/snapshot", None);
        if s.contains(&app) {
            return app;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "edge never saw {app}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A sipp UAS in the provider's namespace, for one call.
fn sipp_provider(p: &Link, name: &str, port: u16) -> Child {
    let child =
        p.ns.cmd("sipp")
            .arg("-sf")
            .arg(scenario(name))
            .args(["-t", "u1"])
            .args(["-i", &p.v4.to_string()])
            .args(["-p", &port.to_string()])
            .args(["-m", "1", "-timeout", "20s", "-timeout_error", "-nostdin"])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipp");
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Waits up to 20 s for sipp; Err with its output when the call failed.
fn sipp_result(mut child: Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("sipp output");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "provider sipp: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn caller<'a>(c: &'a Link, scenario: &'a str, app: &'a str) -> Sipp<'a> {
    Sipp {
        ns: &c.ns,
        scenario,
        local: c.v4,
        target: SocketAddr::new(c.edge_v4, 5060),
        tcp: false,
        calls: 1,
        rate: 10,
        service: app,
        auth: None,
        // The shared invite_* scenarios take the From user as a variable.
        vars: if scenario.starts_with("invite_") {
            vec![("from_user", "caller".to_owned())]
        } else {
            Vec::new()
        },
    }
}

/// The hangup_url callback of the call, and its record.
fn ended(agent: &Agent<'_>, answer: &AnswerServer) -> (Hit, Value) {
    let t = Instant::now();
    let h = loop {
        if let Some(h) = answer.hits_on("/hangup").into_iter().next() {
            break h;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no hangup_url callback"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let uuid = &h.params["CallUUID"];
    let (s, rec) = agent.api("GET", &format!("Call/{uuid}/"), None);
    assert_eq!(s, 200, "{rec}");
    (h, rec)
}

fn expect_end(h: &Hit, rec: &Value, status: &str, cause: (&str, i64)) {
    assert!(h.signature_ok, "hangup signature: {h:?}");
    assert_eq!(h.params["Direction"], "inbound", "{h:?}");
    assert_eq!(h.params["CallStatus"], status, "{h:?}");
    assert_eq!(h.params["HangupCauseName"], cause.0, "{h:?}");
    assert_eq!(h.params["HangupCauseCode"], cause.1.to_string(), "{h:?}");
    assert_eq!(rec["direction"], "inbound", "{rec}");
    assert_eq!(rec["call_status"], status, "{rec}");
    assert_eq!(rec["hangup_cause_name"], cause.0, "{rec}");
    assert_eq!(rec["hangup_cause_code"], cause.1, "{rec}");
    assert_eq!(rec["sip_auth_type"], "ip_acl", "{rec}");
}

/// No password in the agent's log, the callbacks or the record.
fn no_secret_anywhere(log: &str, answer: &AnswerServer, rec: &Value) {
    for line in log.lines() {
        assert!(
            !line.contains(PASSWORD),
            "log line holds a password: {line}"
        );
    }
    for h in answer.hits() {
        // The answer_url's own reply holds it; what the edge sends does not.
        assert!(
            !h.raw.contains(PASSWORD),
            "callback holds a password: {h:?}"
        );
    }
    assert!(
        !rec.to_string().contains(PASSWORD),
        "record holds a password: {rec}"
    );
}

#[test]
fn dial_user_bridges_a_challenged_provider_and_bye_ends_both_legs() {
    let rig = Rig::new(2);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let agent = Agent::start(&rig, &Options::default());
    let answer = AnswerServer::start(
        &rig.edge,
        ANSWER.parse().unwrap(),
        &dial_xml(p, 5091),
        RIG_AUTH_TOKEN,
    );
    let app = acl_app(&agent, &answer, c);
    let provider = sipp_provider(p, "provider_407_answer.xml", 5091);
    let called = caller(c, "dial_caller.xml", &app).run();
    let far_end = sipp_result(provider);
    if let Err(e) = called.and(far_end) {
        panic!("{e}\n{}", agent.log());
    }
    let (h, rec) = ended(&agent, &answer);
    expect_end(&h, &rec, "completed", ("normal_hangup", 4000));
    assert_eq!(h.params["SIPAuthType"], "ip_acl");
    let answers = answer.hits_on("/answer");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].signature_ok);
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &rec);
}

#[test]
fn dial_user_busy_after_auth_gives_the_caller_486() {
    let rig = Rig::new(2);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let agent = Agent::start(&rig, &Options::default());
    let answer = AnswerServer::start(
        &rig.edge,
        ANSWER.parse().unwrap(),
        &dial_xml(p, 5092),
        RIG_AUTH_TOKEN,
    );
    let app = acl_app(&agent, &answer, c);
    let provider = sipp_provider(p, "provider_407_486.xml", 5092);
    let called = caller(c, "invite_486.xml", &app).run();
    let far_end = sipp_result(provider);
    if let Err(e) = called.and(far_end) {
        panic!("{e}\n{}", agent.log());
    }
    let (h, rec) = ended(&agent, &answer);
    expect_end(&h, &rec, "busy", ("busy_line", 4010));
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &rec);
}

#[test]
fn caller_cancel_while_the_provider_rings_cancels_the_leg_and_gets_487() {
    let rig = Rig::new(2);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let agent = Agent::start(&rig, &Options::default());
    let answer = AnswerServer::start(
        &rig.edge,
        ANSWER.parse().unwrap(),
        &dial_xml(p, 5093),
        RIG_AUTH_TOKEN,
    );
    let app = acl_app(&agent, &answer, c);
    let provider = sipp_provider(p, "provider_407_ring_cancel.xml", 5093);
    let called = caller(c, "dial_caller_cancel.xml", &app).run();
    let far_end = sipp_result(provider);
    if let Err(e) = called.and(far_end) {
        panic!("{e}\n{}", agent.log());
    }
    let (h, rec) = ended(&agent, &answer);
    expect_end(&h, &rec, "cancel", ("cancelled", 4140));
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &rec);
}

#[test]
fn provider_bye_ends_the_callers_leg_too() {
    let rig = Rig::new(2);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let agent = Agent::start(&rig, &Options::default());
    let answer = AnswerServer::start(
        &rig.edge,
        ANSWER.parse().unwrap(),
        &dial_xml(p, 5094),
        RIG_AUTH_TOKEN,
    );
    let app = acl_app(&agent, &answer, c);
    let provider = sipp_provider(p, "provider_407_answer_bye.xml", 5094);
    let called = caller(c, "dial_caller_far_bye.xml", &app).run();
    let far_end = sipp_result(provider);
    if let Err(e) = called.and(far_end) {
        panic!("{e}\n{}", agent.log());
    }
    let (h, rec) = ended(&agent, &answer);
    expect_end(&h, &rec, "completed", ("normal_hangup", 4000));
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &rec);
}
