//! The public API on hand-written messages.

use std::net::SocketAddr;

use sipauth_sip::build::{reason_phrase, response};
use sipauth_sip::{ParseError, StartLine, frame, parse, unfold};

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;rport\r\n\
Via: SIP/2.0/TCP proxy.example.com:5061;branch=z9hG4bK2\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 5\r\n\
\r\n\
v=0\r\n";

#[test]
fn request_basics() {
    let m = parse(INVITE.as_bytes()).unwrap();
    assert_eq!(
        m.start(),
        &StartLine::Request {
            method: "INVITE",
            uri: "sip:bob@biloxi.example.com",
            version: "SIP/2.0"
        }
    );
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(m.request_uri(), Some("sip:bob@biloxi.example.com"));
    assert_eq!(m.status(), None);
    assert_eq!(m.call_id(), Ok("a84b4c76e66710@pc33.atlanta.example.com"));
    assert_eq!(m.cseq(), Ok((314_159, "INVITE")));
    assert_eq!(m.max_forwards(), Ok(Some(70)));
    let via = m.top_via().unwrap();
    assert_eq!(via.branch, Some("z9hG4bKnashds8"));
    assert_eq!(via.transport, "UDP");
    assert!(via.has_rport());
    let from = m.from().unwrap();
    assert_eq!(from.display, Some("Alice, A."));
    assert_eq!(from.tag, Some("1928301774"));
    let to = m.to().unwrap();
    assert_eq!(to.uri, "sip:bob@biloxi.example.com");
    assert_eq!(to.tag, None);
    assert_eq!(m.body(), b"v=0\r\n");
    assert_eq!(m.vias().count(), 2);
    m.validate().unwrap();
}

#[test]
fn response_start_line() {
    let m = parse(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        m.start(),
        &StartLine::Response {
            version: "SIP/2.0",
            code: 180,
            reason: "Ringing"
        }
    );
    assert_eq!(m.method(), None);
    assert_eq!(m.request_uri(), None);
    assert_eq!(m.status(), Some(180));
    let m = parse(b"SIP/2.0 100 \r\n\r\n").unwrap();
    assert!(matches!(m.start(), StartLine::Response { reason: "", .. }));
}

