//! Outbound legs over real SIP: the Make Call API dials a provider in caller
//! 2's namespace that challenges (sipp UAS scenarios checking the answers
//! with `verifyauth`, and a plain socket provider checking SHA-256 answers
//! with the digest crate). Every outcome is read back from the call record
//! and the signed hangup_url callback; no password may show anywhere.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::{AnswerServer, Hit};
use sipauth_tests::calls::{hangup_hit, no_secret_anywhere, record, sipp_provider, sipp_result};
use sipauth_tests::topo::{Link, Rig};

const ANSWER: &str = "127.0.0.1:8090";
const HANGUP: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#;
const USER: &str = "prov-user";
/// The password the sipp scenarios check.
const PASSWORD: &str = "Prov-Pass-7781";
const WRONG: &str = "Wrong-Pass-5519";
const REALM: &str = "provider.test";

fn options(timer_b_ms: u64) -> Options {
    let mut o = Options::default();
    o.sip_extra = format!("{}outbound_timer_b_ms = {timer_b_ms}\n", o.sip_extra);
    o
}

fn start(rig: &Rig, timer_b_ms: u64) -> (Agent<'_>, AnswerServer) {
    let agent = Agent::start(rig, &options(timer_b_ms));
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), HANGUP, RIG_AUTH_TOKEN);
    (agent, answer)
}

/// `POST Call/`; returns the call's uuid.
fn make_call(agent: &Agent<'_>, answer: &AnswerServer, to: &str, password: Option<&str>) -> String {
    let mut body = json!({
        "from": "15550001111",
        "to": to,
        "answer_url": answer.url("/answer"),
        "hangup_url": answer.url("/hangup"),
        "sip_headers": "Team=rig,PH-Secret=dropped",
    });
    if let Some(p) = password {
        body["sip_auth_username"] = json!(USER);
        body["sip_auth_password"] = json!(p);
    }
    let v = agent.create("Call/", &body);
    v["request_uuid"].as_str().expect("request_uuid").to_owned()
}

/// Checks the record and the hangup callback of `uuid`.
fn expect_end(
    agent: &Agent<'_>,
    answer: &AnswerServer,
    uuid: &str,
    status: &str,
    cause: (&str, i64),
) {
    let rec = record(agent, uuid);
    let h = hangup_hit(answer, "/hangup", Some(uuid));
    sipauth_tests::calls::expect_end(uuid, &h, &rec, status, cause);
    assert_eq!(rec["direction"], "outbound", "{rec}");
    assert_eq!(h.params["Direction"], "outbound");
}

fn provider_uri(p: &Link, port: u16, tcp: bool) -> String {
    format!(
        "sip:bob@{}:{port}{}",
        p.v4,
        if tcp { ";transport=tcp" } else { "" }
    )
}

#[test]
fn proxy_auth_407_right_password_over_udp_and_tcp() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, 32_000);
    let p = rig.caller(1);
    let mut records = Vec::new();
    for (port, tcp) in [(5071, false), (5072, true)] {
        let sipp = sipp_provider(p, "provider_407.xml", port, tcp);
        let uuid = make_call(&agent, &answer, &provider_uri(p, port, tcp), Some(PASSWORD));
        sipp_result(sipp).unwrap_or_else(|e| panic!("tcp={tcp}: {e}\n{}", agent.log()));
        expect_end(&agent, &answer, &uuid, "completed", ("normal_hangup", 4000));
        let hits: Vec<Hit> = answer
            .hits_on("/answer")
            .into_iter()
            .filter(|h| h.params.get("CallUUID") == Some(&uuid))
            .collect();
        assert_eq!(hits.len(), 1, "answer_url fetched once: {hits:?}");
        assert!(hits[0].signature_ok);
        assert_eq!(hits[0].params["Direction"], "outbound");
        records.push(record(&agent, &uuid));
    }
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &records, &[PASSWORD]);
}

