//! The control plane: the REST API over the store, and the versioned
//! snapshots the edges follow.
#![forbid(unsafe_code)]

pub mod api;
pub mod fields;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sipauth_digest::Ha1Set;
use sqlx::Row as _;
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

use crate::http::errors::error_response;
use crate::snapshot::{Account, Acl, Application, AuthType, Credential, Endpoint, Snapshot};
use store::{Store, StoreError, WriteTx};

/// How often a replica looks for changes committed through another one.
const POLL: Duration = Duration::from_millis(100);
/// How long an edge's long poll waits for a change.
const LONG_POLL: Duration = Duration::from_secs(25);

/// A snapshot and its JSON, built once per version.
pub type Built = Arc<(Snapshot, Vec<u8>)>;

pub struct ControlState {
    pub store: Store,
    /// Digest realm (the SIP domain): HA1 values are computed for it.
    pub realm: String,
    pub auth_limiter: api::AuthLimiter,
    /// Bearer token edges present to fetch snapshots; empty: no remote edges.
    pub edge_token: String,
    /// The newest committed version known to this process.
    version: watch::Sender<u64>,
    /// The last snapshot built, reused while the version stands.
    cache: Mutex<Option<Built>>,
    /// Where Make Call requests go when an edge runs in this process
    /// (`sipauth run`); unset, calls stay "queued".
    pub originate: std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::edge::outbound::MakeCall>>,
    /// Account tokens read lately, and when: an API request costs no
    /// query for them while they are fresher than [`TOKEN_TTL`].
    tokens: Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

/// How long a token read from the store is used without reading it again
/// (a token changed in the store by another process applies after this).
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(5);
/// Tokens remembered at most (an API flood of made-up auth_ids cannot grow
/// the map: only existing accounts are remembered).
const TOKEN_CACHE: usize = 10_000;

// === impl ControlState ===

impl ControlState {
    pub async fn new(
        store: Store,
        realm: String,
        edge_token: String,
    ) -> Result<Arc<Self>, StoreError> {
        let v = store.version().await?;
        let state = Arc::new(Self {
            store,
            realm,
            auth_limiter: api::AuthLimiter::default(),
            edge_token,
            version: watch::channel(v).0,
            cache: Mutex::new(None),
            originate: std::sync::OnceLock::new(),
            tokens: Mutex::new(std::collections::HashMap::new()),
        });
        tokio::spawn(poll_versions(Arc::downgrade(&state)));
        Ok(state)
    }

    /// Commits a write and tells the waiting edges.
    pub async fn committed(&self, w: WriteTx) -> Result<u64, StoreError> {
        let v = w.commit().await?;
        self.version.send_if_modified(|cur| {
            let newer = v > *cur;
            if newer {
                *cur = v;
            }
            newer
        });
        Ok(v)
    }

    /// Watches the committed version.
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The auth token of account `auth_id`, `None` when there is no such
    /// account.
    pub async fn account_token(&self, auth_id: &str) -> Result<Option<String>, StoreError> {
        if let Some((token, read)) = self.tokens.lock().expect("tokens").get(auth_id)
            && read.elapsed() < TOKEN_TTL
        {
            return Ok(Some(token.clone()));
        }
        let row = sqlx::query("SELECT auth_token FROM accounts WHERE auth_id = $1")
            .bind(auth_id)
            .fetch_optional(self.store.pool())
            .await?;
        let token: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
        if let Some(t) = &token {
            let mut tokens = self.tokens.lock().expect("tokens");
            if tokens.len() >= TOKEN_CACHE {
                tokens.retain(|_, (_, read)| read.elapsed() < TOKEN_TTL);
            }
            if tokens.len() < TOKEN_CACHE {
                tokens.insert(auth_id.to_owned(), (t.clone(), std::time::Instant::now()));
            }
        }
        Ok(token)
    }

