use std::sync::Arc;

use super::*;
use crate::sip::ToTags;
use crate::sip::transaction::{Key, Transactions};

/// A request of the caller in the dialog of `call_id` with its tag ct.
fn from_caller(method: &str, to_tag: &str) -> Vec<u8> {
    format!(
        "{method} sip:app@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc\r\n\
             From: <sip:caller@192.0.2.1>;tag=ct\r\nTo: <sip:app@192.0.2.10>{to_tag}\r\n\
             Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The caller's dialog is in the edge's table from the first `<Dial>`
/// until the bridge is closed (or dropped), and a CANCEL in it tells
/// that the caller left.
#[tokio::test]
async fn a_bridge_keeps_its_callers_dialog_in_the_table_until_closed() {
    let invite = from_caller("INVITE", "");
    let msg = sipauth_sip::parse(&invite).unwrap();
    let key = Key::of(&msg).unwrap();
    let (replier, mut sent) = Replier::channel();
    let req = ServerRequest::new(
        msg,
        key,
        "192.0.2.1:5060".parse().unwrap(),
        replier,
        Arc::new(Transactions::default()),
        ToTags::default(),
    );
    let cancel = from_caller("CANCEL", "");
    let cancel = sipauth_sip::parse(&cancel).unwrap();
    let (dialogs, settings) = (Dialogs::default(), Settings::default());
    let mut bridge = Bridge::new(&settings, &dialogs, Caller::new(&req));
    assert!(!dialogs.route(&cancel), "not in the table before a Dial");
    let nobody = Dial {
        timeout_secs: None,
        time_limit_secs: None,
        caller_id: None,
        action_url: None,
        action_method: None,
        redirect: true,
        targets: Vec::new(),
    };
    let dialed = bridge.dial("caller", false, &nobody).await;
    assert_eq!(
        dialed,
        (Dialed::Unreached(Outcome::DIAL_UNAVAILABLE), false)
    );
    assert!(sent.try_recv().is_err(), "no final response yet");
    assert!(!bridge.left());
    assert!(dialogs.route(&cancel));
    assert!(bridge.left());
    assert!(bridge.close());
    assert!(!dialogs.route(&cancel));
    assert!(!bridge.close());

    let mut again = Bridge::new(&settings, &dialogs, Caller::new(&req));
    again.dial("caller", false, &nobody).await;
    drop(again);
    assert!(!dialogs.route(&cancel), "a dropped bridge leaves the table");
}

/// RFC 3261 13.3.1.4: the 2xx to the caller goes again from T1
/// doubling up to T2; the bridge gives up at the first retransmission
/// due 64*T1 or later.
#[tokio::test(start_paused = true)]
async fn a_2xx_is_sent_again_until_64_t1() {
    let (replier, mut rx) = Replier::channel();
    let t0 = Instant::now();
    let mut pending = Pending::new(b"200".to_vec(), replier);
    let mut at = Vec::new();
    loop {
        wait_until(pending.schedule.next_deadline()).await;
        if !pending.resend() {
            break;
        }
        assert_eq!(rx.try_recv().unwrap(), b"200");
        at.push(t0.elapsed().as_millis());
    }
    assert_eq!(
        at,
        [
            500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
        ]
    );
    assert_eq!(t0.elapsed(), Duration::from_millis(35_500));
    assert!(rx.try_recv().is_err());
}

/// The bridge's requests to the caller go through the one in-dialog
/// builder: a caller's header value holding CR/LF adds no header.
#[test]
fn a_request_to_the_caller_keeps_each_value_on_its_line() {
    let (replier, _rx) = Replier::channel();
    let toward = Toward {
        target: "sip:caller@192.0.2.1".to_owned(),
        from: "<sip:app@192.0.2.10>;tag=et".to_owned(),
        to: "<sip:caller@192.0.2.1>;tag=ct\r\nInjected: to".to_owned(),
        call_id: "c1".to_owned(),
        routes: vec!["<sip:p@192.0.2.5;lr>\r\nInjected: route".to_owned()],
        sent_by: "192.0.2.10:5060".to_owned(),
        contact: "<sip:app@192.0.2.10:5060>".to_owned(),
        replier,
        cseq: 0,
    };
    let bytes = toward.request_with(
        "UPDATE",
        "z9hG4bKu",
        3,
        Some("application/sdp\r\nInjected: type"),
        b"v=0\r\n",
    );
    let m = sipauth_sip::parse(&bytes).unwrap();
    assert!(
        m.header("Injected").is_none(),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(m.request_uri(), Some("sip:caller@192.0.2.1"));
    assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bKu"));
    assert_eq!(m.cseq().unwrap(), (3, "UPDATE"));
    assert_eq!(m.header("Contact"), Some("<sip:app@192.0.2.10:5060>"));
    assert_eq!(m.headers("Route").count(), 1);
    assert_eq!(m.body(), b"v=0\r\n");
    // An ACK carries no Contact and no body.
    let ack = toward.request("ACK", "z9hG4bKa", 3, b"");
    let ack = sipauth_sip::parse(&ack).unwrap();
    assert!(ack.header("Contact").is_none());
    assert!(ack.header("Content-Type").is_none());
    assert_eq!(ack.header("Content-Length"), Some("0"));
}
