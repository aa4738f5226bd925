//! The REST API, wire-compatible with Plivo's: base
//! `/v1/Account/{auth_id}/`, HTTP Basic auth with the account's auth_id and
//! auth_token, JSON or form-encoded bodies, `api_id` on every response and
//! `{"api_id", "error"}` with the field and the rule on every error.
#![forbid(unsafe_code)]

mod acl;
mod application;
mod call;
mod credential;
mod endpoint;
pub mod openapi;
mod resource;
#[cfg(test)]
mod router_tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq as _;
use tokio::time::Instant;

use super::ControlState;
use sipauth_store::{self, StoreError};

pub const BASE: &str = "/v1/Account/{auth_id}";

pub fn router() -> Router<Arc<ControlState>> {
    Router::new()
        .merge(credential::routes())
        .merge(acl::routes())
        .merge(application::routes())
        .merge(endpoint::routes())
        .merge(call::routes())
        .route("/v1/openapi.json", axum::routing::get(openapi::serve))
}

// === ApiError ===

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (RFC 9110 10.2.3), in whole seconds.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 naming the field and the rule.
    pub fn field(name: &str, rule: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("{name}: {rule}"))
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; nothing was changed",
        )
    }
}

impl From<crate::queued::QueueError> for ApiError {
    fn from(e: crate::queued::QueueError) -> Self {
        match e {
            crate::queued::QueueError::Store(e) => e.into(),
            crate::queued::QueueError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is stopping; nothing was changed",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = crate::errors::error_response(self.status, self.message);
        let h = r.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"sipauth\""),
                );
            }
            // What a POST takes (the Accept-Post field registered by W3C LDP).
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                h.insert(
                    HeaderName::from_static("accept-post"),
                    HeaderValue::from_static(ACCEPTED_TYPES),
                );
            }
            _ => {}
        }
        if let Some(after) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(after)));
        }
        r
    }
}

/// `d` in whole seconds, rounded up: a client that waits that long is not
/// early. At least 1.
fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

pub type ApiResult = Result<Response, ApiError>;

pub use crate::errors::api_id;
pub use resource::Resource;

/// A JSON response with `api_id` added.
pub fn reply(status: StatusCode, mut body: Value) -> Response {
    if let Some(o) = body.as_object_mut() {
        o.insert("api_id".into(), Value::from(api_id()));
    }
    (status, axum::Json(body)).into_response()
}

#[must_use]
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// 202 `{"message": "changed"}`: an update was stored.
#[must_use]
pub fn changed() -> Response {
    reply(StatusCode::ACCEPTED, json!({ "message": "changed" }))
}

// === request bodies ===

/// The media types a request body may have, as a 415 names them.
pub const ACCEPTED_TYPES: &str = "application/json, application/x-www-form-urlencoded";

/// How a request body is read.
#[derive(Debug, PartialEq, Eq)]
enum BodyType {
    Json,
    Form,
}

/// The body type its Content-Type names (RFC 9110 8.3.1: type and subtype
/// compare case-insensitively; parameters such as charset follow `;`), or
/// 415 for any other. A body without Content-Type is JSON when it starts
/// with `{` or `[` and a form otherwise (curl's `-d` and the Plivo SDKs
/// always say which they send).
fn body_type(headers: &HeaderMap, body: &[u8]) -> Result<BodyType, ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => BodyType::Json,
            _ => BodyType::Form,
        });
    };
    let given = v.to_str().unwrap_or("(not text)");
    let essence = given.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(BodyType::Json)
    } else if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(BodyType::Form)
    } else {
        let shown: String = given.chars().take(80).collect();
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {shown:?} is not accepted; send {ACCEPTED_TYPES}"),
        ))
    }
}

/// The fields of a JSON object or form-encoded body.
pub fn body_fields(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match body_type(headers, body)? {
        BodyType::Form => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| ApiError::bad(format!("body: not a valid form: {e}")))?;
            Ok(pairs
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect())
        }
        BodyType::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ApiError::bad("body: must be a JSON object")),
            Err(e) => Err(ApiError::bad(format!("body: not valid JSON: {e}"))),
        },
    }
}

