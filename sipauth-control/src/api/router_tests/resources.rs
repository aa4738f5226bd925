//! Each resource through the router, as a client sees it: credentials,
//! paging, IP ACLs and entries, applications and endpoints, calls.

use super::*;

const FORM: &str = "application/x-www-form-urlencoded";

/// An account's client: sends form bodies and gives the status and the
/// body through [`norm`].
struct Client<'a> {
    app: &'a Router,
    acct: &'a str,
    token: &'a str,
}

impl Client<'_> {
    async fn req(&self, method: &str, path: &str, form: &str) -> (StatusCode, Value) {
        let ctype = (!form.is_empty()).then_some(FORM);
        let (s, _, v) = send_as(self.app, self.acct, method, path, self.token, ctype, form).await;
        (s, norm(v))
    }
}

fn clients(app: &Router) -> (Client<'_>, Client<'_>) {
    (
        Client {
            app,
            acct: ACCT,
            token: TOKEN,
        },
        Client {
            app,
            acct: OTHER,
            token: OTHER_TOKEN,
        },
    )
}

/// `v` with what differs from run to run replaced once its form is
/// checked: `api_id` (a UUID) by `<api_id>`, times (RFC 3339) by `<time>`.
fn norm(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("api_id", Value::String(s)) => {
                            assert!(uuid::Uuid::parse_str(&s).is_ok(), "api_id {s}");
                            Value::from("<api_id>")
                        }
                        (
                            "created_on" | "modified_on" | "initiation_time" | "end_time",
                            Value::String(s),
                        ) => {
                            assert!(humantime::parse_rfc3339(&s).is_ok(), "{k} {s}");
                            Value::from("<time>")
                        }
                        (_, v) => norm(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
        v => v,
    }
}

/// `object` as a single-object answer shows it.
fn with_api_id(object: &Value) -> Value {
    let mut v = object.clone();
    v["api_id"] = Value::from("<api_id>");
    v
}

/// The list answer holding `objects`, all of them on the first page.
fn one_page(objects: &[&Value]) -> Value {
    json!({
        "api_id": "<api_id>",
        "meta": {"limit": 20, "offset": 0, "total_count": objects.len(), "next": null, "previous": null},
        "objects": objects,
    })
}

fn not_found(what: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"api_id": "<api_id>", "error": format!("{what} not found")}),
    )
}

fn changed() -> (StatusCode, Value) {
    (
        StatusCode::ACCEPTED,
        json!({"api_id": "<api_id>", "message": "changed"}),
    )
}

/// GET, update (POST `update`) and DELETE of `{base}/{id}` answer 404
/// `{what} not found` for an id the account does not have and for
/// another account's `id`, which stays as it was.
async fn unknown_is_not_found(
    me: &Client<'_>,
    other: &Client<'_>,
    base: &str,
    id: &str,
    update: &str,
    what: &str,
) {
    let before = me.req("GET", &format!("{base}/{id}"), "").await;
    assert_eq!(before.0, StatusCode::OK, "{}", before.1);
    for (client, id) in [(me, "no-such-id"), (other, id)] {
        let path = format!("{base}/{id}");
        for (method, body) in [("GET", ""), ("POST", update), ("DELETE", "")] {
            let got = client.req(method, &path, body).await;
            assert_eq!(got, not_found(what), "{method} {path} as {}", client.acct);
        }
    }
    assert_eq!(me.req("GET", &format!("{base}/{id}"), "").await, before);
}