#[test]
fn www_auth_401_and_wrong_password() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, 32_000);
    let p = rig.caller(1);
    let sipp = sipp_provider(p, "provider_401.xml", 5073, false);
    let ok = make_call(
        &agent,
        &answer,
        &provider_uri(p, 5073, false),
        Some(PASSWORD),
    );
    sipp_result(sipp).unwrap();
    expect_end(&agent, &answer, &ok, "completed", ("normal_hangup", 4000));
    // The provider (verifyauth) answers a wrong password with 403.
    let sipp = sipp_provider(p, "provider_401.xml", 5074, false);
    let wrong = make_call(&agent, &answer, &provider_uri(p, 5074, false), Some(WRONG));
    sipp_result(sipp).unwrap();
    expect_end(&agent, &answer, &wrong, "failed", ("sip_auth_failed", 4240));
    let records = vec![record(&agent, &ok), record(&agent, &wrong)];
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &records, &[PASSWORD, WRONG]);
}

#[test]
fn second_challenge_without_stale_is_auth_failed() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, 32_000);
    let p = rig.caller(1);
    let sipp = sipp_provider(p, "provider_407_twice.xml", 5075, false);
    let uuid = make_call(
        &agent,
        &answer,
        &provider_uri(p, 5075, false),
        Some(PASSWORD),
    );
    sipp_result(sipp).unwrap();
    expect_end(&agent, &answer, &uuid, "failed", ("sip_auth_failed", 4240));
    assert!(
        answer.hits_on("/answer").is_empty(),
        "no answer_url for a call never answered"
    );
    let records = vec![record(&agent, &uuid)];
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &records, &[PASSWORD]);
}

/// What the plain socket provider does with an INVITE that carries
/// credentials.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Verify (SHA-256 must be chosen) and answer 200.
    Answer,
    /// Re-challenge once with stale=true, then verify and answer 200.
    StaleOnce,
    /// Never answer the INVITE with credentials.
    Silent,
    /// Answer the first INVITE with this final status, no challenge.
    Final(u16),
    /// Answer nothing at all.
    Deaf,
}

/// One INVITE the provider saw: whether it carried credentials, their
/// algorithm and the verdict of sipauth_digest::verify.
#[derive(Debug, Clone)]
struct Seen {
    authorized: bool,
    algorithm: Option<String>,
    verdict: String,
    cseq: u32,
    call_id: String,
    from_tag: String,
    branch: String,
}

