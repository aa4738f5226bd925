//! RFC 4475 and RFC 5118 torture corpora, as shipped by `sipx-testkit`.

mod common;

use sipauth_sip::{Message, ParseError, frame, parse};
use sipx_testkit::rfc4475::{self, Expect, Fault};
use sipx_testkit::rfc5118;

type Row = (
    &'static str,
    &'static str,
    u32,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// (case, `Call-ID`, `CSeq` number, `CSeq` method, top-Via branch, From tag), read off
/// the messages by hand.
const EXPECTED: &[Row] = &[
    (
        "wsinv",
        "wsinv.ndaksdj@192.0.2.1",
        9,
        "INVITE",
        Some("390skdjuw"),
        Some("98asjd8"),
    ),
    (
        "intmeth",
        r#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#,
        139_122_385,
        "!interesting-Method0123456789_*+`.%indeed'~",
        Some("z9hG4bK-.!%66*_+`'~"),
        Some("_token~1'+`*%!-."),
    ),
    (
        "esc01",
        "esc01.239409asdfakjkn23onasd0-3234",
        234_234,
        "INVITE",
        Some("z9hG4bKkdjuw"),
        Some("938"),
    ),
    (
        "escnull",
        "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        14_398_234,
        "REGISTER",
        Some("z9hG4bKkdjuw"),
        Some("839923423"),
    ),
    (
        "esc02",
        "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
        29_344,
        "RE%47IST%45R",
        Some("z9hG4bK209%fzsnel234"),
        Some("f232jadfj23"),
    ),
    (
        "lwsdisp",
        "lwsdisp.1234abcd@funky.example.com",
        60,
        "OPTIONS",
        Some("z9hG4bKkdjuw"),
        Some("323"),
    ),
    (
        "longreq",
        "longreq.onereallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallylongcallid",
        3_882_340,
        "INVITE",
        None,
        Some(
            "12982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982424",
        ),
    ),
    (
        "dblreq",
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
        8,
        "REGISTER",
        Some("z9hG4bKkdjuw23492"),
        Some("43251j3j324"),
    ),
    (
        "semiuri",
        "semiuri.0ha0isndaksdj",
        8,
        "OPTIONS",
        Some("z9hG4bKkdjuw"),
        Some("33242"),
    ),
    (
        "transports",
        "transports.kijh4akdnaqjkwendsasfdj",
        60,
        "OPTIONS",
        Some("z9hG4bKkdjuw"),
        Some("323"),
    ),
    (
        "mpart01",
        "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
        1,
        "MESSAGE",
        Some("z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-"),
        Some("2fb0dcc9"),
    ),
    (
        "unreason",
        "unreason.1234ksdfak3j2erwedfsASdf",
        35,
        "INVITE",
        Some("z9hG4bK1324923"),
        Some("11141343"),
    ),
    (
        "noreason",
        "noreason.asndj203insdf99223ndf",
        35,
        "INVITE",
        Some("z9hG4bK2398ndaoe"),
        Some("39ansfi3"),
    ),
    (
        "badbranch",
        "badbranch.sadonfo23i420jv0as0derf3j3n",
        8,
        "OPTIONS",
        Some("z9hG4bK"),
        Some("33242"),
    ),
    (
        "unkscm",
        "unkscm.nasdfasser0q239nwsdfasdkl34",
        3_923_423,
        "OPTIONS",
        Some("z9hG4bKkdjuw39234"),
        Some("384"),
    ),
    (
        "novelsc",
        "novelsc.asdfasser0q239nwsdfasdkl34",
        3_923_423,
        "OPTIONS",
        Some("z9hG4bKkdjuw39234"),
        Some("384"),
    ),
    (
        "unksm2",
        "unksm2.daksdj@hyphenated-host.example.com",
        234_902,
        "REGISTER",
        Some("z9hG4bKkdjuw"),
        Some("3234233"),
    ),
    (
        "bext01",
        "bext01.0ha0isndaksdj",
        8,
        "OPTIONS",
        Some("z9hG4bKkdjuw"),
        Some("242etr"),
    ),
    (
        "invut",
        "invut.0ha0isndaksdjadsfij34n23d",
        235_448,
        "INVITE",
        Some("z9hG4bKkdjuw"),
        Some("8392034"),
    ),
    (
        "regaut01",
        "regaut01.0ha0isndaksdj",
        9338,
        "REGISTER",
        Some("z9hG4bKkdjuw"),
        Some("87321hj23128"),
    ),
    (
        "bcast",
        "bcast.0384840201234ksdfak3j2erwedfsASdf",
        35,
        "INVITE",
        Some("z9hG4bK1324923"),
        Some("11141343"),
    ),
    (
        "zeromf",
        "zeromf.jfasdlfnm2o2l43r5u0asdfas",
        39_234_321,
        "OPTIONS",
        Some("z9hG4bKkdjuw2349i"),
        Some("3ghsd41"),
    ),
    (
        "cparam01",
        "cparam01.70710@saturn.example.com",
        2,
        "REGISTER",
        Some("z9hG4bKkdjuw"),
        Some("DkfVgjkrtMwaerKKpe"),
    ),
    (
        "cparam02",
        "cparam02.70710@saturn.example.com",
        3,
        "REGISTER",
        Some("z9hG4bKkdjuw"),
        Some("838293"),
    ),
    (
        "regescrt",
        "regescrt.k345asrl3fdbv@192.0.2.1",
        14_398_234,
        "REGISTER",
        Some("z9hG4bKkdjuw"),
        Some("8"),
    ),
    (
        "sdp01",
        "sdp01.ndaksdj9342dasdd",
        8,
        "INVITE",
        Some("z9hG4bKkdjuw"),
        Some("234"),
    ),
    (
        "inv2543",
        "inv2543.1717@ift.client.example.com",
        56,
        "INVITE",
        None,
        None,
    ),
    (
        "ipv6-good",
        "SSG9559905523997077@hlau_4100",
        98_176,
        "REGISTER",
        Some("z9hG4bKas3-111"),
        Some("81x2"),
    ),
    (
        "port-ambiguous",
        "SSG9559905523997077@hlau_4100",
        98_176,
        "REGISTER",
        Some("z9hG4bKas3-111"),
        Some("81x2"),
    ),
    (
        "port-unambiguous",
        "SSG9559905523997077@hlau_4100",
        98_176,
        "REGISTER",
        Some("z9hG4bKas3-111"),
        Some("81x2"),
    ),
    (
        "via-received-param-with-delim",
        "SSG9559905523997077@hlau_4100",
        321,
        "BYE",
        Some("z9hG4bKas3-111"),
        Some("81x2"),
    ),
    (
        "via-received-param-no-delim",
        "SSG95523997077@hlau_4100",
        921,
        "OPTIONS",
        Some("z9hG4bKas3"),
        Some("81x2"),
    ),
    (
        "ipv6-in-sdp",
        "SSG9559905523997077@hlau_4100",
        8612,
        "INVITE",
        Some("z9hG4bKas3-111"),
        Some("81x2"),
    ),
    (
        "mult-ip-in-header",
        "997077@lau_4100",
        89_187,
        "BYE",
        Some("z9hG4bKas3-111"),
        Some("81x2"),
    ),
    (
        "mult-ip-in-sdp",
        "SSG9559905523997077@hlau_4100",
        8912,
        "INVITE",
        Some("z9hG4bKas3-111"),
        Some("81x2"),
    ),
    (
        "ipv4-mapped-ipv6",
        "SSG9559905523997077@hlau_4100",
        612,
        "INVITE",
        Some("z9hG4bKbh19"),
        Some("81x2"),
    ),
    (
        "ipv6-bug-abnf-3-colons",
        "G9559905523997077@hlau_4100",
        689,
        "OPTIONS",
        Some("z9hG4bKas3-111"),
        Some("810x2"),
    ),
    (
        "ipv6-correct-abnf-2-colons",
        "G9559905523997077@hlau_4100",
        689,
        "OPTIONS",
        Some("z9hG4bKas3-111"),
        Some("810x2"),
    ),
];

struct Case {
    name: &'static str,
    expect: Expect,
    bytes: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let mut all: Vec<Case> = rfc4475::CASES
        .iter()
        .map(|c| Case {
            name: c.name,
            expect: c.expect,
            bytes: c.bytes.to_vec(),
        })
        .collect();
    all.extend(rfc5118::CASES.iter().map(|c| Case {
        name: c.name,
        expect: c.expect,
        bytes: c.wire().to_vec(),
    }));
    all
}

fn expected(name: &str) -> &'static Row {
    EXPECTED
        .iter()
        .find(|r| r.0 == name)
        .unwrap_or_else(|| panic!("no expected keys for {name}"))
}

