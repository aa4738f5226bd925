//! Every hangup cause of the two outbound paths, over UDP and over TCP:
//! the Make Call API, and `<Dial><User>` of an inbound call (caller 1, an
//! `ip_acl` application) — both against the scripted provider in caller
//! 2's namespace (tests/src/provider.rs), which challenges with 407 and
//! checks the credentials. Each case reads back the call record and the
//! signed hangup_url callback; on the Dial path also the final response
//! the caller got. No password shows in the log, a callback or a record.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::caller::{Caller, OFFER};
use sipauth_tests::calls::{acl_app, expect_end, hangup_hit, id, no_secret_anywhere, record};
use sipauth_tests::provider::{PASSWORD, Provider, Script, Then, USER};
use sipauth_tests::topo::{Link, Rig};

const ANSWER: &str = "127.0.0.1:8090";
const WRONG: &str = "Wrong-Pass-5519";
/// Timer B of the edge's outbound legs in these tests.
const TIMER_B_MS: u64 = 1000;

/// Where a case's leg goes.
#[derive(Clone, Copy)]
enum To {
    Provider(Script),
    /// A port nothing listens on.
    Nobody,
    /// A `sips:` URI over UDP, which cannot be (RFC 5630 3.1.3).
    SipsOverUdp,
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    to: To,
    password: &'static str,
    /// What the answered party's answer_url says (Make Call) — the Dial
    /// path dials from the inbound call's answer_url instead.
    status: &'static str,
    cause: (&'static str, i64),
    /// The final response the Dial path's caller gets.
    dial_code: u16,
}

const fn case(
    name: &'static str,
    to: To,
    status: &'static str,
    cause: (&'static str, i64),
    dial_code: u16,
) -> Case {
    Case {
        name,
        to,
        password: PASSWORD,
        status,
        cause,
        dial_code,
    }
}

const fn challenged(then: Then) -> To {
    To::Provider(Script::new(true, then))
}

/// The causes both paths produce from the leg alone.
fn leg_cases() -> Vec<Case> {
    vec![
        case(
            "answered",
            challenged(Then::Answer),
            "completed",
            ("normal_hangup", 4000),
            200,
        ),
        Case {
            password: WRONG,
            ..case(
                "wrong-password",
                challenged(Then::Answer),
                "failed",
                ("sip_auth_failed", 4240),
                403,
            )
        },
        case(
            "no-answer-after-credentials",
            challenged(Then::Silent),
            "timeout",
            ("sip_auth_timeout", 4250),
            408,
        ),
        case(
            "busy",
            challenged(Then::Final(486)),
            "busy",
            ("busy_line", 4010),
            486,
        ),
        case(
            "declined",
            challenged(Then::Final(603)),
            "failed",
            ("rejected", 4020),
            603,
        ),
        case(
            "unavailable",
            challenged(Then::Final(480)),
            "no-answer",
            ("no_answer", 4090),
            480,
        ),
        case(
            "no-response",
            To::Provider(Script::new(false, Then::Silent)),
            "timeout",
            ("request_timeout", 4100),
            408,
        ),
        case(
            "server-error",
            challenged(Then::Final(503)),
            "failed",
            ("destination_failed", 4110),
            503,
        ),
        case(
            "sips-over-udp",
            To::SipsOverUdp,
            "failed",
            ("invalid_destination", 4120),
            404,
        ),
        case(
            "nobody-listening",
            To::Nobody,
            "failed",
            ("network_error", 4130),
            503,
        ),
    ]
}

/// The answer server of these tests: `/answer/<case>` replies with the
/// XML `xml` gives for the case; everything else with `<Hangup/>`.
fn answer_server(rig: &Rig, xml: impl Fn(&str) -> String + Send + 'static) -> AnswerServer {
    AnswerServer::start_with(
        &rig.edge,
        ANSWER.parse().unwrap(),
        RIG_AUTH_TOKEN,
        move |h| match h.path.strip_prefix("/answer/") {
            Some(case) => xml(case),
            None => r#"<?xml version="1.0"?><Response><Hangup/></Response>"#.to_owned(),
        },
    )
}

fn options() -> Options {
    let mut o = Options::default();
    o.sip_extra = format!("{}outbound_timer_b_ms = {TIMER_B_MS}\n", o.sip_extra);
    o
}

/// The provider (or address) of a case, on port `port` of `p`.
fn target(p: &Link, c: &Case, port: u16, tcp: bool) -> (Option<Provider>, String) {
    let transport = if tcp { ";transport=tcp" } else { "" };
    match c.to {
        To::Provider(script) => {
            let prov = Provider::start(&p.ns, SocketAddr::new(p.v4, port), tcp, script);
            let uri = prov.uri();
            (Some(prov), uri)
        }
        To::Nobody => (None, format!("sip:bob@{}:{port}{transport}", p.v4)),
        To::SipsOverUdp => (None, format!("sips:bob@{}:{port};transport=udp", p.v4)),
    }
}

fn make_call(
    agent: &Agent<'_>,
    answer: &AnswerServer,
    case: &str,
    to: &str,
    password: &str,
) -> String {
    let v = agent.create(
        "Call/",
        &json!({
            "from": "15550001111",
            "to": to,
            "answer_url": answer.url(&format!("/answer/{case}")),
            "hangup_url": answer.url("/hangup"),
            "sip_auth_username": USER,
            "sip_auth_password": password,
            "sip_headers": "Team=rig",
        }),
    );
    id(&v, "request_uuid")
}

fn make_call_path(tcp: bool) {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &options());
    let p = rig.caller(1);
    let answer = answer_server(&rig, move |case| match case {
        "empty" => r#"<?xml version="1.0"?><Response></Response>"#.to_owned(),
        "garbage" => "<Response><Hangup".to_owned(),
        "number" => {
            r#"<?xml version="1.0"?><Response><Dial><Number>15550002222</Number></Dial></Response>"#
                .to_owned()
        }
        _ => r#"<?xml version="1.0"?><Response><Hangup/></Response>"#.to_owned(),
    });
    let mut cases = leg_cases();
    // The far end ending the INVITE with 487 (only a CANCEL does that on
    // the Dial path, below).
    cases.push(case(
        "terminated",
        challenged(Then::Final(487)),
        "cancel",
        ("cancelled", 4140),
        487,
    ));
    // What the answer_url says once the far end answered.
    let answered = challenged(Then::Answer);
    cases.push(case(
        "empty",
        answered,
        "completed",
        ("end_of_xml_instructions", 4030),
        0,
    ));
    cases.push(case(
        "garbage",
        answered,
        "failed",
        ("invalid_answer_xml", 4070),
        0,
    ));
    cases.push(case(
        "number",
        answered,
        "failed",
        ("dial_not_available", 4080),
        0,
    ));
    let mut records = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let label = format!(
            "make call {} over {}",
            c.name,
            if tcp { "TCP" } else { "UDP" }
        );
        let port = 6100 + u16::try_from(i).unwrap();
        let (provider, to) = target(p, c, port, tcp);
        let uuid = make_call(&agent, &answer, c.name, &to, c.password);
        let rec = record(&agent, &uuid);
        let h = hangup_hit(&answer, "/hangup", Some(&uuid));
        assert_eq!(
            rec["hangup_cause_name"],
            c.cause.0,
            "{label}: {rec}\n{}",
            agent.log()
        );
        expect_end(&label, &h, &rec, c.status, c.cause);
        assert_eq!(h.params["Direction"], "outbound", "{label}");
        if let Some(prov) = provider {
            let grace = if c.cause.1 == 4000 { 2000 } else { 200 };
            let saw = prov.finish(Duration::from_millis(grace));
            let invites = saw.of("INVITE");
            assert!(!invites.is_empty(), "{label}: {saw:?}");
            if c.cause.1 == 4000 {
                assert!(saw.bye, "{label}: the edge hung up with BYE: {saw:?}");
            }
        }
        records.push(rec);
    }
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &records, &[PASSWORD, WRONG]);
}

