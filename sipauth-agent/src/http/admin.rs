//! Operator endpoints, guarded by their own bearer token:
//!
//! - `GET /admin/lockouts`: active lockouts;
//! - `POST /admin/lockouts` `{"address": "...", "duration_secs": N}`: lock a
//!   source out (incident response, tests);
//! - `DELETE /admin/lockouts/{address}`: lift a lockout;
//! - `GET /admin/snapshot`: the version and content the edge enforces (no
//!   secrets: HA1 values and tokens are left out).
//!
//! Writes go straight to the XDP map when XDP is on.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;
use super::errors::error_response as error;

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/lockouts", get(list).post(add))
        .route("/lockouts/{address}", delete(lift))
        .route("/snapshot", get(snapshot))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

async fn authorize(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if state.admin_token.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "admin endpoints are disabled (no admin.token)",
        );
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(state.admin_token.as_bytes())) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "a valid admin bearer token is required",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    next.run(req).await
}

async fn list(State(state): State<Arc<AppState>>) -> Response {
    match state.lockouts.list() {
        Ok(list) => Json(json!({ "lockouts": list })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLockout {
    address: String,
    duration_secs: Option<u64>,
}

async fn add(
    State(state): State<Arc<AppState>>,
    body: Result<Json<AddLockout>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e),
    };
    let Ok(address) = body.address.parse::<IpAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "address: must be a literal IPv4 or IPv6 address",
        );
    };
    let duration = match body.duration_secs {
        Some(0) => return error(StatusCode::BAD_REQUEST, "duration_secs: must be at least 1"),
        Some(secs) => Duration::from_secs(secs),
        None => state.lockout_duration,
    };
    match state.lockouts.lock(address, duration) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({ "address": address.to_canonical(), "duration_secs": duration.as_secs() })),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn lift(State(state): State<Arc<AppState>>, Path(address): Path<String>) -> Response {
    let Ok(address) = address.parse::<IpAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "address: must be a literal IPv4 or IPv6 address",
        );
    };
    match state.lockouts.lift(address) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("{address} is not locked out"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn snapshot(State(state): State<Arc<AppState>>) -> Response {
    let view = state.views.current();
    let s = &view.snapshot;
    Json(json!({
        "version": s.version,
        "applications": s.applications.iter().map(|a| json!({
            "app_id": a.app_id,
            "sip_auth_type": a.sip_auth_type,
            "credential_uuid": a.credential_uuid,
            "ip_acl_uuid": a.ip_acl_uuid,
        })).collect::<Vec<_>>(),
        "acls": s.acls.iter().map(|a| json!({
            "uuid": a.uuid,
            "entries": a.entries.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "credentials": s.credentials.iter().map(|c| json!({ "uuid": c.uuid, "username": c.username })).collect::<Vec<_>>(),
        "endpoints": s.endpoints.iter().map(|e| json!({ "endpoint_id": e.endpoint_id, "username": e.username })).collect::<Vec<_>>(),
    }))
    .into_response()
}
