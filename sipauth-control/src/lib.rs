//! The control plane: the REST API over the store, and the versioned
//! snapshots the edges follow.
#![forbid(unsafe_code)]

pub mod api;
pub mod errors;
pub mod fields;
pub mod queued;

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
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

use crate::errors::error_response;
use sipauth_model::snapshot::{
    Account, Acl, Application, AuthType, Credential, Endpoint, Snapshot,
};
use sipauth_store::calls::CallRecord;
use sipauth_store::{Store, StoreError, WriteTx};

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
    pub originate: std::sync::OnceLock<tokio::sync::mpsc::Sender<sipauth_model::MakeCall>>,
    /// Where endpoints' registrations are read (the edge's registrar in
    /// `sipauth run`, the fleet's Redis for `sipauth control`); unset,
    /// every endpoint shows as not registered.
    pub registrations: std::sync::OnceLock<Arc<dyn sipauth_model::Registrations>>,
    /// Account tokens read lately, and when: an API request costs no
    /// query for them while they are fresher than [`TOKEN_TTL`].
    tokens: Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
    /// Make Call requests' records, written in groups.
    pub queued: queued::QueuedCalls,
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
            queued: queued::QueuedCalls::start(store.clone()),
            store,
            realm,
            auth_limiter: api::AuthLimiter::default(),
            edge_token,
            version: watch::channel(v).0,
            cache: Mutex::new(None),
            originate: std::sync::OnceLock::new(),
            registrations: std::sync::OnceLock::new(),
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
        let token = sipauth_store::accounts::token(&self.store, auth_id).await?;
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

/// Builds the snapshot from one consistent read of the store. An entry
/// whose address or prefix does not parse is left out.
pub async fn build_snapshot(store: &Store) -> Result<Snapshot, StoreError> {
    let t = sipauth_store::snapshot::read_all(store).await?;
    let ha1 = |h: sipauth_store::Ha1| Ha1Set {
        md5: h.md5,
        sha256: h.sha256,
        sha512_256: h.sha512_256,
    };
    let accounts = t
        .accounts
        .into_iter()
        .map(|a| Account {
            auth_id: a.auth_id,
            auth_token: a.auth_token,
        })
        .collect();
    let applications = t
        .applications
        .into_iter()
        .map(|a| Application {
            app_id: a.app_id,
            account: a.account,
            answer_url: a.settings.answer_url,
            answer_method: a.settings.answer_method,
            hangup_url: a.settings.hangup_url,
            hangup_method: a.settings.hangup_method,
            sip_auth_type: AuthType::parse(&a.settings.sip_auth_type).unwrap_or_default(),
            credential_uuid: a.settings.credential_uuid,
            ip_acl_uuid: a.settings.ip_acl_uuid,
            challenge_algorithms: a
                .settings
                .challenge_algorithms
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        })
        .collect();
    let credentials = t
        .credentials
        .into_iter()
        .map(|c| Credential {
            uuid: c.uuid,
            account: c.account,
            username: c.username,
            ha1: ha1(c.ha1),
        })
        .collect();
    let mut acls: Vec<Acl> = t
        .acls
        .into_iter()
        .map(|a| Acl {
            uuid: a.uuid,
            account: a.account,
            entries: Vec::new(),
        })
        .collect();
    for e in t.entries {
        let Ok(ip) = e.ip.parse::<std::net::IpAddr>() else {
            continue;
        };
        let Ok(net) = ipnet::IpNet::new(ip, u8::try_from(e.cidr_prefix).unwrap_or(255)) else {
            continue;
        };
        if let Ok(i) = acls.binary_search_by(|a| a.uuid.as_str().cmp(&e.acl)) {
            acls[i].entries.push(net);
        }
    }
    let endpoints = t
        .endpoints
        .into_iter()
        .map(|e| Endpoint {
            endpoint_id: e.endpoint_id,
            account: e.account,
            username: e.username,
            app_id: e.app_id,
            ha1: ha1(e.ha1),
        })
        .collect();
    Ok(Snapshot {
        version: t.version,
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
    if sipauth_store::accounts::exists(&mut w, &auth_id).await? {
        return Ok(None);
    }
    sipauth_store::accounts::insert(
        &mut w,
        &sipauth_store::accounts::NewAccount {
            auth_id: &auth_id,
            auth_token: &auth_token,
            name,
        },
    )
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
    Many(Vec<CallRecord>),
    One(Box<CallRecord>),
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
        Err(e) => return crate::errors::json_rejection(&e),
    };
    let records = match records {
        Records::Many(v) => v,
        Records::One(r) => vec![*r],
    };
    match sipauth_store::calls::insert_many(&state.store, &records).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use sipauth_store::{acls, applications, testing};

    #[tokio::test]
    async fn snapshots_attach_entries_to_their_acls_and_leave_out_bad_ones() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        let mut w = store.write().await.unwrap();
        let acl = acls::NewAcl {
            uuid: "a1",
            account: "MA1",
            name: "n",
        };
        acls::insert(&mut w, &acl).await.unwrap();
        for (uuid, ip, prefix) in [
            ("e1", "198.51.100.0", 24),
            ("e2", "not-an-address", 32),
            ("e3", "192.0.2.1", 33),
            ("e4", "2001:db8::", 32),
        ] {
            let e = acls::NewEntry {
                uuid,
                acl: "a1",
                ip,
                cidr_prefix: prefix,
                description: "",
            };
            acls::insert_entry(&mut w, &e).await.unwrap();
        }
        let app = applications::Settings {
            app_name: "a".into(),
            answer_url: "http://127.0.0.1/a".into(),
            answer_method: "POST".into(),
            hangup_url: None,
            hangup_method: "GET".into(),
            sip_auth_type: "ip_acl".into(),
            credential_uuid: None,
            ip_acl_uuid: Some("a1".into()),
            challenge_algorithms: "SHA-256,MD5".into(),
        };
        applications::insert(&mut w, "100", "MA1", &app)
            .await
            .unwrap();
        w.commit().await.unwrap();

        let snap = build_snapshot(&store).await.unwrap();
        assert_eq!(snap.version, 2);
        assert_eq!(snap.accounts[0].auth_token, "t-MA1");
        let nets: Vec<String> = snap.acls[0]
            .entries
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["198.51.100.0/24", "2001:db8::/32"]);
        assert_eq!(snap.applications[0].sip_auth_type, AuthType::IpAcl);
        assert_eq!(snap.applications[0].hangup_method, "GET");
        assert_eq!(snap.applications[0].ip_acl_uuid.as_deref(), Some("a1"));
        assert_eq!(
            snap.applications[0].challenge_algorithms,
            ["SHA-256", "MD5"]
        );
    }
}
