//! What happens to an inbound call after the edge lets it in, and the call
//! records of every call, allowed or denied.
//!
//! The application's answer_url is fetched (signed with the account's auth
//! token, X-Plivo-Signature-V3) with the call parameters, and the XML it
//! returns drives the call. Records never hold a credential.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use sipauth_callback::{Callback, Dial, Method};

use crate::Edge;
use crate::outbound::bridge::{Bridge, Caller};
use crate::outcome::Outcome;
use crate::script::{self, Dialed, Party, method_of};
use crate::sip::OwnedRequest;

pub use sipauth_model::Cause;
use sipauth_model::snapshot::{Application, AuthType};
pub use sipauth_store::calls::CallRecord;
use sipauth_store::calls::insert_many;
use sipauth_store::{Store, now};

/// Where call records go: the store (`sipauth run`) or the control plane
/// (`sipauth edge`).
pub enum Sink {
    Store(Store),
    Remote {
        url: String,
        token: String,
        http: reqwest::Client,
    },
}

impl Sink {
    /// Writes `records` (a batch the writer took from its queue); failures
    /// are logged with the calls they concern.
    pub async fn write(&self, records: &[CallRecord]) {
        match self {
            Self::Store(store) => {
                if let Err(e) = insert_many(store, records).await {
                    // One bad record must not cost the others theirs.
                    tracing::warn!(records = records.len(), error = %e, "writing call records failed; retrying one by one");
                    for r in records {
                        if let Err(e) = insert_many(store, std::slice::from_ref(r)).await {
                            tracing::warn!(call = %r.call_uuid, error = %e, "writing the call record failed");
                        }
                    }
                }
            }
            Self::Remote { url, token, http } => {
                let mut delay = REMOTE_RETRY;
                for attempt in 1..=REMOTE_ATTEMPTS {
                    let sent = http.post(url).bearer_auth(token).json(records).send().await;
                    match sent {
                        Ok(r) if r.status().is_success() => return,
                        Ok(r) if r.status().is_client_error() => {
                            // Refused as they are: sending them again
                            // would not help.
                            tracing::warn!(status = %r.status(), records = records.len(), "the control plane refused call records");
                            return;
                        }
                        Ok(r) => {
                            tracing::warn!(status = %r.status(), attempt, records = records.len(), "sending call records failed");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, attempt, records = records.len(), "sending call records failed");
                        }
                    }
                    if attempt < REMOTE_ATTEMPTS {
                        tokio::time::sleep(delay).await;
                        delay *= 4;
                    }
                }
                let first = records
                    .first()
                    .map(|r| r.call_uuid.as_str())
                    .unwrap_or_default();
                tracing::error!(
                    records = records.len(),
                    first,
                    "call records lost: the control plane did not take them"
                );
            }
        }
    }
}

/// Tries a batch of records gets at a control plane that does not answer
/// or fails (the queue fills meanwhile), and the first wait between them
/// (then four times longer each time: 0.2, 0.8, 3.2 s).
const REMOTE_ATTEMPTS: u32 = 4;
const REMOTE_RETRY: Duration = Duration::from_millis(200);

/// Calls in progress share these.
pub struct Calls {
    pub client: sipauth_callback::Client,
    /// Records waiting for the writer task. Bounded: a flood of denied
    /// INVITEs (with XDP off, say) cannot pile up writes without end.
    records: tokio::sync::mpsc::Sender<CallRecord>,
    metrics: Arc<crate::metrics::Metrics>,
    /// What every outbound leg (Make Call and Dial) shares.
    pub outbound: crate::outbound::Settings,
}

/// Records queued for writing at most.
const RECORD_QUEUE: usize = 10_000;
/// Records written in one statement at most (each takes
/// `calls::VALUES_PER_ROW` values; SQLite takes 32,766 per statement,
/// PostgreSQL 65,535).
const RECORD_BATCH: usize = 512;

impl Calls {
    /// Starts the task that writes records to `sink`: whatever waits in
    /// the queue, up to [`RECORD_BATCH`], in one statement.
    pub fn new(
        client: sipauth_callback::Client,
        sink: Sink,
        metrics: Arc<crate::metrics::Metrics>,
        outbound: crate::outbound::Settings,
    ) -> Arc<Self> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<CallRecord>(RECORD_QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(RECORD_BATCH);
            while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
                sink.write(&batch).await;
                batch.clear();
            }
        });
        Arc::new(Self {
            client,
            records: tx,
            metrics,
            outbound,
        })
    }

    /// Queues a record; when the writer is this far behind, the record is
    /// dropped and counted (`sipauth_call_records_dropped_total`).
    pub fn record(&self, r: CallRecord) {
        if self.records.try_send(r).is_err() {
            let n = self
                .metrics
                .records_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "call record queue full; records dropped");
            }
        }
    }
}

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
}

impl Inbound {
    /// The parameters of this call's callbacks.
    pub fn params(&self, status: &str) -> Vec<(String, String)> {
        let mut p = vec![
            ("CallUUID".to_owned(), self.call_uuid.clone()),
            ("From".to_owned(), self.from_user.clone()),
            ("CallerName".to_owned(), self.from_display.clone()),
            ("To".to_owned(), self.to_user.clone()),
            ("Direction".to_owned(), "inbound".to_owned()),
            ("CallStatus".to_owned(), status.to_owned()),
            ("SIPSourceIP".to_owned(), self.source_ip.clone()),
        ];
        if self.auth_type != AuthType::None {
            p.push(("SIPAuthType".to_owned(), self.auth_type.as_str().to_owned()));
        }
        if let Some(u) = &self.auth_user {
            p.push(("SIPAuthUser".to_owned(), u.clone()));
        }
        p
    }

