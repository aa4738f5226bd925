//! The RFC 4475 and RFC 5118 torture corpora (`sipx-testkit`) sent to a
//! running edge over UDP and over TCP, each message from its own socket,
//! and the answer each gets checked against what the RFCs call for.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipauth_tests::agent::{Agent, Options};
use sipauth_tests::metric;
use sipauth_tests::topo::Rig;
use sipauth_tests::wire::Wire;

/// What a message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// One response with this status code (the first, over TCP).
    Status(u16),
    /// No response: a response, or a message without a request's headers.
    Silent,
}

use Answer::{Silent, Status};

/// What the edge does with the TCP connection after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// Left open for more messages.
    Open,
    /// Closed: the stream cannot be framed (after the 400), or the message
    /// never completes and the first-message deadline passes.
    Closed,
}

use Conn::{Closed, Open};

/// Per case: over UDP, over TCP, and the TCP connection after. Valid
/// requests get what the edge answers any such request (a To-tag without a
/// dialog: 481; an unknown application: 404; an unknown method: 405; a
/// REGISTER: its 401 challenge; OPTIONS: 200; a Require: 420). Invalid ones
/// get 400 naming the fault, 505 for the version (3.1.2.16), 416 for a
/// Request-URI scheme that is not sip or sips (3.3.2, 3.3.3). Responses are
/// never answered.
const TABLE: &[(&str, Answer, Answer, Conn)] = &[
    // RFC 4475 3.1.1: valid messages.
    ("wsinv", Status(481), Status(481), Open),
    ("intmeth", Status(405), Status(405), Open),
    ("esc01", Status(404), Status(404), Open),
    ("escnull", Status(401), Status(401), Open),
    ("esc02", Status(405), Status(405), Open),
    ("lwsdisp", Status(200), Status(200), Open),
    ("longreq", Status(404), Status(404), Open),
    // Over TCP the trailing INVITE is a second message (404), and the 5
    // octets its Content-Length leaves over cannot be framed: closed.
    ("dblreq", Status(401), Status(401), Closed),
    ("semiuri", Status(200), Status(200), Open),
    ("transports", Status(200), Status(200), Open),
    ("mpart01", Status(405), Status(405), Open),
    ("unreason", Silent, Silent, Open),
    ("noreason", Silent, Silent, Open),
    // 3.1.2: invalid messages. 3.1.2.2: over UDP a 400; on a stream the
    // body never completes.
    ("clerr", Status(400), Silent, Closed),
    ("ncl", Status(400), Status(400), Closed),
    ("ltgtruri", Status(400), Status(400), Open),
    ("lwsruri", Status(400), Status(400), Open),
    ("lwsstart", Status(400), Status(400), Open),
    ("trws", Status(400), Status(400), Open),
    ("bigcode", Silent, Silent, Open),
    ("badinv01", Status(400), Status(400), Open),
    ("scalar02", Status(400), Status(400), Open),
    ("scalarlg", Silent, Silent, Open),
    ("quotbal", Status(400), Status(400), Open),
    // 3.1.2.12 lets an element that does not use Date go on.
    ("baddate", Status(404), Status(404), Open),
    ("regbadct", Status(400), Status(400), Open),
    ("badaspec", Status(400), Status(400), Open),
    // No empty line after the headers: a datagram ends there; a stream
    // waits for the rest until the first-message deadline.
    ("baddn", Status(400), Silent, Closed),
    ("escruri", Status(400), Status(400), Open),
    ("badvers", Status(505), Status(505), Open),
    ("mismatch01", Status(400), Status(400), Open),
    ("mismatch02", Status(400), Status(400), Open),
    // 3.2, 3.3: transaction and application layer.
    ("badbranch", Status(200), Status(200), Open),
    ("insuf", Status(400), Status(400), Open),
    ("unkscm", Status(416), Status(416), Open),
    ("novelsc", Status(416), Status(416), Open),
    ("unksm2", Status(401), Status(401), Open),
    ("bext01", Status(420), Status(420), Open),
    // 3.3.6 asks 415 of a UAS that takes the request; the Request-URI
    // names no application, which RFC 3261 8.2.2.1 checks first.
    ("invut", Status(404), Status(404), Open),
    ("regaut01", Status(401), Status(401), Open),
    ("multi01", Status(400), Status(400), Open),
    ("mcl01", Status(400), Status(400), Closed),
    ("bcast", Silent, Silent, Open),
    ("zeromf", Status(200), Status(200), Open),
    ("cparam01", Status(401), Status(401), Open),
    ("cparam02", Status(401), Status(401), Open),
    ("regescrt", Status(401), Status(401), Open),
    ("sdp01", Status(404), Status(404), Open),
    // 3.4.1: RFC 2543 syntax; it carries no Content-Length, which a stream
    // needs (RFC 3261 18.3).
    ("inv2543", Status(404), Status(400), Closed),
    // In the archive, referenced by no section: no Via, no version.
    ("test", Silent, Silent, Open),
    // RFC 5118.
    ("ipv6-good", Status(401), Status(401), Open),
    ("ipv6-bad", Status(400), Status(400), Open),
    ("port-ambiguous", Status(401), Status(401), Open),
    ("port-unambiguous", Status(401), Status(401), Open),
    (
        "via-received-param-with-delim",
        Status(481),
        Status(481),
        Open,
    ),
    (
        "via-received-param-no-delim",
        Status(200),
        Status(200),
        Open,
    ),
    ("ipv6-in-sdp", Status(404), Status(404), Open),
    ("mult-ip-in-header", Status(481), Status(481), Open),
    ("mult-ip-in-sdp", Status(404), Status(404), Open),
    ("ipv4-mapped-ipv6", Status(404), Status(404), Open),
    ("ipv6-bug-abnf-3-colons", Status(200), Status(200), Open),
    ("ipv6-correct-abnf-2-colons", Status(200), Status(200), Open),
];

