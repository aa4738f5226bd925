//! The Make Call API's calls: the control plane hands each request to the
//! edge, which dials it, and when the far end answers fetches the
//! answer_url (signed) and follows `<Hangup/>`, `<Wait length>` and
//! `<Dial>`. The record and the hangup_url tell how the call ended.
//!
//! `<Dial>` connects the answered party (A) to the first of the Dial's
//! targets to answer (B) by third-party call control (RFC 3725, flow IV):
//! B is INVITEd without an offer, its 2xx carries one, A is re-INVITEd with
//! that offer, and A's answer goes to B in the ACK. When B hangs up the
//! XML goes on with the element after `<Dial>`; when A hangs up the call
//! ends. A `<Dial>` that reaches nobody, followed by nothing, ends the call
//! with the Dial's own outcome (`sip_auth_failed` 4240 when B refused our
//! credentials, for example).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::Duration;

use sipauth_callback::{Callback, Method, Params};
use sipauth_sip::OwnedMessage;
use tokio::sync::{Notify, Semaphore, mpsc};

use super::fork::{self, Fork, Ring};
pub use sipauth_model::{DEFAULT_TIME_LIMIT, MakeCall};

use super::resolve::Dest;
use super::{Dialog, Held, Leg, LegEnd, Outcome};
use crate::outcome::Dialed;
use crate::records::{CallRecord, Calls, Hangup};
use crate::script::{self, Party, method_of};
use sipauth_store::now;

/// Outbound calls in progress at once; further requests wait in the queue.
const MAX_CALLS: usize = 4096;
/// The offer of an API call: the edge carries no media.
const OFFER: &[u8] = b"v=0\r\no=sipauth 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=inactive\r\n";

/// Takes Make Call requests until the control plane goes away or `stop`
/// is notified. Once stopped, a new request is refused (the queue is
/// closed: the API answers 503), those already queued are still dialled,
/// and `serve` returns when it has started the last of them; each call in
/// progress is counted in `sipauth_outbound_calls` until it ends.
pub async fn serve(mut rx: mpsc::Receiver<MakeCall>, calls: Arc<Calls>, stop: Arc<Notify>) {
    let limit = Arc::new(Semaphore::new(MAX_CALLS));
    let mut stopping = false;
    loop {
        let call = tokio::select! {
            call = rx.recv() => call,
            () = stop.notified(), if !stopping => {
                stopping = true;
                rx.close();
                continue;
            }
        };
        let Some(call) = call else { return };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        calls.metrics.outbound_calls.fetch_add(1, Relaxed);
        let calls = calls.clone();
        tokio::spawn(async move {
            run(call, &calls).await;
            drop(permit);
            // Release: see `Slot`'s drop.
            calls.metrics.outbound_calls.fetch_sub(1, Release);
        });
    }
}

/// The callback parameters of an outbound call.
fn params(call: &MakeCall, status: &'static str) -> Params {
    vec![
        ("CallUUID", call.call_uuid.clone().into()),
        ("RequestUUID", call.call_uuid.clone().into()),
        ("From", call.from.clone().into()),
        ("To", call.to.clone().into()),
        ("Direction", "outbound".into()),
        ("CallStatus", status.into()),
    ]
}

/// The record of an outbound call that ended.
fn record(call: &MakeCall, end: &Outcome) -> CallRecord {
    CallRecord {
        call_uuid: call.call_uuid.clone(),
        account: call.account.clone(),
        direction: "outbound".to_owned(),
        from_number: call.from.clone(),
        to_number: call.to.clone(),
        answer_url: Some(call.answer_url.clone()),
        call_status: end.status.to_owned(),
        hangup_cause_name: Some(end.cause.name().to_owned()),
        hangup_cause_code: Some(end.cause.code()),
        sip_auth_type: None,
        source_ip: None,
        created_at: call.created_at,
        ended_at: Some(now()),
    }
}

async fn run(call: MakeCall, calls: &Calls) {
    // A SIP URI is dialled as it is; a number through the number gateway.
    let dest = if call.to.trim_start().starts_with("sip") {
        Dest::parse(&call.to).map_err(|e| {
            tracing::info!(call = %call.call_uuid, error = %e, "outbound call cannot be dialled");
            Outcome::INVALID_DESTINATION
        })
    } else {
        fork::number_target(&calls.outbound, &call.to)
    };
    let end = match dest {
        Err(o) => o,
        Ok(dest) => {
            let leg = Leg {
                dest,
                resolver: calls.outbound.resolver.clone(),
                tls: calls.outbound.tls.clone(),
                udp: calls.outbound.udp.clone(),
                from_user: call.from.clone(),
                credentials: call.credentials.clone(),
                headers: sipauth_callback::render_sip_headers(&call.sip_headers, false),
                sdp: Some(OFFER.to_vec()),
                timers: calls.outbound.timers,
                ring_timeout: call.ring_timeout.unwrap_or(super::RING_TIMEOUT),
                hooks: super::txn::Hooks::default(),
            };
            match leg.place().await {
                LegEnd::Failed(o) => o,
                LegEnd::Answered(dialog) => {
                    let mut answered = Answered {
                        call: &call,
                        calls,
                        dialog,
                        until: tokio::time::Instant::now() + call.time_limit,
                    };
                    script::run(&calls.client, &mut answered).await
                }
            }
        }
    };
    tracing::debug!(call = %call.call_uuid, status = end.status, cause = end.cause.name(), "outbound call ended");
    let record = record(&call, &end);
    // The call's last use: its URL, token and CallUUID move to the hangup.
    let hangup = (!call.hangup_url.is_empty()).then(|| Hangup {
        params: params(&call, end.status),
        url: call.hangup_url,
        method: Method::Post,
        auth_token: call.auth_token,
        call_uuid: call.call_uuid,
        cause: end.cause,
    });
    calls.end(record, hangup);
}

