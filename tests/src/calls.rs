//! What call tests share: applications made through the API and waited for
//! at the edge, call records and hangup_url callbacks waited for, sipp
//! providers for one call, and the check that no password shows anywhere.

use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agent::Agent;
use crate::answer::{AnswerServer, Hit};
use crate::peers::scenario;
use crate::topo::Link;

/// The string `field` of an API response.
#[must_use]
pub fn id(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        .to_owned()
}

/// Waits (2 s at most) until the edge's snapshot mentions `what`.
pub fn until_edge_has(agent: &Agent<'_>, what: &str) {
    let t = Instant::now();
    loop {
        let (_, s) = agent.admin("GET", "/admin/snapshot", None);
        if s.contains(what) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "edge never saw {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An IP ACL with one entry, `ip`/32.
#[must_use]
pub fn acl_of(agent: &Agent<'_>, ip: IpAddr) -> String {
    let acl = id(
        &agent.create("SipAuth/IpAccessControlList/", &json!({"name": "rig"})),
        "ip_acl_uuid",
    );
    agent.create(
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        &json!({"ip": ip.to_string(), "cidr_prefix": 32}),
    );
    acl
}

/// An `ip_acl` application letting `c` in, with callbacks at
/// `{answer}/answer{suffix}` and `{answer}/hangup{suffix}`, once the edge
/// has it.
#[must_use]
pub fn acl_app(agent: &Agent<'_>, answer: &AnswerServer, c: &Link, suffix: &str) -> String {
    let acl = acl_of(agent, c.v4);
    let app = id(
        &agent.create(
            "Application/",
            &json!({
                "app_name": format!("rig{suffix}"),
                "answer_url": answer.url(&format!("/answer{suffix}")),
                "hangup_url": answer.url(&format!("/hangup{suffix}")),
                "sip_auth_type": "ip_acl",
                "ip_acl_uuid": acl,
            }),
        ),
        "app_id",
    );
    until_edge_has(agent, &app);
    app
}

/// The record of `uuid` once the call is over (10 s at most).
#[must_use]
pub fn record(agent: &Agent<'_>, uuid: &str) -> Value {
    let t = Instant::now();
    loop {
        let (s, v) = agent.api("GET", &format!("Call/{uuid}/"), None);
        if s == 200 && v["call_status"] != "queued" && !v["hangup_cause_name"].is_null() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "record of {uuid}: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The hangup_url callback on `path` (of call `uuid`, or any), 10 s at
/// most.
#[must_use]
pub fn hangup_hit(answer: &AnswerServer, path: &str, uuid: Option<&str>) -> Hit {
    let t = Instant::now();
    loop {
        if let Some(h) = answer
            .hits_on(path)
            .into_iter()
            .find(|h| uuid.is_none_or(|u| h.params.get("CallUUID").map(String::as_str) == Some(u)))
        {
            return h;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no hangup_url callback on {path}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks the end of a call in its hangup_url callback (signed) and its
/// record.
pub fn expect_end(label: &str, h: &Hit, rec: &Value, status: &str, cause: (&str, i64)) {
    assert!(h.signature_ok, "{label}: hangup signature {h:?}");
    assert_eq!(h.params["CallStatus"], status, "{label}: {h:?}");
    assert_eq!(h.params["HangupCauseName"], cause.0, "{label}: {h:?}");
    assert_eq!(
        h.params["HangupCauseCode"],
        cause.1.to_string(),
        "{label}: {h:?}"
    );
    assert_eq!(rec["call_status"], status, "{label}: {rec}");
    assert_eq!(rec["hangup_cause_name"], cause.0, "{label}: {rec}");
    assert_eq!(rec["hangup_cause_code"], cause.1, "{label}: {rec}");
}

/// No secret in the agent's log, what the edge sent the answer server, or
/// the records. (The answer_url's own replies hold Dial passwords; the
/// requests the edge makes must not.)
pub fn no_secret_anywhere(log: &str, answer: &AnswerServer, records: &[Value], secrets: &[&str]) {
    for s in secrets {
        for line in log.lines() {
            assert!(!line.contains(s), "log line holds a password: {line}");
        }
        for h in answer.hits() {
            assert!(!h.raw.contains(s), "callback holds a password: {h:?}");
        }
        for r in records {
            assert!(!r.to_string().contains(s), "record holds a password: {r}");
        }
    }
}

/// A sipp UAS playing `name` for one call on `port` of `p`.
#[must_use]
pub fn sipp_provider(p: &Link, name: &str, port: u16, tcp: bool) -> Child {
    let child =
        p.ns.cmd("sipp")
            .arg("-sf")
            .arg(scenario(name))
            .args(["-t", if tcp { "t1" } else { "u1" }])
            .args(["-i", &p.v4.to_string()])
            .args(["-p", &port.to_string()])
            .args(["-m", "1", "-timeout", "20s", "-timeout_error", "-nostdin"])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipp");
    // sipp listens within a few milliseconds of starting.
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Waits up to 20 s for a sipp started by [`sipp_provider`]; Err with its
/// output when its call failed.
pub fn sipp_result(mut child: Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("sipp output");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "provider sipp: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