/// The first-message deadline of the test edge.
const FIRST_MESSAGE: Duration = Duration::from_secs(2);
/// How long a silent case is listened to.
const SILENCE: Duration = Duration::from_millis(400);

fn corpus() -> Vec<(&'static str, Vec<u8>)> {
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

fn status(raw: &[u8]) -> u16 {
    sipauth_sip::parse(raw)
        .ok()
        .and_then(|m| m.status())
        .unwrap_or(0)
}

fn heard(wire: &mut Wire, expect: Answer) -> Answer {
    let wait = match expect {
        Status(_) => Duration::from_secs(3),
        Silent => SILENCE,
    };
    match wire.recv(wait) {
        Some((raw, _)) => Status(status(&raw)),
        None => Silent,
    }
}

/// Whether the edge closed `wire` within `within` (reads past anything
/// still coming).
fn closes(wire: &mut Wire, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let Wire::Tcp { stream, .. } = wire else {
            return false;
        };
        let mut buf = [0u8; 4096];
        let _ = stream
            .tcp()
            .set_read_timeout(Some(Duration::from_millis(100)));
        match std::io::Read::read(stream, &mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn torture_corpus_gets_the_answers_the_rfcs_call_for_over_udp_and_tcp() {
    let rig = Rig::new(1);
    let opts = Options {
        sip_extra: format!(
            "challenge_algorithms = [\"MD5\", \"SHA-256\"]\n[tcp]\nfirst_message_secs = {}\n",
            FIRST_MESSAGE.as_secs()
        ),
        ..Options::default()
    };
    let agent = Agent::start(&rig, &opts);
    let c = rig.caller(0);
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let corpus = corpus();
    assert_eq!(corpus.len(), 62);
    assert_eq!(TABLE.len(), corpus.len(), "one row per message");

    let mut wrong = Vec::new();
    let mut expected_400 = 0;
    for (name, bytes) in &corpus {
        let &(_, udp, tcp, conn) = TABLE
            .iter()
            .find(|r| r.0 == *name)
            .unwrap_or_else(|| panic!("no row for {name}"));
        expected_400 += u64::from(udp == Status(400)) + u64::from(tcp == Status(400));

        let mut w = Wire::udp(&c.ns, SocketAddr::new(c.v4, 0), Some(edge));
        w.send(bytes);
        let got = heard(&mut w, udp);
        if got != udp {
            wrong.push(format!("{name} over UDP: {got:?}, expected {udp:?}"));
        }

        let mut w = Wire::connect(&c.ns, edge);
        w.send(bytes);
        let got = heard(&mut w, tcp);
        if got != tcp {
            wrong.push(format!("{name} over TCP: {got:?}, expected {tcp:?}"));
        }
        let closed = closes(
            &mut w,
            match conn {
                Closed => FIRST_MESSAGE + Duration::from_secs(2),
                Open => SILENCE,
            },
        );
        if closed != (conn == Closed) {
            wrong.push(format!(
                "{name} over TCP: connection {}, expected {conn:?}",
                if closed { "closed" } else { "open" }
            ));
        }
        println!("{name}: UDP {udp:?}, TCP {tcp:?} then {conn:?}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let m = agent.metrics();
    // Every 400 and 505 is sent once: the refusals are stateless.
    assert_eq!(
        metric(&m, "sipauth_sip_responses_total{code=\"400\"}"),
        expected_400,
        "{m}"
    );
    assert_eq!(metric(&m, "sipauth_sip_responses_total{code=\"505\"}"), 2);
    assert_eq!(metric(&m, "sipauth_sip_responses_total{code=\"416\"}"), 4);
    // Nothing crashed the edge, and every connection ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(
        &agent.metrics(),
        "sipauth_connections_open{transport=\"tcp\"}",
    ) > 0
    {
        assert!(Instant::now() < deadline, "connections left open");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.stop();
    assert!(!log.contains("panicked"), "{log}");
}
