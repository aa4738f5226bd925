//! How the edge joins two legs, over real SIP in the rig: `sipHeaders`
//! rendered `X-PH-` for a caller that did not use SIP auth (a registered
//! endpoint) and raw `X-` for one that did, a caller without an offer
//! (the far end's offer relayed, the caller's answer passed on in the
//! leg's ACK), several `<Dial>` targets rung at once, `<Number>` through
//! the number gateway, an answer crossing the CANCEL, re-INVITEs passed
//! across in both directions, and `<Dial>` inside a Make Call answer (the
//! answered party re-INVITEd with the dialled party's offer).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::caller::{ANSWER as CALLER_ANSWER, Caller, Final, OFFER as CALLER_OFFER};
use sipauth_tests::calls::{acl_app, hangup_hit, id, record, until_edge_has};
use sipauth_tests::peers::Sipp;
use sipauth_tests::provider::{DTMF, PASSWORD, Provider, REOFFER, Saw, Script, Then, USER};
use sipauth_tests::topo::{Link, Rig};

const ANSWER_AT: &str = "127.0.0.1:8090";
/// What the scripted provider offers, and answers.
const PROVIDER_OFFER: &str = "m=audio 4000";
const PROVIDER_ANSWER: &str = "m=audio 4002";

/// An answer server replying to `/answer` with whatever `xml` holds at
/// the time.
fn answer_server(rig: &Rig) -> (AnswerServer, Arc<Mutex<String>>) {
    AnswerServer::switchable(&rig.edge, ANSWER_AT.parse().unwrap(), RIG_AUTH_TOKEN, "")
}

fn app(agent: &Agent<'_>, answer: &AnswerServer, body: &Value) -> String {
    let mut b = json!({
        "app_name": "bridging",
        "answer_url": answer.url("/answer"),
        "hangup_url": answer.url("/hangup"),
    });
    for (k, v) in body.as_object().unwrap() {
        b[k] = v.clone();
    }
    let app = id(&agent.create("Application/", &b), "app_id");
    until_edge_has(agent, &app);
    app
}

fn user(uri: &str, headers: &str) -> String {
    format!(
        r#"<User sipAuthUsername="{USER}" sipAuthPassword="{PASSWORD}" sipHeaders="{headers}">{}</User>"#,
        uri.replace('&', "&amp;")
    )
}

fn dial(children: &str) -> String {
    format!(r#"<?xml version="1.0"?><Response><Dial>{children}</Dial></Response>"#)
}

fn edge_of(c: &Link) -> SocketAddr {
    SocketAddr::new(c.edge_v4, 5060)
}

/// Caller 1 calls `app` as `from` (over TCP when `tcp`, offering `sdp`):
/// the call and its final response.
fn call_app(c: &Link, app: &str, from: &str, tcp: bool, sdp: Option<&str>) -> (Caller, Final) {
    let mut call = Caller::invite(&c.ns, c.v4, edge_of(c), app, from, tcp, sdp);
    let fin = call.final_response(Duration::from_secs(5)).expect("final");
    (call, fin)
}

/// Answers the call's 200, talks briefly and hangs up.
fn talk_and_hang_up(call: &mut Caller, answer: Option<&str>) {
    call.ack(answer);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(call.bye(), Some(200));
}

#[test]
fn sip_headers_are_x_ph_for_a_registered_endpoint_and_raw_after_sip_auth() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let (c, p) = (rig.caller(0), rig.caller(1));
    let (answer, xml) = answer_server(&rig);
    // Non-auth mode: the caller is a registered endpoint of the account.
    let open = app(&agent, &answer, &json!({"sip_auth_type": ""}));
    let ep = agent.create(
        "Endpoint/",
        &json!({"username": "desk", "password": "Desk12345", "alias": "Desk", "app_id": open}),
    );
    let desk = id(&ep, "username");
    until_edge_has(&agent, &desk);
    let mut reg = Sipp {
        ns: &c.ns,
        scenario: "register.xml",
        local: c.v4,
        target: edge_of(c),
        tcp: false,
        calls: 1,
        rate: 1,
        service: &open,
        auth: Some((&desk, "Desk12345")),
        vars: vec![("user", desk.clone())],
    };
    reg.run().unwrap();
    reg.calls = 1;
    let acl = acl_app(&agent, &answer, c, "");
    for (app_id, from, rendered, not) in [
        (&open, desk.as_str(), "X-PH-Team", "X-Team"),
        (&acl, "caller", "X-Team", "X-PH-Team"),
    ] {
        let prov = Provider::start(
            &p.ns,
            SocketAddr::new(p.v4, 6301),
            false,
            Script::new(true, Then::Answer),
        );
        *xml.lock().unwrap() = dial(&user(&prov.uri(), "Team=rig,PH-Secret=no,ClientRegion=no"));
        let (mut call, fin) = call_app(c, app_id, from, false, Some(CALLER_OFFER));
        assert_eq!(fin.code, 200, "{}\n{}", fin.raw, agent.log());
        talk_and_hang_up(&mut call, None);
        let saw = prov.finish(Duration::from_secs(2));
        let invite = saw.of("INVITE")[0];
        assert_eq!(Saw::header(invite, rendered), Some("rig"), "{invite}");
        assert_eq!(Saw::header(invite, not), None, "{invite}");
        for dropped in [
            "X-PH-PH-Secret",
            "X-PH-Secret",
            "X-ClientRegion",
            "X-PH-ClientRegion",
        ] {
            assert_eq!(Saw::header(invite, dropped), None, "{invite}");
        }
    }
}

