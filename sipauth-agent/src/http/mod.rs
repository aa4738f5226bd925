//! The agent's HTTP surface: `/metrics`, `/ready` and the operator
//! endpoints.
#![forbid(unsafe_code)]

pub mod admin;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use sipauth_kernel::maps::Xdp;

/// What the handlers share.
pub struct AppState {
    /// Its metrics, its lockouts, its fleet (operator lockouts and lifts
    /// reach the whole fleet through it), and whether it takes calls.
    pub edge: Arc<sipauth_edge::Edge>,
    pub xdp: Option<Arc<Xdp>>,
    /// The snapshot the edge enforces.
    pub views: Arc<sipauth_edge::view::Views>,
    /// Operator bearer token; empty disables `/admin`.
    pub admin_token: String,
    /// Lockout length when the operator gives none.
    pub lockout_duration: std::time::Duration,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .nest("/admin", admin::router(state.clone()))
        .with_state(state)
}

/// 200 while the edge lets calls in; 503 with Retry-After while it is full
/// (`sip.max_inbound_calls`) or stopping, for load balancers that check
/// over HTTP. SIP OPTIONS answers the same way, for proxies that ping.
async fn ready(State(state): State<Arc<AppState>>) -> axum::response::Response {
    if state.edge.taking_calls() {
        axum::Json(serde_json::json!({ "taking_calls": true })).into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, sipauth_edge::call::RETRY_AFTER_SECS)],
            axum::Json(serde_json::json!({
                "taking_calls": false,
                "error": "the edge is not taking calls: it is full or stopping",
            })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let xdp_stats = match state.xdp.as_deref().map(Xdp::stats).transpose() {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "reading XDP statistics failed");
            None
        }
    };
    let mut body = state.edge.metrics.render(xdp_stats.as_deref());
    sipauth_edge::metrics::render_counter(
        &mut body,
        "sipauth_never_lock_failures_total",
        "Denied requests from never-lock sources judged in user space, not counted towards a lockout.",
        state.edge.lockouts.never_lock_failures(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
