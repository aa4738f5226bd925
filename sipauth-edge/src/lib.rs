//! The SIP edge: what each request gets.
//!
//! INVITEs to `sip:{app_id}@{domain}` are judged by the application's
//! `sip_auth_type` (the Request-URI user part names it; To is ignored):
//! source locked out: 403; `ip_acl`: source in the ACL or 403;
//! `credential`: digest (407 challenges, 403 on a wrong user, response or
//! replay); both: ACL then digest; `""`: the From user must be a registered
//! endpoint of the account, else 486. ACL and credential denials count
//! towards the source's lockout, once per request. A call let in gets 100
//! Trying and then what its answer_url says, or 503 with `Retry-After`
//! when the edge already carries `sip.max_inbound_calls` calls.
#![forbid(unsafe_code)]

pub mod admission;
pub mod call;
pub mod cluster;
pub mod conn;
pub mod egress;
pub mod metrics;
pub mod outbound;
pub mod outcome;
pub mod records;
pub mod registrar;
mod script;
pub mod sip;
pub mod tls;
pub mod transport;
pub mod view;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use sipauth_digest::{Algorithm, NcTracker, NonceKey};
use sipauth_sip::Message;

use crate::metrics::Metrics;
use admission::{Decision, Digest};
use call::Inbound;
use cluster::Cluster;
use egress::Egress;
use records::Calls;
use registrar::Registrar;
use sip::check;
use sip::dialog::{self, Dialogs};
use sip::transaction::{Key, Seen, Transactions};
use sip::{ServerRequest, ToTags};
use sipauth_kernel::lockout::Lockouts;
use transport::Replier;

/// Methods the edge implements, for `Allow`.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE";

/// Digest settings.
pub struct DigestSettings {
    pub realm: String,
    /// Challenges offered, in order.
    pub algorithms: Vec<Algorithm>,
    pub nonce_ttl_secs: u64,
    pub key: NonceKey,
    pub min_expires: u32,
    pub max_expires: u32,
}

/// What the edge gives at most.
pub struct Bounds {
    /// Responses per second over UDP to sources that have not passed
    /// admission ([`Egress`]).
    pub unproven_replies_per_sec: u32,
    /// Inbound calls in progress at once ([`call::Slots`]).
    pub max_inbound_calls: u32,
}

