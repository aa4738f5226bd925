extern crate std;
use std::string::String;

use super::*;

#[test]
fn budget_resets_each_second() {
    let w = budget::take(0, 7, 2).unwrap();
    assert_eq!(w, (7 << 32) | 1);
    let w = budget::take(w, 7, 2).unwrap();
    assert_eq!(budget::take(w, 7, 2), None);
    assert_eq!(budget::take(w, 8, 2), Some((8 << 32) | 1));
}

#[test]
fn zero_budget_is_silent() {
    assert_eq!(budget::take(0, 1, 0), None);
    assert_eq!(budget::take(1 << 32, 1, 0), None);
}

#[test]
fn v4_mapped() {
    assert_eq!(
        addr::from_v4([192, 0, 2, 1]),
        core::net::Ipv4Addr::new(192, 0, 2, 1)
            .to_ipv6_mapped()
            .octets()
    );
}

#[test]
fn fnv_matches_reference_values() {
    // Published FNV-1a 64 test vectors.
    assert_eq!(fnv::hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv::hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv::hash(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn app_hash_only_for_ids_the_program_can_see() {
    assert_eq!(apps::hash_of(b"12345"), Some(fnv::hash(b"12345")));
    assert_eq!(apps::hash_of(b""), None);
    assert_eq!(apps::hash_of(b"a@b"), None);
    assert_eq!(apps::hash_of(b"a b"), None);
    assert!(apps::hash_of(&[b'x'; 64]).is_some());
    assert_eq!(apps::hash_of(&[b'x'; 65]), None);
}

#[test]
fn acl_keys_and_generations() {
    let id = acl::wire_id(7, 1);
    assert_eq!(id, 0x8000_0007);
    assert_eq!(acl::generation_of(id), 1);
    assert_eq!(acl::generation_of(acl::wire_id(7, 0)), 0);
    assert_eq!(
        acl::v4_key(id, [198, 51, 100, 5]),
        [0x80, 0, 0, 7, 198, 51, 100, 5]
    );
    let k = acl::v6_key(3, [0x20; 16]);
    assert_eq!(k[..4], [0, 0, 0, 3]);
    assert_eq!(k[4..], [0x20; 16]);
    assert_eq!(acl::id_of(&k), 3);
}

#[test]
fn failures_count_within_the_window_and_lock_at_the_threshold() {
    let mut w = 0;
    for i in 1..10 {
        let r = failures::record(w, 100 + i, 60, 10);
        assert!(!r.locks);
        assert_eq!(failures::unpack(r.word), (101, i));
        w = r.word;
    }
    let r = failures::record(w, 120, 60, 10);
    assert!(r.locks);
    assert_eq!(failures::unpack(r.word), (120, 0));
    // After a lockout counting starts again.
    let r = failures::record(r.word, 121, 60, 10);
    assert_eq!(failures::unpack(r.word), (121, 1));
}

#[test]
fn failures_window_closes() {
    let w = failures::pack(100, 9);
    assert_eq!(failures::current(w, 159, 60), 9);
    assert_eq!(failures::current(w, 160, 60), 0);
    let r = failures::record(w, 160, 60, 10);
    assert!(!r.locks);
    assert_eq!(failures::unpack(r.word), (160, 1));
    // Threshold 0 never locks; threshold 1 locks on the first failure.
    assert!(!failures::record(w, 110, 60, 0).locks);
    assert!(failures::record(0, 5, 60, 1).locks);
}

#[test]
fn ipv6_sources_are_masked_to_their_prefix_and_ipv4_never() {
    let v6 = |s: &str| s.parse::<core::net::Ipv6Addr>().unwrap().octets();
    let a = v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
    assert_eq!(addr::lockout_key(a, 64), v6("2001:db8:1:2::"));
    assert_eq!(
        addr::lockout_key(v6("2001:db8:1:2::9"), 64),
        addr::lockout_key(a, 64)
    );
    assert_ne!(
        addr::lockout_key(v6("2001:db8:1:3::9"), 64),
        addr::lockout_key(a, 64)
    );
    assert_eq!(addr::lockout_key(a, 128), a);
    assert_eq!(addr::lockout_key(a, 0), a);
    assert_eq!(addr::lockout_key(a, 48), v6("2001:db8:1::"));
    // A prefix that ends inside a byte keeps its top bits only.
    assert_eq!(addr::lockout_key(a, 60), v6("2001:db8:1::"));
    assert_eq!(addr::lockout_key(a, 68), v6("2001:db8:1:2:a000::"));
    assert_eq!(addr::lockout_key(a, 1), v6("::"));
    assert_eq!(addr::lockout_key(v6("8001::"), 1), v6("8000::"));
    assert_eq!(
        addr::lockout_key(a, 127),
        v6("2001:db8:1:2:aaaa:bbbb:cccc:dddc")
    );
    // IPv4 (mapped) stays a /32 whatever the IPv6 prefix.
    let v4 = addr::from_v4([192, 0, 2, 77]);
    assert!(addr::is_v4(&v4));
    assert!(!addr::is_v4(&a));
    assert_eq!(addr::lockout_key(v4, 64), v4);
    assert_eq!(addr::lockout_key(v4, 1), v4);
}

#[test]
fn ports() {
    let mut c = config::Config::default();
    c.sip_ports[0] = 5060;
    assert!(c.is_sip_port(5060));
    assert!(!c.is_sip_port(0));
    assert!(!c.is_sip_port(5061));
}

/// An ACK as a client sends it for a final non-2xx answer (RFC 3261
/// 17.1.1.3), with the given To header line.
fn ack_with(to: &str) -> String {
    [
        "ACK sip:1234@198.51.100.1 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-1\r\n",
        "From: <sip:pbx@example.test>;tag=sl-from-the-caller\r\n",
        to,
        "Call-ID: c1@192.0.2.9\r\n",
        "CSeq: 1 ACK\r\n",
        "Content-Length: 0\r\n\r\n",
    ]
    .concat()
}

#[test]
fn an_ack_of_a_stateless_answer_is_recognised_in_every_spelling_of_to() {
    for to in [
        "To: <sip:1234@198.51.100.1>;tag=sl-0123456789abcdef\r\n",
        "to: <sip:1234@198.51.100.1>;tag=sl-0123456789abcdef\r\n",
        "t: <sip:1234@198.51.100.1>;tag=sl-0123456789abcdef\r\n",
        "T : <sip:1234@198.51.100.1>;TAG=sl-0123456789abcdef\r\n",
        "To:\t\"Desk\" <sip:1234@198.51.100.1>;x=1;tag=sl-0\r\n",
        // The tag on a continuation line of the To header.
        "To: <sip:1234@198.51.100.1>\r\n ;tag=sl-0123456789abcdef\r\n",
    ] {
        assert!(ack::of_stateless_answer(ack_with(to).as_bytes()), "{to}");
    }
}

#[test]
fn other_acks_and_other_requests_are_not() {
    for to in [
        // The edge's stateful tags (hex), no tag, another prefix.
        "To: <sip:1234@198.51.100.1>;tag=0123456789abcdef\r\n",
        "To: <sip:1234@198.51.100.1>\r\n",
        "To: <sip:1234@198.51.100.1>;tag=sl0123\r\n",
        // Spellings the rule leaves to user space.
        "To: <sip:1234@198.51.100.1> ; tag=sl-0\r\n",
        "To: <sip:1234@198.51.100.1>;tag = sl-0\r\n",
        // Other headers: the caller's From tag above starts with the
        // prefix in every one of these messages.
        "Tox: <sip:1234@198.51.100.1>;tag=sl-0\r\n",
        "Timestamp: 1;tag=sl-0\r\n",
        // The walk ends with the (one) To header.
        "To: <sip:1234@198.51.100.1>\r\nTo: <sip:1234@198.51.100.1>;tag=sl-0\r\n",
    ] {
        assert!(!ack::of_stateless_answer(ack_with(to).as_bytes()), "{to}");
    }
    let ack = ack_with("To: <sip:1234@198.51.100.1>;tag=sl-0123456789abcdef\r\n");
    let invite = ack.replacen("ACK", "INVITE", 1);
    assert!(!ack::of_stateless_answer(invite.as_bytes()));
    // Past the headers nothing is read.
    let in_body = "ACK sip:1234@198.51.100.1 SIP/2.0\r\nContent-Length: 25\r\n\r\n\
                   To: <sip:1@h>;tag=sl-0\r\n";
    assert!(!ack::of_stateless_answer(in_body.as_bytes()));
    // Past SCAN_LEN nothing is read either.
    let late = ack_with(
        &[
            "X: ",
            &"a".repeat(ack::SCAN_LEN),
            "\r\n",
            "To: <sip:1@h>;tag=sl-0\r\n",
        ]
        .concat(),
    );
    assert!(!ack::of_stateless_answer(late.as_bytes()));
    // Cut short anywhere: no read past the end.
    for n in 0..ack.len() {
        let _ = ack::of_stateless_answer(&ack.as_bytes()[..n]);
    }
}
