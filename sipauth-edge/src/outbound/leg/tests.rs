use super::*;

fn invite(branch: &str) -> Request<'_> {
    Request {
        method: "INVITE",
        uri: "sip:bob@192.0.2.2",
        transport: "UDP",
        sent_by: "192.0.2.1:40000",
        branch,
        from: "<sip:alice@192.0.2.1>;tag=1",
        to: "<sip:bob@192.0.2.2>",
        call_id: "c",
        cseq: 1,
        contact: None,
        extra: &[],
        body: None,
    }
}

fn response(code: u16, branch: &str, method: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.1:40000;branch={branch}\r\n\
             From: <sip:alice@192.0.2.1>;tag=1\r\nTo: <sip:bob@192.0.2.2>;tag=2\r\n\
             Call-ID: c\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// What the leg sent, by method, at which times (ms from `t0`).
fn watch(
    mut from_leg: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    t0: Instant,
) -> tokio::task::JoinHandle<Vec<(String, u128)>> {
    tokio::spawn(async move {
        let mut sent = Vec::new();
        while let Some(m) = from_leg.recv().await {
            let method = sipauth_sip::parse(&m).unwrap().method().unwrap().to_owned();
            sent.push((method, t0.elapsed().as_millis()));
        }
        sent
    })
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_cancel_follows_timer_e_until_timer_f() {
    let (mut conn, _to_leg, from_leg) = Conn::mem(false);
    let t0 = Instant::now();
    let sent = watch(from_leg, t0);
    let end = cancel(
        &mut conn,
        &invite("z9hG4bKc1"),
        &Timers::RFC,
        &Acks::default(),
    )
    .await;
    assert!(end.is_none());
    assert_eq!(t0.elapsed(), Duration::from_secs(32));
    drop(conn);
    let at: Vec<u128> = sent.await.unwrap().into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        at,
        [
            0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_answered_waits_8_t1_for_the_invites_final() {
    let (mut conn, to_leg, from_leg) = Conn::mem(false);
    let t0 = Instant::now();
    let sent = watch(from_leg, t0);
    let far = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        to_leg.send(response(200, "z9hG4bKc2", "CANCEL")).unwrap();
        // The 487 never comes.
        tokio::time::sleep(Duration::from_mins(1)).await;
        drop(to_leg);
    });
    let end = cancel(
        &mut conn,
        &invite("z9hG4bKc2"),
        &Timers::RFC,
        &Acks::default(),
    )
    .await;
    assert!(end.is_none());
    assert_eq!(t0.elapsed(), Duration::from_secs(6));
    drop(conn);
    far.abort();
    let at: Vec<u128> = sent.await.unwrap().into_iter().map(|(_, t)| t).collect();
    assert_eq!(at, [0, 500, 1500]);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_over_tcp_is_sent_once() {
    let (mut conn, _to_leg, from_leg) = Conn::mem(true);
    let t0 = Instant::now();
    let sent = watch(from_leg, t0);
    assert!(
        cancel(
            &mut conn,
            &invite("z9hG4bKc3"),
            &Timers::RFC,
            &Acks::default()
        )
        .await
        .is_none()
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(32));
    drop(conn);
    assert_eq!(sent.await.unwrap(), [("CANCEL".to_owned(), 0)]);
}

/// A dialog as [`Leg::place`] makes it from a 2xx, on a channel pair.
fn answered() -> (
    Dialog,
    tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (conn, to_leg, from_leg) = Conn::mem(false);
    let dest = Dest::parse("sip:bob@192.0.2.2").unwrap();
    let target = dest.literal().unwrap();
    let leg = Leg {
        dest,
        resolver: Resolver::none(),
        tls: None,
        udp: super::UdpPool::default(),
        from_user: "alice".to_owned(),
        credentials: None,
        headers: Vec::new(),
        sdp: None,
        timers: Timers::RFC,
        ring_timeout: super::super::RING_TIMEOUT,
        hooks: Hooks::default(),
    };
    let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:40000;branch=z9hG4bKi\r\n\
            From: <sip:alice@192.0.2.1>;tag=1\r\nTo: <sip:bob@192.0.2.2>;tag=2\r\n\
            Call-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.2>\r\n\
            Content-Length: 0\r\n\r\n";
    let setup = Setup {
        sent_by: "192.0.2.1:40000".to_owned(),
        from: "<sip:alice@192.0.2.1>;tag=1".to_owned(),
        to: "<sip:bob@192.0.2.2>;tag=2".to_owned(),
        contact: "<sip:alice@192.0.2.1:40000>".to_owned(),
        call_id: "c".to_owned(),
        cseq: 1,
        branch: "z9hG4bKi".to_owned(),
    };
    let resp = sipauth_sip::parse(ok).unwrap();
    let dialog = Dialog::new(conn, Acks::default(), &leg, &target, setup, &resp);
    (dialog, to_leg, from_leg)
}

/// A request of the far end inside the dialog of [`answered`] (or of
/// another Call-ID).
fn far_request(method: &str, call_id: &str, branch: &str, cseq: u32) -> Vec<u8> {
    format!(
            "{method} sip:alice@192.0.2.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch={branch}\r\n\
             From: <sip:bob@192.0.2.2>;tag=2\r\nTo: <sip:alice@192.0.2.1>;tag=1\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
}

fn sent(from_leg: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<String> {
    std::iter::from_fn(|| from_leg.try_recv().ok())
        .map(|b| String::from_utf8(b).unwrap())
        .collect()
}

/// The far end's BYE is answered 200 by the SIP layer's one response
/// writer and ends the hold at once; one of another dialog gets 481,
/// an OPTIONS 200, and neither ends anything.
#[tokio::test(start_paused = true)]
async fn a_far_bye_is_answered_through_the_sip_layer_and_ends_the_call() {
    let (mut dialog, to_leg, mut from_leg) = answered();
    to_leg
        .send(far_request("BYE", "other", "z9hG4bKb0", 7))
        .unwrap();
    to_leg
        .send(far_request("OPTIONS", "c", "z9hG4bKo1", 7))
        .unwrap();
    to_leg
        .send(far_request("BYE", "c", "z9hG4bKb1", 8))
        .unwrap();
    let t0 = Instant::now();
    let held = dialog.hold(Duration::from_secs(30)).await;
    assert!(matches!(held, Held::HungUp), "{held:?}");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let got = sent(&mut from_leg);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0].starts_with("SIP/2.0 481 Call/Transaction Does Not Exist\r\n"),
        "{}",
        got[0]
    );
    assert!(got[1].starts_with("SIP/2.0 200 OK\r\n"), "{}", got[1]);
    assert!(got[2].starts_with("SIP/2.0 200 OK\r\n"), "{}", got[2]);
    let ok = sipauth_sip::parse(got[2].as_bytes()).unwrap();
    assert_eq!(ok.cseq(), Ok((8, "BYE")));
    assert_eq!(ok.call_id(), Ok("c"));
    assert_eq!(ok.top_via().unwrap().branch, Some("z9hG4bKb1"));
    assert_eq!(ok.to().unwrap().tag, Some("1"));
    assert_eq!(ok.from().unwrap().tag, Some("2"));
}

/// The far end's re-INVITE reaches the caller of [`Dialog::hold`]
/// parsed; its answer is sent again to a retransmission of it, and the
/// ACK stops the 2xx's own retransmissions.
#[tokio::test(start_paused = true)]
async fn a_far_reinvite_is_handed_on_parsed_and_its_answer_kept() {
    let (mut dialog, to_leg, mut from_leg) = answered();
    let reinvite = far_request("INVITE", "c", "z9hG4bKr1", 9);
    to_leg.send(reinvite.clone()).unwrap();
    let Held::Reinvite(req) = dialog.hold(Duration::from_secs(30)).await else {
        panic!("the re-INVITE was not handed on");
    };
    assert_eq!(req.message().cseq(), Ok((9, "INVITE")));
    dialog.respond(&req, 200, b"v=0\r\n").await;
    let answer = sent(&mut from_leg);
    assert_eq!(answer.len(), 1);
    assert!(answer[0].starts_with("SIP/2.0 200 OK\r\n"), "{}", answer[0]);
    assert!(answer[0].contains("Contact: <sip:alice@192.0.2.1:40000>\r\n"));
    assert!(answer[0].ends_with("\r\n\r\nv=0\r\n"), "{}", answer[0]);
    to_leg.send(reinvite).unwrap();
    to_leg
        .send(far_request("ACK", "c", "z9hG4bKa1", 9))
        .unwrap();
    let held = dialog.hold(Duration::from_secs(2)).await;
    assert!(matches!(held, Held::Elapsed), "{held:?}");
    assert_eq!(sent(&mut from_leg), answer, "answered again, once");
}

/// BYEs crossing: the far end's BYE, come while ours waits for its
/// answer, gets 200 once ours is answered; a re-INVITE come meanwhile
/// finds the dialog over (481). Nothing the far end sent is lost.
#[tokio::test(start_paused = true)]
async fn a_far_bye_crossing_ours_is_answered_too() {
    let (mut dialog, to_leg, mut from_leg) = answered();
    to_leg
        .send(far_request("BYE", "c", "z9hG4bKx1", 8))
        .unwrap();
    to_leg
        .send(far_request("INVITE", "c", "z9hG4bKx2", 9))
        .unwrap();
    let ours = tokio::spawn(async move {
        dialog.bye().await;
        dialog
    });
    // The 2xx's ACK first: not ACKed yet.
    let ack = from_leg.recv().await.unwrap();
    assert!(ack.starts_with(b"ACK "));
    let bye = from_leg.recv().await.unwrap();
    let bye = sipauth_sip::parse(&bye).unwrap();
    assert_eq!(bye.method(), Some("BYE"));
    let branch = bye.top_via().unwrap().branch.unwrap().to_owned();
    let ok = String::from_utf8(response(200, &branch, "BYE"))
        .unwrap()
        .replace(
            "CSeq: 1 BYE",
            &format!("CSeq: {} BYE", bye.cseq().unwrap().0),
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    to_leg.send(ok.into_bytes()).unwrap();
    let _dialog = ours.await.unwrap();
    let got = sent(&mut from_leg);
    assert_eq!(got.len(), 2, "{got:?}");
    let answer = sipauth_sip::parse(got[0].as_bytes()).unwrap();
    assert_eq!(answer.status(), Some(200), "{}", got[0]);
    assert_eq!(answer.cseq(), Ok((8, "BYE")));
    assert_eq!(answer.top_via().unwrap().branch, Some("z9hG4bKx1"));
    let refused = sipauth_sip::parse(got[1].as_bytes()).unwrap();
    assert_eq!(refused.status(), Some(481), "{}", got[1]);
    assert_eq!(refused.cseq(), Ok((9, "INVITE")));
}