#[test]
fn a_caller_without_an_offer_gets_the_far_ends_and_its_answer_goes_on_in_the_ack() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let (c, p) = (rig.caller(0), rig.caller(1));
    let (answer, xml) = answer_server(&rig);
    let app = acl_app(&agent, &answer, c, "");
    for tcp in [false, true] {
        let prov = Provider::start(
            &p.ns,
            SocketAddr::new(p.v4, 6311 + u16::from(tcp)),
            tcp,
            Script::new(true, Then::Answer),
        );
        *xml.lock().unwrap() = dial(&user(&prov.uri(), "Team=rig"));
        let (mut call, fin) = call_app(c, &app, "caller", tcp, None);
        assert_eq!(fin.code, 200, "{}", fin.raw);
        assert!(
            fin.raw.contains(PROVIDER_OFFER),
            "the far end's offer: {}",
            fin.raw
        );
        talk_and_hang_up(&mut call, Some(CALLER_ANSWER));
        let saw = prov.finish(Duration::from_secs(2));
        let invites = saw.of("INVITE");
        assert!(
            Saw::body(invites.last().unwrap()).is_empty(),
            "no offer in the leg's INVITE"
        );
        let acks = saw.of("ACK");
        let ack_2xx = acks.last().expect("the 2xx ACK");
        assert!(
            Saw::body(ack_2xx).contains("m=audio 5002"),
            "tcp={tcp}: the caller's answer in the leg's ACK: {ack_2xx}"
        );
        assert!(saw.bye);
    }
}

#[test]
fn dial_rings_every_target_and_the_first_answer_wins() {
    let rig = Rig::new(2);
    let mut opts = Options::default();
    opts.sip_extra = format!(
        "{}number_gateway = \"sip:{{number}}@{}:6323\"\n",
        opts.sip_extra,
        rig.caller(1).v4
    );
    let agent = Agent::start(&rig, &opts);
    let (c, p) = (rig.caller(0), rig.caller(1));
    let (answer, xml) = answer_server(&rig);
    let app = acl_app(&agent, &answer, c, "");
    let busy = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6321),
        false,
        Script::new(true, Then::Final(486)),
    );
    let ringing = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6322),
        true,
        Script::new(false, Then::Ring),
    );
    // The number gateway answers.
    let gateway = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6323),
        false,
        Script::new(false, Then::Answer),
    );
    *xml.lock().unwrap() = dial(&format!(
        "{}{}<Number>+15550109999</Number>",
        user(&busy.uri(), "Team=rig"),
        user(&ringing.uri(), "Team=rig")
    ));
    let (mut call, fin) = call_app(c, &app, "caller", false, Some(CALLER_OFFER));
    assert_eq!(fin.code, 200, "{}\n{}", fin.raw, agent.log());
    assert!(fin.raw.contains(PROVIDER_ANSWER), "{}", fin.raw);
    talk_and_hang_up(&mut call, None);
    let g = gateway.finish(Duration::from_secs(2));
    let invite = g.of("INVITE")[0];
    assert!(
        invite.starts_with("INVITE sip:+15550109999@"),
        "the number at the gateway: {invite}"
    );
    assert!(g.bye, "{g:?}");
    let b = busy.finish(Duration::from_millis(200));
    assert_eq!(b.of("INVITE").len(), 2, "challenged, then busy: {b:?}");
    let r = ringing.finish(Duration::from_secs(2));
    assert_eq!(
        r.of("CANCEL").len(),
        1,
        "the ringing leg is cancelled: {r:?}"
    );
    let h = hangup_hit(&answer, "/hangup", None);
    assert_eq!(h.params["HangupCauseName"], "normal_hangup");
}