/// What the provider saw: the INVITEs, the branches of the ACKs, and
/// whether the call ended with a BYE.
struct Saw {
    invites: Vec<Seen>,
    acks: Vec<String>,
    bye: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A provider on a plain UDP socket in `p`'s namespace that challenges
/// with MD5 and SHA-256 (MD5 first) and checks the answer with the digest
/// crate. Runs until BYE or until `stop` is set.
fn raw_provider(
    p: &Link,
    port: u16,
    mode: Mode,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Saw> {
    let addr = SocketAddr::new(p.v4, port);
    let sock = p.ns.enter(|| UdpSocket::bind(addr).expect("bind provider"));
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let key = sipauth_digest::NonceKey::random();
        let nc = sipauth_digest::NcTracker::new(300, 1000);
        let ha1 = sipauth_digest::Ha1Set::new(USER, REALM, PASSWORD);
        let mut seen = Vec::new();
        let mut acks = Vec::new();
        let mut stale_sent = false;
        let mut buf = vec![0u8; 65_535];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, src)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = sipauth_sip::parse(&buf[..n]) else {
                continue;
            };
            if mode == Mode::Deaf {
                continue;
            }
            let send = |code: u16, extra: &[(&str, &str)], body: &[u8]| {
                let r = sipauth_sip::build::response(
                    &m,
                    code,
                    sipauth_sip::build::reason_phrase(code),
                    src,
                    Some("prov1"),
                    extra,
                    body,
                );
                sock.send_to(&r, src).unwrap();
            };
            let challenge = |stale: bool| {
                let nonce = key.issue(REALM, unix_now());
                [
                    sipauth_digest::Algorithm::Md5,
                    sipauth_digest::Algorithm::Sha256,
                ]
                .map(|a| sipauth_digest::challenge(a, REALM, &nonce, None, stale))
            };
            match m.method() {
                Some("INVITE") => {
                    let creds = m
                        .header("Proxy-Authorization")
                        .and_then(|v| sipauth_sip::parse_credentials(v).ok());
                    let verdict = creds.map(|c| {
                        sipauth_digest::verify(
                            &c,
                            "INVITE",
                            REALM,
                            &key,
                            &nc,
                            unix_now(),
                            300,
                            |u| (u == USER).then(|| ha1.clone()),
                        )
                    });
                    // A retransmission of an INVITE already judged (a
                    // replayed nonce count) is counted but not answered
                    // again.
                    let verdict_text = verdict.as_ref().map(|v| format!("{v:?}"));
                    seen.push(Seen {
                        authorized: creds.is_some(),
                        algorithm: creds.and_then(|c| c.algorithm).map(str::to_owned),
                        verdict: verdict_text.clone().unwrap_or_default(),
                        cseq: m.cseq().unwrap().0,
                        call_id: m.call_id().unwrap().to_owned(),
                        from_tag: m.from().unwrap().tag.unwrap_or("").to_owned(),
                        branch: m.top_via().unwrap().branch.unwrap_or("").to_owned(),
                    });
                    if let Mode::Final(code) = mode {
                        send(code, &[], b"");
                        continue;
                    }
                    let ok = verdict_text.as_deref() == Some("Ok");
                    if creds.is_none() || (mode == Mode::StaleOnce && !stale_sent && ok) {
                        let stale = creds.is_some();
                        stale_sent |= stale;
                        let values = challenge(stale);
                        let extra: Vec<(&str, &str)> = values
                            .iter()
                            .map(|v| ("Proxy-Authenticate", v.as_str()))
                            .collect();
                        send(407, &extra, b"");
                    } else if mode != Mode::Silent && ok {
                        let contact = format!("<sip:provider@{addr}>");
                        let sdp = "v=0\r\no=- 1 1 IN IP4 10.201.2.2\r\ns=-\r\nc=IN IP4 10.201.2.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
                        send(
                            200,
                            &[("Contact", &contact), ("Content-Type", "application/sdp")],
                            sdp.as_bytes(),
                        );
                    } else if mode != Mode::Silent && verdict_text.as_deref() != Some("Replay") {
                        send(403, &[], b"");
                    }
                }
                Some("BYE") => {
                    send(200, &[], b"");
                    return Saw {
                        invites: seen,
                        acks,
                        bye: true,
                    };
                }
                Some("ACK") => acks.push(m.top_via().unwrap().branch.unwrap_or("").to_owned()),
                _ => {}
            }
        }
        Saw {
            invites: seen,
            acks,
            bye: false,
        }
    })
}

#[test]
fn sha256_is_chosen_over_md5_and_verifies() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, 32_000);
    let p = rig.caller(1);
    let stop = Arc::new(AtomicBool::new(false));
    let provider = raw_provider(p, 5076, Mode::Answer, stop.clone());
    let uuid = make_call(
        &agent,
        &answer,
        &provider_uri(p, 5076, false),
        Some(PASSWORD),
    );
    expect_end(&agent, &answer, &uuid, "completed", ("normal_hangup", 4000));
    stop.store(true, Ordering::Relaxed);
    let Saw {
        invites: seen,
        acks,
        bye,
    } = provider.join().unwrap();
    assert!(bye, "the edge hung up with BYE: {seen:?}");
    // The 407 is ACKed on its INVITE's branch; the 2xx ACK has its own.
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_eq!(acks[0], seen[0].branch);
    assert!(!seen.iter().any(|s| s.branch == acks[1]));
    assert!(!seen[0].authorized);
    let authed: Vec<&Seen> = seen.iter().filter(|s| s.authorized).collect();
    assert!(!authed.is_empty(), "{seen:?}");
    assert_eq!(authed[0].algorithm.as_deref(), Some("SHA-256"), "{seen:?}");
    assert_eq!(authed[0].verdict, "Ok", "{seen:?}");
    // The re-sent INVITE keeps Call-ID and From-tag and bumps CSeq.
    assert_eq!(authed[0].call_id, seen[0].call_id);
    assert_eq!(authed[0].from_tag, seen[0].from_tag);
    assert_eq!(authed[0].cseq, seen[0].cseq + 1);
    let records = vec![record(&agent, &uuid)];
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &records, &[PASSWORD]);
}