/// The far end answered: the answer_url says what happens next, until
/// `until` (the call's time limit). `<Hangup>`, the end of the XML and the
/// time limit send it a BYE; while it waits or rings it is connected to
/// nothing (its re-INVITEs and UPDATEs are answered with [`OFFER`]);
/// `<Dial>` bridges it to the first target to answer ([`connect`]).
struct Answered<'a> {
    call: &'a MakeCall,
    calls: &'a Calls,
    dialog: Box<Dialog>,
    until: tokio::time::Instant,
}

impl Party for Answered<'_> {
    fn call_uuid(&self) -> &str {
        &self.call.call_uuid
    }

    fn auth_token(&self) -> &str {
        &self.call.auth_token
    }

    fn params(&self, status: &'static str) -> Params {
        params(self.call, status)
    }

    fn answer_url(&self) -> Callback<'_> {
        Callback {
            url: &self.call.answer_url,
            method: method_of(&self.call.answer_method),
            params: params(self.call, "in-progress"),
            auth_token: &self.call.auth_token,
        }
    }

    fn out_of_time(&self) -> bool {
        tokio::time::Instant::now() >= self.until
    }

    /// Answered already: any `reason` is a plain hangup.
    async fn hang_up(&mut self, _reason: Option<&str>) -> Outcome {
        self.dialog.bye().await;
        Outcome::HUNG_UP
    }

    async fn end(&mut self, _outcome: &Outcome) {
        self.dialog.bye().await;
    }

    async fn wait(&mut self, length: Duration) -> Option<Outcome> {
        let wait_until = (tokio::time::Instant::now() + length).min(self.until);
        loop {
            let left = wait_until.saturating_duration_since(tokio::time::Instant::now());
            match self.dialog.hold(left).await {
                Held::Elapsed => return None,
                Held::HungUp => return Some(Outcome::HUNG_UP),
                Held::Reinvite(req) | Held::Request(req) => {
                    answer_alone(&mut self.dialog, &req).await;
                }
            }
        }
    }

    async fn dial(&mut self, dial: &sipauth_callback::Dial) -> (Dialed, bool) {
        connect(self.call, self.calls, &mut self.dialog, dial, self.until).await
    }

    /// A hangup of A is seen at the next element.
    fn left(&mut self) -> bool {
        false
    }
}

/// Rings the `<Dial>` targets and bridges A to the first that answers,
/// until `until` (the call's time limit, or the Dial's `timeLimit` once
/// bridged if that comes first). Over when A hung up or a time limit ran
/// out (B hung up too), Connected when B hung up, Unreached when no
/// target answered or A refused B's offer.
async fn connect(
    call: &MakeCall,
    calls: &Calls,
    a: &mut Dialog,
    dial: &sipauth_callback::Dial,
    until: tokio::time::Instant,
) -> (Dialed, bool) {
    let plan = fork::Plan {
        from_user: &call.from,
        raw_headers: false,
        // B offers in its 2xx; A's answer to that offer goes in B's ACK.
        sdp: None,
        settings: &calls.outbound,
    };
    let (legs, failed) = fork::legs(dial.clone(), &plan);
    let mut alerted = false;
    let mut fork = Fork::start(legs, failed);
    let mut b = loop {
        tokio::select! {
            ring = fork.next() => match ring {
                Ring::Progress(_) => alerted = true,
                Ring::Answered(b) => break b,
                Ring::Failed(o) => {
                    tracing::info!(call = %call.call_uuid, cause = o.cause.name(), "Dial reached nobody");
                    return (Dialed::Unreached(o), alerted);
                }
            },
            held = a.hold(until.saturating_duration_since(tokio::time::Instant::now())) => match held {
                Held::Reinvite(req) | Held::Request(req) => answer_alone(a, &req).await,
                Held::Elapsed => {
                    a.bye().await;
                    return (Dialed::Over(Outcome::HUNG_UP), alerted);
                }
                // A hung up while B rang: the fork cancels what rings.
                Held::HungUp => return (Dialed::Over(Outcome::HUNG_UP), alerted),
            }
        }
    };
    drop(fork);
    if b.sdp.is_empty() {
        // No offer to pass on: B is up, A keeps its session as it is.
        b.ack(None).await;
    } else {
        match a.reinvite(&b.sdp.clone()).await {
            Ok(answer) => b.ack(Some(&answer)).await,
            Err(code) => {
                tracing::info!(call = %call.call_uuid, code, "A refused the re-INVITE carrying B's offer");
                b.bye().await;
                return (Dialed::Unreached(Outcome::of_status(code)), alerted);
            }
        }
    }
    tracing::debug!(call = %call.call_uuid, "Dial connected");
    let end_by = dial.time_limit_secs.map_or(until, |t| {
        until.min(tokio::time::Instant::now() + Duration::from_secs(u64::from(t)))
    });
    loop {
        let left = end_by.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            held = a.hold(left) => match held {
                Held::Reinvite(req) => relay(a, &mut b, &req).await,
                Held::Request(req) => relay_request(a, &mut b, &req).await,
                Held::Elapsed => {
                    a.bye().await;
                    b.bye().await;
                    return (Dialed::Over(Outcome::HUNG_UP), alerted);
                }
                Held::HungUp => {
                    b.bye().await;
                    return (Dialed::Over(Outcome::HUNG_UP), alerted);
                }
            },
            held = b.hold(left) => match held {
                Held::Reinvite(req) => relay(&mut b, a, &req).await,
                Held::Request(req) => relay_request(&mut b, a, &req).await,
                Held::Elapsed => {
                    a.bye().await;
                    b.bye().await;
                    return (Dialed::Over(Outcome::HUNG_UP), alerted);
                }
                Held::HungUp => return (Dialed::Connected, alerted),
            },
        }
    }
}

