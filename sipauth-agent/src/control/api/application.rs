//! `Application/`: where calls to `sip:{app_id}@{domain}` go, and who may
//! place them (`sip_auth_type` with its credential and IP ACL).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{
    AccountId, ApiError, ApiResult, Page, Resource, body_fields, no_content, numeric_id, reply,
    time,
};
use crate::control::ControlState;
use crate::control::fields::{
    AUTH_TYPES, Field, HTTP_METHODS, Kind, Valid, auth_type, field, validate,
};
use crate::control::store::now;
use crate::snapshot::AuthType;

const NAME: Kind = Kind::Text { min: 1, max: 255 };

pub const CREATE: &[Field] = &[
    field("app_name", NAME, true, ""),
    field(
        "answer_url",
        Kind::Url,
        true,
        "fetched when a call is allowed",
    ),
    field(
        "answer_method",
        Kind::OneOf(HTTP_METHODS),
        false,
        "default POST",
    ),
    field("hangup_url", Kind::Url, false, "default: answer_url"),
    field(
        "hangup_method",
        Kind::OneOf(HTTP_METHODS),
        false,
        "default POST",
    ),
    field(
        "sip_auth_type",
        Kind::OneOf(AUTH_TYPES),
        false,
        "default \"\" (registered endpoints only)",
    ),
    field(
        "credential_uuid",
        Kind::Id,
        false,
        "required by credential and ip_acl_and_credential",
    ),
    field(
        "ip_acl_uuid",
        Kind::Id,
        false,
        "required by ip_acl and ip_acl_and_credential",
    ),
];
pub const UPDATE: &[Field] = &[
    field("app_name", NAME, false, ""),
    field("answer_url", Kind::Url, false, ""),
    field("answer_method", Kind::OneOf(HTTP_METHODS), false, ""),
    field("hangup_url", Kind::Url, false, ""),
    field("hangup_method", Kind::OneOf(HTTP_METHODS), false, ""),
    field(
        "sip_auth_type",
        Kind::OneOf(AUTH_TYPES),
        false,
        "\"\" clears both assignments",
    ),
    field(
        "credential_uuid",
        Kind::Id,
        false,
        "required with sip_auth_type credential or ip_acl_and_credential",
    ),
    field(
        "ip_acl_uuid",
        Kind::Id,
        false,
        "required with sip_auth_type ip_acl or ip_acl_and_credential",
    ),
];

const COLUMNS: &str = "app_id, app_name, answer_url, answer_method, hangup_url, hangup_method, \
                       sip_auth_type, credential_uuid, ip_acl_uuid, created_at, updated_at";

const APPLICATIONS: Resource = Resource {
    table: "applications",
    key: "app_id",
    columns: COLUMNS,
    path: "Application/",
    what: "application",
};

pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route("/v1/Account/{auth_id}/Application", get(list).post(create))
        .route(
            "/v1/Account/{auth_id}/Application/{app_id}",
            get(get_one).post(update).delete(delete),
        )
}

fn object(r: &AnyRow, domain: &str) -> Result<Value, sqlx::Error> {
    let app_id: String = r.try_get("app_id")?;
    Ok(json!({
        "app_id": app_id,
        "app_name": r.try_get::<String, _>("app_name")?,
        "answer_url": r.try_get::<String, _>("answer_url")?,
        "answer_method": r.try_get::<String, _>("answer_method")?,
        "hangup_url": r.try_get::<Option<String>, _>("hangup_url")?,
        "hangup_method": r.try_get::<String, _>("hangup_method")?,
        "sip_auth_type": r.try_get::<String, _>("sip_auth_type")?,
        "credential_uuid": r.try_get::<Option<String>, _>("credential_uuid")?,
        "ip_acl_uuid": r.try_get::<Option<String>, _>("ip_acl_uuid")?,
        "sip_uri": format!("sip:{app_id}@{domain}"),
        "created_on": time(r.try_get("created_at")?),
        "modified_on": time(r.try_get("updated_at")?),
    }))
}

/// The assignment after this request: `(type, credential, acl)`.
struct Auth {
    kind: AuthType,
    credential: Option<String>,
    acl: Option<String>,
}

