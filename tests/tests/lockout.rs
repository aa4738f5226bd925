//! Lockouts under attack, over real packets: forged failures against a
//! never-lock source (from the config and added at run time), and IPv6
//! sources counted and locked out per /64.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::{Value, json};
use sipauth_tests::agent::{Agent, Options, RIG_AUTH_TOKEN};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::calls::{id, until_edge_has};
use sipauth_tests::metric;
use sipauth_tests::peers::{invite, options, status, udp_replies};
use sipauth_tests::topo::{Link, Rig};
use sipauth_tests::wire::Wire;

const REJECT: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup reason="rejected"/></Response>"#;
const ANSWER: &str = "127.0.0.1:8090";
const NEVER_LOCK_DROP: &str =
    r#"sipauth_xdp_packets_total{verdict="drop",reason="acl_denied_never_lock"}"#;
const ACL_DROP: &str = r#"sipauth_xdp_packets_total{verdict="drop",reason="acl_denied"}"#;
const LOCKED_DROP: &str = r#"sipauth_xdp_packets_total{verdict="drop",reason="locked_out"}"#;
const LOCKED_BUDGET: &str =
    r#"sipauth_xdp_packets_total{verdict="pass",reason="locked_out_budget"}"#;
const NEVER_LOCK_FAILURES: &str = "sipauth_never_lock_failures_total";

/// An `ip_acl` application whose ACL holds `nets`, once the edge has it.
fn acl_app(agent: &Agent<'_>, answer: &AnswerServer, nets: &[(String, u8)]) -> String {
    let acl = id(
        &agent.create("SipAuth/IpAccessControlList/", &json!({"name": "rig"})),
        "ip_acl_uuid",
    );
    for (ip, prefix) in nets {
        agent.create(
            &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
            &json!({"ip": ip, "cidr_prefix": prefix}),
        );
    }
    let app = id(
        &agent.create(
            "Application/",
            &json!({
                "app_name": "rig app",
                "answer_url": answer.url("/answer"),
                "hangup_url": answer.url("/hangup"),
                "sip_auth_type": "ip_acl",
                "ip_acl_uuid": acl,
            }),
        ),
        "app_id",
    );
    until_edge_has(agent, &app);
    app
}

/// The edge's SIP address on `c`'s link, in the family of `src`.
fn edge_of(c: &Link, src: IpAddr) -> SocketAddr {
    SocketAddr::new(if src.is_ipv4() { c.edge_v4 } else { c.edge_v6 }, 5060)
}

/// The final status of one UDP request from `src`, or None when nothing
/// answers within `wait`.
fn final_status(c: &Link, src: IpAddr, payload: &str, wait: Duration) -> Option<u16> {
    let replies = udp_replies(&c.ns, src, edge_of(c, src), payload.as_bytes(), wait);
    replies.last().map(|r| status(r)).filter(|s| *s >= 200)
}

/// Sends each datagram once from one socket bound to `src`, without
/// waiting for answers.
fn blast(c: &Link, src: IpAddr, payloads: &[String]) {
    let sock =
        c.ns.enter(|| UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind in netns"));
    for p in payloads {
        sock.send_to(p.as_bytes(), edge_of(c, src)).expect("send");
    }
}

/// The addresses `GET /admin/lockouts` lists.
fn locked(agent: &Agent<'_>) -> Vec<String> {
    let (s, body) = agent.admin("GET", "/admin/lockouts", None);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["lockouts"]
        .as_array()
        .expect("lockouts")
        .iter()
        .map(|l| l["address"].as_str().expect("address").to_owned())
        .collect()
}

fn never_lock(agent: &Agent<'_>) -> Value {
    let (s, body) = agent.admin("GET", "/admin/never-lock", None);
    assert_eq!(s, 200, "{body}");
    serde_json::from_str::<Value>(&body).expect("JSON")["never_lock"].clone()
}

#[test]
fn with_xdp_off_forged_failures_never_lock_out_a_never_lock_source() {
    let rig = Rig::new(2);
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let opts = Options {
        xdp_mode: "off",
        lockout_extra: format!("never_lock = [\"{}/32\"]\n", c1.v4),
        ..Options::default()
    };
    let agent = Agent::start(&rig, &opts);
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), REJECT, RIG_AUTH_TOKEN);
    let target = acl_app(&agent, &answer, &[("192.0.2.0".to_owned(), 24)]);
    let legit = acl_app(&agent, &answer, &[(c1.v4.to_string(), 32)]);

    // 15 forged failures from each source, judged in user space: every one
    // gets its 403; the never-lock source is only counted, the other is
    // locked out by its 10th.
    for (c, tag) in [(c1, "nl"), (c2, "other")] {
        for n in 0..15 {
            let from = SocketAddr::new(c.v4, 5070);
            let inv = invite(&target, from, edge_of(c, c.v4), &format!("{tag}{n}"));
            assert_eq!(
                final_status(c, c.v4, &inv, Duration::from_secs(2)),
                Some(403),
                "{tag} INVITE {n}"
            );
        }
    }
    let m = agent.metrics();
    assert_eq!(metric(&m, NEVER_LOCK_FAILURES), 15, "{m}");
    assert_eq!(locked(&agent), [c2.v4.to_string()]);

    // The never-lock source still calls its own application.
    let from = SocketAddr::new(c1.v4, 5071);
    let inv = invite(&legit, from, edge_of(c1, c1.v4), "legit-nl");
    assert_eq!(
        final_status(c1, c1.v4, &inv, Duration::from_secs(5)),
        Some(603)
    );
    assert_eq!(answer.wait_for(1).len(), 1);
    // And an operator cannot lock it out.
    let body = json!({"address": c1.v4.to_string(), "duration_secs": 60}).to_string();
    let (s, resp) = agent.admin("POST", "/admin/lockouts", Some(&body));
    assert_eq!(s, 409, "{resp}");
}

