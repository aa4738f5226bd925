//! Tests of the whole edge: [`Edge::handle`] from a datagram to the
//! responses it sends back, through the SIP layer and the dialog table.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::Edge;
use crate::sip::dialog::Event;
use crate::transport::Replier;

/// What calls share, for tests: records go to `sink`, callbacks time out
/// after a second, outbound legs resolve nothing.
pub(crate) fn test_calls(
    sink: crate::records::Sink,
    metrics: Arc<crate::metrics::Metrics>,
) -> Arc<crate::records::Calls> {
    use crate::outbound;
    crate::records::Calls::new(
        sipauth_callback::Client::new(std::time::Duration::from_secs(1)),
        sink,
        metrics,
        outbound::Settings {
            timers: outbound::Timers::default(),
            number_gateway: None,
            resolver: outbound::resolve::Resolver::none(),
            tls: None,
            udp: outbound::conn::UdpPool::default(),
        },
    )
}

/// A real edge with no applications and in-memory lockouts, for tests.
pub(crate) fn test_edge() -> Arc<Edge> {
    test_edge_with(
        crate::view::Views::new().subscribe(),
        16,
        crate::records::Sink::remote(
            "http://127.0.0.1:9/v1/Edge/Calls".to_owned(),
            String::new(),
            reqwest::Client::new(),
        ),
    )
}

/// A real edge that follows `view`, carries `max_inbound_calls` calls at
/// once and writes its call records to `sink`.
fn test_edge_with(
    view: crate::view::View,
    max_inbound_calls: u32,
    sink: crate::records::Sink,
) -> Arc<Edge> {
    use crate::DigestSettings;
    use sipauth_kernel::lockout::Lockouts;
    use sipauth_kernel::maps::LockoutPolicy as Policy;

    let metrics = Arc::new(crate::metrics::Metrics::new());
    let calls = test_calls(sink, metrics.clone());
    Edge::new(
        Arc::new(Lockouts::memory(Policy::default(), &[])),
        metrics,
        view,
        DigestSettings {
            realm: "example.com".to_owned(),
            algorithms: vec![sipauth_digest::Algorithm::Md5],
            nonce_ttl_secs: 300,
            key: sipauth_digest::NonceKey::random(),
            min_expires: 60,
            max_expires: 3600,
        },
        calls,
        &crate::Bounds {
            unproven_replies_per_sec: u32::MAX,
            max_inbound_calls,
        },
        &crate::cluster::Settings::default(),
    )
}

/// A request from the caller of a dialog whose Call-ID is c1 and whose
/// tag is ct.
fn dialog_request(method: &str, branch: &str, to_tag: Option<&str>) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} sip:app@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
     From: <sip:caller@192.0.2.1>;tag=ct\r\nTo: <sip:app@192.0.2.10>{to_tag}\r\n\
     Call-ID: c1\r\nCSeq: 2 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn req(start: &str, headers: &str) -> Vec<u8> {
    format!(
    "{start}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n\
     To: <sip:b@example.com>\r\nCall-ID: c1\r\nMax-Forwards: 70\r\n{headers}\r\n"
)
.into_bytes()
}

/// What the edge sends back to one datagram.
fn answer(data: &[u8]) -> (Option<String>, Arc<Edge>) {
    let edge = test_edge();
    let (replier, mut rx) = Replier::channel();
    edge.handle(data, "192.0.2.1:5060".parse().unwrap(), &replier);
    let got = rx
        .try_recv()
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    (got, edge)
}

#[tokio::test]
async fn the_edge_answers_refusals_once_and_drops_what_it_cannot_answer() {
    let ok = req(
        "OPTIONS sip:b@example.com SIP/2.0",
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n",
    );
    let (got, _) = answer(&ok);
    assert!(got.unwrap().starts_with("SIP/2.0 200 OK\r\n"));

    let v7 = req("OPTIONS sip:b@example.com SIP/7.0", "CSeq: 1 OPTIONS\r\n");
    let (got, edge) = answer(&v7);
    assert!(
        got.unwrap()
            .starts_with("SIP/2.0 505 Version Not Supported\r\n")
    );
    assert_eq!(edge.metrics.malformed.load(Relaxed), 0);

    let twice = req(
        "INVITE sip:b@example.com SIP/2.0",
        "CSeq: 1 INVITE\r\nCall-ID: c2\r\n",
    );
    let (got, edge) = answer(&twice);
    let got = got.unwrap();
    assert!(
        got.starts_with("SIP/2.0 400 Bad Request (Call-ID header appears more than once)\r\n"),
        "{got}"
    );
    assert!(got.contains(";tag="), "{got}");
    assert_eq!(edge.metrics.malformed.load(Relaxed), 1);

    // Content-Length beyond the datagram (RFC 3261 18.3): 400.
    let long = req(
        "INVITE sip:b@example.com SIP/2.0",
        "CSeq: 1 INVITE\r\nContent-Length: 500\r\n",
    );
    let (got, _) = answer(&long);
    let got = got.unwrap();
    assert!(
        got.starts_with("SIP/2.0 400 Bad Request (Content-Length 500"),
        "{got}"
    );
    assert!(got.contains("CSeq: 1 INVITE\r\n"), "{got}");

    // No answer: a malformed response, an ACK, a request without Via.
    for data in [
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 99999999999 INVITE\r\n\r\n"
            .to_vec(),
        req("ACK sip:b@example.com SIP/2.0", "CSeq: 1 INVITE\r\n"),
        b"OPTIONS sip:b@example.com SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n".to_vec(),
        b"\xff\xfe\x00junk".to_vec(),
    ] {
        let (got, edge) = answer(&data);
        assert_eq!(got, None, "{}", String::from_utf8_lossy(&data));
        assert_eq!(edge.metrics.dropped.load(Relaxed), 1);
        assert_eq!(edge.metrics.malformed.load(Relaxed), 1);
    }
}