#[test]
fn valid_messages_parse_with_the_right_keys() {
    let valid: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.expect == Expect::ParseOk)
        .collect();
    assert_eq!(valid.len(), 38);
    assert_eq!(EXPECTED.len(), 38);
    let mut right = 0;
    for c in &valid {
        let msg = parse(&c.bytes).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let &(_, call_id, seq, method, branch, tag) = expected(c.name);
        assert_eq!(msg.call_id(), Ok(call_id), "{}", c.name);
        assert_eq!(msg.cseq(), Ok((seq, method)), "{}", c.name);
        let via = msg.top_via().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(via.branch, branch, "{}", c.name);
        let from = msg.from().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(from.tag, tag, "{}", c.name);
        msg.to().unwrap_or_else(|e| panic!("{}: To: {e}", c.name));
        for v in msg.vias() {
            sipauth_sip::parse_via(v).unwrap_or_else(|e| panic!("{}: {v:?}: {e}", c.name));
        }
        for contact in msg.contacts() {
            contact.unwrap_or_else(|e| panic!("{}: Contact: {e}", c.name));
        }
        msg.max_forwards()
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        msg.date().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        msg.validate()
            .unwrap_or_else(|e| panic!("{}: validate: {e}", c.name));
        right += 1;
    }
    println!(
        "valid: {right}/{} parsed with the right Call-ID, CSeq, branch and From tag",
        valid.len()
    );
}

