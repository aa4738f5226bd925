//! The REST API over real HTTP against the real binary, with SQLite and
//! with a private PostgreSQL server.

use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sipauth_tests::control::{Account, Control, EDGE_ADMIN_TOKEN, EdgeProc};
use sipauth_tests::netns::sh;
use sipauth_tests::pg::Postgres;

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A control plane on the backend, and the PostgreSQL server behind it.
fn start(b: Backend, extra: &str) -> (Control, Option<Postgres>) {
    match b {
        Backend::Sqlite => (Control::start(None, extra), None),
        Backend::Postgres => {
            let pg = Postgres::start();
            let url = pg.database("sipauth");
            (Control::start(Some(&url), extra), Some(pg))
        }
    }
}

struct Api<'a> {
    http: Client,
    base: &'a str,
    acct: &'a Account,
}

impl<'a> Api<'a> {
    fn new(c: &'a Control, i: usize) -> Self {
        Self {
            http: Client::new(),
            base: &c.base,
            acct: &c.accounts[i],
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/Account/{}/{path}", self.base, self.acct.auth_id)
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .basic_auth(&self.acct.auth_id, Some(&self.acct.auth_token));
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("POST", path, Some(body))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None)
    }

    fn delete(&self, path: &str) -> (u16, Value) {
        self.send("DELETE", path, None)
    }

    /// POST that must succeed with `status`; returns the body.
    fn ok(&self, path: &str, body: &Value, status: u16) -> Value {
        let (s, v) = self.post(path, body);
        assert_eq!(s, status, "POST {path} {body}: {v}");
        assert!(v["api_id"].is_string(), "{v}");
        v
    }

    /// POST that must fail with 400 naming `field`.
    fn rejects(&self, path: &str, body: &Value, field: &str) {
        let (s, v) = self.post(path, body);
        assert_eq!(s, 400, "POST {path} {body}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(field),
            "error for {body} should name {field}: {msg}"
        );
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                super::$name(super::Backend::Postgres);
            }
        }
    )*};
}

both!(
    walkthrough,
    validation_errors_name_the_field,
    accounts_are_isolated,
    parallel_creates_respect_the_limit,
    no_password_anywhere,
    authentication,
    snapshots_follow_writes,
    edge_call_records_one_or_many,
    error_answers_are_json,
);