    /// The record of this call once it ended.
    pub fn record(&self, created_at: i64, end: &Outcome) -> CallRecord {
        CallRecord {
            call_uuid: self.call_uuid.clone(),
            account: self.app.account.clone(),
            direction: "inbound".to_owned(),
            from_number: self.from_user.clone(),
            to_number: self.to_user.clone(),
            answer_url: Some(self.app.answer_url.clone()),
            call_status: end.status.to_owned(),
            hangup_cause_name: Some(end.cause.name().to_owned()),
            hangup_cause_code: Some(end.cause.code()),
            sip_auth_type: Some(self.auth_type.as_str().to_owned()),
            source_ip: Some(self.source_ip.clone()),
            created_at,
            ended_at: Some(now()),
        }
    }

    /// Tells the hangup_url how the call ended (signed); failures are logged.
    pub async fn hangup(&self, calls: &Calls, end: &Outcome) {
        let Some(url) = self.app.hangup_url.as_deref().filter(|u| !u.is_empty()) else {
            return;
        };
        notify_hangup(
            calls,
            url,
            method_of(&self.app.hangup_method),
            self.params(end.status),
            &self.auth_token,
            &self.call_uuid,
            end.cause,
        )
        .await;
    }
}

impl Edge {
    /// Follows the answer_url and ends the call as it says (the final
    /// response of the INVITE, or a bridge to a `<Dial>` target), then
    /// writes the record and tells the hangup_url.
    pub(crate) async fn answer(self: Arc<Self>, call: Inbound, invite: OwnedRequest) {
        let created = now();
        let req = invite.request();
        let mut caller = Unanswered {
            call: &call,
            bridge: Bridge::new(&self.calls.outbound, &self.dialogs, Caller::new(&req)),
        };
        let end = script::run(&self.calls.client, &mut caller).await;
        if caller.bridge.close() {
            tracing::info!(call = %call.call_uuid, status = end.status, cause = end.cause.name(), "bridged call ended");
        }
        self.calls.record(call.record(created, &end));
        call.hangup(&self.calls, &end).await;
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

    fn params(&self, status: &str) -> Vec<(String, String)> {
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

/// Tells a hangup_url how call `call_uuid` ended (signed with
/// `auth_token`): the call's `params` with HangupCauseName and
/// HangupCauseCode. A failure is logged.
pub async fn notify_hangup(
    calls: &Calls,
    url: &str,
    method: Method,
    mut params: Vec<(String, String)>,
    auth_token: &str,
    call_uuid: &str,
    cause: Cause,
) {
    params.push(("HangupCauseName".to_owned(), cause.name().to_owned()));
    params.push(("HangupCauseCode".to_owned(), cause.code().to_string()));
    let cb = Callback {
        url,
        method,
        params,
        auth_token,
    };
    if let Err(e) = calls.client.notify(&cb).await {
        tracing::info!(call = %call_uuid, error = %e, "hangup_url failed");
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
        call_uuid: uuid::Uuid::new_v4().to_string(),
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn rec(uuid: &str, status: &str, cause: Cause) -> CallRecord {
        CallRecord {
            call_uuid: uuid.to_owned(),
            account: "MA0001".to_owned(),
            direction: "inbound".to_owned(),
            from_number: "alice".to_owned(),
            to_number: "app".to_owned(),
            answer_url: Some("http://127.0.0.1/answer".to_owned()),
            call_status: status.to_owned(),
            hangup_cause_name: Some(cause.name().to_owned()),
            hangup_cause_code: Some(cause.code()),
            sip_auth_type: Some("ip_acl".to_owned()),
            source_ip: Some("192.0.2.1".to_owned()),
            created_at: 1,
            ended_at: Some(2),
        }
    }

    /// A control plane that answers 503 `failures` times, then 204; it
    /// hands over the bodies it took.
    async fn control(failures: usize) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/Edge/Calls", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then the body by Content-Length.
                let body = loop {
                    let k = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break body.to_owned();
                        }
                    }
                };
                let status = if n < failures {
                    "503 Service Unavailable"
                } else {
                    "204 No Content"
                };
                if n >= failures {
                    tx.send(body).unwrap();
                }
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn remote_records_go_as_one_batch_and_are_sent_again_after_a_failure() {
        let (url, mut bodies) = control(2).await;
        let sink = Sink::Remote {
            url,
            token: "edge-token".to_owned(),
            http: reqwest::Client::new(),
        };
        let batch = [
            rec("a", "completed", Cause::NormalHangup),
            rec("b", "busy", Cause::BusyLine),
        ];
        sink.write(&batch).await;
        let body = bodies.try_recv().expect("taken on the third attempt");
        let sent: Vec<CallRecord> = serde_json::from_str(&body).unwrap();
        assert_eq!(sent, batch);
        assert!(bodies.try_recv().is_err(), "taken once");
    }
}
