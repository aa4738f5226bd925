//! Helpers shared by the integration tests.

use sipauth_sip::{Message, frame, parse, parse_challenge, parse_credentials, parse_uri};

/// Calls every accessor of a parsed message and every parser on its values.
/// Used to show that nothing panics, whatever the input.
pub fn exercise(msg: &Message<'_>) {
    let _ = msg.start();
    let _ = (msg.method(), msg.request_uri(), msg.status(), msg.version());
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
        let _ = sipauth_sip::parse_via(via);
    }
    for addr in [msg.from(), msg.to()].into_iter().flatten() {
        let _ = (addr.param("tag"), addr.sip_uri());
    }
    let _ = msg.max_forwards();
    let _ = msg.date();
    for c in msg.contacts().flatten() {
        let _ = c.sip_uri();
    }
    for (name, value) in msg.header_lines() {
        let _ = msg.header(name);
        let _ = msg.header_unfolded(name);
        let _ = msg.headers(name).count();
        let _ = parse_credentials(value);
        let _ = parse_challenge(value);
    }
    for name in [
        "Route",
        "Record-Route",
        "Supported",
        "Allow",
        "Authorization",
        "l",
        "c",
    ] {
        let _ = msg.headers(name).count();
    }
    let _ = msg.validate();
    let _ = msg.body();
    let _ = msg.span();
    let src: std::net::SocketAddr = "[2001:db8::1]:5070"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let resp = sipauth_sip::build::response(
        msg,
        400,
        "Bad Request",
        src,
        Some("t1"),
        &[("Server", "x")],
        b"",
    );
    let _ = parse(&resp);
}

/// Parses and frames `bytes`, exercising the message when it parses.
pub fn poke(bytes: &[u8]) {
    if let Ok(msg) = parse(bytes) {
        exercise(&msg);
    }
    if let Ok(Some(n)) = frame(bytes) {
        assert!(
            n <= bytes.len(),
            "frame reported {n} bytes of {}",
            bytes.len()
        );
        if let Ok(msg) = parse(&bytes[..n]) {
            exercise(&msg);
        }
    }
}

/// Every corpus message, as on-the-wire bytes, with its name.
pub fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut all: Vec<(&'static str, Vec<u8>)> = sipx_testkit::rfc4475::CASES
        .iter()
        .map(|c| (c.name, c.bytes.to_vec()))
        .collect();
    all.extend(
        sipx_testkit::rfc5118::CASES
            .iter()
            .map(|c| (c.name, c.wire().to_vec())),
    );
    all
}
