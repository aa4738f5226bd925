#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sipauth_sip::{
    Message, build, frame, parse, parse_challenge, parse_credentials, parse_uri, parse_via,
};

fn exercise(msg: &Message<'_>) {
    let _ = (
        msg.start(),
        msg.method(),
        msg.request_uri(),
        msg.status(),
        msg.version(),
    );
    if let Some(uri) = msg.request_uri() {
        let _ = parse_uri(uri);
    }
    let _ = msg.call_id();
    let _ = msg.cseq();
    if let Ok(via) = msg.top_via() {
        let _ = (
            via.param("rport"),
            via.has_rport(),
            via.received(),
            via.sent(),
        );
    }
    for via in msg.vias() {
        let _ = parse_via(via);
    }
    for addr in [msg.from(), msg.to()].into_iter().flatten() {
        let _ = (addr.param("tag"), addr.sip_uri());
    }
    let _ = msg.max_forwards();
    let _ = msg.date();
    for contact in msg.contacts().flatten() {
        let _ = contact.sip_uri();
    }
    for (name, value) in msg.header_lines() {
        let _ = msg.header(name);
        let _ = msg.header_unfolded(name);
        let _ = msg.headers(name).count();
        let _ = parse_credentials(value);
        let _ = parse_challenge(value);
    }
    let _ = msg.validate();
    let _ = (msg.body(), msg.span());
    let src = SocketAddr::from(([192, 0, 2, 1], 5060));
    let resp = build::response(
        msg,
        401,
        "Unauthorized",
        src,
        Some("abc"),
        &[("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\"")],
        b"",
    );
    // A response we built must itself parse.
    let parsed = parse(&resp).expect("built response parses");
    assert_eq!(parsed.status(), Some(401));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = parse(data) {
        exercise(&msg);
    }
    if let Ok(Some(n)) = frame(data) {
        assert!(n <= data.len());
        if let Ok(msg) = parse(&data[..n]) {
            exercise(&msg);
        }
    }
});
