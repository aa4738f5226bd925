//! API write to a remote edge's applied view: `bench-results/propagation.json`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

/// Both store backends, one after the other.
pub fn run(out: &Path) -> anyhow::Result<()> {
    let prop: Vec<serde_json::Value> = ["sqlite", "postgres"]
        .into_iter()
        .map(propagation)
        .collect();
    let file = out.join("propagation.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "benchmark": "API write (ACL entry change) to a remote edge's applied view",
            "results": prop,
        }))?,
    )?;
    println!("written to {}", file.display());
    crate::pictures::draw(out, "propagation")
}

/// API write to edge-applied latency: 200 changes of an ACL entry through
/// the API of a control plane, each timed until a remote edge's view shows
/// it (polled every 2 ms).
fn propagation(backend: &str) -> serde_json::Value {
    use reqwest::blocking::Client;
    use sipauth_tests::control::{Control, EdgeProc};
    let pg = (backend == "postgres").then(sipauth_tests::pg::Postgres::start);
    let url = pg.as_ref().map(|p| p.database("bench"));
    let control = Control::start(url.as_deref(), "");
    let state = tempfile::tempdir().expect("state dir");
    let edge = EdgeProc::start(&control.base, &control.edge_token, state.path());
    let http = Client::new();
    let a = &control.accounts[0];
    let api = |path: &str, body: serde_json::Value| -> serde_json::Value {
        let r = http
            .post(format!("{}/v1/Account/{}/{path}", control.base, a.auth_id))
            .basic_auth(&a.auth_id, Some(&a.auth_token))
            .json(&body)
            .send()
            .expect("API");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().expect("JSON")
    };
    let acl = api("SipAuth/IpAccessControlList/", json!({"name": "bench"}))["ip_acl_uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let entry = api(
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        json!({"ip": "10.0.0.0", "cidr_prefix": 24}),
    )["entry_uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let mut lat = Vec::new();
    for i in 1..=200u32 {
        let net = format!("10.{}.{}.0", i / 256, i % 256);
        let t = Instant::now();
        api(
            &format!("SipAuth/IpAccessControlList/{acl}/Entry/{entry}/"),
            json!({"ip": net, "cidr_prefix": 24}),
        );
        let want = format!("{net}/24");
        loop {
            let s = edge.snapshot(&http);
            let seen = s["acls"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x["uuid"] == acl.as_str() && x["entries"][0] == want.as_str());
            if seen {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "change {i} never reached the edge"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    // Nearest rank over 200 samples: p50 is the 100th, p99 the 198th.
    let pct = |p: usize| lat[(lat.len() * p).div_ceil(100).saturating_sub(1)];
    let (p50, p99, max) = (pct(50), pct(99), lat[lat.len() - 1]);
    println!(
        "propagation {backend:<9} p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms  (200 changes)"
    );
    json!({ "backend": backend, "changes": lat.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max })
}
