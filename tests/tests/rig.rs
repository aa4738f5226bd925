//! The edge in a network namespace with XDP on its veths, driven by real
//! peers from caller namespaces.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use sipauth_kernel::lockout::{show, source_key};
use sipauth_tests::agent::{Agent, Options};
use sipauth_tests::metric;
use sipauth_tests::peers::{Sipp, flood, invite, status, tx_packets, udp_exchange};
use sipauth_tests::topo::{Link, Rig};

const LOCKED_DROP: &str = r#"sipauth_xdp_packets_total{verdict="drop",reason="locked_out"}"#;
const LOCKED_BUDGET: &str =
    r#"sipauth_xdp_packets_total{verdict="pass",reason="locked_out_budget"}"#;
const ALLOWED: &str = r#"sipauth_xdp_packets_total{verdict="pass",reason="allowed"}"#;
const NOT_SIP: &str = r#"sipauth_xdp_packets_total{verdict="pass",reason="not_sip"}"#;
const INVITES: &str = r#"sipauth_sip_requests_total{method="INVITE"}"#;

fn sipp<'a>(c: &'a Link, scenario: &'a str, v6: bool, tcp: bool) -> Sipp<'a> {
    let (local, edge) = if v6 {
        (c.v6, c.edge_v6)
    } else {
        (c.v4, c.edge_v4)
    };
    Sipp {
        ns: &c.ns,
        scenario,
        local,
        target: SocketAddr::new(edge, 5060),
        tcp,
        calls: 1,
        rate: 10,
        service: "app1",
        auth: None,
        vars: Vec::new(),
    }
}

/// A TCP connection from a locked-out source is accepted and reset by the
/// edge before anything is read.
fn refused_over_tcp(c: &Link, v6: bool) {
    let edge = SocketAddr::new(if v6 { c.edge_v6 } else { c.edge_v4 }, 5060);
    let reset = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        )
    };
    match c
        .ns
        .enter(|| TcpStream::connect_timeout(&edge, Duration::from_secs(5)))
    {
        Err(e) => assert!(reset(&e), "v6={v6}: {e}"),
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            match s.read(&mut [0u8; 64]) {
                Ok(0) => {}
                Err(e) if reset(&e) => {}
                other => panic!("v6={v6}: the connection stayed open: {other:?}"),
            }
        }
    }
}