#[test]
fn forged_failures_never_lock_out_a_never_lock_source() {
    let rig = Rig::new(3);
    let (c1, c2, c3) = (rig.caller(0), rig.caller(1), rig.caller(2));
    // Budget 0: every denied UDP INVITE is dropped and judged in the kernel.
    let opts = Options {
        budget_per_sec: 0,
        lockout_extra: format!("never_lock = [\"{}/32\"]\n", c1.v4),
        ..Options::default()
    };
    let agent = Agent::start(&rig, &opts);
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), REJECT, RIG_AUTH_TOKEN);
    // The attacked application lets nobody of ours in; the other lets the
    // three callers in.
    let target = acl_app(&agent, &answer, &[("192.0.2.0".to_owned(), 24)]);
    let legit = acl_app(
        &agent,
        &answer,
        &[
            (c1.v4.to_string(), 32),
            (c2.v6.to_string(), 128),
            (c3.v4.to_string(), 32),
        ],
    );

    // Caller 2's /64 is added at run time.
    let add = json!({"cidr": "fd00:201:2::/64"}).to_string();
    let (s, body) = agent.admin("POST", "/admin/never-lock", Some(&add));
    assert_eq!(s, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"cidr": "fd00:201:2::/64", "origin": "runtime", "lockouts_lifted": 0})
    );
    let (s, _) = agent.admin("POST", "/admin/never-lock", Some(&add));
    assert_eq!(s, 200, "listed already");
    let (s, body) = agent.admin(
        "POST",
        "/admin/never-lock",
        Some(r#"{"cidr": "10.201.2.7/24"}"#),
    );
    assert_eq!(s, 400, "host bits: {body}");
    assert!(body.contains("10.201.2.0/24"), "{body}");
    assert_eq!(
        never_lock(&agent),
        json!([
            {"cidr": "10.201.1.2/32", "origin": "config"},
            {"cidr": "fd00:201:2::/64", "origin": "runtime"},
        ])
    );

    // The attack: 12 failing INVITEs from each source.
    let before = agent.metrics();
    for (i, (c, src)) in [(c1, c1.v4), (c2, c2.v6), (c3, c3.v4)]
        .into_iter()
        .enumerate()
    {
        let msgs: Vec<String> = (0..12)
            .map(|n| {
                invite(
                    &target,
                    SocketAddr::new(src, 5070),
                    edge_of(c, src),
                    &format!("atk{i}x{n}"),
                )
            })
            .collect();
        blast(c, src, &msgs);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = agent.metrics();
    let d = |name: &str| metric(&after, name) - metric(&before, name);
    // 24 denials of never-lock sources dropped uncounted; the third source
    // counted 10, was locked out, and its last 2 were dropped as such.
    assert_eq!(d(NEVER_LOCK_DROP), 24, "{after}");
    assert_eq!(d(ACL_DROP), 10, "{after}");
    assert_eq!(d(LOCKED_DROP), 2, "{after}");
    assert_eq!(locked(&agent), [c3.v4.to_string()]);

    // The never-lock sources are still answered, OPTIONS and INVITE alike.
    for (c, src) in [(c1, c1.v4), (c2, c2.v6)] {
        let from = SocketAddr::new(src, 5071);
        let o = options(from, edge_of(c, src), &format!("opt-{src}"));
        assert_eq!(
            final_status(c, src, &o, Duration::from_secs(2)),
            Some(200),
            "{src}"
        );
        let inv = invite(&legit, from, edge_of(c, src), &format!("legit-{src}"));
        assert_eq!(
            final_status(c, src, &inv, Duration::from_secs(5)),
            Some(603),
            "{src}"
        );
    }
    assert_eq!(answer.wait_for(2).len(), 2);
    // The locked-out one is dropped in the kernel.
    let b = metric(&agent.metrics(), LOCKED_DROP);
    let o = options(SocketAddr::new(c3.v4, 5071), edge_of(c3, c3.v4), "opt-c3");
    assert_eq!(final_status(c3, c3.v4, &o, Duration::from_secs(1)), None);
    assert_eq!(metric(&agent.metrics(), LOCKED_DROP) - b, 1);

    // Over TCP (judged in user space): 12 failing INVITEs get 403 each and
    // are counted as never-lock failures, not towards a lockout.
    let mut w = Wire::connect(&c1.ns, SocketAddr::new(c1.edge_v4, 5060));
    let local = w.local();
    for n in 0..12 {
        let msg = invite(
            &target,
            local,
            SocketAddr::new(c1.edge_v4, 5060),
            &format!("tcp{n}"),
        )
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        w.send(msg.as_bytes());
        let (resp, _) = w.recv(Duration::from_secs(2)).expect("a response over TCP");
        assert_eq!(status(&String::from_utf8_lossy(&resp)), 403, "INVITE {n}");
    }
    let m = agent.metrics();
    assert_eq!(metric(&m, NEVER_LOCK_FAILURES), 12, "{m}");
    assert_eq!(locked(&agent), [c3.v4.to_string()]);

    // An operator lockout of a never-lock address is refused, naming why.
    for (addr, cidr) in [(c1.v4, "10.201.1.2/32"), (c2.v6, "fd00:201:2::/64")] {
        let body = json!({"address": addr.to_string(), "duration_secs": 60}).to_string();
        let (s, resp) = agent.admin("POST", "/admin/lockouts", Some(&body));
        assert_eq!(s, 409, "{resp}");
        assert!(resp.contains(cidr) && resp.contains("never-lock"), "{resp}");
    }
    // A config entry cannot be removed at run time.
    let (s, resp) = agent.admin("DELETE", "/admin/never-lock/10.201.1.2/32", None);
    assert_eq!(s, 409, "{resp}");

    // Adding the locked-out source lifts its lockout.
    let (s, body) = agent.admin(
        "POST",
        "/admin/never-lock",
        Some(&json!({"cidr": c3.v4.to_string()}).to_string()),
    );
    assert_eq!(s, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cidr"], "10.201.3.2/32");
    assert_eq!(v["lockouts_lifted"], 1);
    assert!(locked(&agent).is_empty());
    let o = options(
        SocketAddr::new(c3.v4, 5072),
        edge_of(c3, c3.v4),
        "opt-c3-free",
    );
    assert_eq!(
        final_status(c3, c3.v4, &o, Duration::from_secs(2)),
        Some(200)
    );

    // Runtime additions live in the pinned map: a restarted agent keeps
    // them, and drops the config entry its config no longer names.
    let log = agent.stop();
    assert!(log.contains("stopped"), "{log}");
    let agent = Agent::start(
        &rig,
        &Options {
            budget_per_sec: 0,
            ..Options::default()
        },
    );
    assert_eq!(
        never_lock(&agent),
        json!([
            {"cidr": "10.201.3.2/32", "origin": "runtime"},
            {"cidr": "fd00:201:2::/64", "origin": "runtime"},
        ])
    );
    // The slash of a prefix may come encoded.
    let (s, _) = agent.admin("DELETE", "/admin/never-lock/fd00:201:2::%2F64", None);
    assert_eq!(s, 204);
    let (s, _) = agent.admin("DELETE", "/admin/never-lock/fd00:201:2::/64", None);
    assert_eq!(s, 404);
    assert_eq!(
        never_lock(&agent),
        json!([{"cidr": "10.201.3.2/32", "origin": "runtime"}])
    );
}

#[test]
fn ipv6_sources_of_one_64_are_counted_and_locked_out_together() {
    let rig = Rig::new(2);
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    // A budget no test exceeds: every denial is judged in user space.
    let opts = Options {
        budget_per_sec: 1000,
        ..Options::default()
    };
    let agent = Agent::start(&rig, &opts);
    let answer = AnswerServer::start(&rig.edge, ANSWER.parse().unwrap(), REJECT, RIG_AUTH_TOKEN);

    // Two more addresses in caller 1's /64 and one in the next /64.
    let a = c1.v6;
    let b: IpAddr = "fd00:201:1::b".parse().unwrap();
    let c: IpAddr = "fd00:201:1::c".parse().unwrap();
    let other: IpAddr = "fd00:201:1:1::d".parse().unwrap();
    for x in [b, c] {
        c1.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{x}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        rig.edge.ip(&[
            "-6",
            "neigh",
            "replace",
            &x.to_string(),
            "lladdr",
            &c1.mac,
            "dev",
            &c1.edge_dev,
            "nud",
            "permanent",
        ]);
    }
    c1.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{other}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    rig.edge.ip(&[
        "-6",
        "route",
        "add",
        "fd00:201:1:1::/64",
        "via",
        &c1.v6.to_string(),
        "dev",
        &c1.edge_dev,
    ]);

    let target = acl_app(&agent, &answer, &[("192.0.2.0".to_owned(), 24)]);
    let legit = acl_app(&agent, &answer, &[("fd00:201::".to_owned(), 32)]);
    let edge = SocketAddr::new(c1.edge_v6, 5060);
    let fail = |src: IpAddr, n: u32| {
        let msg = invite(
            &target,
            SocketAddr::new(src, 5070),
            edge,
            &format!("f{src}-{n}"),
        );
        final_status(c1, src, &msg, Duration::from_secs(2))
    };
    let call = |link: &Link, src: IpAddr, tag: &str| {
        let msg = invite(&legit, SocketAddr::new(src, 5070), edge_of(link, src), tag);
        final_status(link, src, &msg, Duration::from_secs(5))
    };

    // 5 failures from A and 4 from B: each answered 403, none locks.
    for n in 0..5 {
        assert_eq!(fail(a, n), Some(403), "A {n}");
    }
    for n in 0..4 {
        assert_eq!(fail(b, n), Some(403), "B {n}");
    }
    assert!(locked(&agent).is_empty(), "{:?}", locked(&agent));
    // The 10th, from B, locks the whole /64 out.
    assert_eq!(fail(b, 4), Some(403));
    assert_eq!(locked(&agent), ["fd00:201:1::/64"]);

    // A third address of the /64 gets 403 at once, through the lockout
    // rule's budget; the next /64 and another caller are let in.
    let before = metric(&agent.metrics(), LOCKED_BUDGET);
    assert_eq!(call(c1, c, "third"), Some(403));
    assert_eq!(metric(&agent.metrics(), LOCKED_BUDGET) - before, 1);
    assert_eq!(call(c1, other, "next64"), Some(603));
    assert_eq!(call(c2, c2.v6, "caller2"), Some(603));
    assert_eq!(answer.wait_for(2).len(), 2);
    let m = agent.metrics();
    assert_eq!(metric(&m, "sipauth_invites_denied_total"), 11, "{m}");

    // An operator lockout of an IPv6 address locks its prefix.
    let (s, body) = agent.admin(
        "POST",
        "/admin/lockouts",
        Some(r#"{"address": "fd00:201:2::77", "duration_secs": 60}"#),
    );
    assert_eq!(s, 201, "{body}");
    assert!(body.contains(r#""address":"fd00:201:2::/64""#), "{body}");
    let mut l = locked(&agent);
    l.sort();
    assert_eq!(l, ["fd00:201:1::/64", "fd00:201:2::/64"]);

    // With no budget (a restart keeps the pinned lockouts) the kernel drops
    // the third address outright; the next /64 is still answered.
    drop(agent.stop());
    let agent = Agent::start(
        &rig,
        &Options {
            budget_per_sec: 0,
            ..Options::default()
        },
    );
    let before = metric(&agent.metrics(), LOCKED_DROP);
    let o = options(SocketAddr::new(c, 5073), edge, "opt-third");
    assert_eq!(final_status(c1, c, &o, Duration::from_secs(1)), None);
    assert_eq!(
        final_status(
            c1,
            a,
            &o.replace("opt-third", "opt-a"),
            Duration::from_secs(1)
        ),
        None
    );
    assert_eq!(metric(&agent.metrics(), LOCKED_DROP) - before, 2);
    let o = options(SocketAddr::new(other, 5073), edge, "opt-next");
    assert_eq!(
        final_status(c1, other, &o, Duration::from_secs(2)),
        Some(200)
    );

    // Lifting the prefix, as listed, frees every address in it.
    let (s, _) = agent.admin("DELETE", "/admin/lockouts/fd00:201:1::/64", None);
    assert_eq!(s, 204);
    let o = options(SocketAddr::new(c, 5074), edge, "opt-third-free");
    assert_eq!(final_status(c1, c, &o, Duration::from_secs(2)), Some(200));
}
