//! Real SIP user agents through the edge: Debian's baresip 1.0 (libre),
//! which nobody here wrote, over UDP, TCP and TLS.
//!
//! - A `credential` application called with MD5 digests. baresip 1.0
//!   cannot compute SHA-256 and gives up on a challenge list that holds
//!   one, so with the edge's default (SHA-256, MD5) its call ends at the
//!   407; the application's own `challenge_algorithms = "MD5"` is the
//!   fallback the edge offers, and with it the call is let in.
//! - A non-auth application with baresip REGISTERed as an endpoint (the
//!   edge challenging the REGISTER with MD5 only, `sip.challenge_algorithms`),
//!   then calling from that endpoint.
//!
//! Each call the edge lets in fetches the answer_url, whose
//! `<Hangup reason="rejected"/>` ends it with 603: baresip prints the
//! status, and the callback says how the caller was authenticated and over
//! which transport. Over TLS baresip 1.0 checks no certificate and sends no
//! SNI: the edge's side of TLS is what these runs prove.

use std::time::Duration;

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::calls::{id, until_edge_has};
use sipauth_tests::pki::issue;
use sipauth_tests::topo::Rig;
use sipauth_tests::ua::{Account, Baresip, Transport};

const ANSWER_AT: &str = "127.0.0.1:8090";
const REJECT: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup reason="rejected"/></Response>"#;
const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];
/// How long baresip runs: long enough for a challenge, the answer_url and
/// the 603.
const RUN_SECS: u32 = 5;

/// An agent with a TLS listener (the rig's own certificate; baresip does
/// not check it) and `challenge_algorithms` for REGISTER and applications
/// without their own.
fn start<'r>(rig: &'r Rig, algorithms: &str, pki: &tempfile::TempDir) -> Agent<'r> {
    let c = rig.caller(0);
    let cert = issue(pki.path(), &[&c.edge_v4.to_string()]);
    Agent::start(
        rig,
        &Options {
            sip_extra: format!("challenge_algorithms = {algorithms}\n"),
            sections: format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.cert.display(),
                cert.key.display()
            ),
            ..Options::default()
        },
    )
}

fn app(agent: &Agent<'_>, answer: &AnswerServer, body: &serde_json::Value) -> String {
    let mut b = json!({
        "app_name": "ua",
        "answer_url": answer.url("/answer"),
        "hangup_url": answer.url("/hangup"),
    });
    for (k, v) in body.as_object().expect("object") {
        b[k] = v.clone();
    }
    let app = id(&agent.create("Application/", &b), "app_id");
    until_edge_has(agent, &app);
    app
}

#[test]
fn baresip_calls_a_credential_application_with_md5_over_udp_tcp_and_tls() {
    let rig = Rig::new(1);
    let c = rig.caller(0);
    let pki = tempfile::tempdir().expect("temp dir");
    let agent = start(&rig, "[\"SHA-256\", \"MD5\"]", &pki);
    let answer = AnswerServer::start(
        &rig.edge,
        ANSWER_AT.parse().unwrap(),
        REJECT,
        RIG_AUTH_TOKEN,
    );
    let cred = id(
        &agent.create(
            "SipAuth/Credential/",
            &json!({"username": "pbx-user", "password": "Secret123"}),
        ),
        "credential_uuid",
    );
    let md5_only = app(
        &agent,
        &answer,
        &json!({"sip_auth_type": "credential", "credential_uuid": cred, "challenge_algorithms": "MD5"}),
    );
    let default = app(
        &agent,
        &answer,
        &json!({"sip_auth_type": "credential", "credential_uuid": cred}),
    );
    let account = Account {
        user: "pbx-user",
        password: "Secret123",
        register: false,
    };
    for (i, transport) in ALL.into_iter().enumerate() {
        let dial = format!("/dial sip:{md5_only}@{}", c.edge_v4);
        let mut ua = Baresip::start(c, 5070, c.edge_v4, transport, &account, &[dial], RUN_SECS);
        assert!(
            ua.wait_for("603", Duration::from_secs(10)),
            "{transport:?}: baresip:\n{}\nedge:\n{}",
            ua.output(),
            agent.log()
        );
        ua.wait_exit(Duration::from_secs(10));
        let hits = answer.wait_for(i + 1);
        let h = hits.last().expect("answer_url hit");
        assert!(h.signature_ok);
        assert_eq!(h.params["SIPAuthType"], "credential", "{:?}", h.params);
        assert_eq!(h.params["SIPAuthUser"], "pbx-user");
        assert_eq!(h.params["SIPTransport"], transport.name());
    }

    // The edge's default offers SHA-256 first: baresip 1.0 gives up on the
    // challenge ("Function not implemented") and the answer_url is never
    // fetched. This is the client's limit, and why an application may
    // narrow its challenges.
    let before = answer.hits_on("/answer").len();
    let dial = format!("/dial sip:{default}@{}", c.edge_v4);
    let mut ua = Baresip::start(
        c,
        5070,
        c.edge_v4,
        Transport::Udp,
        &account,
        &[dial],
        RUN_SECS,
    );
    assert!(
        ua.wait_for("Function not implemented", Duration::from_secs(10)),
        "baresip:\n{}",
        ua.output()
    );
    ua.wait_exit(Duration::from_secs(10));
    assert_eq!(answer.hits_on("/answer").len(), before);
    let log = agent.stop();
    assert!(!log.contains("Secret123"), "no password in the log");
}