/// What the edge sends back to one datagram.
fn answers(edge: &std::sync::Arc<crate::Edge>, data: &[u8]) -> Vec<String> {
    let (replier, mut rx) = Replier::channel();
    edge.handle(data, "192.0.2.1:5060".parse().unwrap(), &replier);
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|b| String::from_utf8(b).unwrap())
        .collect()
}

#[tokio::test]
async fn an_in_dialog_bye_reaches_its_dialog_and_an_unknown_one_gets_481() {
    let edge = test_edge();
    let mut events = edge.dialogs.insert("c1", "ct", "et");
    let got = answers(&edge, &dialog_request("BYE", "z9hG4bKb1", Some("et")));
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("SIP/2.0 200 OK\r\n"), "{}", got[0]);
    assert!(matches!(events.try_recv(), Ok(Event::Bye)));
    // Another dialog's tag, or none: not ours, and the dialog hears
    // nothing of it.
    for to_tag in [Some("other"), None] {
        let got = answers(&edge, &dialog_request("BYE", "z9hG4bKb2", to_tag));
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("SIP/2.0 481 Call/Transaction Does Not Exist\r\n"),
            "{}",
            got[0]
        );
    }
    assert!(events.try_recv().is_err());
    // 481 is stateless: no transaction is kept for it.
    assert_eq!(edge.txns.len(), 1);
    edge.dialogs.remove("c1", "ct");
    let got = answers(&edge, &dialog_request("BYE", "z9hG4bKb3", Some("et")));
    assert!(got[0].starts_with("SIP/2.0 481 "), "{}", got[0]);
}

