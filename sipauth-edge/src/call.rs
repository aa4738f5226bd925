//! What happens to an inbound call after the edge lets it in: the caller
//! is a party of the call script ([`crate::script`]) until its call ends,
//! and a refused call gets its record ([`denied`]). A call in progress
//! holds one of the edge's [`Slots`]; when none is free, or the edge is
//! stopping, the INVITE gets 503 with `Retry-After`.
//!
//! The application's answer_url is fetched (signed with the account's auth
//! token, X-Plivo-Signature-V3) with the call parameters, and the XML it
//! returns drives the call. Records never hold a credential.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::Duration;

use sipauth_callback::{Callback, Dial, Params};

use crate::Edge;
use crate::metrics::Metrics;
use crate::outbound::bridge::{Bridge, Caller};
use crate::outcome::{Dialed, Outcome};
use crate::script::{self, Party, method_of};
use crate::sip::OwnedRequest;

pub use sipauth_model::Cause;
use sipauth_model::snapshot::{Application, AuthType};
use sipauth_store::now;

use crate::records::{CallRecord, Calls, Hangup};

/// An inbound call the edge has let in.
pub struct Inbound {
    pub call_uuid: String,
    pub app: Application,
    pub auth_token: String,
    pub from_user: String,
    pub from_display: String,
    pub to_user: String,
    pub auth_type: AuthType,
    pub auth_user: Option<String>,
    pub source_ip: String,
    /// How the INVITE came: `SIPTransport` (`udp`, `tcp`, `tls`).
    pub transport: crate::transport::Transport,
}

impl Inbound {
    /// The parameters of this call's callbacks.
    pub fn params(&self, status: &'static str) -> Params {
        // Ten at most, and room for the hangup_url's two.
        let mut p: Params = Vec::with_capacity(12);
        p.extend([
            ("CallUUID", self.call_uuid.clone().into()),
            ("From", self.from_user.clone().into()),
            ("CallerName", self.from_display.clone().into()),
            ("To", self.to_user.clone().into()),
            ("Direction", "inbound".into()),
            ("CallStatus", status.into()),
            ("SIPSourceIP", self.source_ip.clone().into()),
            ("SIPTransport", self.transport.name().into()),
        ]);
        if self.auth_type != AuthType::None {
            p.push(("SIPAuthType", self.auth_type.as_str().into()));
        }
        if let Some(u) = &self.auth_user {
            p.push(("SIPAuthUser", u.clone().into()));
        }
        p
    }

    /// The call's record and, if its application has one, the hangup_url
    /// to tell how it ended: the call's last use, so what it holds moves
    /// there (the CallUUID, in both, is copied once).
    pub fn finish(self, created_at: i64, end: &Outcome) -> (CallRecord, Option<Hangup>) {
        let tell = self
            .app
            .hangup_url
            .as_deref()
            .is_some_and(|u| !u.is_empty());
        let params = tell.then(|| self.params(end.status));
        let hangup = params.map(|params| Hangup {
            url: self.app.hangup_url.unwrap_or_default(),
            method: method_of(&self.app.hangup_method),
            params,
            auth_token: self.auth_token,
            call_uuid: self.call_uuid.clone(),
            cause: end.cause,
        });
        let record = CallRecord {
            call_uuid: self.call_uuid,
            account: self.app.account,
            direction: "inbound".to_owned(),
            from_number: self.from_user,
            to_number: self.to_user,
            answer_url: Some(self.app.answer_url),
            call_status: end.status.to_owned(),
            hangup_cause_name: Some(end.cause.name().to_owned()),
            hangup_cause_code: Some(end.cause.code()),
            sip_auth_type: Some(self.auth_type.as_str().to_owned()),
            source_ip: Some(self.source_ip),
            created_at,
            ended_at: Some(now()),
        };
        (record, hangup)
    }
}

/// What a caller refused for want of a slot (or by a stopping edge) is
/// told to wait before it tries this edge again (RFC 3261 21.5.4): a proxy
/// in front tries another edge meanwhile.
pub const RETRY_AFTER_SECS: &str = "5";

/// The inbound calls an edge carries at once, at most `max`
/// (`sip.max_inbound_calls`). A call waiting on a slow answer_url or
/// bridged for an hour holds its task, its transaction and its bridge; a
/// bound keeps a slow customer server or a burst of authenticated callers
/// from growing them without end. The count is the metrics' gauge
/// (`sipauth_inbound_calls`). A stopping edge closes them: no new call
/// is let in while those in progress end.
pub struct Slots {
    max: u64,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
}

/// One call's hold on a slot, given back when dropped.
pub struct Slot(Arc<Metrics>);