#[test]
fn an_answer_crossing_the_callers_cancel_is_acked_and_hung_up() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let (c, p) = (rig.caller(0), rig.caller(1));
    let (answer, xml) = answer_server(&rig);
    let app = acl_app(&agent, &answer, c, "");
    for tcp in [false, true] {
        let prov = Provider::start(
            &p.ns,
            SocketAddr::new(p.v4, 6331 + u16::from(tcp)),
            tcp,
            Script::new(true, Then::RingThenAnswerTheCancel),
        );
        *xml.lock().unwrap() = dial(&user(&prov.uri(), "Team=rig"));
        let mut call = Caller::invite(
            &c.ns,
            c.v4,
            edge_of(c),
            &app,
            "caller",
            tcp,
            Some(CALLER_OFFER),
        );
        assert_eq!(call.wait_ringing(Duration::from_secs(5)), Some(180));
        assert!(call.cancel());
        let fin = call.final_response(Duration::from_secs(5)).expect("final");
        assert_eq!(fin.code, 487, "{}", fin.raw);
        let saw = prov.finish(Duration::from_secs(3));
        assert_eq!(saw.of("CANCEL").len(), 1, "{saw:?}");
        // The 2xx that crossed the CANCEL: ACKed (after the 407's ACK),
        // then a BYE.
        assert!(saw.of("ACK").len() >= 2, "tcp={tcp}: {saw:?}");
        assert!(
            saw.bye,
            "tcp={tcp}: the crossing answer is hung up: {saw:?}"
        );
    }
    let h = hangup_hit(&answer, "/hangup", None);
    assert_eq!(h.params["HangupCauseName"], "cancelled");
}

fn make_call(agent: &Agent<'_>, answer: &AnswerServer, to: &str) -> String {
    let v = agent.create(
        "Call/",
        &json!({
            "from": "15550001111",
            "to": to,
            "answer_url": answer.url("/answer"),
            "hangup_url": answer.url("/hangup"),
            "sip_auth_username": USER,
            "sip_auth_password": PASSWORD,
        }),
    );
    id(&v, "request_uuid")
}