fn is_framing(e: &ParseError) -> bool {
    matches!(
        e,
        ParseError::UnterminatedHeaders
            | ParseError::InvalidContentLength
            | ParseError::DuplicateContentLength
            | ParseError::BodyTruncated { .. }
            | ParseError::MissingContentLength
    )
}

#[test]
fn parser_level_invalid_messages_are_rejected() {
    let mut rejected = 0;
    let mut total = 0;
    for c in cases() {
        let Expect::ParseErr(fault) = c.expect else {
            continue;
        };
        total += 1;
        let e = parse(&c.bytes)
            .err()
            .unwrap_or_else(|| panic!("{} parsed", c.name));
        match fault {
            Fault::Framing => assert!(is_framing(&e), "{}: {e:?}", c.name),
            Fault::StartLine => assert!(
                matches!(e, ParseError::StartLine { .. }),
                "{}: {e:?}",
                c.name
            ),
            _ => {}
        }
        rejected += 1;
    }
    assert_eq!(total, 10);
    println!("parser-level invalid: {rejected}/{total} rejected");
}

fn read_named(msg: &Message<'_>, header: &str) -> Result<(), ParseError> {
    match header {
        "Via" => {
            msg.top_via()?;
            for v in msg.vias() {
                sipauth_sip::parse_via(v)?;
            }
            Ok(())
        }
        "CSeq" => msg.cseq().map(drop),
        "To" => msg.to().map(drop),
        "From" => msg.from().map(drop),
        "Date" => msg.date().map(drop),
        "Contact" => msg.contacts().try_for_each(|c| c.map(drop)),
        "Call-ID" => msg.call_id().map(drop),
        other => panic!("no accessor mapped for {other}"),
    }
}

#[test]
fn header_level_invalid_messages_fail_when_the_header_is_read() {
    let mut failed = 0;
    let mut total = 0;
    for c in cases() {
        let Expect::HeaderErr(header) = c.expect else {
            continue;
        };
        total += 1;
        let msg = parse(&c.bytes).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let e = read_named(&msg, header)
            .err()
            .unwrap_or_else(|| panic!("{}: {header} read fine", c.name));
        assert!(
            matches!(e, ParseError::InvalidHeader { .. }),
            "{}: {e:?}",
            c.name
        );
        // The other required headers still read, so a 400 can be built.
        assert!(msg.call_id().is_ok(), "{}", c.name);
        failed += 1;
    }
    assert_eq!(total, 7);
    println!("header-level invalid: {failed}/{total} fail when the named header is read");
}

#[test]
fn application_level_invalid_messages_fail_validation() {
    let mut failed = 0;
    let mut total = 0;
    for c in cases() {
        let Expect::ValidateErr(why) = c.expect else {
            continue;
        };
        total += 1;
        let msg = parse(&c.bytes).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let e = msg
            .validate()
            .err()
            .unwrap_or_else(|| panic!("{}: validated ({why})", c.name));
        println!("{}: {e}", c.name);
        failed += 1;
    }
    assert_eq!(total, 6);
    println!("application-level invalid: {failed}/{total} fail validate()");
}

#[test]
fn nothing_panics_on_any_message() {
    let all = common::corpus();
    assert_eq!(all.len(), 62);
    for (_, bytes) in all {
        common::poke(&bytes);
    }
}

#[test]
fn stream_framing_finds_the_first_of_two_messages() {
    let mut framed = 0;
    for c in cases().into_iter().filter(|c| c.expect == Expect::ParseOk) {
        let msg = parse(&c.bytes).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let len = msg.span().end;
        let one = &c.bytes[..len];
        let stream = [one, one].concat();
        if msg.header("Content-Length").is_none() {
            assert_eq!(
                frame(&stream),
                Err(ParseError::MissingContentLength),
                "{}",
                c.name
            );
            continue;
        }
        assert_eq!(frame(&stream), Ok(Some(len)), "{}", c.name);
        // With keep-alives in front, the CRLFs belong to the first message.
        let with_ping = [b"\r\n\r\n".as_slice(), one, one].concat();
        assert_eq!(frame(&with_ping), Ok(Some(len + 4)), "{}", c.name);
        let again = parse(&with_ping[..len + 4]).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(again.call_id(), msg.call_id());
        // Every strict prefix needs more bytes.
        for cut in 0..len {
            assert_eq!(frame(&one[..cut]), Ok(None), "{} cut at {cut}", c.name);
        }
        framed += 1;
    }
    println!("framed {framed} valid messages back to back");
}