/// Applies the request's `sip_auth_type`, `credential_uuid` and
/// `ip_acl_uuid` to `current`. With a type, the uuids it needs must be given
/// and no other; without one, a given uuid replaces the current one if the
/// current type uses it. Referenced uuids must belong to the account.
async fn resolve_auth(
    conn: &mut sqlx::AnyConnection,
    acct: &str,
    current: Auth,
    v: &Valid,
) -> Result<Auth, ApiError> {
    let given = |name: &str| v.str(name).filter(|s| !s.is_empty()).map(str::to_owned);
    let (cred_given, acl_given) = (given("credential_uuid"), given("ip_acl_uuid"));
    let next = match auth_type(v) {
        Some(kind) => {
            if kind.uses_credential() && cred_given.is_none() {
                return Err(ApiError::field(
                    "credential_uuid",
                    &format!("is required when sip_auth_type is {}", kind.as_str()),
                ));
            }
            if kind.uses_acl() && acl_given.is_none() {
                return Err(ApiError::field(
                    "ip_acl_uuid",
                    &format!("is required when sip_auth_type is {}", kind.as_str()),
                ));
            }
            Auth {
                kind,
                credential: if kind.uses_credential() {
                    cred_given.clone()
                } else {
                    None
                },
                acl: if kind.uses_acl() {
                    acl_given.clone()
                } else {
                    None
                },
            }
        }
        None => Auth {
            kind: current.kind,
            credential: cred_given.clone().or(current.credential),
            acl: acl_given.clone().or(current.acl),
        },
    };
    if cred_given.is_some() && !next.kind.uses_credential() {
        return Err(ApiError::field(
            "credential_uuid",
            "is only used with sip_auth_type credential or ip_acl_and_credential",
        ));
    }
    if acl_given.is_some() && !next.kind.uses_acl() {
        return Err(ApiError::field(
            "ip_acl_uuid",
            "is only used with sip_auth_type ip_acl or ip_acl_and_credential",
        ));
    }
    if let Some(uuid) = &cred_given {
        let found = sqlx::query("SELECT 1 FROM credentials WHERE account = $1 AND uuid = $2")
            .bind(acct)
            .bind(uuid)
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            return Err(ApiError::field(
                "credential_uuid",
                "no such credential in this account",
            ));
        }
    }
    if let Some(uuid) = &acl_given {
        let found = sqlx::query("SELECT 1 FROM ip_acls WHERE account = $1 AND uuid = $2")
            .bind(acct)
            .bind(uuid)
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            return Err(ApiError::field(
                "ip_acl_uuid",
                "no such IP ACL in this account",
            ));
        }
    }
    Ok(next)
}

async fn create(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, CREATE)?;
    let mut w = s.store.write().await?;
    let none = Auth {
        kind: AuthType::None,
        credential: None,
        acl: None,
    };
    let auth = resolve_auth(&mut w.tx, &acct, none, &v).await?;
    let app_id = numeric_id(17);
    let t = now();
    let answer_url = v.str("answer_url").unwrap_or_default();
    sqlx::query("INSERT INTO applications (app_id, account, app_name, answer_url, answer_method, hangup_url, hangup_method, \
         sip_auth_type, credential_uuid, ip_acl_uuid, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
    .bind(&app_id)
    .bind(&acct)
    .bind(v.str("app_name").unwrap_or_default())
    .bind(answer_url)
    .bind(v.str("answer_method").unwrap_or("POST"))
    .bind(v.str("hangup_url").unwrap_or(answer_url))
    .bind(v.str("hangup_method").unwrap_or("POST"))
    .bind(auth.kind.as_str())
    .bind(auth.credential)
    .bind(auth.acl)
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    s.committed(w).await?;
    tracing::info!(account = %acct, app = %app_id, sip_auth_type = auth.kind.as_str(), "application created");
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "app_id": app_id }),
    ))
}

async fn list(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    page: Query<Page>,
) -> ApiResult {
    APPLICATIONS
        .list(s.store.pool(), &acct, page, |r| object(r, &s.realm))
        .await
}

async fn fetch(
    conn: &mut sqlx::AnyConnection,
    acct: &str,
    app_id: &str,
) -> Result<AnyRow, ApiError> {
    APPLICATIONS.owned(conn, acct, app_id).await
}

async fn get_one(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, app_id)): Path<(String, String)>,
) -> ApiResult {
    let mut conn = s.store.pool().acquire().await?;
    let row = fetch(&mut conn, &acct, &app_id).await?;
    Ok(reply(StatusCode::OK, object(&row, &s.realm)?))
}

async fn update(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, app_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, UPDATE)?;
    let mut w = s.store.write().await?;
    let row = fetch(&mut w.tx, &acct, &app_id).await?;
    let current = Auth {
        kind: AuthType::parse(&row.try_get::<String, _>("sip_auth_type")?).unwrap_or_default(),
        credential: row.try_get("credential_uuid")?,
        acl: row.try_get("ip_acl_uuid")?,
    };
    let auth = resolve_auth(&mut w.tx, &acct, current, &v).await?;
    let keep = |name: &str| -> Result<Option<String>, sqlx::Error> {
        match v.str(name) {
            Some(x) => Ok(Some(x.to_owned())),
            None => row.try_get(name),
        }
    };
    sqlx::query(
        "UPDATE applications SET app_name = $1, answer_url = $2, answer_method = $3, hangup_url = $4, \
         hangup_method = $5, sip_auth_type = $6, credential_uuid = $7, ip_acl_uuid = $8, updated_at = $9 \
         WHERE app_id = $10",
    )
    .bind(keep("app_name")?)
    .bind(keep("answer_url")?)
    .bind(keep("answer_method")?)
    .bind(keep("hangup_url")?)
    .bind(keep("hangup_method")?)
    .bind(auth.kind.as_str())
    .bind(auth.credential)
    .bind(auth.acl)
    .bind(now())
    .bind(&app_id)
    .execute(&mut *w.tx)
    .await?;
    s.committed(w).await?;
    tracing::info!(account = %acct, app = %app_id, sip_auth_type = auth.kind.as_str(), "application changed");
    Ok(reply(StatusCode::ACCEPTED, json!({ "message": "changed" })))
}

async fn delete(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, app_id)): Path<(String, String)>,
) -> ApiResult {
    let mut w = s.store.write().await?;
    fetch(&mut w.tx, &acct, &app_id).await?;
    sqlx::query("UPDATE endpoints SET app_id = NULL WHERE app_id = $1")
        .bind(&app_id)
        .execute(&mut *w.tx)
        .await?;
    sqlx::query("DELETE FROM applications WHERE app_id = $1")
        .bind(&app_id)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(no_content())
}