/// The fields of a write's body, read by [`body_fields`] before the
/// handler runs: each handler then only says which fields it takes.
pub struct Fields(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        body_fields(&headers, &body).map(Fields)
    }
}

// === accounts and authentication ===

/// The authenticated account of a request under `/v1/Account/{auth_id}/`.
pub struct AccountId(pub String);

impl FromRequestParts<Arc<ControlState>> for AccountId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ControlState>,
    ) -> Result<Self, Self::Rejection> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(left) = client.and_then(|ip| state.auth_limiter.blocked_for(ip)) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed authentications from this address; try again in {} s",
                    retry_secs(left)
                ),
            );
            e.retry_after = Some(left);
            return Err(e);
        }
        let path_id = parts
            .uri
            .path()
            .strip_prefix("/v1/Account/")
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication required: HTTP Basic with the account's auth_id and auth_token",
            )
        };
        let Some((user, token)) = basic(&parts.headers) else {
            return Err(unauthorized());
        };
        let stored = if user == path_id {
            state.account_token(&user).await?
        } else {
            None
        };
        // Compare against something even when the account does not exist,
        // so the answer takes the same time.
        let expected = stored
            .as_deref()
            .unwrap_or("\u{0}no-such-account-token\u{0}");
        let ok = bool::from(expected.as_bytes().ct_eq(token.as_bytes())) && stored.is_some();
        if !ok {
            if let Some(ip) = client {
                state.auth_limiter.failed(ip);
            }
            tracing::info!(client = ?client, auth_id = %path_id, "API authentication failed");
            return Err(unauthorized());
        }
        Ok(Self(user))
    }
}

/// What a handler under `/v1/Account/{auth_id}/` starts from: the state
/// and the authenticated account, `Scope(state, account)`.
pub struct Scope(pub Arc<ControlState>, pub String);

impl FromRequestParts<Arc<ControlState>> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ControlState>,
    ) -> Result<Self, Self::Rejection> {
        let AccountId(account) = AccountId::from_request_parts(parts, state).await?;
        Ok(Self(state.clone(), account))
    }
}

/// A handler on one resource (`.../{id}/`): the [`Scope`] and the id,
/// `Item(state, account, id)`.
pub struct Item(pub Arc<ControlState>, pub String, pub String);

impl FromRequestParts<Arc<ControlState>> for Item {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ControlState>,
    ) -> Result<Self, Self::Rejection> {
        let Scope(state, account) = Scope::from_request_parts(parts, state).await?;
        let axum::extract::Path((_, id)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, &state)
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        Ok(Self(state, account, id))
    }
}

/// The `(auth_id, auth_token)` of HTTP Basic credentials. Past
/// [`AccountId`], they are the account's own.
pub(crate) fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Failed API authentications per client address: the `LIMIT`th failure
/// within `WINDOW` of the first blocks the address for `BLOCK` from then
/// on. Blocked requests are not judged, so they do not lengthen the block.
#[derive(Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// One address's failures in its current window.
struct Failures {
    since: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

// === impl AuthLimiter ===

impl AuthLimiter {
    const LIMIT: u32 = 10;
    const WINDOW: Duration = Duration::from_mins(1);
    const BLOCK: Duration = Duration::from_mins(1);
    /// Addresses remembered before the stale ones are dropped.
    const MAX_TRACKED: usize = 100_000;