impl Slots {
    #[must_use]
    pub fn new(max: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            max: u64::from(max),
            closed: AtomicBool::new(false),
            metrics,
        }
    }

    /// A slot, or `None` when `max` calls are in progress or the slots
    /// are closed.
    pub fn take(&self) -> Option<Slot> {
        if self.closed.load(Relaxed) {
            return None;
        }
        let count = &self.metrics.inbound_calls;
        count
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Slot(self.metrics.clone()))
    }

    /// Whether a call let in now would get a slot.
    #[must_use]
    pub fn free(&self) -> bool {
        !self.closed.load(Relaxed) && self.metrics.inbound_calls.load(Relaxed) < self.max
    }

    /// No slot is taken from now on; those taken are given back as their
    /// calls end.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Release: a stopping edge that sees the count drop sees the
        // call's record queued.
        self.0.inbound_calls.fetch_sub(1, Release);
    }
}

impl Edge {
    /// Follows the answer_url and ends the call as it says (the final
    /// response of the INVITE, or a bridge to a `<Dial>` target), then
    /// queues its record and hangup_url.
    pub(crate) async fn answer(self: Arc<Self>, call: Inbound, invite: OwnedRequest) {
        let created = now();
        let req = invite.request();
        let mut caller = Unanswered {
            call: &call,
            bridge: Bridge::new(&self.calls.outbound, &self.dialogs, Caller::new(&req)),
        };
        let end = script::run(&self.calls.client, &mut caller).await;
        if caller.bridge.close() {
            tracing::debug!(call = %call.call_uuid, status = end.status, cause = end.cause.name(), "bridged call ended");
        }
        // Closed: the caller's part is over, and with it its hold on `call`.
        drop(caller);
        let (record, hangup) = call.finish(created, &end);
        self.calls.end(record, hangup);
    }
}

/// The caller of an inbound call, not answered until a `<Dial>` target
/// answers: `<Hangup>` and the end of the XML are the final response of
/// its INVITE, `<Wait>` keeps it waiting, `<Dial>` bridges it to the
/// Dial's targets ([`Bridge`]).
struct Unanswered<'a> {
    call: &'a Inbound,
    bridge: Bridge<'a>,
}

impl Party for Unanswered<'_> {
    fn call_uuid(&self) -> &str {
        &self.call.call_uuid
    }

    fn auth_token(&self) -> &str {
        &self.call.auth_token
    }

    fn params(&self, status: &'static str) -> Params {
        self.call.params(status)
    }

    fn answer_url(&self) -> Callback<'_> {
        Callback {
            url: &self.call.app.answer_url,
            method: method_of(&self.call.app.answer_method),
            params: self.call.params("ringing"),
            auth_token: &self.call.auth_token,
        }
    }

    /// A caller not yet answered has no time limit (a bridge has its own).
    fn out_of_time(&self) -> bool {
        false
    }

    async fn hang_up(&mut self, reason: Option<&str>) -> Outcome {
        let o = Outcome::of_hangup(reason);
        self.end(&o).await;
        o
    }

    async fn end(&mut self, outcome: &Outcome) {
        self.bridge.caller().respond(outcome.code, outcome.reason());
    }

    async fn wait(&mut self, length: Duration) -> Option<Outcome> {
        tokio::time::sleep(length).await;
        None
    }

    async fn dial(&mut self, dial: &Dial) -> (Dialed, bool) {
        // Raw `X-{key}` when the caller authenticated with SIP auth.
        let raw_headers = self.call.auth_type != AuthType::None;
        self.bridge
            .dial(&self.call.from_user, raw_headers, dial)
            .await
    }

    /// A CANCEL (or an early BYE) of the caller.
    fn left(&mut self) -> bool {
        self.bridge.left()
    }
}

/// A record of a call the edge refused before any callback.
pub fn denied(
    app: &Application,
    from: &str,
    to: &str,
    src: &str,
    status: &str,
    c: Cause,
) -> CallRecord {
    let t = now();
    CallRecord {
        call_uuid: sipauth_store::calls::new_call_uuid(),
        account: app.account.clone(),
        direction: "inbound".to_owned(),
        from_number: from.to_owned(),
        to_number: to.to_owned(),
        answer_url: Some(app.answer_url.clone()),
        call_status: status.to_owned(),
        hangup_cause_name: Some(c.name().to_owned()),
        hangup_cause_code: Some(c.code()),
        sip_auth_type: Some(app.sip_auth_type.as_str().to_owned()),
        source_ip: Some(src.to_owned()),
        created_at: t,
        ended_at: Some(t),
    }
}

pub type SharedCalls = Arc<Calls>;
