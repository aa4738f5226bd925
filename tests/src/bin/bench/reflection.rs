//! What a flood of INVITEs from forged sources gets back: datagrams and
//! bytes leaving the edge per request received, for a `credential`
//! application (407 challenges) and an `ip_acl` one (403 denials), with
//! XDP off and on, with the budget out of the way and at its default.
//! Replies are counted by an iptables rule on the way out. Written to
//! `bench-results/reflection.json`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use sipauth_tests::agent::{Agent, Options};
use sipauth_tests::metric;
use sipauth_tests::peers::{SentCounter, flood_spoofed, invite};
use sipauth_tests::topo::Rig;

const FLOOD: u64 = 200_000;

struct Row {
    xdp: &'static str,
    kind: &'static str,
    budget: u32,
    request_bytes: usize,
    sent: u64,
    secs: f64,
    reached: u64,
    replies: u64,
    reply_bytes: u64,
}

fn app(agent: &Agent<'_>, kind: &str, allowed: &str) -> String {
    let mut body = json!({
        "app_name": "reflection",
        "answer_url": "http://127.0.0.1:9/answer",
        "sip_auth_type": kind,
    });
    if kind == "credential" {
        let c = agent.create(
            "SipAuth/Credential/",
            &json!({"username": "pbx-user", "password": "Secret123"}),
        );
        body["credential_uuid"] = c["credential_uuid"].clone();
    } else {
        let acl = agent.create("SipAuth/IpAccessControlList/", &json!({"name": "bench"}));
        let uuid = acl["ip_acl_uuid"].as_str().expect("acl uuid").to_owned();
        agent.create(
            &format!("SipAuth/IpAccessControlList/{uuid}/Entry/"),
            &json!({"ip": allowed, "cidr_prefix": 32}),
        );
        body["ip_acl_uuid"] = json!(uuid);
    }
    let app = agent.create("Application/", &body)["app_id"]
        .as_str()
        .expect("app_id")
        .to_owned();
    sipauth_tests::calls::until_edge_has(agent, &app);
    app
}

fn measure(xdp: &'static str, kind: &'static str, budget: u32) -> Row {
    let rig = Rig::new(2);
    let opts = Options {
        xdp_mode: xdp,
        sip_extra: format!("unproven_replies_per_sec = {budget}\n"),
        ..Options::default()
    };
    let agent = Agent::start(&rig, &opts);
    let (c1, c2) = (rig.caller(0), rig.caller(1));
    let app = app(&agent, kind, &c1.v4.to_string());
    rig.edge
        .ip(&["route", "add", "10.202.0.0/16", "via", &c2.v4.to_string()]);
    let counter = SentCounter::new(&rig.edge, "10.202.0.0/16");
    let payload = invite(
        &app,
        SocketAddr::new(c2.v4, 5060),
        SocketAddr::new(c2.edge_v4, 5060),
        "forged",
    );
    let before = agent.metrics();
    let started = Instant::now();
    flood_spoofed(c2, [10, 202], 5060, payload.as_bytes(), FLOOD);
    let secs = started.elapsed().as_secs_f64();
    // Long enough for Timer G to have resent anything it would.
    std::thread::sleep(Duration::from_secs(4));
    let after = agent.metrics();
    let key = r#"sipauth_sip_requests_total{method="INVITE"}"#;
    let reached = metric(&after, key) - metric(&before, key);
    let (replies, reply_bytes) = counter.read();
    drop(counter);
    drop(agent);
    Row {
        xdp,
        kind,
        budget,
        request_bytes: payload.len(),
        sent: FLOOD,
        secs,
        reached,
        replies,
        reply_bytes,
    }
}

pub fn run(out: &Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (xdp, kind) in [
        ("off", "credential"),
        ("native", "credential"),
        ("off", "ip_acl"),
        ("native", "ip_acl"),
    ] {
        for budget in [1_000_000, 1000] {
            rows.push(measure(xdp, kind, budget));
        }
    }
    println!(
        "{:<7} {:<10} {:>8} {:>9} {:>9} {:>9} {:>13} {:>15}",
        "xdp", "app", "budget", "sent", "reached", "replies", "replies/req", "reply bytes/req"
    );
    let mut results = Vec::new();
    for r in &rows {
        // Bytes on the wire: the UDP payload plus 28 bytes of IPv4 and UDP
        // headers, as iptables counts the replies.
        let wire_request = r.request_bytes as f64 + 28.0;
        let per_request = r.replies as f64 / r.reached.max(1) as f64;
        let bytes_ratio = r.reply_bytes as f64 / (r.reached.max(1) as f64 * wire_request);
        println!(
            "{:<7} {:<10} {:>8} {:>9} {:>9} {:>9} {:>13.3} {:>15.3}",
            r.xdp, r.kind, r.budget, r.sent, r.reached, r.replies, per_request, bytes_ratio
        );
        results.push(json!({
            "xdp": r.xdp,
            "application": r.kind,
            "unproven_replies_per_sec": r.budget,
            "request_bytes": r.request_bytes,
            "forged_sent": r.sent,
            "flood_seconds": r.secs,
            "reached_user_space": r.reached,
            "replies": r.replies,
            "reply_bytes": r.reply_bytes,
            "replies_per_request_received": per_request,
            "reply_bytes_per_request_byte_received": bytes_ratio,
            "mean_reply_bytes": r.reply_bytes as f64 / r.replies.max(1) as f64 - 28.0,
        }));
    }
    let file = out.join("reflection.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "benchmark": "INVITEs from forged sources (random addresses of a /16), one trafgen process; replies counted leaving the edge",
            "results": results,
        }))?,
    )?;
    println!("written to {}", file.display());
    crate::pictures::draw(out, "reflection")
}