/// Answers a request of A while it is connected to nothing: the session
/// stays ours (an offer gets [`OFFER`] as its answer), INFO is taken.
async fn answer_alone(a: &mut Dialog, req: &OwnedMessage) {
    let sdp: &[u8] = {
        let m = req.message();
        match m.method() {
            Some("INVITE") => OFFER,
            Some("UPDATE") if !m.body().is_empty() => OFFER,
            _ => b"",
        }
    };
    a.respond(req, 200, sdp).await;
}

/// Passes an INFO or UPDATE of one party to the other and its answer
/// back.
async fn relay_request(from: &mut Dialog, to: &mut Dialog, req: &OwnedMessage) {
    let m = req.message();
    let method = m.method().unwrap_or("INFO");
    match to.request(method, m.header("Content-Type"), m.body()).await {
        Ok((code, ct, body)) => from.respond_with(req, code, ct.as_deref(), &body).await,
        Err(code) => from.respond_with(req, code, None, b"").await,
    }
}

/// Passes a re-INVITE of one party to the other and its answer back (a
/// re-INVITE without an offer is answered with the other party's session
/// as it stands).
async fn relay(from: &mut Dialog, to: &mut Dialog, req: &OwnedMessage) {
    let offer = req.message().body().to_vec();
    if offer.is_empty() {
        let current = to.sdp.clone();
        from.respond(req, 200, &current).await;
        return;
    }
    match to.reinvite(&offer).await {
        Ok(answer) => {
            from.sdp = offer;
            from.respond(req, 200, &answer).await;
        }
        Err(code) => from.respond(req, code, b"").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::sync::mpsc::error::TrySendError;

    fn request(uuid: &str) -> MakeCall {
        MakeCall {
            call_uuid: uuid.to_owned(),
            account: "MATEST".to_owned(),
            auth_token: "token".to_owned(),
            from: "15550100".to_owned(),
            // Not a SIP URI, and no number gateway: it ends at once.
            to: "15550199".to_owned(),
            answer_url: "http://127.0.0.1:9/answer".to_owned(),
            answer_method: "POST".to_owned(),
            hangup_url: String::new(),
            credentials: None,
            sip_headers: Vec::new(),
            ring_timeout: None,
            time_limit: DEFAULT_TIME_LIMIT,
            created_at: 0,
        }
    }

    /// Stopped, the intake refuses new requests (the API answers 503),
    /// still dials those already queued, and ends once they are started.
    #[tokio::test]
    async fn a_stopped_intake_refuses_new_requests_and_dials_the_queued_ones() {
        let (sink, mut records) = crate::records::test_control_plane(0).await;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let calls = crate::tests::test_calls(sink, metrics.clone());
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(request("queued")).unwrap();
        let stop = Arc::new(Notify::new());
        stop.notify_one();
        let intake = tokio::spawn(serve(rx, calls.clone(), stop));
        tokio::time::timeout(Duration::from_secs(5), intake)
            .await
            .expect("the intake ends once the queue is empty")
            .unwrap();
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
        crate::tests::until("the queued call was dialled and ended", || {
            metrics.outbound_calls.load(Relaxed) == 0 && calls.settled()
        })
        .await;
        let posted = records.try_recv().expect("the queued call's record");
        assert!(posted.contains(r#""call_uuid":"queued""#), "{posted}");
    }
}