#[test]
fn dial_in_a_make_call_answer_joins_the_two_parties_by_reinvite() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let p = rig.caller(1);
    let (answer, xml) = answer_server(&rig);
    for tcp in [false, true] {
        let base = 6341 + 2 * u16::from(tcp);
        let a = Provider::start(
            &p.ns,
            SocketAddr::new(p.v4, base),
            tcp,
            Script::new(true, Then::Answer),
        );
        let b = Provider::start(
            &p.ns,
            SocketAddr::new(p.v4, base + 1),
            tcp,
            Script {
                bye_after: Some(Duration::from_millis(300)),
                ..Script::new(true, Then::Answer)
            },
        );
        *xml.lock().unwrap() = format!(
            r#"<?xml version="1.0"?><Response><Dial>{}</Dial><Hangup/></Response>"#,
            user(&b.uri(), "Team=rig")
        );
        let uuid = make_call(&agent, &answer, &a.uri());
        let rec = record(&agent, &uuid);
        assert_eq!(
            rec["hangup_cause_name"],
            "normal_hangup",
            "{rec}\n{}",
            agent.log()
        );
        assert_eq!(rec["call_status"], "completed");
        let sa = a.finish(Duration::from_secs(3));
        let sb = b.finish(Duration::from_secs(3));
        // B was INVITEd without an offer and offered in its 200.
        let b_invite = sb.of("INVITE").last().copied().unwrap().to_owned();
        assert!(Saw::body(&b_invite).is_empty(), "{b_invite}");
        // A got B's offer in a re-INVITE of its dialog...
        let a_invites = sa.of("INVITE");
        let reinvite = a_invites
            .iter()
            .find(|r| Saw::header(r, "To").is_some_and(|t| t.contains("tag=")))
            .unwrap_or_else(|| panic!("tcp={tcp}: no re-INVITE at A: {sa:?}"));
        assert!(Saw::body(reinvite).contains(PROVIDER_OFFER), "{reinvite}");
        // ...and A's answer reached B in the ACK.
        let b_ack = sb.of("ACK").last().copied().unwrap().to_owned();
        assert!(
            Saw::body(&b_ack).contains(PROVIDER_ANSWER),
            "tcp={tcp}: {b_ack}"
        );
        // B hung up; the XML went on to <Hangup/>: A got a BYE.
        assert!(sb.bye && sa.bye, "tcp={tcp}: {sa:?} {sb:?}");
        let h = hangup_hit(&answer, "/hangup", Some(&uuid));
        assert_eq!(h.params["HangupCauseName"], "normal_hangup");
    }
}

#[test]
fn dial_in_a_make_call_answer_that_reaches_nobody_ends_with_the_dials_cause() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let p = rig.caller(1);
    let (answer, xml) = answer_server(&rig);
    let a = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6351),
        false,
        Script::new(true, Then::Answer),
    );
    let b = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6352),
        false,
        Script::new(true, Then::Answer),
    );
    // B's credentials are wrong: the Dial fails with sip_auth_failed.
    *xml.lock().unwrap() = format!(
        r#"<?xml version="1.0"?><Response><Dial><User sipAuthUsername="{USER}" sipAuthPassword="Wrong-Pass-5519">{}</User></Dial></Response>"#,
        b.uri()
    );
    let uuid = make_call(&agent, &answer, &a.uri());
    let rec = record(&agent, &uuid);
    assert_eq!(
        rec["hangup_cause_name"],
        "sip_auth_failed",
        "{rec}\n{}",
        agent.log()
    );
    assert_eq!(rec["hangup_cause_code"], 4240);
    assert_eq!(rec["call_status"], "failed");
    let sa = a.finish(Duration::from_secs(3));
    assert!(sa.bye, "A is hung up: {sa:?}");
    let sb = b.finish(Duration::from_millis(200));
    assert_eq!(sb.of("INVITE").len(), 2, "{sb:?}");
    let log = agent.stop();
    for secret in [PASSWORD, "Wrong-Pass-5519"] {
        assert!(!log.contains(secret), "a password in the log");
        assert!(!rec.to_string().contains(secret));
        for h in answer.hits() {
            assert!(!h.raw.contains(secret), "{h:?}");
        }
    }
}

