//! What follows a `<Dial>`, over real SIP in the rig: its action URL is
//! told how it ended (signed, DialStatus and the cause), and with redirect
//! its XML is what the call does next (here: another Dial, which answers);
//! without an action URL the XML goes on after the Dial; `redirect="false"`
//! only tells. For inbound calls and for Make Call answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::{AnswerServer, Hit};
use sipauth_tests::caller::{Caller, OFFER};
use sipauth_tests::calls::{acl_app, hangup_hit, id, record};
use sipauth_tests::provider::{PASSWORD, Provider, Script, Then, USER};
use sipauth_tests::topo::Rig;

const ANSWER_AT: &str = "127.0.0.1:8090";
const HANGUP: &str = r#"<?xml version="1.0"?><Response><Hangup/></Response>"#;

/// XML by path; other paths get `<Hangup/>`.
type Pages = Arc<Mutex<HashMap<String, String>>>;

fn answer_server(rig: &Rig) -> (AnswerServer, Pages) {
    let pages: Pages = Arc::default();
    let p = pages.clone();
    let server = AnswerServer::start_with(
        &rig.edge,
        ANSWER_AT.parse().unwrap(),
        RIG_AUTH_TOKEN,
        move |h| {
            p.lock()
                .unwrap()
                .get(&h.path)
                .cloned()
                .unwrap_or_else(|| HANGUP.to_owned())
        },
    );
    (server, pages)
}

fn user(uri: &str) -> String {
    format!(
        r#"<User sipAuthUsername="{USER}" sipAuthPassword="{PASSWORD}">{}</User>"#,
        uri.replace('&', "&amp;")
    )
}

fn only_hit(answer: &AnswerServer, path: &str) -> Hit {
    let hits = answer.hits_on(path);
    assert_eq!(hits.len(), 1, "{path}: {hits:?}");
    let h = hits.into_iter().next().unwrap();
    assert!(h.signature_ok, "{h:?}");
    h
}

#[test]
fn inbound_dial_action_redirects_to_a_second_dial_and_is_told_how_each_ended() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let (c, p) = (rig.caller(0), rig.caller(1));
    let (answer, pages) = answer_server(&rig);
    let app = acl_app(&agent, &answer, c, "");
    let busy = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6401),
        false,
        Script::new(true, Then::Final(486)),
    );
    let second = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6402),
        false,
        Script::new(true, Then::Answer),
    );
    {
        let mut pages = pages.lock().unwrap();
        pages.insert(
            "/answer".to_owned(),
            format!(
                r#"<Response><Dial action="{}">{}</Dial><Hangup reason="rejected"/></Response>"#,
                answer.url("/action/first"),
                user(&busy.uri())
            ),
        );
        pages.insert(
            "/action/first".to_owned(),
            format!(
                r#"<Response><Dial action="{}" method="GET">{}</Dial></Response>"#,
                answer.url("/action/second"),
                user(&second.uri())
            ),
        );
    }
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let mut call = Caller::invite(&c.ns, c.v4, edge, &app, "caller", false, Some(OFFER));
    let fin = call.final_response(Duration::from_secs(5)).expect("final");
    assert_eq!(fin.code, 200, "{}\n{}", fin.raw, agent.log());
    call.ack(None);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(call.bye(), Some(200));
    let h = hangup_hit(&answer, "/hangup", None);
    assert_eq!(h.params["HangupCauseName"], "normal_hangup", "{h:?}");
    let first = only_hit(&answer, "/action/first");
    assert_eq!(first.method, "POST");
    assert_eq!(first.params["DialStatus"], "busy", "{first:?}");
    assert_eq!(first.params["DialHangupCause"], "busy_line");
    assert_eq!(first.params["DialHangupCauseCode"], "4010");
    assert_eq!(first.params["DialALegUUID"], h.params["CallUUID"]);
    // The second Dial answered; once over, its action URL is told.
    let t = std::time::Instant::now();
    while answer.hits_on("/action/second").is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let second_hit = only_hit(&answer, "/action/second");
    assert_eq!(second_hit.method, "GET");
    assert_eq!(
        second_hit.params["DialStatus"], "completed",
        "{second_hit:?}"
    );
    assert_eq!(second_hit.params["DialRingStatus"], "true");
    assert!(second.finish(Duration::from_secs(2)).bye);
    let _ = busy.finish(Duration::from_millis(100));
    for hit in answer.hits() {
        assert!(!hit.raw.contains(PASSWORD), "{hit:?}");
    }
}

#[test]
fn inbound_dial_without_action_goes_on_with_the_xml_after_it() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let (c, p) = (rig.caller(0), rig.caller(1));
    let (answer, pages) = answer_server(&rig);
    let app = acl_app(&agent, &answer, c, "");
    let busy = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6411),
        false,
        Script::new(true, Then::Final(486)),
    );
    pages.lock().unwrap().insert(
        "/answer".to_owned(),
        format!(
            r#"<Response><Dial>{}</Dial><Hangup reason="rejected"/></Response>"#,
            user(&busy.uri())
        ),
    );
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let mut call = Caller::invite(&c.ns, c.v4, edge, &app, "caller", false, Some(OFFER));
    let fin = call.final_response(Duration::from_secs(5)).expect("final");
    // The Hangup after the Dial decides: 603, rejected.
    assert_eq!(fin.code, 603, "{}\n{}", fin.raw, agent.log());
    let h = hangup_hit(&answer, "/hangup", None);
    assert_eq!(h.params["HangupCauseName"], "rejected", "{h:?}");
    let _ = busy.finish(Duration::from_millis(100));
}

#[test]
fn make_call_dial_action_is_told_and_its_xml_followed() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let p = rig.caller(1);
    let (answer, pages) = answer_server(&rig);
    let a = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6421),
        false,
        Script::new(true, Then::Answer),
    );
    let b = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6422),
        false,
        Script::new(true, Then::Final(603)),
    );
    {
        let mut pages = pages.lock().unwrap();
        // redirect="false": told, then the XML goes on (Wait, then the
        // end: the Dial's outcome is no longer the last thing).
        pages.insert(
            "/answer".to_owned(),
            format!(
                r#"<Response><Dial action="{}" redirect="false">{}</Dial><Dial action="{}">{}</Dial><Wait length="5"/></Response>"#,
                answer.url("/action/told"),
                user(&b.uri()),
                answer.url("/action/redirect"),
                user(&b.uri()),
            ),
        );
        pages.insert(
            "/action/redirect".to_owned(),
            "<Response><Hangup/></Response>".to_owned(),
        );
    }
    let v = agent.create(
        "Call/",
        &json!({
            "from": "15550001111",
            "to": a.uri(),
            "answer_url": answer.url("/answer"),
            "hangup_url": answer.url("/hangup"),
            "sip_auth_username": USER,
            "sip_auth_password": PASSWORD,
        }),
    );
    let uuid = id(&v, "request_uuid");
    let rec = record(&agent, &uuid);
    // The second Dial's action said <Hangup/>: the Wait never ran.
    assert_eq!(
        rec["hangup_cause_name"],
        "normal_hangup",
        "{rec}\n{}",
        agent.log()
    );
    for path in ["/action/told", "/action/redirect"] {
        let hit = only_hit(&answer, path);
        assert_eq!(hit.params["DialStatus"], "failed", "{hit:?}");
        assert_eq!(hit.params["DialHangupCause"], "rejected", "{hit:?}");
        assert_eq!(hit.params["Direction"], "outbound", "{hit:?}");
    }
    assert!(a.finish(Duration::from_secs(3)).bye, "A hung up");
    let _ = b.finish(Duration::from_millis(100));
}
