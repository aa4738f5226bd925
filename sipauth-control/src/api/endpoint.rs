//! `Endpoint/`: SIP endpoints that REGISTER with the edge. Each gets a
//! globally unique username (the requested one plus 12 digits), and its
//! password is kept only as HA1 values.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, Fields, Item, Page, Resource, Scope, changed, ha1, numeric_id, reply, time,
};
use crate::ControlState;
use crate::fields::{Field, Kind, field, validate};
use sipauth_store::endpoints::{self, EndpointRow, NewEndpoint};
use sipauth_store::{WriteTx, applications};

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

const ENDPOINTS: Resource<EndpointRow> = Resource {
    table: &endpoints::TABLE,
    what: "endpoint",
    path: "Endpoint/",
};

pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route("/v1/Account/{auth_id}/Endpoint", get(list).post(create))
        .route(
            "/v1/Account/{auth_id}/Endpoint/{endpoint_id}",
            get(get_one).post(update).delete(delete),
        )
}

/// An endpoint as the API shows it: with `sip_registered` ("true" or
/// "false", as Plivo writes it) and, while registered, the binding's
/// `sip_contact`, `sip_expires` and `sip_user_agent`.
fn object(r: &EndpointRow, s: &ControlState) -> Value {
    let mut v = json!({
        "endpoint_id": r.endpoint_id,
        "username": r.username,
        "alias": r.alias,
        "application": r.app_id,
        "sip_uri": format!("sip:{}@{}", r.username, s.realm),
        "created_on": time(r.created_at),
        "modified_on": time(r.updated_at),
        "sip_registered": "false",
    });
    if let Some(reg) = s
        .registrations
        .get()
        .and_then(|regs| regs.current(&r.username))
    {
        v["sip_registered"] = json!("true");
        v["sip_contact"] = json!(reg.contact);
        v["sip_expires"] = json!(time(i64::try_from(reg.expires_unix).unwrap_or(i64::MAX)));
        v["sip_user_agent"] = json!(reg.user_agent);
    }
    v
}

/// 400 unless account `acct` owns application `app_id`.
async fn check_app(w: &mut WriteTx, acct: &str, app_id: &str) -> Result<(), ApiError> {
    if applications::TABLE.exists(w, acct, app_id).await? {
        Ok(())
    } else {
        Err(ApiError::field(
            "app_id",
            "no such application in this account",
        ))
    }
}

async fn create(Scope(s, acct): Scope, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, CREATE)?;
    let username = format!(
        "{}{}",
        v.str("username").unwrap_or_default(),
        numeric_id(12)
    );
    let ha1 = ha1(&username, &s.realm, v.str("password").unwrap_or_default());
    let mut w = s.store.write().await?;
    let app_id = v.str("app_id").filter(|a| !a.is_empty());
    if let Some(app) = app_id {
        check_app(&mut w, &acct, app).await?;
    }
    let id = numeric_id(15);
    endpoints::insert(
        &mut w,
        &NewEndpoint {
            endpoint_id: &id,
            account: &acct,
            username: &username,
            alias: v.str("alias").unwrap_or_default(),
            app_id,
            ha1: &ha1,
        },
    )
    .await?;
    s.committed(w).await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "endpoint_id": id, "username": username, "alias": v.str("alias") }),
    ))
}

async fn list(Scope(s, acct): Scope, page: Query<Page>) -> ApiResult {
    ENDPOINTS.list(&s, &acct, page, |r| object(r, &s)).await
}

async fn get_one(Item(s, acct, id): Item) -> ApiResult {
    ENDPOINTS.get(&s, &acct, &id, |r| object(r, &s)).await
}

async fn update(Item(s, acct, id): Item, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, UPDATE)?;
    let mut w = s.store.write().await?;
    let row = ENDPOINTS.row(&mut w, &acct, &id).await?;
    let app_id: Option<String> = match v.str("app_id") {
        Some("") => None,
        Some(app) => {
            check_app(&mut w, &acct, app).await?;
            Some(app.to_owned())
        }
        None => row.app_id,
    };
    let alias = v.str("alias").unwrap_or(&row.alias);
    endpoints::update(&mut w, &id, alias, app_id.as_deref()).await?;
    if let Some(password) = v.str("password") {
        let ha1 = ha1(&row.username, &s.realm, password);
        endpoints::set_ha1(&mut w, &id, &ha1).await?;
    }
    s.committed(w).await?;
    Ok(changed())
}

async fn delete(Item(s, acct, id): Item) -> ApiResult {
    ENDPOINTS
        .delete(&s, &acct, &id, async |w| {
            Ok(endpoints::delete(w, &id).await?)
        })
        .await
}