fn walkthrough(b: Backend) {
    let (c, _pg) = start(b, "");
    let api = Api::new(&c, 0);
    let cred = api.ok(
        "SipAuth/Credential/",
        &json!({"username": "pbx-user", "password": "Secret123"}),
        201,
    );
    let cred_uuid = cred["credential_uuid"].as_str().unwrap().to_owned();
    let acl = api.ok(
        "SipAuth/IpAccessControlList/",
        &json!({"name": "Office Network"}),
        201,
    );
    let acl_uuid = acl["ip_acl_uuid"].as_str().unwrap().to_owned();
    let e1 = api.ok(
        &format!("SipAuth/IpAccessControlList/{acl_uuid}/Entry/"),
        &json!({"ip": "198.51.100.77", "cidr_prefix": 24, "description": "Remote PBX"}),
        201,
    );
    assert_eq!(e1["ip"], "198.51.100.0", "host bits cleared: {e1}");
    let e2 = api.ok(
        &format!("SipAuth/IpAccessControlList/{acl_uuid}/Entry/"),
        &json!({"ip": "2001:db8::5", "cidr_prefix": "48"}),
        201,
    );
    assert_eq!(e2["ip"], "2001:db8::");
    let (s, got) = api.get(&format!("SipAuth/IpAccessControlList/{acl_uuid}/"));
    assert_eq!(s, 200);
    assert_eq!(got["entries"].as_array().unwrap().len(), 2, "{got}");
    assert_eq!(got["name"], "Office Network");

    let mut apps = Vec::new();
    for (t, extra) in [
        ("", json!({})),
        ("ip_acl", json!({"ip_acl_uuid": acl_uuid})),
        ("credential", json!({"credential_uuid": cred_uuid})),
        (
            "ip_acl_and_credential",
            json!({"ip_acl_uuid": acl_uuid, "credential_uuid": cred_uuid}),
        ),
    ] {
        let mut body = json!({"app_name": format!("app {t}"), "answer_url": "https://198.51.100.9/answer", "sip_auth_type": t});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let v = api.ok("Application/", &body, 201);
        let id = v["app_id"].as_str().unwrap().to_owned();
        let (_, app) = api.get(&format!("Application/{id}/"));
        assert_eq!(app["sip_auth_type"], t, "{app}");
        assert_eq!(app["sip_uri"], format!("sip:{id}@app.plivo.com"));
        apps.push(id);
    }
    // Assigned: cannot be deleted; the message names the applications.
    let (s, v) = api.delete(&format!("SipAuth/Credential/{cred_uuid}/"));
    assert_eq!(s, 400);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains(&apps[2]) && msg.contains(&apps[3]), "{msg}");
    let (s, _) = api.delete(&format!("SipAuth/IpAccessControlList/{acl_uuid}/"));
    assert_eq!(s, 400);
    // Clearing the assignments frees them.
    for id in &apps[1..] {
        api.ok(
            &format!("Application/{id}/"),
            &json!({"sip_auth_type": ""}),
            202,
        );
        let (_, app) = api.get(&format!("Application/{id}/"));
        assert!(
            app["credential_uuid"].is_null() && app["ip_acl_uuid"].is_null(),
            "{app}"
        );
    }
    // Rotation, list with meta, trailing slash optional.
    api.ok(
        &format!("SipAuth/Credential/{cred_uuid}"),
        &json!({"password": "Another456"}),
        202,
    );
    let (s, list) = api.get("SipAuth/Credential/?limit=1&offset=0");
    assert_eq!(s, 200);
    assert_eq!(list["meta"]["total_count"], 1);
    assert_eq!(list["meta"]["limit"], 1);
    assert!(list["meta"]["next"].is_null());
    assert_eq!(list["objects"][0]["username"], "pbx-user");
    let (s, _) = api.delete(&format!("SipAuth/Credential/{cred_uuid}/"));
    assert_eq!(s, 204);
    let (s, _) = api.get(&format!("SipAuth/Credential/{cred_uuid}/"));
    assert_eq!(s, 404);
    // Entries: change and delete.
    let e1_uuid = e1["entry_uuid"].as_str().unwrap();
    let v = api.ok(
        &format!("SipAuth/IpAccessControlList/{acl_uuid}/Entry/{e1_uuid}/"),
        &json!({"cidr_prefix": 16}),
        202,
    );
    assert_eq!(v["ip"], "198.51.0.0");
    let (s, _) = api.delete(&format!(
        "SipAuth/IpAccessControlList/{acl_uuid}/Entry/{e1_uuid}/"
    ));
    assert_eq!(s, 204);
    let (s, _) = api.delete(&format!("SipAuth/IpAccessControlList/{acl_uuid}/"));
    assert_eq!(s, 204);
    // Endpoints and calls.
    let ep = api.ok(
        "Endpoint/",
        &json!({"username": "zumba", "password": "Zumba1234", "alias": "Zumba", "app_id": apps[0]}),
        201,
    );
    assert!(
        ep["username"].as_str().unwrap().starts_with("zumba"),
        "{ep}"
    );
    let call = api.ok(
        "Call/",
        &json!({"from": "+14155551234", "to": "sip:agent@198.51.100.20", "answer_url": "https://198.51.100.9/a",
                "sip_auth_username": "agent", "sip_auth_password": "Pw123456"}),
        201,
    );
    let (s, rec) = api.get(&format!("Call/{}/", call["request_uuid"].as_str().unwrap()));
    assert_eq!(s, 200);
    assert_eq!(rec["direction"], "outbound");
    // Form-encoded bodies are accepted too.
    let r = api
        .http
        .post(api.url("SipAuth/IpAccessControlList/"))
        .basic_auth(&api.acct.auth_id, Some(&api.acct.auth_token))
        .form(&[("name", "form made")])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

