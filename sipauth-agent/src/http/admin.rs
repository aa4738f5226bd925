//! Operator endpoints, guarded by their own bearer token:
//!
//! - `GET /admin/lockouts`: active lockouts (IPv4 addresses, IPv6 prefixes
//!   such as `2001:db8:1:2::/64`);
//! - `POST /admin/lockouts` `{"address": "...", "duration_secs": N}`: lock a
//!   source out (incident response, tests); an IPv6 address locks its
//!   prefix. A never-lock address gets 409 naming its never-lock prefix;
//! - `DELETE /admin/lockouts/{address}`: lift a lockout (any address of a
//!   locked IPv6 prefix, or the prefix as listed);
//! - `GET /admin/never-lock`: the never-lock list, with each prefix's
//!   origin (`config` or `runtime`);
//! - `POST /admin/never-lock` `{"cidr": "203.0.113.0/24"}` (or a bare
//!   address): add a prefix and lift the lockouts inside it; 201, or 200
//!   when it was listed already;
//! - `DELETE /admin/never-lock/{cidr}` (`/admin/never-lock/203.0.113.0/24`,
//!   the slash as is or as `%2F`): remove a prefix added at run time; one
//!   from the config gets 409;
//! - `GET /admin/snapshot`: the version and content the edge enforces (no
//!   secrets: HA1 values and tokens are left out).
//!
//! Lockouts set or lifted here reach every edge of the fleet
//! (`cluster.redis_url`), and every edge lists the fleet's.
//!
//! Writes go straight to the XDP maps when XDP is on; never-lock prefixes
//! added at run time then live in a pinned map and survive an agent
//! restart.
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
use sipauth_control::errors::error_response as error;
use sipauth_kernel::lockout::{LockoutError, never_lock};

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/lockouts", get(list).post(add))
        .route("/lockouts/{*address}", delete(lift))
        .route("/never-lock", get(never_lock_list).post(never_lock_add))
        .route("/never-lock/{*cidr}", delete(never_lock_remove))
        .route("/snapshot", get(snapshot))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

fn lockout_error(e: &LockoutError) -> Response {
    let status = match e {
        LockoutError::NeverLock { .. }
        | LockoutError::FromConfig { .. }
        | LockoutError::Full { .. } => StatusCode::CONFLICT,
        LockoutError::NotListed { .. } => StatusCode::NOT_FOUND,
        LockoutError::Xdp(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// An address, or an address with a prefix length (a lockout as listed):
/// the address part.
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim_start_matches('/');
    text.split_once('/')
        .map_or(text, |(a, _)| a)
        .parse::<IpAddr>()
        .ok()
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
    match state.edge.lockouts.list() {
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
        Err(e) => return sipauth_control::errors::json_rejection(&e),
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
    match state.edge.lockouts.lock(address, duration) {
        Ok(source) => {
            state.edge.cluster.lock(address, duration);
            (
                StatusCode::CREATED,
                Json(json!({ "address": source, "duration_secs": duration.as_secs() })),
            )
                .into_response()
        }
        Err(e) => lockout_error(&e),
    }
}

async fn lift(State(state): State<Arc<AppState>>, Path(address): Path<String>) -> Response {
    let Some(address) = parse_address(&address) else {
        return error(
            StatusCode::BAD_REQUEST,
            "address: must be a literal IPv4 or IPv6 address",
        );
    };
    match state.edge.lockouts.lift(address) {
        Ok(true) => {
            state.edge.cluster.lift(address);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("{address} is not locked out"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn never_lock_list(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({ "never_lock": state.edge.lockouts.never_lock() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNeverLock {
    cidr: String,
}

async fn never_lock_add(
    State(state): State<Arc<AppState>>,
    body: Result<Json<AddNeverLock>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return sipauth_control::errors::json_rejection(&e),
    };
    let cidr = match never_lock::parse(&body.cidr) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("cidr: {e}")),
    };
    match state.edge.lockouts.never_lock_add(cidr) {
        Ok(added) => (
            if added.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(json!({
                "cidr": added.entry.cidr,
                "origin": added.entry.origin,
                "lockouts_lifted": added.lifted,
            })),
        )
            .into_response(),
        Err(e) => lockout_error(&e),
    }
}

async fn never_lock_remove(
    State(state): State<Arc<AppState>>,
    Path(cidr): Path<String>,
) -> Response {
    let cidr = match never_lock::parse(cidr.trim_start_matches('/')) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("cidr: {e}")),
    };
    match state.edge.lockouts.never_lock_remove(cidr) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => lockout_error(&e),
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