#[tokio::test]
async fn credentials_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let (me, other) = clients(&app);
    let (s, v) = me
        .req(
            "POST",
            "SipAuth/Credential",
            "username=alice&password=Secret-0ne",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["credential_uuid"].as_str().unwrap().to_owned();
    let created = json!({"api_id": "<api_id>", "message": "created", "credential_uuid": id, "username": "alice"});
    assert_eq!(v, created);
    let object = json!({
        "credential_uuid": id,
        "username": "alice",
        "created_on": "<time>",
        "modified_on": "<time>",
    });
    let path = format!("SipAuth/Credential/{id}");
    assert_eq!(
        me.req("GET", &path, "").await,
        (StatusCode::OK, with_api_id(&object))
    );
    assert_eq!(
        me.req("GET", "SipAuth/Credential", "").await,
        (StatusCode::OK, one_page(&[&object]))
    );
    assert_eq!(
        other.req("GET", "SipAuth/Credential", "").await,
        (StatusCode::OK, one_page(&[]))
    );
    assert_eq!(
        me.req("POST", &path, "password=Secret-tw0").await,
        changed()
    );
    unknown_is_not_found(
        &me,
        &other,
        "SipAuth/Credential",
        &id,
        "password=Secret-thr3",
        "credential",
    )
    .await;
    assert_eq!(
        me.req("DELETE", &path, "").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(me.req("GET", &path, "").await, not_found("credential"));
    assert_eq!(me.req("DELETE", &path, "").await, not_found("credential"));
}

#[tokio::test]
async fn lists_page_with_links_and_refuse_bad_paging() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let (me, _) = clients(&app);
    for name in ["a", "b", "c"] {
        let (s, v) = me
            .req(
                "POST",
                "SipAuth/IpAccessControlList",
                &format!("name={name}"),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let link = |offset: i64| {
        format!("/v1/Account/{ACCT}/SipAuth/IpAccessControlList/?limit=2&offset={offset}")
    };
    for (query, offset, next, previous, rows) in [
        ("limit=2", 0, Some(link(2)), None, 2),
        ("limit=2&offset=2", 2, None, Some(link(0)), 1),
        ("limit=2&offset=1", 1, None, Some(link(0)), 2),
        ("limit=2&offset=5", 5, None, Some(link(3)), 0),
    ] {
        let (s, v) = me
            .req("GET", &format!("SipAuth/IpAccessControlList?{query}"), "")
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let meta = json!({"limit": 2, "offset": offset, "total_count": 3, "next": next, "previous": previous});
        assert_eq!(v["meta"], meta, "{query}");
        assert_eq!(v["objects"].as_array().unwrap().len(), rows, "{query}");
    }
    for (query, error) in [
        ("limit=0", "limit: must be an integer between 1 and 20"),
        ("limit=21", "limit: must be an integer between 1 and 20"),
        ("limit=x", "limit: must be an integer between 1 and 20"),
        ("offset=-1", "offset: must be a non-negative integer"),
    ] {
        for path in [
            "SipAuth/Credential",
            "SipAuth/IpAccessControlList",
            "Application",
            "Endpoint",
        ] {
            let got = me.req("GET", &format!("{path}?{query}"), "").await;
            let want = json!({"api_id": "<api_id>", "error": error});
            assert_eq!(got, (StatusCode::BAD_REQUEST, want), "{path}?{query}");
        }
    }
}

#[tokio::test]
async fn acls_and_entries_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let (me, other) = clients(&app);
    let base = "SipAuth/IpAccessControlList";
    let (s, v) = me.req("POST", base, "name=office").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let acl = v["ip_acl_uuid"].as_str().unwrap().to_owned();
    assert_eq!(
        v,
        json!({"api_id": "<api_id>", "message": "created", "ip_acl_uuid": acl})
    );
    let path = format!("{base}/{acl}");
    let (s, v) = me
        .req(
            "POST",
            &format!("{path}/Entry"),
            "ip=198.51.100.77&cidr_prefix=24&description=lab",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let entry = v["entry_uuid"].as_str().unwrap().to_owned();
    let created = json!({"api_id": "<api_id>", "message": "created", "entry_uuid": entry, "ip": "198.51.100.0", "cidr_prefix": 24});
    assert_eq!(v, created);
    let entry_object = json!({
        "entry_uuid": entry,
        "ip": "198.51.100.0",
        "cidr_prefix": 24,
        "description": "lab",
        "created_on": "<time>",
        "modified_on": "<time>",
    });
    let acl_object = json!({
        "ip_acl_uuid": acl,
        "name": "office",
        "created_on": "<time>",
        "modified_on": "<time>",
    });
    let mut with_entries = with_api_id(&acl_object);
    with_entries["entries"] = json!([entry_object]);
    assert_eq!(
        me.req("GET", &path, "").await,
        (StatusCode::OK, with_entries)
    );
    assert_eq!(
        me.req("GET", base, "").await,
        (StatusCode::OK, one_page(&[&acl_object]))
    );
    let mut entries = one_page(&[&entry_object]);
    entries["meta"]["limit"] = Value::from(1);
    let (s, v) = me.req("GET", &format!("{path}/Entry?limit=1"), "").await;
    assert_eq!((s, v), (StatusCode::OK, entries));
    let entry_path = format!("{path}/Entry/{entry}");
    assert_eq!(
        me.req("GET", &entry_path, "").await,
        (StatusCode::OK, with_api_id(&entry_object))
    );
    let moved = json!({"api_id": "<api_id>", "message": "changed", "ip": "2001:db8::1", "cidr_prefix": 128});
    assert_eq!(
        me.req("POST", &entry_path, "ip=2001:db8::1").await,
        (StatusCode::ACCEPTED, moved)
    );
    assert_eq!(me.req("POST", &path, "name=lab").await, changed());
    unknown_is_not_found(&me, &other, base, &acl, "name=x", "IP ACL").await;
    // Entries: another account's IP ACL is not found; an unknown entry of
    // one's own is an unknown entry.
    for (method, body) in [("GET", ""), ("POST", "description=x"), ("DELETE", "")] {
        let got = other.req(method, &entry_path, body).await;
        assert_eq!(got, not_found("IP ACL"), "{method}");
        let unknown = format!("{path}/Entry/no-such-entry");
        let got = me.req(method, &unknown, body).await;
        assert_eq!(got, not_found("IP ACL entry"), "{method}");
    }
    for (method, body) in [("GET", ""), ("POST", "ip=192.0.2.1")] {
        let got = other.req(method, &format!("{path}/Entry"), body).await;
        assert_eq!(got, not_found("IP ACL"), "{method} entries");
    }
    // In use by an application: refused, and it stays.
    let (s, v) = me
        .req(
            "POST",
            "Application",
            &format!(
                "app_name=a&answer_url=http://127.0.0.1/a&sip_auth_type=ip_acl&ip_acl_uuid={acl}"
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let app_id = v["app_id"].as_str().unwrap().to_owned();
    let refused = json!({"api_id": "<api_id>", "error": format!("IP ACL is assigned to application(s) {app_id}; set their sip_auth_type to \"\" first")});
    assert_eq!(
        me.req("DELETE", &path, "").await,
        (StatusCode::BAD_REQUEST, refused)
    );
    assert_eq!(
        me.req("POST", &format!("Application/{app_id}"), "sip_auth_type=")
            .await,
        changed()
    );
    assert_eq!(
        me.req("DELETE", &entry_path, "").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(
        me.req("GET", &entry_path, "").await,
        not_found("IP ACL entry")
    );
    assert_eq!(
        me.req("DELETE", &path, "").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(me.req("GET", &path, "").await, not_found("IP ACL"));
    assert_eq!(
        me.req("GET", &format!("{path}/Entry"), "").await,
        not_found("IP ACL")
    );
}

#[tokio::test]
async fn applications_and_endpoints_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let (me, other) = clients(&app);
    let (s, v) = me
        .req(
            "POST",
            "Application",
            "app_name=a&answer_url=http://127.0.0.1/a&answer_method=GET",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let app_id = v["app_id"].as_str().unwrap().to_owned();
    assert_eq!(
        v,
        json!({"api_id": "<api_id>", "message": "created", "app_id": app_id})
    );
    let app_object = json!({
        "app_id": app_id,
        "app_name": "a",
        "answer_url": "http://127.0.0.1/a",
        "answer_method": "GET",
        "hangup_url": "http://127.0.0.1/a",
        "hangup_method": "POST",
        "sip_auth_type": "",
        "credential_uuid": null,
        "ip_acl_uuid": null,
        "challenge_algorithms": "",
        "sip_uri": format!("sip:{app_id}@example.com"),
        "created_on": "<time>",
        "modified_on": "<time>",
    });
    let app_path = format!("Application/{app_id}");
    assert_eq!(
        me.req("GET", &app_path, "").await,
        (StatusCode::OK, with_api_id(&app_object))
    );
    assert_eq!(
        me.req("GET", "Application", "").await,
        (StatusCode::OK, one_page(&[&app_object]))
    );
    assert_eq!(me.req("POST", &app_path, "app_name=b").await, changed());
    // Its own challenge algorithms: names checked, written as named.
    let bad = json!({"api_id": "<api_id>",
        "error": "challenge_algorithms: must be a comma-separated list of \"SHA-256\", \"SHA-512-256\", \"MD5\""});
    assert_eq!(
        me.req("POST", &app_path, "challenge_algorithms=SHA-1")
            .await,
        (StatusCode::BAD_REQUEST, bad)
    );
    let twice = json!({"api_id": "<api_id>", "error": "challenge_algorithms: names MD5 twice"});
    assert_eq!(
        me.req("POST", &app_path, "challenge_algorithms=md5,MD5")
            .await,
        (StatusCode::BAD_REQUEST, twice)
    );
    assert_eq!(
        me.req("POST", &app_path, "challenge_algorithms=md5").await,
        changed()
    );
    let (_, v) = me.req("GET", &app_path, "").await;
    assert_eq!(v["challenge_algorithms"], "MD5");
    assert_eq!(
        me.req("POST", &app_path, "challenge_algorithms=").await,
        changed()
    );
    unknown_is_not_found(
        &me,
        &other,
        "Application",
        &app_id,
        "app_name=x",
        "application",
    )
    .await;

    let (s, v) = me
        .req(
            "POST",
            "Endpoint",
            &format!("username=desk&password=Secret-0ne&alias=Desk&app_id={app_id}"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["endpoint_id"].as_str().unwrap().to_owned();
    let username = v["username"].as_str().unwrap().to_owned();
    assert!(
        username.len() == 16 && username.starts_with("desk"),
        "{username}"
    );
    let created = json!({"api_id": "<api_id>", "message": "created", "endpoint_id": id, "username": username, "alias": "Desk"});
    assert_eq!(v, created);
    let mut object = json!({
        "endpoint_id": id,
        "username": username,
        "alias": "Desk",
        "application": app_id,
        "sip_uri": format!("sip:{username}@example.com"),
        "created_on": "<time>",
        "modified_on": "<time>",
        "sip_registered": "false",
    });
    let path = format!("Endpoint/{id}");
    assert_eq!(
        me.req("GET", &path, "").await,
        (StatusCode::OK, with_api_id(&object))
    );
    assert_eq!(
        me.req("GET", "Endpoint", "").await,
        (StatusCode::OK, one_page(&[&object]))
    );
    let no_app =
        json!({"api_id": "<api_id>", "error": "app_id: no such application in this account"});
    assert_eq!(
        me.req("POST", &path, "app_id=12345").await,
        (StatusCode::BAD_REQUEST, no_app)
    );
    assert_eq!(me.req("POST", &path, "alias=Hall").await, changed());
    unknown_is_not_found(&me, &other, "Endpoint", &id, "alias=x", "endpoint").await;
    // Deleting the application detaches its endpoint.
    assert_eq!(
        me.req("DELETE", &app_path, "").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(me.req("GET", &app_path, "").await, not_found("application"));
    object["alias"] = Value::from("Hall");
    object["application"] = Value::Null;
    assert_eq!(
        me.req("GET", &path, "").await,
        (StatusCode::OK, with_api_id(&object))
    );
    assert_eq!(
        me.req("DELETE", &path, "").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(me.req("GET", &path, "").await, not_found("endpoint"));
}

#[tokio::test]
async fn calls_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let (me, other) = clients(&app);
    let (s, v) = me
        .req(
            "POST",
            "Call",
            "from=alice&to=sip:bob@192.0.2.9&answer_url=http://127.0.0.1/a",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["request_uuid"].as_str().unwrap().to_owned();
    assert_eq!(
        v,
        json!({"api_id": "<api_id>", "message": "call fired", "request_uuid": id})
    );
    let object = json!({
        "api_id": "<api_id>",
        "call_uuid": id,
        "direction": "outbound",
        "from_number": "alice",
        "to_number": "sip:bob@192.0.2.9",
        "answer_url": "http://127.0.0.1/a",
        "call_status": "queued",
        "hangup_cause_name": null,
        "hangup_cause_code": null,
        "sip_auth_type": null,
        "source_ip": null,
        "initiation_time": "<time>",
        "end_time": null,
    });
    assert_eq!(
        me.req("GET", &format!("Call/{id}"), "").await,
        (StatusCode::OK, object)
    );
    assert_eq!(
        other.req("GET", &format!("Call/{id}"), "").await,
        not_found("call")
    );
    assert_eq!(
        me.req("GET", "Call/no-such-call", "").await,
        not_found("call")
    );
}

#[tokio::test]
async fn applications_are_listed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let (me, other) = clients(&app);
    for (c, name) in [
        (&me, "front desk"),
        (&me, "sales"),
        (&me, "front desk"),
        (&other, "front desk"),
    ] {
        let form = format!(
            "app_name={}&answer_url=http://127.0.0.1/a",
            name.replace(' ', "+")
        );
        let (s, v) = c.req("POST", "Application", &form).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = me.req("GET", "Application?app_name=front+desk", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["meta"]["total_count"], 2, "{v}");
    let names: Vec<&str> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["app_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["front desk", "front desk"]);
    // The filter stays in the links of a page.
    let (_, v) = me
        .req("GET", "Application?app_name=front%20desk&limit=1", "")
        .await;
    assert_eq!(v["meta"]["total_count"], 2, "{v}");
    assert_eq!(
        v["meta"]["next"],
        format!("/v1/Account/{ACCT}/Application/?app_name=front+desk&limit=1&offset=1")
    );
    // No such name: an empty page; an empty name: no filter.
    let (_, v) = me.req("GET", "Application?app_name=nobody", "").await;
    assert_eq!(v["meta"]["total_count"], 0, "{v}");
    let (_, v) = me.req("GET", "Application?app_name=", "").await;
    assert_eq!(v["meta"]["total_count"], 3, "{v}");
}
