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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq as _;

use super::ControlState;
use super::store::StoreError;

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
}

impl ApiError {
    /// 400 naming the field and the rule.
    pub fn field(name: &str, rule: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: format!("{name}: {rule}"),
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("{what} not found"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error; nothing was changed".to_owned(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({ "api_id": api_id(), "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"sipauth\""),
            );
        }
        r
    }
}

pub type ApiResult = Result<Response, ApiError>;

#[must_use]
pub fn api_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

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

// === request bodies ===

/// The fields of a JSON object or form-encoded body.
pub fn body_fields(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    if ctype.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::bad(format!("body: not a valid form: {e}")))?;
        return Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad("body: must be a JSON object")),
        Err(e) => Err(ApiError::bad(format!("body: not valid JSON: {e}"))),
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
        if let Some(ip) = client
            && state.auth_limiter.is_blocked(ip)
        {
            return Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "too many failed authentications from this address; try later".to_owned(),
            });
        }
        let path_id = parts
            .uri
            .path()
            .strip_prefix("/v1/Account/")
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let unauthorized = || ApiError {
            status: StatusCode::UNAUTHORIZED,
            message:
                "authentication required: HTTP Basic with the account's auth_id and auth_token"
                    .to_owned(),
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

/// Failed API authentications per client address: `LIMIT` within
/// `WINDOW` blocks the address for `WINDOW`.
#[derive(Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    const LIMIT: u32 = 10;
    const WINDOW: Duration = Duration::from_mins(1);

    pub fn failed(&self, ip: IpAddr) {
        let mut m = self.failures.lock().expect("limiter");
        let now = Instant::now();
        if m.len() > 100_000 {
            m.retain(|_, (since, _)| now.duration_since(*since) < Self::WINDOW);
        }
        let e = m.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= Self::WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }

    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let m = self.failures.lock().expect("limiter");
        m.get(&ip).is_some_and(|(since, n)| {
            *n >= Self::LIMIT && Instant::now().duration_since(*since) < Self::WINDOW
        })
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
        Ok(Paging { limit, offset })
    }
}

/// An account's resource in the store, as its handlers read it. Names
/// are constants of the handlers, never request input.
pub struct Resource {
    pub table: &'static str,
    /// The column of the id in the resource's path.
    pub key: &'static str,
    /// The columns the API shows, the key first.
    pub columns: &'static str,
    /// Where it is listed, after `/v1/Account/{auth_id}/`.
    pub path: &'static str,
    /// Its name in a 404.
    pub what: &'static str,
}

impl Resource {
    /// The row `id` of account `acct` (the shown columns), or 404: another
    /// account's id is as unknown as one that does not exist.
    pub async fn owned(
        &self,
        conn: &mut sqlx::AnyConnection,
        acct: &str,
        id: &str,
    ) -> Result<sqlx::any::AnyRow, ApiError> {
        sqlx::query(&format!(
            "SELECT {} FROM {} WHERE account = $1 AND {} = $2",
            self.columns, self.table, self.key
        ))
        .bind(acct)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found(self.what))
    }

    /// A page of `acct`'s rows as `object` shows them, with Plivo's meta.
    pub async fn list(
        &self,
        pool: &sqlx::AnyPool,
        acct: &str,
        page: Query<Page>,
        object: impl Fn(&sqlx::any::AnyRow) -> Result<Value, sqlx::Error>,
    ) -> ApiResult {
        let paging = Page::check(page)?;
        let (total, rows) =
            self::page(pool, self.table, self.columns, "account", acct, &paging).await?;
        let objects = rows.iter().map(object).collect::<Result<_, _>>()?;
        Ok(list_reply(
            &format!("/v1/Account/{acct}/{}", self.path),
            &paging,
            total,
            objects,
        ))
    }

    /// 400 naming the applications whose `column` holds `id`: a credential
    /// or an IP ACL in use cannot be deleted.
    pub async fn refuse_if_assigned(
        &self,
        conn: &mut sqlx::AnyConnection,
        column: &str,
        id: &str,
    ) -> Result<(), ApiError> {
        use sqlx::Row as _;
        let apps: Vec<String> = sqlx::query(&format!(
            "SELECT app_id FROM applications WHERE {column} = $1 ORDER BY app_id"
        ))
        .bind(id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        if apps.is_empty() {
            return Ok(());
        }
        Err(ApiError::bad(format!(
            "{} is assigned to application(s) {}; set their sip_auth_type to \"\" first",
            self.what,
            apps.join(", ")
        )))
    }
}

/// One page of `table`'s rows whose `owner` column is `id`, oldest first,
/// and how many there are in all. Table and column names are constants of
/// the handlers, never request input.
pub async fn page(
    pool: &sqlx::AnyPool,
    table: &str,
    columns: &str,
    owner: &str,
    id: &str,
    paging: &Paging,
) -> Result<(i64, Vec<sqlx::any::AnyRow>), sqlx::Error> {
    use sqlx::Row as _;
    let total: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table} WHERE {owner} = $1"))
        .bind(id)
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    let rows = sqlx::query(&format!(
        "SELECT {columns} FROM {table} WHERE {owner} = $1 ORDER BY created_at, {key} LIMIT $2 OFFSET $3",
        key = columns.split(',').next().unwrap_or("created_at").trim()
    ))
    .bind(id)
    .bind(paging.limit)
    .bind(paging.offset)
    .fetch_all(pool)
    .await?;
    Ok((total, rows))
}

/// `{"meta": {...}, "objects": [...]}` as Plivo lists are.
pub fn list_reply(path: &str, paging: &Paging, total: i64, objects: Vec<Value>) -> Response {
    let objects = Value::Array(objects);
    let link = |offset: i64| format!("{path}?limit={}&offset={offset}", paging.limit);
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
