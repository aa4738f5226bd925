//! `Endpoint/`: SIP endpoints that REGISTER with the edge. Each gets a
//! globally unique username (the requested one plus 12 digits), and its
//! password is kept only as HA1 values.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use sipauth_digest::Ha1Set;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{
    AccountId, ApiError, ApiResult, Page, Resource, body_fields, no_content, numeric_id, reply,
    time,
};
use crate::control::ControlState;
use crate::control::fields::{Field, Kind, field, validate};
use crate::control::store::now;

const ALIAS: Kind = Kind::Text { min: 1, max: 255 };

pub const CREATE: &[Field] = &[
    field(
        "username",
        Kind::Username,
        true,
        "12 digits are appended to make it unique",
    ),
    field(
        "password",
        Kind::Password,
        true,
        "stored only as HA1 values",
    ),
    field("alias", ALIAS, true, ""),
    field("app_id", Kind::Id, false, "application of this account"),
];
pub const UPDATE: &[Field] = &[
    field("password", Kind::Password, false, ""),
    field("alias", ALIAS, false, ""),
    field("app_id", Kind::Id, false, "\"\" detaches"),
];

const COLUMNS: &str = "endpoint_id, username, alias, app_id, created_at, updated_at";

const ENDPOINTS: Resource = Resource {
    table: "endpoints",
    key: "endpoint_id",
    columns: COLUMNS,
    path: "Endpoint/",
    what: "endpoint",
};

pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route("/v1/Account/{auth_id}/Endpoint", get(list).post(create))
        .route(
            "/v1/Account/{auth_id}/Endpoint/{endpoint_id}",
            get(get_one).post(update).delete(delete),
        )
}

fn object(r: &AnyRow, domain: &str) -> Result<Value, sqlx::Error> {
    let username: String = r.try_get("username")?;
    Ok(json!({
        "endpoint_id": r.try_get::<String, _>("endpoint_id")?,
        "username": username,
        "alias": r.try_get::<String, _>("alias")?,
        "application": r.try_get::<Option<String>, _>("app_id")?,
        "sip_uri": format!("sip:{username}@{domain}"),
        "created_on": time(r.try_get("created_at")?),
        "modified_on": time(r.try_get("updated_at")?),
    }))
}

async fn check_app(
    conn: &mut sqlx::AnyConnection,
    acct: &str,
    app_id: &str,
) -> Result<(), ApiError> {
    let found = sqlx::query("SELECT 1 FROM applications WHERE account = $1 AND app_id = $2")
        .bind(acct)
        .bind(app_id)
        .fetch_optional(conn)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::field("app_id", "no such application in this account"))
}

async fn create(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, CREATE)?;
    let username = format!(
        "{}{}",
        v.str("username").unwrap_or_default(),
        numeric_id(12)
    );
    let ha1 = Ha1Set::new(&username, &s.realm, v.str("password").unwrap_or_default());
    let mut w = s.store.write().await?;
    let app_id = v.str("app_id").filter(|a| !a.is_empty());
    if let Some(app) = app_id {
        check_app(&mut w.tx, &acct, app).await?;
    }
    let id = numeric_id(15);
    let t = now();
    sqlx::query(
        "INSERT INTO endpoints (endpoint_id, account, username, alias, app_id, ha1_md5, ha1_sha256, ha1_sha512_256, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(&acct)
    .bind(&username)
    .bind(v.str("alias").unwrap_or_default())
    .bind(app_id)
    .bind(&ha1.md5)
    .bind(&ha1.sha256)
    .bind(&ha1.sha512_256)
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    s.committed(w).await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "endpoint_id": id, "username": username, "alias": v.str("alias") }),
    ))
}

async fn list(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    page: Query<Page>,
) -> ApiResult {
    ENDPOINTS
        .list(s.store.pool(), &acct, page, |r| object(r, &s.realm))
        .await
}

async fn fetch(conn: &mut sqlx::AnyConnection, acct: &str, id: &str) -> Result<AnyRow, ApiError> {
    ENDPOINTS.owned(conn, acct, id).await
}

async fn get_one(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult {
    let mut conn = s.store.pool().acquire().await?;
    let row = fetch(&mut conn, &acct, &id).await?;
    Ok(reply(StatusCode::OK, object(&row, &s.realm)?))
}

async fn update(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, UPDATE)?;
    let mut w = s.store.write().await?;
    let row = fetch(&mut w.tx, &acct, &id).await?;
    let username: String = row.try_get("username")?;
    let app_id: Option<String> = match v.str("app_id") {
        Some("") => None,
        Some(app) => {
            check_app(&mut w.tx, &acct, app).await?;
            Some(app.to_owned())
        }
        None => row.try_get("app_id")?,
    };
    let alias: String = match v.str("alias") {
        Some(a) => a.to_owned(),
        None => row.try_get("alias")?,
    };
    let t = now();
    sqlx::query(
        "UPDATE endpoints SET alias = $1, app_id = $2, updated_at = $3 WHERE endpoint_id = $4",
    )
    .bind(&alias)
    .bind(app_id)
    .bind(t)
    .bind(&id)
    .execute(&mut *w.tx)
    .await?;
    if let Some(password) = v.str("password") {
        let ha1 = Ha1Set::new(&username, &s.realm, password);
        sqlx::query("UPDATE endpoints SET ha1_md5 = $1, ha1_sha256 = $2, ha1_sha512_256 = $3 WHERE endpoint_id = $4")
            .bind(&ha1.md5)
            .bind(&ha1.sha256)
            .bind(&ha1.sha512_256)
            .bind(&id)
            .execute(&mut *w.tx)
            .await?;
    }
    s.committed(w).await?;
    Ok(reply(StatusCode::ACCEPTED, json!({ "message": "changed" })))
}

async fn delete(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult {
    let mut w = s.store.write().await?;
    fetch(&mut w.tx, &acct, &id).await?;
    sqlx::query("DELETE FROM endpoints WHERE endpoint_id = $1")
        .bind(&id)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(no_content())
}