#[test]
fn reinvites_cross_the_bridge_both_ways() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let (c, p) = (rig.caller(0), rig.caller(1));
    let (answer, xml) = answer_server(&rig);
    let app = acl_app(&agent, &answer, c, "");
    for tcp in [false, true] {
        let prov = Provider::start(
            &p.ns,
            SocketAddr::new(p.v4, 6361 + u16::from(tcp)),
            tcp,
            Script {
                reinvite_after: Some(Duration::from_millis(300)),
                ..Script::new(true, Then::Answer)
            },
        );
        *xml.lock().unwrap() = dial(&user(&prov.uri(), "Team=rig"));
        let (mut call, fin) = call_app(c, &app, "caller", tcp, Some(CALLER_OFFER));
        assert_eq!(fin.code, 200, "{}", fin.raw);
        call.ack(None);
        // The provider's re-INVITE reaches the caller with its new offer;
        // the caller's answer goes back in the 200.
        let (reinvite, _ack) = call
            .answer_reinvite(CALLER_ANSWER, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("tcp={tcp}: no re-INVITE at the caller\n{}", agent.log()));
        assert_eq!(
            Saw::body(&reinvite),
            REOFFER,
            "the provider's offer as it was"
        );
        assert!(!reinvite.contains("Proxy-Authorization"), "{reinvite}");
        // The caller's own re-INVITE (hold, say) reaches the provider.
        let held = CALLER_OFFER.replace(
            "m=audio 5000 RTP/AVP 0\r\n",
            "m=audio 5000 RTP/AVP 0\r\na=sendonly\r\n",
        );
        let (code, resp) = call.reinvite(&held).expect("re-INVITE answered");
        assert_eq!(code, 200, "{resp}");
        assert!(resp.contains(PROVIDER_ANSWER), "{resp}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(call.bye(), Some(200));
        let saw = prov.finish(Duration::from_secs(2));
        let at_provider: Vec<&str> = saw
            .of("INVITE")
            .into_iter()
            .filter(|r| Saw::header(r, "To").is_some_and(|t| t.contains("tag=")))
            .collect();
        assert_eq!(at_provider.len(), 1, "tcp={tcp}: {saw:?}");
        assert!(
            Saw::body(at_provider[0]).contains("a=sendonly"),
            "{}",
            at_provider[0]
        );
        let answered = saw
            .responses
            .iter()
            .find(|r| r.contains(" INVITE\r\n") && r.starts_with("SIP/2.0 200"))
            .unwrap_or_else(|| panic!("tcp={tcp}: the provider's re-INVITE answered: {saw:?}"));
        assert!(Saw::body(answered).contains("m=audio 5002"), "{answered}");
        assert!(saw.bye);
    }
}

#[test]
fn an_in_dialog_invite_of_no_dialog_gets_481() {
    let rig = Rig::new(1);
    let agent = Agent::start(&rig, &Options::default());
    let c = rig.caller(0);
    let (answer, _xml) = answer_server(&rig);
    let app = acl_app(&agent, &answer, c, "");
    let mut call = Caller::invite(
        &c.ns,
        c.v4,
        edge_of(c),
        &app,
        "caller",
        false,
        Some(CALLER_OFFER),
    );
    // The first INVITE gets the answer_url's (empty) XML: 480.
    let fin = call.final_response(Duration::from_secs(5)).expect("final");
    assert_eq!(fin.code, 480, "{}", fin.raw);
    // A re-INVITE in the dialog the edge never made is not a new call.
    let (code, _) = call.reinvite(CALLER_OFFER).expect("answered");
    assert_eq!(code, 481);
    assert_eq!(
        answer.hits_on("/answer").len(),
        1,
        "no second answer_url fetch"
    );
}

