//! `SipAuth/Credential/`: digest credentials. Passwords become HA1 values
//! on arrival and exist nowhere else.
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

use super::{AccountId, ApiError, ApiResult, Page, Resource, body_fields, no_content, reply, time};
use crate::control::ControlState;
use crate::control::fields::{Field, Kind, field, validate};
use crate::control::store::now;

pub const MAX_PER_ACCOUNT: i64 = 200;

const CREDENTIALS: Resource = Resource {
    table: "credentials",
    key: "uuid",
    columns: COLUMNS,
    path: "SipAuth/Credential/",
    what: "credential",
};

pub const CREATE: &[Field] = &[
    field("username", Kind::Username, true, "digest username"),
    field(
        "password",
        Kind::Password,
        true,
        "stored only as HA1 values",
    ),
];
pub const UPDATE: &[Field] = &[field("password", Kind::Password, true, "the new password")];

pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route(
            "/v1/Account/{auth_id}/SipAuth/Credential",
            get(list).post(create),
        )
        .route(
            "/v1/Account/{auth_id}/SipAuth/Credential/{uuid}",
            get(get_one).post(update).delete(delete),
        )
}

fn object(r: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "credential_uuid": r.try_get::<String, _>("uuid")?,
        "username": r.try_get::<String, _>("username")?,
        "created_on": time(r.try_get("created_at")?),
        "modified_on": time(r.try_get("updated_at")?),
    }))
}

const COLUMNS: &str = "uuid, username, created_at, updated_at";

async fn create(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, CREATE)?;
    let (username, password) = (
        v.str("username").unwrap_or_default(),
        v.str("password").unwrap_or_default(),
    );
    let ha1 = Ha1Set::new(username, &s.realm, password);
    let mut w = s.store.write().await?;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM credentials WHERE account = $1")
        .bind(&acct)
        .fetch_one(&mut *w.tx)
        .await?
        .try_get(0)?;
    if n >= MAX_PER_ACCOUNT {
        return Err(ApiError::bad(format!(
            "credentials: an account may hold at most {MAX_PER_ACCOUNT}"
        )));
    }
    let taken = sqlx::query("SELECT 1 FROM credentials WHERE account = $1 AND username = $2")
        .bind(&acct)
        .bind(username)
        .fetch_optional(&mut *w.tx)
        .await?;
    if taken.is_some() {
        return Err(ApiError::field(
            "username",
            "is already used by a credential of this account",
        ));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let t = now();
    sqlx::query(
        "INSERT INTO credentials (uuid, account, username, ha1_md5, ha1_sha256, ha1_sha512_256, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&uuid)
    .bind(&acct)
    .bind(username)
    .bind(&ha1.md5)
    .bind(&ha1.sha256)
    .bind(&ha1.sha512_256)
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    s.committed(w).await?;
    tracing::info!(account = %acct, credential = %uuid, "credential created");
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "credential_uuid": uuid, "username": username }),
    ))
}

async fn list(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    page: Query<Page>,
) -> ApiResult {
    CREDENTIALS.list(s.store.pool(), &acct, page, object).await
}

async fn get_one(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid)): Path<(String, String)>,
) -> ApiResult {
    let mut conn = s.store.pool().acquire().await?;
    let row = CREDENTIALS.owned(&mut conn, &acct, &uuid).await?;
    Ok(reply(StatusCode::OK, object(&row)?))
}

/// Rotates the password; applications using the credential see it with
/// the next snapshot.
async fn update(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, UPDATE)?;
    let mut w = s.store.write().await?;
    let username: String = CREDENTIALS
        .owned(&mut w.tx, &acct, &uuid)
        .await?
        .try_get("username")?;
    let ha1 = Ha1Set::new(&username, &s.realm, v.str("password").unwrap_or_default());
    sqlx::query(
        "UPDATE credentials SET ha1_md5 = $1, ha1_sha256 = $2, ha1_sha512_256 = $3, updated_at = $4 \
         WHERE account = $5 AND uuid = $6",
    )
    .bind(&ha1.md5)
    .bind(&ha1.sha256)
    .bind(&ha1.sha512_256)
    .bind(now())
    .bind(&acct)
    .bind(&uuid)
    .execute(&mut *w.tx)
    .await?;
    s.committed(w).await?;
    tracing::info!(account = %acct, credential = %uuid, "credential password rotated");
    Ok(reply(StatusCode::ACCEPTED, json!({ "message": "changed" })))
}

async fn delete(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid)): Path<(String, String)>,
) -> ApiResult {
    let mut w = s.store.write().await?;
    CREDENTIALS.owned(&mut w.tx, &acct, &uuid).await?;
    CREDENTIALS
        .refuse_if_assigned(&mut w.tx, "credential_uuid", &uuid)
        .await?;
    sqlx::query("DELETE FROM credentials WHERE account = $1 AND uuid = $2")
        .bind(&acct)
        .bind(&uuid)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(no_content())
}