#[tokio::test]
async fn a_re_invite_reaches_its_dialog_which_answers_it() {
    let edge = test_edge();
    let mut events = edge.dialogs.insert("c1", "ct", "et");
    let (replier, mut rx) = Replier::channel();
    let reinvite = dialog_request("INVITE", "z9hG4bKr1", Some("et"));
    edge.handle(&reinvite, "192.0.2.1:5060".parse().unwrap(), &replier);
    let trying = rx.try_recv().unwrap();
    assert!(trying.starts_with(b"SIP/2.0 100 Trying\r\n"));
    let Ok(Event::Reinvite(r)) = events.try_recv() else {
        panic!("the re-INVITE did not reach its dialog");
    };
    // The dialog's owner answers it, in its transaction, on its way back.
    let req = r.request();
    assert_eq!(req.msg().cseq(), Ok((2, "INVITE")));
    req.respond(488, "Not Acceptable Here", &[], b"");
    let answer = String::from_utf8(rx.try_recv().unwrap()).unwrap();
    assert!(
        answer.starts_with("SIP/2.0 488 Not Acceptable Here\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("To: <sip:app@192.0.2.10>;tag=et\r\n"),
        "{answer}"
    );
    edge.handle(&reinvite, "192.0.2.1:5060".parse().unwrap(), &replier);
    assert_eq!(rx.try_recv().unwrap(), answer.as_bytes());
    assert!(
        events.try_recv().is_err(),
        "a retransmission is not handed on"
    );
    // An ACK of the dialog goes to it; of no dialog, it is absorbed.
    assert!(answers(&edge, &dialog_request("ACK", "z9hG4bKa1", Some("et"))).is_empty());
    assert!(matches!(events.try_recv(), Ok(Event::Ack(_))));
    assert!(answers(&edge, &dialog_request("ACK", "z9hG4bKa2", Some("zz"))).is_empty());
    assert!(events.try_recv().is_err());
    // Without a dialog, a re-INVITE gets 481, not a judgement.
    let got = answers(&edge, &dialog_request("INVITE", "z9hG4bKr2", Some("zz")));
    assert!(got[0].starts_with("SIP/2.0 481 "), "{}", got[0]);
}

/// An answer_url server that answers each request `<Hangup/>` once `gate`
/// gives a permit; its URL and how many requests it has read.
async fn held_answer_server(
    gate: Arc<tokio::sync::Semaphore>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/answer", listener.local_addr().unwrap());
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (count, gate) = (count.clone(), gate.clone());
            tokio::spawn(async move {
                // The request: its head, then Content-Length bytes.
                let mut buf = Vec::new();
                let mut chunk = [0; 4096];
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                count.fetch_add(1, Relaxed);
                gate.acquire().await.unwrap().forget();
                let xml = "<Response><Hangup/></Response>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                    xml.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, asked)
}

/// Asserts that `got` is one answer, 503 with Retry-After.
fn assert_unavailable(got: &[String]) {
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("SIP/2.0 503 Service Unavailable\r\n")
            && got[0].contains("\r\nRetry-After: 5\r\n"),
        "{}",
        got[0]
    );
}

fn invite_to(app: &str, call_id: &str, branch: &str) -> Vec<u8> {
    format!(
        "INVITE sip:{app}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         From: <sip:caller@192.0.2.1>;tag=ct\r\nTo: <sip:{app}@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
         Contact: <sip:caller@192.0.2.1:5060>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Polls `done` every 5 ms for up to 5 s.
pub(crate) async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// The edge carries `max_inbound_calls` calls; one more, let in by
/// admission, gets 503 with Retry-After (again for its retransmission,
/// judged once) and leaves a record; a slot freed by a call's end takes
/// the next, until the edge stops taking calls.
#[tokio::test]
async fn past_max_inbound_calls_an_invite_gets_503_with_retry_after() {
    use sipauth_model::snapshot::{Account, Acl, Application, AuthType, Snapshot};

    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (answer_url, asked) = held_answer_server(gate.clone()).await;
    let (sink, mut records) = crate::records::test_control_plane(0).await;
    let views = crate::view::Views::new();
    views.apply(Snapshot {
        version: 1,
        accounts: vec![Account {
            auth_id: "MAFULLTEST1".to_owned(),
            auth_token: "a-token-of-sixteen-or-more".to_owned(),
        }],
        applications: vec![Application {
            app_id: "app1".to_owned(),
            account: "MAFULLTEST1".to_owned(),
            answer_url,
            answer_method: "POST".to_owned(),
            hangup_url: None,
            hangup_method: "POST".to_owned(),
            sip_auth_type: AuthType::IpAcl,
            credential_uuid: None,
            ip_acl_uuid: Some("acl1".to_owned()),
            challenge_algorithms: Vec::new(),
        }],
        acls: vec![Acl {
            uuid: "acl1".to_owned(),
            account: "MAFULLTEST1".to_owned(),
            entries: vec!["192.0.2.0/24".parse().unwrap()],
        }],
        ..Default::default()
    });
    let edge = test_edge_with(views.subscribe(), 1, sink);
    let first = answers(&edge, &invite_to("app1", "full1", "z9hG4bKf1"));
    assert_eq!(first.len(), 1);
    assert!(
        first[0].starts_with("SIP/2.0 100 Trying\r\n"),
        "{}",
        first[0]
    );
    assert_eq!(edge.metrics.inbound_calls.load(Relaxed), 1);
    until("the answer_url is asked", || asked.load(Relaxed) == 1).await;

    let second = invite_to("app1", "full2", "z9hG4bKf2");
    let refused = answers(&edge, &second);
    assert_unavailable(&refused);
    assert_eq!(answers(&edge, &second), refused, "the retransmission");
    assert_eq!(edge.metrics.unavailable.load(Relaxed), 1);
    assert_eq!(edge.metrics.allowed.load(Relaxed), 1);
    assert!(!edge.taking_calls(), "full");
    let metrics = edge.metrics.render(None);
    assert!(metrics.contains("\nsipauth_inbound_calls 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nsipauth_invites_unavailable_total 1\n"),
        "{metrics}"
    );
    let posted = tokio::time::timeout(std::time::Duration::from_secs(5), records.recv())
        .await
        .expect("the refusal's record is posted")
        .unwrap();
    assert!(posted.contains("edge_unavailable"), "{posted}");
    assert!(posted.contains(r#""call_status":"failed""#), "{posted}");
    assert!(posted.contains(r#""hangup_cause_code":4230"#), "{posted}");

    // The first call's answer_url answers <Hangup/>: its slot is free.
    gate.add_permits(1);
    until("the first call ends", || {
        edge.metrics.inbound_calls.load(Relaxed) == 0
    })
    .await;
    assert!(edge.taking_calls());
    let third = answers(&edge, &invite_to("app1", "full3", "z9hG4bKf3"));
    assert!(
        third[0].starts_with("SIP/2.0 100 Trying\r\n"),
        "{}",
        third[0]
    );
    assert_eq!(edge.metrics.inbound_calls.load(Relaxed), 1);

    // A stopping edge lets nobody in, though a slot is free once the
    // third call ends.
    edge.stop_taking_calls();
    gate.add_permits(1);
    until("the third call ends", || {
        edge.metrics.inbound_calls.load(Relaxed) == 0
    })
    .await;
    assert_unavailable(&answers(&edge, &invite_to("app1", "full4", "z9hG4bKf4")));
    assert_eq!(edge.metrics.unavailable.load(Relaxed), 2);
    assert!(!edge.taking_calls());
    let ping = req(
        "OPTIONS sip:b@example.com SIP/2.0",
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n",
    );
    // OPTIONS answers as an INVITE would.
    assert_unavailable(&answers(&edge, &ping));
    until("every record written", || edge.records_settled()).await;
}
