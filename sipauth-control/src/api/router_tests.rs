//! The REST handlers through the router, over a real SQLite store: the
//! status, the headers and the JSON body of every answer a client sees.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{ACCEPTED_TYPES, AuthLimiter};
use crate::ControlState;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

const ACCT: &str = "MATEST00000000000001";
const TOKEN: &str = "token01-abcdefghijklmnopqrstuvwxyz";

/// A second account: its rows are as unknown to [`ACCT`] as missing ones.
const OTHER: &str = "MATEST00000000000002";
const OTHER_TOKEN: &str = "token02-abcdefghijklmnopqrstuvwxyz";

async fn app(dir: &tempfile::TempDir) -> Router {
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = sipauth_store::Store::open(&url).await.unwrap();
    let state = ControlState::new(store, "example.com".into(), String::new())
        .await
        .unwrap();
    for (acct, token) in [(ACCT, TOKEN), (OTHER, OTHER_TOKEN)] {
        crate::create_account(&state, "t", Some((acct, token)))
            .await
            .unwrap()
            .unwrap();
    }
    crate::errors::json_errors(crate::router(state))
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    token: &str,
    ctype: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    send_as(app, ACCT, method, path, token, ctype, body).await
}

async fn send_as(
    app: &Router,
    acct: &str,
    method: &str,
    path: &str,
    token: &str,
    ctype: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{acct}:{token}"));
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/v1/Account/{acct}/{path}"))
        .header(header::AUTHORIZATION, format!("Basic {auth}"));
    if let Some(c) = ctype {
        req = req.header(header::CONTENT_TYPE, c);
    }
    let mut req = req.body(Body::from(body.to_owned())).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(IP, 40000)));
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn is_error(v: &Value) -> &str {
    assert!(v["api_id"].is_string(), "{v}");
    v["error"].as_str().expect("error")
}

#[tokio::test]
async fn an_oversized_body_is_413_and_nothing_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20));
    let (s, _, v) = send(
        &app,
        "POST",
        "SipAuth/IpAccessControlList",
        TOKEN,
        Some("application/json"),
        &big,
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    is_error(&v);
    let (_, _, v) = send(&app, "GET", "SipAuth/IpAccessControlList", TOKEN, None, "").await;
    assert_eq!(v["meta"]["total_count"], 0, "{v}");
}

#[tokio::test]
async fn unsupported_body_is_415_naming_the_types() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let (s, h, v) = send(
        &app,
        "POST",
        "SipAuth/IpAccessControlList",
        TOKEN,
        Some("text/plain"),
        "name=x",
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(h["accept-post"], ACCEPTED_TYPES);
    assert!(is_error(&v).contains(ACCEPTED_TYPES), "{v}");
    // Nothing was made; a form without Content-Type is taken.
    let (s, _, v) = send(
        &app,
        "POST",
        "SipAuth/IpAccessControlList",
        TOKEN,
        None,
        "name=x",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, _, v) = send(&app, "GET", "SipAuth/IpAccessControlList", TOKEN, None, "").await;
    assert_eq!(v["meta"]["total_count"], 1);
}

#[tokio::test]
async fn errors_of_the_router_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let (s, h, v) = send(&app, "GET", "Call", TOKEN, None, "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h[header::ALLOW], "POST");
    assert!(is_error(&v).contains("allowed: POST"), "{v}");
    let (s, _, v) = send(&app, "GET", "Nothing/Here", TOKEN, None, "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        is_error(&v),
        format!("no such path: GET /v1/Account/{ACCT}/Nothing/Here")
    );
    let (s, _, v) = send(&app, "GET", "Application?limit=1&limit=2", TOKEN, None, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(is_error(&v).contains("query string"), "{v}");
    let (s, _, v) = send(
        &app,
        "POST",
        "Application",
        TOKEN,
        Some("application/json"),
        "{x",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(is_error(&v).starts_with("body: not valid JSON"), "{v}");
}

#[tokio::test]
async fn blocked_address_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    for _ in 0..AuthLimiter::LIMIT {
        let (s, h, v) = send(&app, "GET", "Application", "wrong", None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(h.contains_key(header::WWW_AUTHENTICATE));
        is_error(&v);
    }
    let (s, h, v) = send(&app, "GET", "Application", TOKEN, None, "").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&secs), "{secs}");
    assert!(
        is_error(&v).contains(&format!("try again in {secs} s")),
        "{v}"
    );
}

#[tokio::test]
async fn handlers_go_through_the_store_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let form = Some("application/x-www-form-urlencoded");
    let (s, _, v) = send(
        &app,
        "POST",
        "SipAuth/Credential",
        TOKEN,
        form,
        "username=alice&password=Secret-0ne",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let cred = v["credential_uuid"].as_str().unwrap().to_owned();
    let (s, _, v) = send(
        &app,
        "POST",
        "SipAuth/Credential",
        TOKEN,
        form,
        "username=alice&password=Secret-tw0",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        is_error(&v),
        "username: is already used by a credential of this account"
    );
    let body = format!(
        "app_name=a&answer_url=http://127.0.0.1/a&sip_auth_type=credential&credential_uuid={cred}"
    );
    let (s, _, v) = send(&app, "POST", "Application", TOKEN, form, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let app_id = v["app_id"].as_str().unwrap().to_owned();
    let (s, _, v) = send(
        &app,
        "GET",
        &format!("Application/{app_id}"),
        TOKEN,
        None,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["credential_uuid"], cred.as_str());
    assert_eq!(v["hangup_url"], "http://127.0.0.1/a");
    assert_eq!(v["sip_uri"], format!("sip:{app_id}@example.com"));
    let path = format!("SipAuth/Credential/{cred}");
    let (s, _, v) = send(&app, "DELETE", &path, TOKEN, None, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        is_error(&v),
        format!(
            "credential is assigned to application(s) {app_id}; set their sip_auth_type to \"\" first"
        )
    );
    let (s, _, _) = send(
        &app,
        "POST",
        &format!("Application/{app_id}"),
        TOKEN,
        form,
        "sip_auth_type=",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _, _) = send(&app, "DELETE", &path, TOKEN, None, "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) = send(&app, "GET", &path, TOKEN, None, "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(is_error(&v), "credential not found");
    let (_, _, v) = send(&app, "GET", "Application?limit=1", TOKEN, None, "").await;
    assert_eq!(v["meta"]["total_count"], 1);
    assert_eq!(v["objects"][0]["sip_auth_type"], "");
    assert_eq!(v["objects"][0]["credential_uuid"], Value::Null);

    // Make Call with no edge in the process: stored as queued.
    let (s, _, v) = send(
        &app,
        "POST",
        "Call",
        TOKEN,
        form,
        "from=alice&to=sip:bob@192.0.2.9&answer_url=http://127.0.0.1/a",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let call = v["request_uuid"].as_str().unwrap().to_owned();
    let (s, _, v) = send(&app, "GET", &format!("Call/{call}"), TOKEN, None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (&v["direction"], &v["call_status"], &v["to_number"]),
        (
            &Value::from("outbound"),
            &Value::from("queued"),
            &Value::from("sip:bob@192.0.2.9")
        )
    );
    assert_eq!(v["end_time"], Value::Null);
    let (s, _, _) = send(&app, "GET", "Call/no-such-call", TOKEN, None, "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

// === every resource: list, get, update, delete, and 404 for what is not the account's ===

/// The resources one by one: create, read, list, update, delete.
mod resources;