pub struct Edge {
    pub lockouts: Arc<Lockouts>,
    pub metrics: Arc<Metrics>,
    /// Where responses leave: counted, and metered to unproven sources.
    pub egress: Arc<Egress>,
    /// The snapshot requests are judged against.
    pub view: view::View,
    pub registrar: Arc<Registrar>,
    /// The fleet this edge belongs to (or none).
    pub cluster: Cluster,
    digest: DigestSettings,
    nc: NcTracker,
    txns: Arc<Transactions>,
    calls: Arc<Calls>,
    /// One per inbound call in progress.
    slots: call::Slots,
    /// The dialogs of inbound calls bridged to an outbound leg
    /// (`<Dial><User>`).
    dialogs: Dialogs,
    /// The same request gets the same To-tag.
    tags: ToTags,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl Edge ===

impl Edge {
    #[must_use]
    pub fn new(
        lockouts: Arc<Lockouts>,
        metrics: Arc<Metrics>,
        view: view::View,
        digest: DigestSettings,
        calls: Arc<Calls>,
        bounds: &Bounds,
        fleet: &cluster::Settings,
    ) -> Arc<Self> {
        let registrar = Arc::new(Registrar::default());
        let cluster = Cluster::start(
            fleet,
            lockouts.clone(),
            registrar.clone(),
            metrics.cluster.clone(),
        );
        let edge = Arc::new(Self {
            lockouts,
            egress: Arc::new(Egress::new(
                metrics.clone(),
                bounds.unproven_replies_per_sec,
            )),
            slots: call::Slots::new(bounds.max_inbound_calls, metrics.clone()),
            metrics,
            view,
            registrar,
            cluster,
            nc: NcTracker::new(digest.nonce_ttl_secs, 1_000_000),
            digest,
            txns: Arc::new(Transactions::default()),
            calls,
            dialogs: Dialogs::default(),
            tags: ToTags::default(),
        });
        let weak = Arc::downgrade(&edge);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(edge) = weak.upgrade() else { return };
                edge.txns.sweep();
                edge.registrar.sweep();
                edge.egress.sweep();
            }
        });
        edge
    }

    /// Stops letting calls in: from now on an INVITE let in by admission
    /// gets 503 with `Retry-After`, as when the edge is full. Calls in
    /// progress go on.
    pub fn stop_taking_calls(&self) {
        self.slots.close();
    }

    /// Whether the edge lets calls in now: it is not stopping, and not
    /// full (`sip.max_inbound_calls`).
    #[must_use]
    pub fn taking_calls(&self) -> bool {
        self.slots.free()
    }

    /// Whether every call that ended has its record written and its
    /// hangup_url told ([`Calls::settled`]).
    #[must_use]
    pub fn records_settled(&self) -> bool {
        self.calls.settled()
    }

    /// Handles one message from `src`; responses go through `replier`.
    ///
    /// The message is parsed once. A request then passes, in order: the
    /// checks every request must pass ([`check`]), its server transaction
    /// (a retransmission is answered from it and goes no further), the
    /// option-tags it requires, the one match against the dialog table for
    /// requests that belong to a dialog ([`dialog::is_in_dialog`]), and
    /// method dispatch for the others.
    pub fn handle(self: &Arc<Self>, data: &[u8], src: SocketAddr, replier: &Replier) {
        let msg = match sipauth_sip::parse(data) {
            Ok(msg) => msg,
            Err(e) => {
                self.refuse_unparseable(data, e, src, replier);
                return;
            }
        };
        let Some(method) = msg.method() else {
            if let Err(e) = msg.validate() {
                // A malformed response is never answered nor acted on.
                self.metrics.malformed.fetch_add(1, Relaxed);
                self.metrics.dropped.fetch_add(1, Relaxed);
                tracing::debug!(%src, error = %e, "malformed SIP response dropped");
                return;
            }
            // A bridged caller's answer to the edge's BYE, or nothing of ours.
            if !self.dialogs.route(&msg) {
                self.metrics.stray_responses.fetch_add(1, Relaxed);
            }
            return;
        };
        self.metrics.request(method);
        if let Err(why) = check::request(&msg) {
            check::refuse(&self.metrics, &self.tags, &msg, why, src, replier);
            return;
        }
        let Some(key) = Key::of(&msg) else {
            self.metrics.dropped.fetch_add(1, Relaxed);
            return;
        };
        let req = ServerRequest::new(
            msg,
            key,
            src,
            replier.clone(),
            self.txns.clone(),
            self.tags.clone(),
        );
        match req.arrive() {
            Seen::New | Seen::Ack => {}
            Seen::Retransmission => {
                self.metrics.retransmissions.fetch_add(1, Relaxed);
                return;
            }
        }
        // RFC 3261 8.2.2.3: the edge supports no extension, so every
        // option-tag a request requires is unsupported (not for ACK and
        // CANCEL, which cannot carry one). A locked-out source gets its
        // 403 from the method's handler instead.
        if method != "ACK" && method != "CANCEL" {
            let required: Vec<&str> = req
                .msg()
                .headers("Require")
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            // The lockout map is only asked when it matters.
            if !required.is_empty() && !self.lockouts.is_locked(src.ip()) {
                let unsupported = required.join(", ");
                req.respond_stateless(420, "Bad Extension", &[("Unsupported", &unsupported)]);
                return;
            }
        }
        if dialog::is_in_dialog(method, req.msg()) {
            self.in_dialog(&req);
            return;
        }
        match method {
            // RFC 3261 11.2: the answer an INVITE would get. A proxy that
            // pings its edges with OPTIONS stops sending calls to one that
            // is full or stopping.
            "OPTIONS" if !self.slots.free() => req.respond_stateless(
                503,
                "Service Unavailable",
                &[("Retry-After", call::RETRY_AFTER_SECS), ("Allow", ALLOW)],
            ),
            "OPTIONS" => req.respond_stateless(
                200,
                "OK",
                &[("Allow", ALLOW), ("Accept", "application/sdp")],
            ),
            "INVITE" => self.invite(&req),
            "REGISTER" => self.register(&req),
            _ => req.respond_stateless(405, "Method Not Allowed", &[("Allow", ALLOW)]),
        }
    }

    /// A message that did not parse (or, on a stream, could not be
    /// framed): see [`check::refuse_unparseable`].
    pub fn refuse_unparseable(
        &self,
        data: &[u8],
        error: sipauth_sip::ParseError,
        src: SocketAddr,
        replier: &Replier,
    ) {
        check::refuse_unparseable(&self.metrics, &self.tags, data, error, src, replier);
    }

    /// A request that belongs to a dialog (or, a CANCEL, to an INVITE),
    /// matched once against the dialog table. A bridged caller's BYE and
    /// CANCEL are answered here and acted on by the bridge; its re-INVITE
    /// gets 100 here and its answer from the bridge, which also answers
    /// its INFO and UPDATE (after the far end did). Outside a dialog of
    /// ours: 481 (RFC 3261 12.2.2), and an ACK is absorbed.
    fn in_dialog(&self, req: &ServerRequest<'_>) {
        let method = req.method();
        let taken = self.dialogs.dispatch(req);
        match method {
            "ACK" => {}
            "INVITE" if taken => req.respond(100, "Trying", &[], b""),
            "BYE" | "CANCEL" if taken => req.respond(200, "OK", &[], b""),
            "INFO" | "UPDATE" if taken => {}
            _ => req.respond_stateless(481, "Call/Transaction Does Not Exist", &[]),
        }
    }

    /// One challenge header value per algorithm: the application's own
    /// list when it has one, else `sip.challenge_algorithms`.
    fn challenges(
        &self,
        stale: bool,
        app: Option<&sipauth_model::snapshot::Application>,
    ) -> Vec<String> {
        let nonce = self.digest.key.issue(&self.digest.realm, unix_now());
        let own: Vec<Algorithm> = app
            .into_iter()
            .flat_map(|a| &a.challenge_algorithms)
            .filter_map(|name| Algorithm::parse(Some(name)).map(|(alg, _)| alg))
            .collect();
        let algorithms = if own.is_empty() {
            &self.digest.algorithms
        } else {
            &own
        };
        algorithms
            .iter()
            .map(|&a| sipauth_digest::challenge(a, &self.digest.realm, &nonce, None, stale))
            .collect()
    }

    /// Checks the digest credentials in `header` (Proxy-Authorization for
    /// INVITE, Authorization for REGISTER) against `lookup`: the verdict
    /// and the username, or [`Digest::Absent`] when the request has no
    /// credentials for our realm (it gets a challenge, like a request
    /// without any).
    fn digest<'h>(
        &self,
        msg: &Message<'_>,
        header: &str,
        lookup: impl FnOnce(&str) -> Option<&'h sipauth_digest::Ha1Set>,
    ) -> Digest {
        let realm = &self.digest.realm;
        let Some(c) = msg
            .headers(header)
            .filter_map(|v| sipauth_sip::parse_credentials(v).ok())
            .find(|c| c.realm == realm.as_str())
        else {
            return Digest::Absent;
        };
        let method = msg.method().unwrap_or_default();
        let v = sipauth_digest::verify(
            &c,
            method,
            realm,
            &self.digest.key,
            &self.nc,
            unix_now(),
            self.digest.nonce_ttl_secs,
            lookup,
        );
        Digest::Checked(v, c.username.to_owned())
    }

    fn invite(self: &Arc<Self>, req: &ServerRequest<'_>) {
        let (msg, src) = (req.msg(), req.src());
        let view = self.view.borrow().clone();
        let ruri_user = msg
            .sip_request_uri()
            .and_then(Result::ok)
            .and_then(|u| u.user.map(str::to_owned));
        // Borrowed from the view; copied only for a call let in.
        let app = ruri_user.as_deref().and_then(|u| view.application(u));
        let from = msg.from().ok();
        let from_user = from
            .as_ref()
            .and_then(|f| sipauth_sip::parse_uri(f.uri).ok())
            .and_then(|u| u.user.map(str::to_owned))
            .unwrap_or_default();
        let decision = admission::admit_invite(
            self.lockouts.is_locked(src.ip()),
            app,
            |app| {
                app.ip_acl_uuid
                    .as_deref()
                    .and_then(|u| view.acl(u))
                    .is_some_and(|acl| acl.allows(src.ip()))
            },
            |app| {
                let cred = app
                    .credential_uuid
                    .as_deref()
                    .and_then(|u| view.credential(u));
                self.digest(msg, "Proxy-Authorization", |u| {
                    cred.filter(|c| c.username == u).map(|c| &c.ha1)
                })
            },
            |app| {
                view.endpoint(&from_user).is_some_and(|e| {
                    e.account == app.account && self.registrar.is_live(&e.username)
                })
            },
        );
        let to_user = ruri_user.unwrap_or_default();
        let src_ip = src.ip().to_canonical().to_string();
        if decision.counts() && self.lockouts.record_failure(src.ip()) {
            tracing::info!(src = %src_ip, app = ?app.map(|a| &a.app_id), "source locked out after repeated failures");
        }
        // A refusal leaves a call record against a known application; a
        // locked-out source learns nothing, not even whether it exists.
        if let (Some(cause), Some(app)) = (decision.cause(), app) {
            let status = if decision == Decision::NotRegistered {
                "busy"
            } else {
                "failed"
            };
            self.calls.record(call::denied(
                app, &from_user, &to_user, &src_ip, status, cause,
            ));
        }
        match decision {
            Decision::LockedOut | Decision::Denied => {
                self.metrics.denied.fetch_add(1, Relaxed);
                req.respond(403, "Forbidden", &[], b"");
            }
            Decision::NotFound => {
                req.respond_stateless(404, "Not Found", &[]);
            }
            Decision::BadRequest(reason) => {
                req.respond_stateless(400, reason, &[]);
            }
            Decision::Challenge { stale } => {
                let values = self.challenges(stale, app);
                let extra: Vec<(&str, &str)> = values
                    .iter()
                    .map(|v| ("Proxy-Authenticate", v.as_str()))
                    .collect();
                req.respond_stateless(407, "Proxy Authentication Required", &extra);
            }
            Decision::NotRegistered => {
                req.respond(486, "Busy Here", &[], b"");
            }
            Decision::Allow { auth_type, user } => {
                let Some(app) = app else { return };
                let Some(auth_token) = view.account(&app.account).map(|a| a.auth_token.clone())
                else {
                    req.respond(500, "Server Internal Error", &[], b"");
                    return;
                };
                self.egress.prove(src.ip());
                let Some(slot) = self.slots.take() else {
                    self.metrics.unavailable.fetch_add(1, Relaxed);
                    self.calls.record(call::denied(
                        app,
                        &from_user,
                        &to_user,
                        &src_ip,
                        "failed",
                        call::Cause::EdgeUnavailable,
                    ));
                    req.respond(
                        503,
                        "Service Unavailable",
                        &[("Retry-After", call::RETRY_AFTER_SECS)],
                        b"",
                    );
                    return;
                };
                self.metrics.allowed.fetch_add(1, Relaxed);
                req.respond(100, "Trying", &[], b"");
                let call = Inbound {
                    call_uuid: sipauth_store::calls::new_call_uuid(),
                    app: app.clone(),
                    auth_token,
                    from_user,
                    from_display: from
                        .and_then(|f| f.display)
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_owned(),
                    to_user,
                    auth_type,
                    auth_user: user,
                    source_ip: src_ip,
                    transport: req.replier().transport(),
                };
                let (edge, invite) = (self.clone(), req.to_owned_request());
                tokio::spawn(async move {
                    edge.answer(call, invite).await;
                    drop(slot);
                });
            }
        }
    }

    /// REGISTER: digest against the endpoint's credentials (401), then the
    /// binding is added, refreshed or removed.
    fn register(&self, req: &ServerRequest<'_>) {
        let (msg, src) = (req.msg(), req.src());
        let view = self.view.borrow().clone();
        let admitted = admission::admit_register(self.lockouts.is_locked(src.ip()), || {
            self.digest(msg, "Authorization", |u| view.endpoint(u).map(|e| &e.ha1))
        });
        let username = match admitted {
            Ok(username) => username,
            Err(Decision::Challenge { stale }) => {
                let values = self.challenges(stale, None);
                let extra: Vec<(&str, &str)> = values
                    .iter()
                    .map(|v| ("WWW-Authenticate", v.as_str()))
                    .collect();
                req.respond_stateless(401, "Unauthorized", &extra);
                return;
            }
            Err(Decision::BadRequest(reason)) => {
                req.respond_stateless(400, reason, &[]);
                return;
            }
            Err(d) => {
                if d.counts() {
                    self.metrics.denied.fetch_add(1, Relaxed);
                    self.lockouts.record_failure(src.ip());
                }
                req.respond(403, "Forbidden", &[], b"");
                return;
            }
        };
        let default_expires = msg
            .header("Expires")
            .and_then(|e| e.trim().parse::<u32>().ok())
            .unwrap_or(3600);
        let contacts: Vec<sipauth_sip::NameAddr<'_>> =
            msg.contacts().filter_map(Result::ok).collect();
        if msg.header("Contact").is_some_and(|c| c.trim() == "*") {
            if default_expires != 0 {
                req.respond_stateless(400, "Bad Request (Contact: * needs Expires: 0)", &[]);
                return;
            }
            self.registrar.clear(&username);
            self.cluster.clear(&username);
        }
        for c in &contacts {
            let asked = c
                .param("expires")
                .flatten()
                .and_then(|e| e.parse::<u32>().ok())
                .unwrap_or(default_expires);
            if asked != 0 && asked < self.digest.min_expires {
                let min = self.digest.min_expires.to_string();
                req.respond_stateless(423, "Interval Too Brief", &[("Min-Expires", &min)]);
                return;
            }
            let secs = asked.min(self.digest.max_expires);
            let agent = msg.header("User-Agent").unwrap_or_default().trim();
            self.registrar.bind(&username, c.uri, secs, agent);
            self.cluster.bind(&username, c.uri, secs, agent);
        }
        let bound: Vec<String> = self
            .registrar
            .bindings(&username)
            .into_iter()
            .map(|(contact, left)| format!("<{contact}>;expires={left}"))
            .collect();
        let extra: Vec<(&str, &str)> = bound.iter().map(|b| ("Contact", b.as_str())).collect();
        tracing::debug!(user = %username, bindings = bound.len(), "registered");
        self.egress.prove(src.ip());
        req.respond(200, "OK", &extra, b"");
    }
}