#[test]
fn options_get_200_over_udp_and_tcp_ipv4_and_ipv6() {
    let rig = Rig::new(1);
    let agent = Agent::start(&rig, &Options::default());
    assert!(agent.log().contains("mode=\"native\""), "{}", agent.log());
    let c = rig.caller(0);
    for v6 in [false, true] {
        for tcp in [false, true] {
            let mut s = sipp(c, "options.xml", v6, tcp);
            s.calls = 3;
            s.run().unwrap_or_else(|e| panic!("v6={v6} tcp={tcp}: {e}"));
        }
    }
    let m = agent.metrics();
    assert!(metric(&m, ALLOWED) >= 12, "{m}");
    assert_eq!(
        metric(&m, r#"sipauth_sip_responses_total{code="200"}"#),
        12,
        "{m}"
    );
}

#[test]
fn invites_get_404_until_locked_out_then_403() {
    let rig = Rig::new(1);
    let agent = Agent::start(&rig, &Options::default());
    let c = rig.caller(0);
    for v6 in [false, true] {
        sipp(c, "invite_404.xml", v6, false).run().unwrap();
    }
    agent.lock_out(c.v4, 300);
    agent.lock_out(c.v6, 300);
    let (status, list) = agent.admin("GET", "/admin/lockouts", None);
    assert_eq!(status, 200);
    // IPv6 sources are locked out per /64, and listed so.
    let v6_prefix = show(source_key(c.v6, 64), 64);
    assert_eq!(v6_prefix, "fd00:201:1::/64");
    assert!(
        list.contains(&c.v4.to_string()) && list.contains(&v6_prefix),
        "{list}"
    );
    for v6 in [false, true] {
        sipp(c, "invite_403.xml", v6, false)
            .run()
            .unwrap_or_else(|e| panic!("v6={v6}: {e}"));
        // Over TCP the connection itself is refused.
        refused_over_tcp(c, v6);
    }
    let m = agent.metrics();
    assert_eq!(
        metric(
            &m,
            r#"sipauth_connections_refused_total{transport="tcp",reason="locked_out"}"#
        ),
        2,
        "{m}"
    );
    // OPTIONS from a locked-out source still reach user space only within
    // the budget, but the edge answers what reaches it.
    agent.lift(c.v4);
    agent.lift(c.v6);
    sipp(c, "invite_404.xml", false, false).run().unwrap();
    sipp(c, "invite_404.xml", true, true).run().unwrap();
}

#[test]
fn admin_endpoints_need_the_token_and_check_input() {
    let rig = Rig::new(1);
    let agent = Agent::start(&rig, &Options::default());
    let r = sipauth_tests::http::request(
        &rig.edge,
        agent.http,
        "GET",
        "/admin/lockouts",
        Some("Bearer wrong"),
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    let r =
        sipauth_tests::http::request(&rig.edge, agent.http, "GET", "/admin/lockouts", None, None)
            .unwrap();
    assert_eq!(r.status, 401);
    let (s, body) = agent.admin(
        "POST",
        "/admin/lockouts",
        Some(r#"{"address":"example.com"}"#),
    );
    assert_eq!(s, 400);
    assert!(body.contains("address"), "{body}");
    let (s, body) = agent.admin(
        "POST",
        "/admin/lockouts",
        Some(r#"{"address":"192.0.2.1","duration_secs":0}"#),
    );
    assert_eq!(s, 400);
    assert!(body.contains("duration_secs"), "{body}");
    let (s, _) = agent.admin("DELETE", "/admin/lockouts/192.0.2.99", None);
    assert_eq!(s, 404);
}

#[test]
fn flood_from_locked_out_source_is_dropped_in_xdp_while_others_are_served() {
    const BUDGET: u32 = 10;
    const FLOOD: u64 = 1_000_000;
    let rig = Rig::new(2);
    let agent = Agent::start(
        &rig,
        &Options {
            budget_per_sec: BUDGET,
            ..Options::default()
        },
    );
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    agent.lock_out(c1.v4, 600);

    let before = agent.metrics();
    let mut other = sipp(c2, "options.xml", false, false);
    other.calls = 40;
    other.rate = 20;
    // sipp runs during the flood: 40 OPTIONS over 2 s.
    let other = other.command().spawn().expect("sipp from caller2");
    let payload = invite(
        "app1",
        SocketAddr::new(c1.v4, 5090),
        SocketAddr::new(c1.edge_v4, 5060),
        "flood",
    );
    let tx = tx_packets(c1);
    let sender = flood(c1, 5090, 5060, payload.as_bytes(), FLOOD);
    let sent = tx_packets(c1) - tx;
    let other = other.wait_with_output().expect("sipp from caller2");
    assert!(
        other.status.success(),
        "caller2 OPTIONS failed during the flood: {}",
        String::from_utf8_lossy(&other.stdout)
    );
    std::thread::sleep(Duration::from_millis(200));
    let after = agent.metrics();

    let dropped = metric(&after, LOCKED_DROP) - metric(&before, LOCKED_DROP);
    let passed = metric(&after, LOCKED_BUDGET) - metric(&before, LOCKED_BUDGET);
    let seen = metric(&after, INVITES) - metric(&before, INVITES);
    let secs = sender.as_secs() + 2;
    eprintln!(
        "flood of {sent} (asked {FLOOD}) in {sender:?}: dropped {dropped}, passed {passed}, INVITEs seen {seen}"
    );
    assert!(
        passed <= u64::from(BUDGET) * secs,
        "passed {passed} in {secs} s"
    );
    assert!(
        seen <= passed,
        "user space saw {seen} INVITEs, budget passed {passed}"
    );
    assert!(
        dropped * 100 >= (sent - passed) * 99,
        "dropped {dropped} of {} beyond the budget",
        sent - passed
    );
}

#[test]
fn lockout_is_enforced_across_an_agent_restart() {
    let rig = Rig::new(1);
    let c = rig.caller(0);
    let agent = Agent::start(&rig, &Options::default());
    agent.lock_out(c.v4, 600);
    let log = agent.stop();
    assert!(log.contains("stopped"), "{log}");

    let agent = Agent::start(&rig, &Options::default());
    let (_, list) = agent.admin("GET", "/admin/lockouts", None);
    assert!(list.contains(&c.v4.to_string()), "{list}");
    sipp(c, "invite_403.xml", false, false).run().unwrap();
    let before = metric(&agent.metrics(), LOCKED_DROP);
    let payload = invite(
        "app1",
        SocketAddr::new(c.v4, 5091),
        SocketAddr::new(c.edge_v4, 5060),
        "after-restart",
    );
    flood(c, 5091, 5060, payload.as_bytes(), 10_000);
    let dropped = metric(&agent.metrics(), LOCKED_DROP) - before;
    assert!(dropped >= 9_900, "dropped {dropped} of 10000 after restart");
}

#[test]
fn non_sip_traffic_from_a_locked_out_source_is_untouched() {
    let rig = Rig::new(1);
    let c = rig.caller(0);
    let agent = Agent::start(
        &rig,
        &Options {
            budget_per_sec: 0,
            ..Options::default()
        },
    );
    agent.lock_out(c.v4, 600);
    agent.lock_out(c.v6, 600);
    let before = agent.metrics();

    for dst in [c.edge_v4, c.edge_v6] {
        let out =
            c.ns.cmd("ping")
                .args(["-c", "3", "-i", "0.2", "-W", "2", &dst.to_string()])
                .output()
                .unwrap();
        assert!(
            out.status.success(),
            "ping {dst}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A UDP service on another port of the edge.
    let server = rig
        .edge
        .enter(|| UdpSocket::bind(SocketAddr::new(c.edge_v4, 5099)).unwrap());
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let client =
        c.ns.enter(|| UdpSocket::bind(SocketAddr::new(c.v4, 0)).unwrap());
    client
        .send_to(b"not sip", SocketAddr::new(c.edge_v4, 5099))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = server
        .recv_from(&mut buf)
        .expect("datagram to port 5099 arrives");
    assert_eq!(&buf[..n], b"not sip");

    // SIP from it, with a budget of 0, gets nothing at all.
    let msg = invite(
        "app1",
        SocketAddr::new(c.v4, 5092),
        SocketAddr::new(c.edge_v4, 5060),
        "silent",
    );
    assert!(
        udp_exchange(
            &c.ns,
            c.v4,
            SocketAddr::new(c.edge_v4, 5060),
            msg.as_bytes(),
            Duration::from_millis(500)
        )
        .is_none()
    );

    let after = agent.metrics();
    assert!(
        metric(&after, NOT_SIP) - metric(&before, NOT_SIP) >= 7,
        "{after}"
    );
    assert_eq!(
        metric(&after, LOCKED_DROP) - metric(&before, LOCKED_DROP),
        1
    );
}

#[test]
fn malformed_sip_gets_400_or_is_dropped_unknown_extensions_420_and_the_edge_keeps_serving() {
    let rig = Rig::new(1);
    let c = rig.caller(0);
    let agent = Agent::start(&rig, &Options::default());
    let edge = SocketAddr::new(c.edge_v4, 5060);
    let wait = Duration::from_millis(500);
    let good = invite("app1", SocketAddr::new(c.v4, 5093), edge, "m1");
    // CSeq method does not match: 400.
    let bad = good.replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
    let r = udp_exchange(&c.ns, c.v4, edge, bad.as_bytes(), wait).expect("an answer");
    assert_eq!(status(&r), 400, "{r}");
    // No Via: no one to answer.
    let no_via: String = good
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("Via:"))
        .collect();
    assert!(udp_exchange(&c.ns, c.v4, edge, no_via.as_bytes(), wait).is_none());
    // Garbage.
    assert!(udp_exchange(&c.ns, c.v4, edge, &[0xff; 300], wait).is_none());
    // An extension the edge does not support: 420 naming it.
    let requires = invite("app1", SocketAddr::new(c.v4, 5093), edge, "m2").replacen(
        "Max-Forwards:",
        "Require: 100rel, timer\r\nMax-Forwards:",
        1,
    );
    let r = udp_exchange(&c.ns, c.v4, edge, requires.as_bytes(), wait).expect("an answer");
    assert_eq!(status(&r), 420, "{r}");
    assert!(r.contains("Unsupported: 100rel, timer\r\n"), "{r}");
    // Still serving.
    let r = udp_exchange(&c.ns, c.v4, edge, good.as_bytes(), wait).expect("an answer");
    assert_eq!(status(&r), 404, "{r}");
    let m = agent.metrics();
    assert!(metric(&m, "sipauth_sip_dropped_total") >= 2, "{m}");
}

#[test]
fn auto_mode_falls_back_to_generic_where_native_is_missing() {
    let rig = Rig::new(1);
    // Loopback has no native XDP.
    let agent = Agent::start(
        &rig,
        &Options {
            xdp_mode: "auto",
            interfaces: Some(vec!["lo".to_owned()]),
            ..Options::default()
        },
    );
    let log = agent.log();
    assert!(log.contains("falling back to generic mode"), "{log}");
    assert!(log.contains("mode=\"generic\""), "{log}");
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let msg = invite(
        "app1",
        SocketAddr::new(lo, 5094),
        SocketAddr::new(lo, 5060),
        "lo1",
    );
    let wait = Duration::from_secs(1);
    let r = udp_exchange(
        &rig.edge,
        lo,
        SocketAddr::new(lo, 5060),
        msg.as_bytes(),
        wait,
    );
    assert_eq!(r.as_deref().map(status), Some(404));
    agent.lock_out(lo, 60);
    let before = metric(&agent.metrics(), LOCKED_BUDGET) + metric(&agent.metrics(), LOCKED_DROP);
    // A new request: the same one again would be a retransmission and get
    // the 404 of its transaction.
    let msg = invite(
        "app1",
        SocketAddr::new(lo, 5094),
        SocketAddr::new(lo, 5060),
        "lo2",
    );
    let r = udp_exchange(
        &rig.edge,
        lo,
        SocketAddr::new(lo, 5060),
        msg.as_bytes(),
        wait,
    );
    assert_eq!(r.as_deref().map(status), Some(403));
    let after = metric(&agent.metrics(), LOCKED_BUDGET) + metric(&agent.metrics(), LOCKED_DROP);
    assert_eq!(
        after - before,
        1,
        "the generic-mode program judged the INVITE"
    );
}

#[test]
fn xdp_off_enforces_lockouts_in_user_space() {
    let rig = Rig::new(1);
    let c = rig.caller(0);
    let agent = Agent::start(
        &rig,
        &Options {
            xdp_mode: "off",
            ..Options::default()
        },
    );
    assert!(!agent.metrics().contains("sipauth_xdp_packets_total"));
    sipp(c, "invite_404.xml", false, false).run().unwrap();
    agent.lock_out(c.v4, 60);
    sipp(c, "invite_403.xml", false, false).run().unwrap();
    refused_over_tcp(c, false);
    agent.lift(c.v4);
    sipp(c, "invite_404.xml", false, true).run().unwrap();
}
