//! Edges follow the control plane: a change made through the API reaches
//! the edge's view, and an edge keeps its last snapshot across a restart
//! while the control plane is away.

use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};
use sipauth_tests::control::{Control, EdgeProc};

fn post(c: &Control, path: &str, body: &Value) -> Value {
    let a = &c.accounts[0];
    let r = Client::new()
        .post(format!("{}/v1/Account/{}/{path}", c.base, a.auth_id))
        .basic_auth(&a.auth_id, Some(&a.auth_token))
        .json(body)
        .send()
        .expect("API request");
    assert!(r.status().is_success(), "POST {path}: {}", r.status());
    r.json().expect("JSON")
}

/// Waits until `pred` holds for the edge's view; returns how long it took.
fn until(edge: &EdgeProc, pred: impl Fn(&Value) -> bool) -> Duration {
    let client = Client::new();
    let t = Instant::now();
    loop {
        let s = edge.snapshot(&client);
        if pred(&s) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "edge view did not change: {s}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn entries(s: &Value, acl: &str) -> Vec<String> {
    s["acls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["uuid"] == acl)
        .flat_map(|a| a["entries"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn edge_follows_acl_changes_and_survives_a_restart_without_control() {
    sipauth_tests::require_root();
    let state = tempfile::tempdir().unwrap();
    let control = Control::start(None, "");
    let edge = EdgeProc::start(&control.base, &control.edge_token, state.path());

    let acl = post(
        &control,
        "SipAuth/IpAccessControlList/",
        &json!({"name": "office"}),
    )["ip_acl_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let entry = post(
        &control,
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        &json!({"ip": "198.51.100.7", "cidr_prefix": 32}),
    )["entry_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let took = until(&edge, |s| entries(s, &acl) == ["198.51.100.7/32"]);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    post(
        &control,
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/{entry}/"),
        &json!({"ip": "203.0.113.0", "cidr_prefix": 24}),
    );
    let took = until(&edge, |s| entries(s, &acl) == ["203.0.113.0/24"]);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let version = edge.snapshot(&Client::new())["version"].as_u64().unwrap();

    // The control plane goes away; the edge restarts and still enforces.
    drop(control);
    drop(edge);
    let edge = EdgeProc::start("http://127.0.0.1:9", "edge-token-0123456789", state.path());
    let s = edge.snapshot(&Client::new());
    assert_eq!(s["version"].as_u64().unwrap(), version, "{s}");
    assert_eq!(entries(&s, &acl), ["203.0.113.0/24"]);
    let kept = std::fs::read_to_string(state.path().join("snapshot.json")).unwrap();
    assert!(!kept.contains("Secret"), "no password in the kept snapshot");
}