fn validation_errors_name_the_field(b: Backend) {
    let (c, _pg) = start(b, "");
    let api = Api::new(&c, 0);
    let cred = "SipAuth/Credential/";
    api.rejects(cred, &json!({"password": "Secret123"}), "username");
    api.rejects(
        cred,
        &json!({"username": "ab", "password": "Secret123"}),
        "username",
    );
    api.rejects(
        cred,
        &json!({"username": "bad name", "password": "Secret123"}),
        "username",
    );
    api.rejects(
        cred,
        &json!({"username": "okuser", "password": "short1A"}),
        "password",
    );
    api.rejects(
        cred,
        &json!({"username": "okuser", "password": "nouppercase1"}),
        "password",
    );
    api.rejects(
        cred,
        &json!({"username": "okuser", "password": "NOLOWERCASE1"}),
        "password",
    );
    api.rejects(
        cred,
        &json!({"username": "okuser", "password": "NoDigitsHere"}),
        "password",
    );
    api.ok(
        cred,
        &json!({"username": "okuser", "password": "Secret123"}),
        201,
    );
    api.rejects(
        cred,
        &json!({"username": "okuser", "password": "Secret123"}),
        "username",
    );
    let acls = "SipAuth/IpAccessControlList/";
    api.rejects(acls, &json!({"name": "x".repeat(121)}), "name");
    api.rejects(acls, &json!({}), "name");
    let acl = api.ok(acls, &json!({"name": "n"}), 201)["ip_acl_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let entry = format!("{acls}{acl}/Entry/");
    api.rejects(&entry, &json!({"ip": "pbx.example.com"}), "ip");
    api.rejects(
        &entry,
        &json!({"ip": "198.51.100.1", "cidr_prefix": 33}),
        "cidr_prefix",
    );
    api.rejects(
        &entry,
        &json!({"ip": "2001:db8::1", "cidr_prefix": 129}),
        "cidr_prefix",
    );
    api.rejects(
        &entry,
        &json!({"ip": "198.51.100.1", "description": "d".repeat(256)}),
        "description",
    );
    for i in 0..50 {
        api.ok(
            &entry,
            &json!({"ip": format!("10.0.{i}.0"), "cidr_prefix": 24}),
            201,
        );
    }
    api.rejects(&entry, &json!({"ip": "10.1.0.0"}), "entries");
    let app = "Application/";
    let base = json!({"app_name": "a", "answer_url": "https://198.51.100.9/"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    api.rejects(app, &json!({"app_name": "a"}), "answer_url");
    api.rejects(app, &with(json!({"answer_url": "ftp://x"})), "answer_url");
    api.rejects(
        app,
        &with(json!({"sip_auth_type": "password"})),
        "sip_auth_type",
    );
    api.rejects(
        app,
        &with(json!({"sip_auth_type": "ip_acl"})),
        "ip_acl_uuid",
    );
    api.rejects(
        app,
        &with(json!({"sip_auth_type": "credential"})),
        "credential_uuid",
    );
    api.rejects(
        app,
        &with(json!({"sip_auth_type": "ip_acl_and_credential", "ip_acl_uuid": acl})),
        "credential_uuid",
    );
    api.rejects(
        app,
        &with(json!({"sip_auth_type": "credential", "credential_uuid": "0000-nope"})),
        "credential_uuid",
    );
    api.rejects(
        app,
        &with(json!({"sip_auth_type": "ip_acl", "ip_acl_uuid": acl, "credential_uuid": "x"})),
        "credential_uuid",
    );
    api.rejects(app, &with(json!({"answer_method": "PUT"})), "answer_method");
    let call = "Call/";
    let c = json!({"from": "+1415", "to": "+14155551234", "answer_url": "https://198.51.100.9/", "sip_auth_username": "u", "sip_auth_password": "p"});
    api.rejects(call, &c, "sip_auth_username");
    api.rejects(call, &json!({"from": "+1", "to": "sip:a@198.51.100.1", "answer_url": "https://198.51.100.9/", "sip_auth_username": "u"}), "sip_auth_password");
    api.rejects(
        call,
        &json!({"from": "+1", "to": "nobody", "answer_url": "https://198.51.100.9/"}),
        "to",
    );
    api.rejects(call, &json!({"from": "+1", "to": "sip:a@198.51.100.1", "answer_url": "https://198.51.100.9/", "sip_headers": "A=1\r\nB: 2"}), "sip_headers");
    api.rejects(
        "Endpoint/",
        &json!({"username": "epx", "password": "Secret123", "alias": "x", "app_id": "12345"}),
        "app_id",
    );
    let (s, v) = api.get("SipAuth/Credential/?limit=21");
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("limit"));
    // Malformed bodies.
    let r = api
        .http
        .post(api.url(cred))
        .basic_auth(&api.acct.auth_id, Some(&api.acct.auth_token))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Nothing half-written: exactly the credential and the ACL made above.
    assert_eq!(api.get(cred).1["meta"]["total_count"], 1);
    assert_eq!(api.get(acls).1["meta"]["total_count"], 1);
    assert_eq!(api.get(app).1["meta"]["total_count"], 0);
}

fn accounts_are_isolated(b: Backend) {
    let (c, _pg) = start(b, "");
    let (a, other) = (Api::new(&c, 0), Api::new(&c, 1));
    let cred = a.ok(
        "SipAuth/Credential/",
        &json!({"username": "alice", "password": "Secret123"}),
        201,
    )["credential_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let acl = a.ok("SipAuth/IpAccessControlList/", &json!({"name": "n"}), 201)["ip_acl_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let entry = a.ok(
        &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
        &json!({"ip": "198.51.100.1"}),
        201,
    )["entry_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = a.ok(
        "Application/",
        &json!({"app_name": "x", "answer_url": "https://198.51.100.9/"}),
        201,
    )["app_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ep = a.ok(
        "Endpoint/",
        &json!({"username": "epuser", "password": "Secret123", "alias": "x"}),
        201,
    )["endpoint_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = a.ok(
        "Call/",
        &json!({"from": "+1", "to": "+14155551234", "answer_url": "https://198.51.100.9/"}),
        201,
    )["request_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = |p: &str| {
        for (verb, body) in [
            ("GET", None),
            (
                "POST",
                Some(
                    json!({"name": "x", "password": "Secret999", "alias": "y", "ip": "198.51.100.2"}),
                ),
            ),
            ("DELETE", None),
        ] {
            let (s, v) = other.send(verb, p, body.as_ref());
            assert_eq!(s, 404, "{verb} {p} from another account: {v}");
        }
    };
    one(&format!("SipAuth/Credential/{cred}/"));
    one(&format!("SipAuth/IpAccessControlList/{acl}/"));
    one(&format!("SipAuth/IpAccessControlList/{acl}/Entry/{entry}/"));
    one(&format!("Application/{app}/"));
    one(&format!("Endpoint/{ep}/"));
    let (s, _) = other.get(&format!("Call/{call}/"));
    assert_eq!(s, 404);
    let (s, _) = other.get(&format!("SipAuth/IpAccessControlList/{acl}/Entry/"));
    assert_eq!(s, 404);
    other.ok(
        "SipAuth/IpAccessControlList/",
        &json!({"name": "mine"}),
        201,
    );
    // Another account's uuids cannot be assigned either.
    other.rejects("Application/", &json!({"app_name": "x", "answer_url": "https://198.51.100.9/", "sip_auth_type": "credential", "credential_uuid": cred}), "credential_uuid");
    other.rejects(
        "Endpoint/",
        &json!({"username": "epuser", "password": "Secret123", "alias": "x", "app_id": app}),
        "app_id",
    );
    // Lists show only one's own.
    assert_eq!(other.get("SipAuth/Credential/").1["meta"]["total_count"], 0);
    // And nothing of A was touched.
    assert_eq!(a.get(&format!("SipAuth/Credential/{cred}/")).0, 200);
    assert_eq!(
        a.get(&format!("SipAuth/IpAccessControlList/{acl}/")).1["name"],
        "n"
    );
}

fn parallel_creates_respect_the_limit(b: Backend) {
    let (c, _pg) = start(b, "");
    let api = Api::new(&c, 0);
    for i in 0..195 {
        api.ok(
            "SipAuth/Credential/",
            &json!({"username": format!("user{i:03}"), "password": "Secret123"}),
            201,
        );
    }
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let api = Api::new(&c, 0);
                s.spawn(move || {
                    api.post(
                        "SipAuth/Credential/",
                        &json!({"username": format!("race{i:02}"), "password": "Secret123"}),
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 400).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(api.get("SipAuth/Credential/").1["meta"]["total_count"], 200);
}

fn no_password_anywhere(b: Backend) {
    let (c, pg) = start(b, "");
    let api = Api::new(&c, 0);
    let pw = "Zq9SecretNeedle7";
    let pw2 = "Xv8OtherNeedle5";
    let mut seen = String::new();
    let mut keep = |v: &Value| seen.push_str(&v.to_string());
    let v = api.ok(
        "SipAuth/Credential/",
        &json!({"username": "needleuser", "password": pw}),
        201,
    );
    keep(&v);
    let uuid = v["credential_uuid"].as_str().unwrap();
    keep(&api.ok(
        &format!("SipAuth/Credential/{uuid}/"),
        &json!({"password": pw2}),
        202,
    ));
    keep(&api.get(&format!("SipAuth/Credential/{uuid}/")).1);
    keep(&api.get("SipAuth/Credential/").1);
    keep(&api.ok(
        "Endpoint/",
        &json!({"username": "epneedle", "password": pw, "alias": "a"}),
        201,
    ));
    keep(&api.get("Endpoint/").1);
    let call = api.ok("Call/", &json!({"from": "+1", "to": "sip:x@198.51.100.1", "answer_url": "https://198.51.100.9/", "sip_auth_username": "x", "sip_auth_password": pw}), 201);
    keep(&call);
    keep(
        &api.get(&format!("Call/{}/", call["request_uuid"].as_str().unwrap()))
            .1,
    );
    // A rejected password must not be echoed either.
    keep(
        &api.post(
            "SipAuth/Credential/",
            &json!({"username": "x y", "password": pw}),
        )
        .1,
    );
    let snap = reqwest::blocking::Client::new()
        .get(format!("{}/v1/Edge/Snapshot", c.base))
        .bearer_auth(&c.edge_token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        snap.contains("needleuser"),
        "snapshot carries the credential"
    );
    let stored = if let Some(pg) = &pg {
        pg.dump("sipauth")
    } else {
        // The database file and its write-ahead log.
        let mut bytes = std::fs::read(c.sqlite_file()).unwrap();
        bytes.extend(std::fs::read(c.sqlite_file().with_extension("db-wal")).unwrap_or_default());
        String::from_utf8_lossy(&bytes).into_owned()
    };
    assert!(
        stored.contains("needleuser"),
        "the scan reads where the store keeps its rows"
    );
    let log = c.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG") || log.contains("INFO"),
        "trace logging is on"
    );
    for (what, text) in [
        ("responses", &seen),
        ("snapshot", &snap),
        ("store", &stored),
        ("log", &log),
    ] {
        for p in [pw, pw2] {
            assert!(!text.contains(p), "a password appears in the {what}");
        }
    }
}

fn authentication(b: Backend) {
    let (c, _pg) = start(b, "");
    let http = Client::new();
    let a = &c.accounts[0];
    let url = format!("{}/v1/Account/{}/SipAuth/Credential/", c.base, a.auth_id);
    let (s, h, v) = raw(http.get(&url));
    assert_eq!(s, 401);
    assert!(error_of(&h, &v).contains("HTTP Basic"), "{v}");
    assert_eq!(h["www-authenticate"], "Basic realm=\"sipauth\"");
    // Another account's id in the path with these credentials.
    let b2 = &c.accounts[1];
    let other = format!("{}/v1/Account/{}/SipAuth/Credential/", c.base, b2.auth_id);
    let (s, h, v) = raw(http.get(&other).basic_auth(&a.auth_id, Some(&a.auth_token)));
    assert_eq!(s, 401);
    error_of(&h, &v);
    assert_eq!(
        http.get(&url)
            .basic_auth(&a.auth_id, Some(&a.auth_token))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // The tenth failure blocks the address for 60 s: 429 with Retry-After.
    let mut codes = Vec::new();
    let mut last = None;
    for _ in 0..12 {
        let r = raw(http.get(&url).basic_auth(&a.auth_id, Some("wrong-token")));
        codes.push(r.0);
        last = Some(r);
    }
    // The failure with another account's id above was the first.
    assert!(codes[..9].iter().all(|&c| c == 401), "{codes:?}");
    assert_eq!(codes[9..], [429, 429, 429], "{codes:?}");
    let blocked_at = Instant::now();
    let (_, h, v) = last.unwrap();
    let first = retry_after(&h);
    assert!((59..=60).contains(&first), "Retry-After {first}");
    assert!(
        error_of(&h, &v).contains(&format!("try again in {first} s")),
        "{v}"
    );
    // Blocked even with the right token, for this address; the wait told
    // counts down with the clock.
    std::thread::sleep(Duration::from_millis(2100));
    let (s, h, v) = raw(http.get(&url).basic_auth(&a.auth_id, Some(&a.auth_token)));
    assert_eq!(s, 429, "{v}");
    error_of(&h, &v);
    let later = retry_after(&h);
    let waited = blocked_at.elapsed().as_secs();
    assert!(
        (first - later).abs_diff(waited) <= 1,
        "Retry-After {first} then {later} after {waited} s"
    );
    // The OpenAPI document is public and lists every resource.
    let doc: Value = http
        .get(format!("{}/v1/openapi.json", c.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/Account/{auth_id}/Call/"]["post"]["requestBody"].is_object());
}

fn snapshots_follow_writes(b: Backend) {
    let (c, _pg) = start(b, "");
    let api = Api::new(&c, 0);
    let http = Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let snap = |after: u64| -> (u16, Value) {
        let r = http
            .get(format!("{}/v1/Edge/Snapshot?after={after}", c.base))
            .bearer_auth(&c.edge_token)
            .send()
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(Value::Null))
    };
    let bad = http
        .get(format!("{}/v1/Edge/Snapshot", c.base))
        .bearer_auth("nope")
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let (s, first) = snap(0);
    assert_eq!(s, 200);
    let v0 = first["version"].as_u64().unwrap();
    // A long poll returns as soon as a change commits.
    let waited = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let t = Instant::now();
            let r = snap(v0);
            (t.elapsed(), r)
        });
        std::thread::sleep(Duration::from_millis(300));
        let acl = api.ok("SipAuth/IpAccessControlList/", &json!({"name": "n"}), 201);
        let uuid = acl["ip_acl_uuid"].as_str().unwrap().to_owned();
        let (elapsed, (s, body)) = h.join().unwrap();
        assert_eq!(s, 200);
        assert!(body["version"].as_u64().unwrap() > v0);
        assert!(
            body["acls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["uuid"] == uuid),
            "{body}"
        );
        elapsed
    });
    assert!(
        waited >= Duration::from_millis(250),
        "the poll waited for the change"
    );
    // A failed write advances nothing.
    let (_, now) = snap(0);
    api.rejects("SipAuth/IpAccessControlList/", &json!({"name": ""}), "name");
    let (_, again) = snap(0);
    assert_eq!(now["version"], again["version"]);
}

/// Two control replicas on one PostgreSQL database: a change made through
/// one reaches the snapshots served by the other.
#[test]
fn postgres_replicas_share_changes() {
    let pg = Postgres::start();
    let url = pg.database("shared");
    let one = Control::start(Some(&url), "");
    let two = Control::start(Some(&url), "");
    let http = Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let version = |c: &Control| -> u64 {
        let v: Value = http
            .get(format!("{}/v1/Edge/Snapshot", c.base))
            .bearer_auth(&c.edge_token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["version"].as_u64().unwrap()
    };
    let before = version(&two);
    let api = Api::new(&one, 0);
    let v = api.ok(
        "SipAuth/Credential/",
        &json!({"username": "shared", "password": "Secret123"}),
        201,
    );
    let t = Instant::now();
    let r = http
        .get(format!("{}/v1/Edge/Snapshot?after={before}", two.base))
        .bearer_auth(&two.edge_token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().unwrap();
    assert!(
        body["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["uuid"] == v["credential_uuid"])
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}

/// `POST /v1/Edge/Calls`: remote edges' records, one or a batch (one
/// statement; a call twice in a batch keeps its last record), readable
/// through the Call API; the edge token is required.
fn edge_call_records_one_or_many(b: Backend) {
    let (c, _pg) = start(b, "");
    let api = Api::new(&c, 0);
    let http = Client::new();
    let record = |uuid: &str, status: &str, code: i64| {
        json!({
            "call_uuid": uuid,
            "account": api.acct.auth_id,
            "direction": "inbound",
            "from_number": "alice",
            "to_number": "app",
            "answer_url": null,
            "call_status": status,
            "hangup_cause_name": "normal_hangup",
            "hangup_cause_code": code,
            "sip_auth_type": "ip_acl",
            "source_ip": "192.0.2.1",
            "created_at": 1,
            "ended_at": 2,
        })
    };
    let post = |body: &Value, token: &str| {
        http.post(format!("{}/v1/Edge/Calls", c.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!(post(&record("one", "completed", 4000), "wrong-token"), 401);
    assert_eq!(post(&record("one", "completed", 4000), &c.edge_token), 204);
    let batch = json!([
        record("two", "completed", 4000),
        record("three", "completed", 4000),
        record("two", "busy", 4010),
        record("one", "failed", 4020),
    ]);
    assert_eq!(post(&batch, &c.edge_token), 204);
    for (uuid, status, code) in [
        ("one", "failed", 4020),
        ("two", "busy", 4010),
        ("three", "completed", 4000),
    ] {
        let (s, v) = api.get(&format!("Call/{uuid}/"));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["call_status"], status, "{v}");
        assert_eq!(v["hangup_cause_code"], code, "{v}");
    }
}

// === error answers ===

/// One request: the status, the headers, and the body as JSON (`Null`
/// when empty, a string when not JSON).
fn raw(r: RequestBuilder) -> (u16, HeaderMap, Value) {
    let resp = r.send().expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, v)
}

/// The `error` of an error answer, which must be JSON with exactly
/// `api_id` (a UUID) and `error` (not empty).
fn error_of(h: &HeaderMap, v: &Value) -> String {
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{h:?} {v}"
    );
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"));
    assert_eq!(o.len(), 2, "{v}");
    let id = v["api_id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 36, "api_id: {v}");
    assert_eq!(id.matches('-').count(), 4, "api_id: {v}");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(!e.is_empty(), "error: {v}");
    e.to_owned()
}

fn retry_after(h: &HeaderMap) -> u64 {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {h:?}"))
}

/// One SQL statement on the control plane's store, from outside it.
fn store_sql(c: &Control, pg: Option<&Postgres>, sql: &str) {
    match pg {
        Some(pg) => pg.execute("sipauth", sql),
        None => {
            sh(std::process::Command::new("sqlite3")
                .arg(c.sqlite_file())
                .arg(sql));
        }
    }
}

/// Every error status the API answers, from its handlers, its extractors
/// and its router, is JSON with `api_id` and `error`.
fn error_answers_are_json(b: Backend) {
    let (c, pg) = start(b, "");
    let api = Api::new(&c, 0);
    let http = Client::new();
    let authed = |method: &str, path: &str| {
        http.request(method.parse().unwrap(), api.url(path))
            .basic_auth(&api.acct.auth_id, Some(&api.acct.auth_token))
    };
    let edge = |r: RequestBuilder| r.bearer_auth(&c.edge_token);

    // 404: paths that are not routes, inside an account and outside, and
    // ids that do not exist.
    for (url, path) in [
        (
            api.url("Nothing/Here/"),
            format!("/v1/Account/{}/Nothing/Here", api.acct.auth_id),
        ),
        (format!("{}/v2/Call", c.base), "/v2/Call".to_owned()),
        (format!("{}/", c.base), "/".to_owned()),
    ] {
        let (s, h, v) = raw(http.get(&url));
        assert_eq!(s, 404, "{url}: {v}");
        assert_eq!(error_of(&h, &v), format!("no such path: GET {path}"));
    }
    let (s, h, v) = raw(authed("GET", "Application/1234567890/"));
    assert_eq!(s, 404);
    assert_eq!(error_of(&h, &v), "application not found");

    // 405: a path that takes other methods; Allow says which.
    let (s, h, v) = raw(authed("GET", "Call/"));
    assert_eq!(s, 405, "{v}");
    assert_eq!(h["allow"], "POST");
    assert_eq!(
        error_of(&h, &v),
        format!(
            "GET is not allowed on /v1/Account/{}/Call; allowed: POST",
            api.acct.auth_id
        )
    );
    let (s, h, v) = raw(authed("PUT", "SipAuth/Credential/"));
    assert_eq!(s, 405, "{v}");
    let allow = h["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert!(error_of(&h, &v).starts_with("PUT is not allowed"), "{v}");
    let (s, h, v) = raw(http.delete(format!("{}/v1/openapi.json", c.base)));
    assert_eq!(s, 405);
    error_of(&h, &v);

    // 400: a field, JSON that does not parse, query strings that do not.
    let (s, h, v) = raw(authed("POST", "SipAuth/Credential/").json(&json!({"username": "ab"})));
    assert_eq!(s, 400);
    assert!(error_of(&h, &v).starts_with("username:"), "{v}");
    let (s, h, v) = raw(authed("POST", "SipAuth/Credential/")
        .header("Content-Type", "application/json")
        .body("{not json"));
    assert_eq!(s, 400);
    assert!(error_of(&h, &v).starts_with("body: not valid JSON"), "{v}");
    let (s, h, v) = raw(authed("GET", "SipAuth/Credential/?limit=1&limit=2"));
    assert_eq!(s, 400);
    assert!(error_of(&h, &v).contains("query string"), "{v}");
    let (s, h, v) = raw(edge(
        http.get(format!("{}/v1/Edge/Snapshot?after=soon", c.base)),
    ));
    assert_eq!(s, 400);
    assert!(error_of(&h, &v).contains("query string"), "{v}");
    let (s, h, v) = raw(edge(http.post(format!("{}/v1/Edge/Calls", c.base)))
        .header("Content-Type", "application/json")
        .body("[{"));
    assert_eq!(s, 400);
    error_of(&h, &v);

    // 401 on the edge endpoints too.
    let (s, h, v) = raw(http.get(format!("{}/v1/Edge/Snapshot", c.base)));
    assert_eq!(s, 401);
    assert_eq!(error_of(&h, &v), "edge token required");
    assert_eq!(h["www-authenticate"], "Bearer");

    // 415: a body neither JSON nor a form; the answer names both.
    let types = "application/json, application/x-www-form-urlencoded";
    for ctype in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let (s, h, v) = raw(authed("POST", "SipAuth/IpAccessControlList/")
            .header("Content-Type", ctype)
            .body("name=x"));
        assert_eq!(s, 415, "{ctype}: {v}");
        assert!(error_of(&h, &v).ends_with(&format!("send {types}")), "{v}");
        assert_eq!(h["accept-post"], types);
    }
    let (s, h, v) = raw(edge(http.post(format!("{}/v1/Edge/Calls", c.base))).body("[]"));
    assert_eq!(s, 415);
    assert!(error_of(&h, &v).contains("application/json"), "{v}");
    // Without Content-Type, a form is read as a form and JSON as JSON.
    let (s, _, v) = raw(authed("POST", "SipAuth/IpAccessControlList/").body("name=untyped+form"));
    assert_eq!(s, 201, "{v}");
    let (s, _, v) =
        raw(authed("POST", "SipAuth/IpAccessControlList/").body(r#"{"name": "untyped json"}"#));
    assert_eq!(s, 201, "{v}");
    let mut names: Vec<String> = api.get("SipAuth/IpAccessControlList/").1["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["untyped form", "untyped json"],
        "no 415 made anything"
    );

    // 500 and 503: the store loses tables under the running server.
    let call = api.ok(
        "Call/",
        &json!({"from": "+1", "to": "+14155551234", "answer_url": "https://198.51.100.9/"}),
        201,
    )["request_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    store_sql(&c, pg.as_ref(), "ALTER TABLE calls RENAME TO calls_away");
    let (s, h, v) = raw(authed("GET", &format!("Call/{call}/")));
    assert_eq!(s, 500, "{v}");
    assert_eq!(error_of(&h, &v), "internal error; nothing was changed");
    store_sql(
        &c,
        pg.as_ref(),
        "ALTER TABLE endpoints RENAME TO endpoints_away",
    );
    let (s, h, v) = raw(edge(http.get(format!("{}/v1/Edge/Snapshot", c.base))));
    assert_eq!(s, 503, "{v}");
    assert_eq!(error_of(&h, &v), "the store cannot be read; try again");
    store_sql(&c, pg.as_ref(), "ALTER TABLE calls_away RENAME TO calls");
    store_sql(
        &c,
        pg.as_ref(),
        "ALTER TABLE endpoints_away RENAME TO endpoints",
    );
    assert_eq!(api.get(&format!("Call/{call}/")).0, 200);
    let (s, _, v) = raw(edge(http.get(format!("{}/v1/Edge/Snapshot", c.base))));
    assert_eq!(s, 200, "{v}");
}

/// The edge's own HTTP surface (`/metrics`, `/admin`) answers errors in
/// the same shape.
#[test]
fn edge_http_errors_are_json() {
    let c = Control::start(None, "");
    let state = tempfile::tempdir().unwrap();
    let e = EdgeProc::start(&c.base, &c.edge_token, state.path());
    let http = Client::new();
    let (s, h, v) = raw(http.get(format!("{}/nothing", e.http)));
    assert_eq!(s, 404);
    assert_eq!(error_of(&h, &v), "no such path: GET /nothing");
    let (s, h, v) = raw(http.post(format!("{}/metrics", e.http)));
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "GET,HEAD");
    assert_eq!(
        error_of(&h, &v),
        "POST is not allowed on /metrics; allowed: GET, HEAD"
    );
    let admin = format!("{}/admin/lockouts", e.http);
    let (s, h, v) = raw(http.get(&admin).bearer_auth("wrong"));
    assert_eq!(s, 401);
    assert_eq!(h["www-authenticate"], "Bearer");
    error_of(&h, &v);
    let (s, h, v) = raw(http
        .post(&admin)
        .bearer_auth(EDGE_ADMIN_TOKEN)
        .header("Content-Type", "text/plain")
        .body("203.0.113.9"));
    assert_eq!(s, 415);
    assert!(error_of(&h, &v).contains("application/json"), "{v}");
    let (s, h, v) = raw(http
        .post(&admin)
        .bearer_auth(EDGE_ADMIN_TOKEN)
        .json(&json!({"address": "203.0.113.9", "until": 1})));
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&h, &v).contains("until"), "{v}");
    let (s, h, v) = raw(http
        .delete(format!("{admin}/not-an-address"))
        .bearer_auth(EDGE_ADMIN_TOKEN));
    assert_eq!(s, 400);
    assert!(error_of(&h, &v).starts_with("address:"), "{v}");
    let (s, h, v) = raw(http
        .get(format!("{admin}/203.0.113.9"))
        .bearer_auth(EDGE_ADMIN_TOKEN));
    assert_eq!(s, 405);
    error_of(&h, &v);
}

/// `/v1/openapi.json` as the binary serves it passes
/// openapi-spec-validator, which does reject the document with an empty
/// `required` list.
#[test]
fn openapi_document_passes_the_validator() {
    let validator =
        sipauth_tests::openapi::validator(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    let (c, _pg) = start(Backend::Sqlite, "");
    let mut doc: Value = Client::new()
        .get(format!("{}/v1/openapi.json", c.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let said = sipauth_tests::openapi::validate(&validator, &doc)
        .unwrap_or_else(|e| panic!("openapi-spec-validator rejects /v1/openapi.json:\n{e}"));
    assert!(said.contains("OK"), "{said}");
    let schema = &mut doc["paths"]["/v1/Account/{auth_id}/Application/{app_id}/"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"];
    assert!(schema.get("required").is_none(), "{schema}");
    schema["required"] = json!([]);
    let said = sipauth_tests::openapi::validate(&validator, &doc)
        .expect_err("the validator takes an empty required list");
    assert!(said.contains("'required': []"), "{said}");
}