#[test]
fn start_line_errors() {
    for bad in [
        "INVITE  sip:a@b SIP/2.0",
        "INVITE sip:a@b SIP/2.0 ",
        "INVITE <sip:a@b> SIP/2.0",
        "INVITE sip:a@b; lr SIP/2.0",
        "INVITE sip:a@b SIP/2",
        "INVITE sip:a@b HTTP/1.1",
        "INV(ITE sip:a@b SIP/2.0",
        "INVITE sip:2001:db8::10 SIP/2.0",
        "SIP/2.0 4294967301 Big",
        "SIP/2.0 20 OK",
        "SIP/2.0 099 Low",
        "SIP/2.0",
    ] {
        let msg = format!("{bad}\r\nContent-Length: 0\r\n\r\n");
        assert!(
            matches!(parse(msg.as_bytes()), Err(ParseError::StartLine { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn compact_forms_both_ways() {
    let m = parse(
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\ni: cid-1\r\nf: <sip:x@y>;tag=ft\r\nt: sip:a@b\r\nm: <sip:c@d>\r\nCSeq: 1 OPTIONS\r\nk: path\r\nl: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(m.header("Call-ID"), Some("cid-1"));
    assert_eq!(m.header("call-id"), Some("cid-1"));
    assert_eq!(m.header("i"), Some("cid-1"));
    assert_eq!(m.header("I"), Some("cid-1"));
    assert_eq!(m.header("Supported"), Some("path"));
    assert_eq!(m.header("Content-Length"), Some("0"));
    assert_eq!(m.header("Contact"), Some("<sip:c@d>"));
    assert_eq!(m.call_id(), Ok("cid-1"));
    assert_eq!(m.from().unwrap().tag, Some("ft"));
    assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bK1"));

    let m =
        parse(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: long-form\r\nFrom: <sip:x@y>;tag=1\r\n\r\n")
            .unwrap();
    assert_eq!(m.header("i"), Some("long-form"));
    assert_eq!(m.header("f"), Some("<sip:x@y>;tag=1"));
    assert_eq!(m.header("X-Missing"), None);
    assert_eq!(m.header("s"), None);
}

#[test]
fn folded_lines() {
    let m = parse(
        b"OPTIONS sip:a@b SIP/2.0\r\nSubject: first\r\n  second\r\n\tthird\r\nCSeq: 0009\r\n  OPTIONS\r\nTo:\r\n sip:a@b ;\r\n tag = x\r\nVia: SIP / 2.0\r\n /UDP\r\n    192.0.2.2;branch=z9hG4bKf\r\n\r\n",
    )
    .unwrap();
    assert_eq!(m.header("Subject"), Some("first\r\n  second\r\n\tthird"));
    assert_eq!(m.header_unfolded("subject").unwrap(), "first second third");
    assert_eq!(unfold(m.header("s").unwrap()), "first second third");
    assert_eq!(m.cseq(), Ok((9, "OPTIONS")));
    assert_eq!(m.to().unwrap().tag, Some("x"));
    assert_eq!(m.top_via().unwrap().host, "192.0.2.2");
    let lines: Vec<_> = m.header_lines().map(|(n, _)| n).collect();
    assert_eq!(lines, ["Subject", "CSeq", "To", "Via"]);

    // A continuation before any header is malformed.
    assert!(matches!(
        parse(b"OPTIONS sip:a@b SIP/2.0\r\n  stray\r\n\r\n"),
        Err(ParseError::HeaderSyntax { line: 2, .. })
    ));
}

#[test]
fn comma_joined_vias() {
    let m = parse(
        b"OPTIONS sip:a@b SIP/2.0\r\nv:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\nVia: SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bK3\r\n\r\n",
    )
    .unwrap();
    let via = m.top_via().unwrap();
    assert_eq!(via.branch, Some("z9hG4bK9ikj8"));
    assert_eq!(via.host, "spindle.example.com");
    assert_eq!(via.transport, "TCP");
    let all: Vec<_> = m
        .vias()
        .map(|v| sipauth_sip::parse_via(v).unwrap())
        .collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].branch, Some("z9hG4bK30239"));
    assert_eq!(all[1].host, "192.168.255.111");
    assert_eq!(all[2].host, "[2001:db8::9:1]");
    assert_eq!(all[2].port, Some(6050));
    assert_eq!(m.headers("Via").count(), 3);
    assert_eq!(m.headers("v").count(), 3);
}

#[test]
fn list_splitting() {
    let m = parse(
        b"REGISTER sip:r SIP/2.0\r\nContact: \"Doe, J\" <sip:j@a;x=1>;q=0.5, <http://h/a,b>\r\nm: sip:l@c\r\nAllow: INVITE, ACK ,BYE\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth,auth-int\"\r\nAuthorization: Digest username=\"u\", realm=\"r\"\r\nX-Unknown: a, b\r\n\r\n",
    )
    .unwrap();
    let contacts: Vec<_> = m.headers("Contact").collect();
    assert_eq!(
        contacts,
        [
            "\"Doe, J\" <sip:j@a;x=1>;q=0.5",
            "<http://h/a,b>",
            "sip:l@c"
        ]
    );
    let parsed: Vec<_> = m.contacts().map(|c| c.unwrap().uri).collect();
    assert_eq!(parsed, ["sip:j@a;x=1", "http://h/a,b", "sip:l@c"]);
    assert_eq!(
        m.headers("allow").collect::<Vec<_>>(),
        ["INVITE", "ACK", "BYE"]
    );
    assert_eq!(m.headers("WWW-Authenticate").count(), 1);
    assert_eq!(m.headers("Authorization").count(), 1);
    assert_eq!(m.headers("X-Unknown").collect::<Vec<_>>(), ["a, b"]);
    assert_eq!(m.count("Contact"), 2);
}

#[test]
fn header_lines_raw_in_order() {
    let m = parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia  : SIP/2.0/UDP h\r\nX-A:1\r\ni:  c  \r\n\r\n")
        .unwrap();
    let lines: Vec<_> = m.header_lines().collect();
    assert_eq!(lines, [("Via", "SIP/2.0/UDP h"), ("X-A", "1"), ("i", "c")]);
}

#[test]
fn content_length_rules() {
    let base = "OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\n";
    // Bytes beyond Content-Length are ignored.
    let buf = format!("{base}Content-Length: 3\r\n\r\nabcdef");
    let m = parse(buf.as_bytes()).unwrap();
    assert_eq!(m.body(), b"abc");
    assert_eq!(m.span(), 0..base.len() + 21 + 3);
    // No Content-Length on a datagram: the body is the rest.
    let buf = format!("{base}\r\nabcdef");
    let m = parse(buf.as_bytes()).unwrap();
    assert_eq!(m.body(), b"abcdef");
    assert_eq!(
        parse(format!("{base}Content-Length: 9\r\n\r\nabc").as_bytes()).err(),
        Some(ParseError::BodyTruncated {
            declared: 9,
            available: 3
        })
    );
    assert_eq!(
        parse(format!("{base}Content-Length: -1\r\n\r\n").as_bytes()).err(),
        Some(ParseError::InvalidContentLength)
    );
    assert_eq!(
        parse(format!("{base}Content-Length: 1\r\nl: 1\r\n\r\nx").as_bytes()).err(),
        Some(ParseError::DuplicateContentLength)
    );
    assert_eq!(
        parse(format!("{base}Content-Length: 1\r\n").as_bytes()).err(),
        Some(ParseError::UnterminatedHeaders)
    );
    // Leading keep-alive CRLFs are skipped.
    let buf = format!("\r\n\r\n{base}l: 0\r\n\r\n");
    let m = parse(buf.as_bytes()).unwrap();
    assert_eq!(m.call_id(), Ok("c"));
    assert_eq!(m.span().start, 4);
}

#[test]
fn structural_errors() {
    assert_eq!(parse(b"").err(), Some(ParseError::Empty));
    assert_eq!(parse(b"\r\n\r\n").err(), Some(ParseError::Empty));
    assert_eq!(
        parse(b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n").err(),
        Some(ParseError::NotUtf8)
    );
    assert!(matches!(
        parse(b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n"),
        Err(ParseError::HeaderSyntax { line: 2, .. })
    ));
    assert!(matches!(
        parse(b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n"),
        Err(ParseError::HeaderSyntax { .. })
    ));
    assert!(matches!(
        parse(b"OPTIONS sip:a@b SIP/2.0\r\nX: a\nY: b\r\n\r\n"),
        Err(ParseError::HeaderSyntax { .. })
    ));
    // Display says what is wrong.
    let e = parse(b"OPTIONS sip:a@b SIP/2.0\r\nl: 10\r\n\r\nab").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Content-Length 10 exceeds the 2 bytes after the header section"
    );
}

#[test]
fn header_level_errors() {
    let m = parse(
        b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 4294967296 OPTIONS\r\nMax-Forwards: x\r\nTo: \"open <sip:a@b>\r\nFrom: <sip:a@b>;tag\r\nVia: SIP/2.0/UDP h;;\r\n\r\n",
    )
    .unwrap();
    assert!(matches!(
        m.cseq(),
        Err(ParseError::InvalidHeader { name: "CSeq", .. })
    ));
    assert!(m.max_forwards().is_err());
    assert!(m.to().is_err());
    assert!(m.from().is_err());
    assert!(m.top_via().is_err());
    assert_eq!(m.call_id(), Err(ParseError::MissingHeader("Call-ID")));
    let m = parse(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n").unwrap();
    assert_eq!(m.max_forwards(), Ok(None));
    assert_eq!(m.top_via().err(), Some(ParseError::MissingHeader("Via")));
    assert_eq!(m.date(), Ok(None));
    assert_eq!(m.validate(), Err(ParseError::MissingHeader("To")));
}

#[test]
fn ipv6_hosts() {
    let m = parse(
        b"REGISTER sip:[2001:db8::10]:5070 SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3\r\nTo: sip:user@[2001:db8::10]\r\n\r\n",
    )
    .unwrap();
    let uri = sipauth_sip::parse_uri(m.request_uri().unwrap()).unwrap();
    assert_eq!(uri.host, "[2001:db8::10]");
    assert_eq!(uri.port, Some(5070));
    let via = m.top_via().unwrap();
    assert_eq!(via.host, "[2001:db8::9:1]");
    assert_eq!(via.port, None);
    assert_eq!(via.param("received"), Some(Some("[2001:db8::9:255]")));
    assert_eq!(m.to().unwrap().sip_uri().unwrap().host, "[2001:db8::10]");
}

#[test]
fn framing() {
    let one = INVITE.as_bytes();
    let two = [one, one].concat();
    assert_eq!(frame(&two), Ok(Some(one.len())));
    assert_eq!(frame(one), Ok(Some(one.len())));
    assert_eq!(frame(&one[..one.len() - 1]), Ok(None));
    assert_eq!(frame(b""), Ok(None));
    assert_eq!(frame(b"\r\n\r\n"), Ok(None));
    assert_eq!(
        frame(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n"),
        Err(ParseError::MissingContentLength)
    );
    assert_eq!(
        frame(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n"),
        Err(ParseError::InvalidContentLength)
    );
    assert_eq!(
        frame(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nx"),
        Err(ParseError::DuplicateContentLength)
    );
    assert_eq!(
        frame(b"OPTIONS sip:a@b SIP/2.0\r\nl :\r\n  2\r\n\r\nxy"),
        Ok(Some(39))
    );
    let mut huge = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    while huge.len() <= sipauth_sip::MAX_HEADER_SECTION {
        huge.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    assert!(matches!(
        frame(&huge),
        Err(ParseError::HeadersTooLarge { .. })
    ));
    huge.extend_from_slice(b"l: 0\r\n\r\n");
    assert!(matches!(
        frame(&huge),
        Err(ParseError::HeadersTooLarge { .. })
    ));
    // Keep-alives in front count towards the first message.
    let pinged = [b"\r\n\r\n\r\n".as_slice(), one, one].concat();
    assert_eq!(frame(&pinged), Ok(Some(one.len() + 6)));
    assert_eq!(
        parse(&pinged[..one.len() + 6]).unwrap().cseq(),
        Ok((314_159, "INVITE"))
    );
}

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn response_round_trip() {
    let req = parse(INVITE.as_bytes()).unwrap();
    let src = v4("192.0.2.7:40123");
    let out = response(
        &req,
        407,
        reason_phrase(407),
        src,
        Some("srv-tag-1"),
        &[(
            "Proxy-Authenticate",
            "Digest realm=\"atlanta.example.com\", nonce=\"abc\", qop=\"auth\"",
        )],
        b"",
    );
    let text = std::str::from_utf8(&out).unwrap();
    assert!(
        text.starts_with("SIP/2.0 407 Proxy Authentication Required\r\n"),
        "{text}"
    );
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    assert!(!text.replace("\r\n", "").contains(['\r', '\n']));
    let resp = parse(&out).unwrap();
    assert_eq!(resp.status(), Some(407));
    assert_eq!(resp.call_id(), req.call_id());
    assert_eq!(resp.cseq(), req.cseq());
    let via = resp.top_via().unwrap();
    assert_eq!(via.branch, Some("z9hG4bKnashds8"));
    assert_eq!(via.param("rport"), Some(Some("40123")));
    assert_eq!(via.received(), Some("192.0.2.7"));
    assert_eq!(resp.vias().count(), 2);
    assert_eq!(resp.vias().nth(1), req.vias().nth(1));
    assert_eq!(resp.to().unwrap().tag, Some("srv-tag-1"));
    assert_eq!(resp.from().unwrap().tag, Some("1928301774"));
    let challenge =
        sipauth_sip::parse_challenge(resp.header("Proxy-Authenticate").unwrap()).unwrap();
    assert_eq!(challenge.realm, "atlanta.example.com");
    assert_eq!(resp.body(), b"");
    resp.validate().unwrap();
}

#[test]
fn response_via_rules() {
    let req = |via: &str, to: &str| {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: {via}\r\nTo: {to}\r\nFrom: <sip:c@d>;tag=f\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
        )
    };
    // Same host as the source, no rport: the Via is copied unchanged.
    let r = req(
        "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1",
        "<sip:a@b>;tag=already",
    );
    let m = parse(r.as_bytes()).unwrap();
    let out = response(&m, 200, "OK", v4("192.0.2.7:5060"), Some("new"), &[], b"hi");
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.contains("\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1\r\n"),
        "{text}"
    );
    let resp = parse(&out).unwrap();
    assert_eq!(resp.to().unwrap().tag, Some("already"));
    assert_eq!(resp.body(), b"hi");
    assert_eq!(resp.header("Content-Length"), Some("2"));

    // Hostname: received added; a client-supplied received is replaced.
    let r = req(
        "SIP/2.0/UDP host.example;received=6.6.6.6;branch=z9hG4bK2",
        "<sip:a@b>",
    );
    let m = parse(r.as_bytes()).unwrap();
    let resp_bytes = response(&m, 100, "Trying", v4("192.0.2.8:5060"), None, &[], b"");
    let resp = parse(&resp_bytes).unwrap();
    let via = resp.top_via().unwrap();
    assert_eq!(via.received(), Some("192.0.2.8"));
    assert_eq!(via.param("rport"), None);
    assert_eq!(resp.to().unwrap().tag, None);

    // IPv6 source: received without brackets; rport filled.
    let r = req(
        "SIP/2.0/UDP [2001:db8::9:1]:5060;rport;branch=z9hG4bK3",
        "<sip:a@b>",
    );
    let m = parse(r.as_bytes()).unwrap();
    let src: SocketAddr = "[2001:db8::9:255]:7000".parse().unwrap();
    let out = response(&m, 486, reason_phrase(486), src, Some("t"), &[], b"");
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.contains("Via: SIP/2.0/UDP [2001:db8::9:1]:5060;rport=7000;branch=z9hG4bK3;received=2001:db8::9:255\r\n"),
        "{text}"
    );
    let via = parse(&out).unwrap().top_via().unwrap();
    assert_eq!(via.received(), Some("2001:db8::9:255"));

    // An IPv4-mapped source matches the IPv4 sent-by.
    let r = req("SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK4", "<sip:a@b>");
    let m = parse(r.as_bytes()).unwrap();
    let src: SocketAddr = "[::ffff:192.0.2.9]:5060".parse().unwrap();
    let out = response(&m, 200, "OK", src, None, &[], b"");
    assert_eq!(parse(&out).unwrap().top_via().unwrap().received(), None);

    // Line breaks in caller-supplied text cannot inject headers.
    let out = response(
        &m,
        400,
        "Bad\r\nX-Evil: 1",
        v4("192.0.2.9:5060"),
        None,
        &[("Warning", "399 x \"a\r\nb\"")],
        b"",
    );
    let resp = parse(&out).unwrap();
    assert_eq!(resp.header("X-Evil"), None);
    assert_eq!(resp.header("Warning"), Some("399 x \"a b\""));
}

#[test]
fn reason_phrases() {
    for (code, phrase) in [
        (100, "Trying"),
        (180, "Ringing"),
        (183, "Session Progress"),
        (200, "OK"),
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (407, "Proxy Authentication Required"),
        (408, "Request Timeout"),
        (420, "Bad Extension"),
        (480, "Temporarily Unavailable"),
        (481, "Call/Transaction Does Not Exist"),
        (482, "Loop Detected"),
        (483, "Too Many Hops"),
        (486, "Busy Here"),
        (487, "Request Terminated"),
        (500, "Server Internal Error"),
        (501, "Not Implemented"),
        (503, "Service Unavailable"),
        (505, "Version Not Supported"),
        (513, "Message Too Large"),
        (499, "Bad Request"),
    ] {
        assert_eq!(reason_phrase(code), phrase, "{code}");
    }
}

#[test]
fn an_owned_copy_reads_as_the_message_it_was_made_from() {
    let mut buf = b"\r\nINVITE sip:app@192.0.2.10 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKo\r\nv: SIP/2.0/TCP p\r\n\
        From: \"A\" <sip:a@192.0.2.1>;tag=ft\r\nTo: <sip:app@192.0.2.10>\r\n\
        Call-ID: c1\r\nCSeq: 7 INVITE\r\nX-Folded: one\r\n two\r\n\
        Content-Length: 4\r\n\r\nv=0\ntrailing"
        .to_vec();
    let src = "192.0.2.1:5060".parse().unwrap();
    let m = parse(&buf).unwrap();
    let owned = sipauth_sip::OwnedMessage::from(&m);
    let expected = sipauth_sip::build::response(&m, 180, "Ringing", src, Some("t"), &[], b"");
    let span = m.span();
    assert_eq!(span.start, 2);
    let lines: Vec<(String, String)> = m
        .header_lines()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    // The received buffer is reused; the copy does not depend on it.
    buf.fill(b'x');
    let c = owned.message();
    assert_eq!(c.method(), Some("INVITE"));
    assert_eq!(c.request_uri(), Some("sip:app@192.0.2.10"));
    assert_eq!(c.version(), "SIP/2.0");
    assert_eq!(c.call_id(), Ok("c1"));
    assert_eq!(c.cseq(), Ok((7, "INVITE")));
    assert_eq!(c.from().unwrap().tag, Some("ft"));
    assert_eq!(c.vias().count(), 2);
    assert_eq!(c.top_via().unwrap().branch, Some("z9hG4bKo"));
    assert_eq!(c.header_unfolded("X-Folded").as_deref(), Some("one two"));
    assert_eq!(c.body(), b"v=0\n");
    // The copy is the message alone: no leading CRLF, nothing past the body.
    assert_eq!(c.span(), 0..span.len());
    assert!(c.validate().is_ok());
    let copied: Vec<(String, String)> = c
        .header_lines()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(copied, lines);
    assert_eq!(
        sipauth_sip::build::response(&c, 180, "Ringing", src, Some("t"), &[], b""),
        expected
    );
    // A response keeps its status line.
    let resp = parse(b"SIP/2.0 486 Busy Here\r\nCall-ID: r\r\n\r\n").unwrap();
    let owned = sipauth_sip::OwnedMessage::from(&resp);
    assert_eq!(owned.message().status(), Some(486));
    assert_eq!(owned.message().call_id(), Ok("r"));
    assert_eq!(owned.message().start(), resp.start());
}