    pub fn failed(&self, ip: IpAddr) {
        let mut m = self.failures.lock().expect("limiter");
        let now = Instant::now();
        if m.len() > Self::MAX_TRACKED {
            m.retain(|_, f| f.live(now));
        }
        let f = m.entry(ip).or_insert(Failures {
            since: now,
            count: 0,
            blocked_until: None,
        });
        if !f.live(now) {
            *f = Failures {
                since: now,
                count: 0,
                blocked_until: None,
            };
        }
        f.count += 1;
        if f.count >= Self::LIMIT && f.blocked_until.is_none() {
            f.blocked_until = Some(now + Self::BLOCK);
            tracing::warn!(client = %ip, failures = f.count, block_secs = Self::BLOCK.as_secs(), "API authentication blocked");
        }
    }

    /// How long `ip` stays blocked, `None` when it is not.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let m = self.failures.lock().expect("limiter");
        let until = m.get(&ip)?.blocked_until?;
        let now = Instant::now();
        (now < until).then(|| until - now)
    }
}

impl Failures {
    /// Still counting or still blocking at `now`.
    fn live(&self, now: Instant) -> bool {
        match self.blocked_until {
            Some(until) => now < until,
            None => now.duration_since(self.since) < AuthLimiter::WINDOW,
        }
    }
}

// === lists ===

#[derive(Debug, Deserialize)]
pub struct Page {
    limit: Option<String>,
    offset: Option<String>,
}

/// Validated `limit` (1-20, default 20) and `offset`.
pub struct Paging {
    pub limit: i64,
    pub offset: i64,
    /// The list's filter as query parameters (form-encoded, each followed
    /// by `&`), kept in its `next` and `previous` links.
    pub filter: String,
}

impl Page {
    pub fn check(Query(p): Query<Self>) -> Result<Paging, ApiError> {
        let limit = match p.limit.as_deref() {
            None | Some("") => 20,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=20).contains(n))
                .ok_or_else(|| ApiError::field("limit", "must be an integer between 1 and 20"))?,
        };
        let offset = match p.offset.as_deref() {
            None | Some("") => 0,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::field("offset", "must be a non-negative integer"))?,
        };
        Ok(Paging {
            limit,
            offset,
            filter: String::new(),
        })
    }
}

/// The reply to a list request: `page` of the rows under `path` (after
/// `/v1/Account/{auth_id}/`), each shown by `object`.
pub fn page_reply<T>(
    acct: &str,
    path: &str,
    paging: &Paging,
    page: &sipauth_store::Page<T>,
    object: impl Fn(&T) -> Value,
) -> Response {
    list_reply(
        &format!("/v1/Account/{acct}/{path}"),
        paging,
        page.total,
        page.rows.iter().map(object).collect(),
    )
}

/// 400 naming the applications `apps` that use `what`: a credential or an
/// IP ACL in use cannot be deleted.
pub fn refuse_if_assigned(what: &str, apps: &[String]) -> Result<(), ApiError> {
    if apps.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad(format!(
        "{what} is assigned to application(s) {}; set their sip_auth_type to \"\" first",
        apps.join(", ")
    )))
}

/// The HA1 values of `username:realm:password` as the store keeps them.
#[must_use]
pub fn ha1(username: &str, realm: &str, password: &str) -> sipauth_store::Ha1 {
    let set = sipauth_digest::Ha1Set::new(username, realm, password);
    sipauth_store::Ha1 {
        md5: set.md5,
        sha256: set.sha256,
        sha512_256: set.sha512_256,
    }
}

/// `{"meta": {...}, "objects": [...]}` as Plivo lists are.
pub fn list_reply(path: &str, paging: &Paging, total: i64, objects: Vec<Value>) -> Response {
    let objects = Value::Array(objects);
    let link = |offset: i64| {
        format!(
            "{path}?{}limit={}&offset={offset}",
            paging.filter, paging.limit
        )
    };
    let next = (paging.offset + paging.limit < total).then(|| link(paging.offset + paging.limit));
    let previous = (paging.offset > 0).then(|| link((paging.offset - paging.limit).max(0)));
    reply(
        StatusCode::OK,
        json!({
            "meta": {
                "limit": paging.limit,
                "offset": paging.offset,
                "total_count": total,
                "next": next,
                "previous": previous,
            },
            "objects": objects,
        }),
    )
}

