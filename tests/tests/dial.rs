//! `<Dial><User>` bridging over real SIP with sipp on both sides: caller 1
//! calls an `ip_acl` application whose answer_url dials a provider in
//! caller 2's namespace (a sipp UAS that challenges with 407). The edge
//! answers the challenge with the `<User>` credentials, carries the
//! caller's SDP, relays 180 and the 200 with the provider's SDP, and a BYE
//! from either side ends both legs. The provider checks what reached it
//! (raw `X-` sipHeaders, no header of the caller's credentials); the record
//! and the hangup_url tell how the call ended, and the Dial password shows
//! nowhere.

use std::net::SocketAddr;

use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::calls::{
    acl_app, expect_end, hangup_hit, no_secret_anywhere, record, sipp_provider, sipp_result,
};
use sipauth_tests::peers::Sipp;
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

/// One call: the provider plays `provider`, the caller `caller_scenario`;
/// both must succeed, and the call must end with `status` and `cause`.
fn bridged(provider: &str, caller_scenario: &str, port: u16, status: &str, cause: (&str, i64)) {
    let rig = Rig::new(2);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let agent = Agent::start(&rig, &Options::default());
    let answer = AnswerServer::start(
        &rig.edge,
        ANSWER.parse().unwrap(),
        &dial_xml(p, port),
        RIG_AUTH_TOKEN,
    );
    let app = acl_app(&agent, &answer, c, "");
    let uas = sipp_provider(p, provider, port, false);
    let called = caller(c, caller_scenario, &app).run();
    let far_end = sipp_result(uas);
    if let Err(e) = called.and(far_end) {
        panic!("{e}\n{}", agent.log());
    }
    let h = hangup_hit(&answer, "/hangup", None);
    let rec = record(&agent, &h.params["CallUUID"]);
    expect_end(provider, &h, &rec, status, cause);
    assert_eq!(h.params["Direction"], "inbound", "{h:?}");
    assert_eq!(h.params["SIPAuthType"], "ip_acl", "{h:?}");
    assert_eq!(rec["sip_auth_type"], "ip_acl", "{rec}");
    let answers = answer.hits_on("/answer");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].signature_ok);
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &[rec], &[PASSWORD]);
}

#[test]
fn dial_user_bridges_a_challenged_provider_and_bye_ends_both_legs() {
    bridged(
        "provider_407_answer.xml",
        "dial_caller.xml",
        5091,
        "completed",
        ("normal_hangup", 4000),
    );
}

#[test]
fn dial_user_busy_after_auth_gives_the_caller_486() {
    bridged(
        "provider_407_486.xml",
        "invite_486.xml",
        5092,
        "busy",
        ("busy_line", 4010),
    );
}

#[test]
fn caller_cancel_while_the_provider_rings_cancels_the_leg_and_gets_487() {
    bridged(
        "provider_407_ring_cancel.xml",
        "dial_caller_cancel.xml",
        5093,
        "cancel",
        ("cancelled", 4140),
    );
}

#[test]
fn provider_bye_ends_the_callers_leg_too() {
    bridged(
        "provider_407_answer_bye.xml",
        "dial_caller_far_bye.xml",
        5094,
        "completed",
        ("normal_hangup", 4000),
    );
}