#[test]
fn info_and_update_cross_the_bridge_both_ways() {
    let rig = Rig::new(2);
    let agent = Agent::start(&rig, &Options::default());
    let (c, p) = (rig.caller(0), rig.caller(1));
    let (answer, xml) = answer_server(&rig);
    let app = acl_app(&agent, &answer, c, "");
    for tcp in [false, true] {
        let prov = Provider::start(
            &p.ns,
            SocketAddr::new(p.v4, 6371 + u16::from(tcp)),
            tcp,
            Script {
                info_after: Some(Duration::from_millis(300)),
                ..Script::new(true, Then::Answer)
            },
        );
        *xml.lock().unwrap() = dial(&user(&prov.uri(), "Team=rig"));
        let (mut call, fin) = call_app(c, &app, "caller", tcp, Some(CALLER_OFFER));
        assert_eq!(fin.code, 200, "{}", fin.raw);
        call.ack(None);
        // The provider's DTMF INFO reaches the caller, body and type intact.
        let info = call
            .answer_request("INFO", Duration::from_secs(5))
            .unwrap_or_else(|| panic!("tcp={tcp}: no INFO at the caller\n{}", agent.log()));
        assert_eq!(Saw::body(&info), DTMF, "{info}");
        assert_eq!(
            Saw::header(&info, "Content-Type"),
            Some("application/dtmf-relay")
        );
        // The caller's UPDATE (a new offer) and INFO reach the provider.
        let (code, resp) = call
            .in_dialog("UPDATE", "application/sdp", CALLER_OFFER)
            .expect("UPDATE answered");
        assert_eq!(code, 200, "{resp}");
        assert!(
            resp.contains(PROVIDER_ANSWER),
            "the provider's answer: {resp}"
        );
        let (code, _) = call
            .in_dialog(
                "INFO",
                "application/dtmf-relay",
                "Signal=7\r\nDuration=100\r\n",
            )
            .expect("INFO answered");
        assert_eq!(code, 200);
        assert_eq!(call.bye(), Some(200));
        let saw = prov.finish(Duration::from_secs(2));
        let update = saw.of("UPDATE");
        assert_eq!(update.len(), 1, "tcp={tcp}: {saw:?}");
        assert!(
            Saw::body(update[0]).contains("m=audio 5000"),
            "{}",
            update[0]
        );
        let infos = saw.of("INFO");
        assert_eq!(infos.len(), 1, "{saw:?}");
        assert_eq!(Saw::body(infos[0]), "Signal=7\r\nDuration=100\r\n");
        assert!(
            saw.responses
                .iter()
                .any(|r| r.starts_with("SIP/2.0 200") && r.contains(" INFO\r\n")),
            "the provider's INFO answered: {saw:?}"
        );
        assert!(saw.bye);
    }
}

#[test]
fn make_call_to_a_number_ring_timeout_and_time_limit() {
    let rig = Rig::new(2);
    let p = rig.caller(1);
    let mut opts = Options::default();
    opts.sip_extra = format!(
        "{}number_gateway = \"sip:{{number}}@{}:6381\"\n",
        opts.sip_extra, p.v4
    );
    let agent = Agent::start(&rig, &opts);
    let (answer, xml) = answer_server(&rig);
    // A number goes to the gateway; the answered call ends at its
    // time_limit although the XML waits 30 s.
    let gateway = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6381),
        false,
        Script::new(false, Then::Answer),
    );
    *xml.lock().unwrap() = r#"<Response><Wait length="30"/></Response>"#.to_owned();
    let t = std::time::Instant::now();
    let v = agent.create(
        "Call/",
        &json!({
            "from": "15550001111",
            "to": "+15550001234",
            "answer_url": answer.url("/answer"),
            "hangup_url": answer.url("/hangup"),
            "time_limit": 1,
        }),
    );
    let rec = record(&agent, &id(&v, "request_uuid"));
    assert_eq!(
        rec["hangup_cause_name"],
        "normal_hangup",
        "{rec}\n{}",
        agent.log()
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let saw = gateway.finish(Duration::from_secs(2));
    assert!(
        saw.of("INVITE")[0].starts_with("INVITE sip:+15550001234@"),
        "{saw:?}"
    );
    assert!(saw.bye, "hung up at the time limit: {saw:?}");
    // ring_timeout: a far end that only rings is cancelled after it.
    let ringing = Provider::start(
        &p.ns,
        SocketAddr::new(p.v4, 6382),
        false,
        Script::new(true, Then::Ring),
    );
    let t = std::time::Instant::now();
    let v = agent.create(
        "Call/",
        &json!({
            "from": "15550001111",
            "to": ringing.uri(),
            "answer_url": answer.url("/answer"),
            "sip_auth_username": USER,
            "sip_auth_password": PASSWORD,
            "ring_timeout": 1,
        }),
    );
    let rec = record(&agent, &id(&v, "request_uuid"));
    assert_eq!(rec["hangup_cause_name"], "no_answer", "{rec}");
    assert_eq!(rec["call_status"], "no-answer");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let saw = ringing.finish(Duration::from_secs(2));
    assert_eq!(saw.of("CANCEL").len(), 1, "{saw:?}");
    // Without a gateway for it, a number is not dialled at all.
    let (s, v) = agent.api(
        "POST",
        "Call/",
        Some(&json!({"from": "1", "to": "12", "answer_url": answer.url("/answer"), "ring_timeout": 0})),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ring_timeout"),
        "{v}"
    );
}