    /// The current snapshot and its JSON.
    pub async fn snapshot(&self) -> Result<Built, StoreError> {
        let current = *self.version.borrow();
        if let Some(c) = self.cache.lock().expect("snapshot cache").clone()
            && c.0.version >= current
        {
            return Ok(c);
        }
        let snap = build_snapshot(&self.store).await?;
        let json = serde_json::to_vec(&snap).expect("snapshot serialises");
        let built = Arc::new((snap, json));
        let mut cache = self.cache.lock().expect("snapshot cache");
        if cache.as_ref().is_none_or(|c| c.0.version < built.0.version) {
            *cache = Some(built.clone());
        }
        Ok(built)
    }
}

/// Picks up versions committed by other replicas sharing the database.
async fn poll_versions(state: std::sync::Weak<ControlState>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        match state.store.version().await {
            Ok(v) => {
                state.version.send_if_modified(|cur| {
                    let newer = v > *cur;
                    if newer {
                        *cur = v;
                    }
                    newer
                });
            }
            Err(e) => tracing::warn!(error = %e, "reading the store version failed"),
        }
    }
}

/// Builds the snapshot from one consistent read of the store.
pub async fn build_snapshot(store: &Store) -> Result<Snapshot, StoreError> {
    let (version, t) = store.read_all().await?;
    let s = |r: &sqlx::any::AnyRow, i: usize| -> Result<String, sqlx::Error> { r.try_get(i) };
    let o =
        |r: &sqlx::any::AnyRow, i: usize| -> Result<Option<String>, sqlx::Error> { r.try_get(i) };
    let ha1 = |r: &sqlx::any::AnyRow, i: usize| -> Result<Ha1Set, sqlx::Error> {
        Ok(Ha1Set {
            md5: r.try_get(i)?,
            sha256: r.try_get(i + 1)?,
            sha512_256: r.try_get(i + 2)?,
        })
    };
    let accounts = t[0]
        .iter()
        .map(|r| {
            Ok(Account {
                auth_id: s(r, 0)?,
                auth_token: s(r, 1)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let applications = t[1]
        .iter()
        .map(|r| {
            Ok(Application {
                app_id: s(r, 0)?,
                account: s(r, 1)?,
                answer_url: s(r, 2)?,
                answer_method: s(r, 3)?,
                hangup_url: o(r, 4)?,
                hangup_method: s(r, 5)?,
                sip_auth_type: AuthType::parse(&s(r, 6)?).unwrap_or_default(),
                credential_uuid: o(r, 7)?,
                ip_acl_uuid: o(r, 8)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let credentials = t[2]
        .iter()
        .map(|r| {
            Ok(Credential {
                uuid: s(r, 0)?,
                account: s(r, 1)?,
                username: s(r, 2)?,
                ha1: ha1(r, 3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let mut acls: Vec<Acl> = t[3]
        .iter()
        .map(|r| {
            Ok(Acl {
                uuid: s(r, 0)?,
                account: s(r, 1)?,
                entries: Vec::new(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    for r in &t[4] {
        let acl = s(r, 0)?;
        let ip: std::net::IpAddr = match s(r, 1)?.parse() {
            Ok(ip) => ip,
            Err(_) => continue,
        };
        let prefix: i64 = r.try_get(2)?;
        let Ok(net) = ipnet::IpNet::new(ip, u8::try_from(prefix).unwrap_or(255)) else {
            continue;
        };
        if let Ok(i) = acls.binary_search_by(|a| a.uuid.as_str().cmp(&acl)) {
            acls[i].entries.push(net);
        }
    }
    let endpoints = t[5]
        .iter()
        .map(|r| {
            Ok(Endpoint {
                endpoint_id: s(r, 0)?,
                account: s(r, 1)?,
                username: s(r, 2)?,
                app_id: o(r, 3)?,
                ha1: ha1(r, 4)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Snapshot {
        version,
        accounts,
        applications,
        credentials,
        acls,
        endpoints,
    })
}

// === accounts ===

/// A new account's credentials, shown once.
#[derive(Debug, serde::Serialize)]
pub struct NewAccount {
    pub auth_id: String,
    pub auth_token: String,
}

fn random_alnum(n: usize, upper_only: bool) -> String {
    use rand::Rng as _;
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const MIXED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let set = if upper_only { UPPER } else { MIXED };
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(set[rng.random_range(0..set.len())]))
        .collect()
}

/// Creates an account (`MA` + 18 characters, with a 40-character token), or
/// with the given id and token when both are set and the id is unused.
pub async fn create_account(
    state: &ControlState,
    name: &str,
    given: Option<(&str, &str)>,
) -> Result<Option<NewAccount>, StoreError> {
    let (auth_id, auth_token) = match given {
        Some((id, token)) => (id.to_owned(), token.to_owned()),
        None => (
            format!("MA{}", random_alnum(18, true)),
            random_alnum(40, false),
        ),
    };
    let mut w = state.store.write().await?;
    let exists = sqlx::query("SELECT 1 FROM accounts WHERE auth_id = $1")
        .bind(&auth_id)
        .fetch_optional(&mut *w.tx)
        .await?;
    if exists.is_some() {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO accounts (auth_id, auth_token, name, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&auth_id)
    .bind(&auth_token)
    .bind(name)
    .bind(store::now())
    .execute(&mut *w.tx)
    .await?;
    state.committed(w).await?;
    tracing::info!(auth_id = %auth_id, "account created");
    Ok(Some(NewAccount {
        auth_id,
        auth_token,
    }))
}

// === snapshots for edges ===

pub fn router(state: Arc<ControlState>) -> Router {
    api::router()
        .route("/v1/Edge/Snapshot", get(edge_snapshot))
        .route("/v1/Edge/Calls", axum::routing::post(edge_call))
        .with_state(state)
}

#[derive(Deserialize)]
struct After {
    after: Option<u64>,
}

/// `GET /v1/Edge/Snapshot?after=V`: the snapshot once its version is past
/// `V`, waiting up to 25 s for a change (then 304). Bearer edge token.
async fn edge_snapshot(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    q: Result<Query<After>, QueryRejection>,
) -> Response {
    if !edge_authorized(&state, &headers) {
        return edge_unauthorized();
    }
    let after = match q {
        Ok(Query(q)) => q.after.unwrap_or(0),
        Err(e) => return error_response(e.status(), e.body_text()),
    };
    let mut rx = state.versions();
    let wait = rx.wait_for(|v| *v > after);
    if after > 0 && tokio::time::timeout(LONG_POLL, wait).await.is_err() {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    match state.snapshot().await {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s.1.clone()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "building a snapshot failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; try again",
            )
        }
    }
}

fn edge_authorized(state: &ControlState, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    !state.edge_token.is_empty() && bool::from(given.as_bytes().ct_eq(state.edge_token.as_bytes()))
}

fn edge_unauthorized() -> Response {
    let mut r = error_response(StatusCode::UNAUTHORIZED, "edge token required");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// One call record or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Records {
    Many(Vec<crate::edge::call::CallRecord>),
    One(Box<crate::edge::call::CallRecord>),
}

/// `POST /v1/Edge/Calls`: call records from a remote edge, one or an array
/// of them, stored in one statement. 503 when the store failed (the edge
/// tries again).
async fn edge_call(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    records: Result<axum::Json<Records>, JsonRejection>,
) -> Response {
    if !edge_authorized(&state, &headers) {
        return edge_unauthorized();
    }
    let records = match records {
        Ok(axum::Json(r)) => r,
        Err(e) => return crate::http::errors::json_rejection(&e),
    };
    let records = match records {
        Records::Many(v) => v,
        Records::One(r) => vec![*r],
    };
    match crate::edge::call::insert_many(&state.store, &records).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, records = records.len(), "storing call records failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be written; send the records again",
            )
        }
    }
}
