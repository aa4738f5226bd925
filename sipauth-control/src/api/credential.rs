//! `SipAuth/Credential/`: digest credentials. Passwords become HA1 values
//! on arrival and exist nowhere else.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, Fields, Item, Page, Resource, Scope, changed, ha1, refuse_if_assigned,
    reply, time,
};
use crate::ControlState;
use crate::fields::{Field, Kind, field, validate};
use sipauth_store::applications;
use sipauth_store::credentials::{self, CredentialRow, NewCredential};

pub const MAX_PER_ACCOUNT: i64 = 200;

const CREDENTIALS: Resource<CredentialRow> = Resource {
    table: &credentials::TABLE,
    what: "credential",
    path: "SipAuth/Credential/",
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

fn object(r: &CredentialRow) -> Value {
    json!({
        "credential_uuid": r.uuid,
        "username": r.username,
        "created_on": time(r.created_at),
        "modified_on": time(r.updated_at),
    })
}

async fn create(Scope(s, acct): Scope, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, CREATE)?;
    let (username, password) = (
        v.str("username").unwrap_or_default(),
        v.str("password").unwrap_or_default(),
    );
    let ha1 = ha1(username, &s.realm, password);
    let mut w = s.store.write().await?;
    if credentials::TABLE.count(&mut w, &acct).await? >= MAX_PER_ACCOUNT {
        return Err(ApiError::bad(format!(
            "credentials: an account may hold at most {MAX_PER_ACCOUNT}"
        )));
    }
    if credentials::username_taken(&mut w, &acct, username).await? {
        return Err(ApiError::field(
            "username",
            "is already used by a credential of this account",
        ));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    credentials::insert(
        &mut w,
        &NewCredential {
            uuid: &uuid,
            account: &acct,
            username,
            ha1: &ha1,
        },
    )
    .await?;
    s.committed(w).await?;
    tracing::info!(account = %acct, credential = %uuid, "credential created");
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "credential_uuid": uuid, "username": username }),
    ))
}

async fn list(Scope(s, acct): Scope, page: Query<Page>) -> ApiResult {
    CREDENTIALS.list(&s, &acct, page, object).await
}

async fn get_one(Item(s, acct, uuid): Item) -> ApiResult {
    CREDENTIALS.get(&s, &acct, &uuid, object).await
}

/// Rotates the password; applications using the credential see it with
/// the next snapshot.
async fn update(Item(s, acct, uuid): Item, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, UPDATE)?;
    let mut w = s.store.write().await?;
    let row = CREDENTIALS.row(&mut w, &acct, &uuid).await?;
    let ha1 = ha1(
        &row.username,
        &s.realm,
        v.str("password").unwrap_or_default(),
    );
    credentials::set_ha1(&mut w, &acct, &uuid, &ha1).await?;
    s.committed(w).await?;
    tracing::info!(account = %acct, credential = %uuid, "credential password rotated");
    Ok(changed())
}

async fn delete(Item(s, acct, uuid): Item) -> ApiResult {
    CREDENTIALS
        .delete(&s, &acct, &uuid, async |w| {
            let apps = applications::using_credential(w, &uuid).await?;
            refuse_if_assigned(CREDENTIALS.what, &apps)?;
            Ok(credentials::delete(w, &acct, &uuid).await?)
        })
        .await
}