/// RFC 3339 (UTC, seconds) of a unix time.
#[must_use]
pub fn time(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A random id of `n` decimal digits not starting with 0.
#[must_use]
pub fn numeric_id(n: usize) -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut s = String::with_capacity(n);
    s.push(char::from(b'1' + rng.random_range(0..9u8)));
    for _ in 1..n {
        s.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ctype(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn body_types_by_content_type() {
        let b = b"{}";
        for (t, want) in [
            ("application/json", BodyType::Json),
            ("Application/JSON; charset=utf-8", BodyType::Json),
            ("application/x-www-form-urlencoded", BodyType::Form),
            (
                " application/x-www-form-urlencoded ;charset=UTF-8",
                BodyType::Form,
            ),
        ] {
            assert_eq!(body_type(&ctype(t), b).unwrap(), want, "{t}");
        }
        for t in [
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/x-www-form-urlencodedx",
            "",
        ] {
            let e = body_type(&ctype(t), b).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{t}");
            assert!(
                e.message.ends_with(
                    "is not accepted; send application/json, application/x-www-form-urlencoded"
                ),
                "{}",
                e.message
            );
        }
        // Without Content-Type: JSON when it looks like JSON, else a form.
        let none = HeaderMap::new();
        assert_eq!(body_type(&none, b" \n{\"a\":1}").unwrap(), BodyType::Json);
        assert_eq!(body_type(&none, b"[1]").unwrap(), BodyType::Json);
        assert_eq!(body_type(&none, b"name=x&y=1").unwrap(), BodyType::Form);
    }

    #[test]
    fn body_fields_read_both_and_refuse_others() {
        let none = HeaderMap::new();
        let f = body_fields(&none, &Bytes::from_static(b"name=a+b&n=1")).unwrap();
        assert_eq!(f["name"], "a b");
        let f = body_fields(&none, &Bytes::from_static(b"{\"n\": 1}")).unwrap();
        assert_eq!(f["n"], 1);
        let e = body_fields(&ctype("text/xml"), &Bytes::from_static(b"<a/>")).unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(
            e.message.starts_with("Content-Type \"text/xml\""),
            "{}",
            e.message
        );
        // No body: nothing to refuse.
        assert!(
            body_fields(&ctype("text/xml"), &Bytes::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_secs(Duration::from_mins(1)), 60);
        assert_eq!(retry_secs(Duration::from_millis(59_001)), 60);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::ZERO), 1);
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    #[tokio::test(start_paused = true)]
    async fn limiter_blocks_for_a_minute_from_the_tenth_failure() {
        let l = AuthLimiter::default();
        for _ in 0..9 {
            l.failed(IP);
            tokio::time::advance(Duration::from_secs(5)).await;
        }
        assert_eq!(l.blocked_for(IP), None, "nine failures in 45 s");
        l.failed(IP);
        assert_eq!(l.blocked_for(IP), Some(Duration::from_mins(1)));
        tokio::time::advance(Duration::from_millis(20_500)).await;
        let left = l.blocked_for(IP).unwrap();
        assert_eq!(left, Duration::from_millis(39_500));
        assert_eq!(retry_secs(left), 40);
        // Blocked until exactly then, not a moment longer.
        tokio::time::advance(Duration::from_millis(39_499)).await;
        assert!(l.blocked_for(IP).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(l.blocked_for(IP), None);
        // A new window: one failure does not block again.
        l.failed(IP);
        assert_eq!(l.blocked_for(IP), None);
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_counts_within_the_window_only() {
        let l = AuthLimiter::default();
        for _ in 0..9 {
            l.failed(IP);
        }
        tokio::time::advance(AuthLimiter::WINDOW).await;
        l.failed(IP);
        assert_eq!(l.blocked_for(IP), None, "the first nine are a minute old");
        assert_eq!(
            l.blocked_for(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            None,
            "another address"
        );
    }
}