#[test]
fn make_call_causes_over_udp() {
    make_call_path(false);
}

#[test]
fn make_call_causes_over_tcp() {
    make_call_path(true);
}

fn dial_xml(to: &str, password: &str, extra: &str) -> String {
    let to = to.replace('&', "&amp;");
    format!(
        r#"<?xml version="1.0"?><Response><Dial{extra}><User sipAuthUsername="{USER}" sipAuthPassword="{password}" sipHeaders="Team=rig">{to}</User></Dial></Response>"#
    )
}

fn dial_path(tcp: bool) {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &options());
    let (c, p) = (rig.caller(0), rig.caller(1));
    let mut cases = leg_cases();
    cases.push(case(
        "caller-cancels",
        challenged(Then::Ring),
        "cancel",
        ("cancelled", 4140),
        487,
    ));
    cases.push(case(
        "rings-out",
        challenged(Then::Ring),
        "no-answer",
        ("no_answer", 4090),
        480,
    ));
    // Over UDP the far end sends its BYE again, as if the edge's 200 were
    // lost: the edge answers it again after the leg has ended (Timer J).
    let answered_then_far_bye = Script {
        bye_after: Some(Duration::from_millis(200)),
        bye_again_after: (!tcp).then_some(Duration::from_millis(300)),
        ..Script::new(true, Then::Answer)
    };
    cases.push(case(
        "far-end-hangs-up",
        To::Provider(answered_then_far_bye),
        "completed",
        ("normal_hangup", 4000),
        200,
    ));
    // The XML of each case, known once its target is.
    let xml = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let x = xml.clone();
    let answer = answer_server(&rig, move |case| {
        x.lock().unwrap().get(case).cloned().unwrap_or_default()
    });
    let number =
        r#"<?xml version="1.0"?><Response><Dial><Number>15550002222</Number></Dial></Response>"#;
    xml.lock()
        .unwrap()
        .insert("number".to_owned(), number.to_owned());
    cases.push(case(
        "number",
        To::Nobody,
        "failed",
        ("dial_not_available", 4080),
        480,
    ));
    let mut records = Vec::new();
    for (i, k) in cases.iter().enumerate() {
        let label = format!("dial {} over {}", k.name, if tcp { "TCP" } else { "UDP" });
        let port = 6200 + u16::try_from(i).unwrap();
        let (provider, to) = target(p, k, port, tcp);
        if k.name != "number" {
            let extra = if k.name == "rings-out" {
                r#" timeout="1""#
            } else {
                ""
            };
            xml.lock()
                .unwrap()
                .insert(k.name.to_owned(), dial_xml(&to, k.password, extra));
        }
        let app = acl_app(&agent, &answer, c, &format!("/{}", k.name));
        let edge = SocketAddr::new(c.edge_v4, 5060);
        let mut call = Caller::invite(&c.ns, c.v4, edge, &app, "caller", tcp, Some(OFFER));
        if k.name == "caller-cancels" {
            assert_eq!(
                call.wait_ringing(Duration::from_secs(5)),
                Some(180),
                "{label}"
            );
            assert!(call.cancel(), "{label}: CANCEL answered 200");
        }
        let fin = call
            .final_response(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{label}: no final response\n{}", agent.log()));
        assert_eq!(
            fin.code,
            k.dial_code,
            "{label}: {}\n{}",
            fin.raw,
            agent.log()
        );
        if fin.code == 200 {
            call.ack(None);
            if k.name == "far-end-hangs-up" {
                assert!(
                    call.await_bye(Duration::from_secs(5)).is_some(),
                    "{label}: the edge's BYE"
                );
            } else {
                std::thread::sleep(Duration::from_millis(100));
                assert_eq!(call.bye(), Some(200), "{label}");
            }
        }
        let h = hangup_hit(&answer, &format!("/hangup/{}", k.name), None);
        let uuid = &h.params["CallUUID"];
        let rec = record(&agent, uuid);
        expect_end(&label, &h, &rec, k.status, k.cause);
        assert_eq!(h.params["Direction"], "inbound", "{label}");
        assert_eq!(h.params["SIPAuthType"], "ip_acl", "{label}");
        if let Some(prov) = provider {
            let grace = if k.cause.1 == 4000 { 2000 } else { 200 };
            let saw = prov.finish(Duration::from_millis(grace));
            let invites = saw.of("INVITE");
            assert!(!invites.is_empty(), "{label}: {saw:?}");
            // The caller's offer went on; its headers did not.
            assert!(
                sipauth_tests::provider::Saw::body(invites[0]).contains("m=audio 5000"),
                "{label}: {}",
                invites[0]
            );
            assert_eq!(
                sipauth_tests::provider::Saw::header(invites[0], "X-Team"),
                Some("rig"),
                "{label}: raw X- header after ip_acl auth: {}",
                invites[0]
            );
            if k.cause.1 == 4000 {
                assert!(saw.bye, "{label}: both legs ended with BYE: {saw:?}");
            }
            if k.name == "far-end-hangs-up" && !tcp {
                let answers = saw
                    .responses
                    .iter()
                    .filter(|r| r.starts_with("SIP/2.0 200") && r.contains(" BYE\r\n"))
                    .count();
                assert_eq!(
                    answers, 2,
                    "{label}: the BYE and its retransmission answered: {saw:?}"
                );
            }
            if k.name == "caller-cancels" || k.name == "rings-out" {
                assert!(
                    !saw.of("CANCEL").is_empty(),
                    "{label}: leg cancelled: {saw:?}"
                );
            }
        }
        records.push(rec);
    }
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &records, &[PASSWORD, WRONG]);
}

#[test]
fn dial_causes_over_udp() {
    dial_path(false);
}

#[test]
fn dial_causes_over_tcp() {
    dial_path(true);
}