#[test]
fn baresip_registers_as_an_endpoint_and_calls_a_non_auth_application() {
    let rig = Rig::new(1);
    let c = rig.caller(0);
    let pki = tempfile::tempdir().expect("temp dir");
    // REGISTER is challenged with sip.challenge_algorithms: MD5 alone for
    // baresip.
    let agent = start(&rig, "[\"MD5\"]", &pki);
    let answer = AnswerServer::start(
        &rig.edge,
        ANSWER_AT.parse().unwrap(),
        REJECT,
        RIG_AUTH_TOKEN,
    );
    let open = app(&agent, &answer, &json!({"sip_auth_type": ""}));
    for (i, transport) in ALL.into_iter().enumerate() {
        let ep = agent.create(
            "Endpoint/",
            &json!({
                "username": format!("desk{}", transport.name()),
                "password": "Desk12345",
                "alias": "Desk",
                "app_id": open,
            }),
        );
        let user = id(&ep, "username");
        until_edge_has(&agent, &user);
        let account = Account {
            user: &user,
            password: "Desk12345",
            register: true,
        };
        // One baresip registers and stays; a second one, as the same
        // endpoint but not registering, calls.
        let registered = Baresip::start(c, 5070, c.edge_v4, transport, &account, &[], 30);
        assert!(
            registered.wait_for("200 OK", Duration::from_secs(10)),
            "{transport:?}: baresip:\n{}\nedge:\n{}",
            registered.output(),
            agent.log()
        );
        let (s, shown) = agent.api(
            "GET",
            &format!("Endpoint/{}/", id(&ep, "endpoint_id")),
            None,
        );
        assert_eq!(s, 200);
        assert_eq!(shown["sip_registered"], "true", "{transport:?}: {shown}");
        assert!(
            shown["sip_user_agent"]
                .as_str()
                .is_some_and(|ua| ua.contains("baresip")),
            "{shown}"
        );
        let calling = Account {
            register: false,
            ..account
        };
        let dial = format!("/dial sip:{open}@{}", c.edge_v4);
        let mut caller = Baresip::start(c, 5080, c.edge_v4, transport, &calling, &[dial], RUN_SECS);
        assert!(
            caller.wait_for("603", Duration::from_secs(10)),
            "{transport:?}: baresip:\n{}\nedge:\n{}",
            caller.output(),
            agent.log()
        );
        caller.wait_exit(Duration::from_secs(10));
        drop(registered);
        let hits = answer.wait_for(i + 1);
        let h = hits.last().expect("answer_url hit");
        assert!(!h.params.contains_key("SIPAuthType"), "{:?}", h.params);
        assert_eq!(h.params["From"], user);
        assert_eq!(h.params["SIPTransport"], transport.name());
    }
}