#[test]
fn a_stale_rechallenge_is_answered_once_more() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, 32_000);
    let p = rig.caller(1);
    let stop = Arc::new(AtomicBool::new(false));
    let provider = raw_provider(p, 5077, Mode::StaleOnce, stop.clone());
    let uuid = make_call(
        &agent,
        &answer,
        &provider_uri(p, 5077, false),
        Some(PASSWORD),
    );
    expect_end(&agent, &answer, &uuid, "completed", ("normal_hangup", 4000));
    stop.store(true, Ordering::Relaxed);
    let Saw {
        invites: seen, bye, ..
    } = provider.join().unwrap();
    assert!(bye, "{seen:?}");
    let cseqs: Vec<u32> = seen.iter().map(|s| s.cseq).collect();
    assert_eq!(cseqs, vec![1, 2, 3], "{seen:?}");
}

#[test]
fn no_final_answer_after_credentials_is_auth_timeout() {
    let rig = Rig::new(2);
    // Timer B of 2 s: the authenticated INVITE goes out at 0, 0.5 and 1.5 s.
    let (agent, answer) = start(&rig, 2_000);
    let p = rig.caller(1);
    let stop = Arc::new(AtomicBool::new(false));
    let provider = raw_provider(p, 5078, Mode::Silent, stop.clone());
    let uuid = make_call(
        &agent,
        &answer,
        &provider_uri(p, 5078, false),
        Some(PASSWORD),
    );
    expect_end(
        &agent,
        &answer,
        &uuid,
        "timeout",
        ("sip_auth_timeout", 4250),
    );
    stop.store(true, Ordering::Relaxed);
    let seen = provider.join().unwrap().invites;
    let authed = seen.iter().filter(|s| s.authorized).count();
    assert_eq!(authed, 3, "Timer A retransmissions: {seen:?}");
    assert!(seen.iter().filter(|s| s.authorized).all(|s| s.cseq == 2));
    let records = vec![record(&agent, &uuid)];
    let log = agent.stop();
    no_secret_anywhere(&log, &answer, &records, &[PASSWORD]);
}

#[test]
fn no_response_at_all_is_timeout() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, 1_000);
    let p = rig.caller(1);
    let stop = Arc::new(AtomicBool::new(false));
    let provider = raw_provider(p, 5079, Mode::Deaf, stop.clone());
    let uuid = make_call(
        &agent,
        &answer,
        &provider_uri(p, 5079, false),
        Some(PASSWORD),
    );
    expect_end(&agent, &answer, &uuid, "timeout", ("request_timeout", 4100));
    stop.store(true, Ordering::Relaxed);
    provider.join().unwrap();
}

#[test]
fn final_failures_map_to_their_causes_and_are_acked() {
    let rig = Rig::new(2);
    let (agent, answer) = start(&rig, 32_000);
    let p = rig.caller(1);
    let cases = [
        (486, "busy", ("busy_line", 4010)),
        (600, "busy", ("busy_line", 4010)),
        (480, "no-answer", ("no_answer", 4090)),
        (408, "no-answer", ("no_answer", 4090)),
        (603, "failed", ("rejected", 4020)),
        (404, "failed", ("destination_failed", 4110)),
        (503, "failed", ("destination_failed", 4110)),
    ];
    for (i, (code, status, cause)) in cases.into_iter().enumerate() {
        let port = 5080 + u16::try_from(i).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let provider = raw_provider(p, port, Mode::Final(code), stop.clone());
        let uuid = make_call(&agent, &answer, &provider_uri(p, port, false), None);
        expect_end(&agent, &answer, &uuid, status, cause);
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        let saw = provider.join().unwrap();
        assert_eq!(saw.invites.len(), 1, "{code}");
        assert_eq!(
            saw.acks,
            vec![saw.invites[0].branch.clone()],
            "{code}: ACK on the INVITE's branch"
        );
    }
}
