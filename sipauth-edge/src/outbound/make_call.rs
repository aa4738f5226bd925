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
use std::time::Duration;

use sipauth_callback::{Action, Callback, Method};
use tokio::sync::{Semaphore, mpsc};

use super::fork::{self, Fork, Ring};
pub use sipauth_model::{DEFAULT_TIME_LIMIT, MakeCall};

use super::{Dialog, Held, Leg, LegEnd, Outcome, Target};
use crate::call::{CallRecord, Calls, Cause, DialEnd, dial_action, method_of, notify_hangup};
use sipauth_store::now;

/// Outbound calls in progress at once; further requests wait in the queue.
const MAX_CALLS: usize = 4096;
/// The offer of an API call: the edge carries no media.
const OFFER: &[u8] = b"v=0\r\no=sipauth 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=inactive\r\n";

/// How the call ended.
struct End {
    status: &'static str,
    cause: Cause,
}

/// Takes Make Call requests until the control plane goes away.
pub async fn serve(mut rx: mpsc::Receiver<MakeCall>, calls: Arc<Calls>) {
    let limit = Arc::new(Semaphore::new(MAX_CALLS));
    while let Some(call) = rx.recv().await {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            run(call, &calls).await;
            drop(permit);
        });
    }
}

/// The callback parameters of an outbound call.
fn params(call: &MakeCall, status: &str) -> Vec<(String, String)> {
    vec![
        ("CallUUID".to_owned(), call.call_uuid.clone()),
        ("RequestUUID".to_owned(), call.call_uuid.clone()),
        ("From".to_owned(), call.from.clone()),
        ("To".to_owned(), call.to.clone()),
        ("Direction".to_owned(), "outbound".to_owned()),
        ("CallStatus".to_owned(), status.to_owned()),
    ]
}

/// The record of an outbound call that ended.
fn record(call: &MakeCall, end: &End) -> CallRecord {
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
    let target = if call.to.trim_start().starts_with("sip") {
        Target::parse(&call.to).map_err(|e| {
            tracing::info!(call = %call.call_uuid, error = %e, "outbound call cannot be dialled");
            Outcome::INVALID_DESTINATION
        })
    } else {
        fork::number_target(&calls.outbound, &call.to)
    };
    let end = match target {
        Err(o) => End {
            status: o.status,
            cause: o.cause,
        },
        Ok(target) => {
            let leg = Leg {
                target,
                from_user: call.from.clone(),
                credentials: call.credentials.clone(),
                headers: sipauth_callback::render_sip_headers(&call.sip_headers, false),
                sdp: Some(OFFER.to_vec()),
                timers: calls.outbound.timers,
                ring_timeout: call.ring_timeout.unwrap_or(super::RING_TIMEOUT),
                hooks: super::txn::Hooks::default(),
            };
            match leg.place().await {
                LegEnd::Failed(o) => End {
                    status: o.status,
                    cause: o.cause,
                },
                LegEnd::Answered(dialog) => {
                    let until = tokio::time::Instant::now() + call.time_limit;
                    answered(&call, calls, dialog, until).await
                }
            }
        }
    };
    tracing::info!(call = %call.call_uuid, status = end.status, cause = end.cause.name(), "outbound call ended");
    calls.record(record(&call, &end));
    if !call.hangup_url.is_empty() {
        notify_hangup(
            calls,
            &call.hangup_url,
            Method::Post,
            params(&call, end.status),
            &call.auth_token,
            &call.call_uuid,
            end.cause,
        )
        .await;
    }
}

/// The far end answered: the answer_url says what happens next, until
/// `until` (the call's time limit).
async fn answered(
    call: &MakeCall,
    calls: &Calls,
    mut dialog: Box<Dialog>,
    until: tokio::time::Instant,
) -> End {
    let cb = Callback {
        url: &call.answer_url,
        method: method_of(&call.answer_method),
        params: params(call, "in-progress"),
        auth_token: &call.auth_token,
    };
    let actions = match calls.client.fetch(&cb).await {
        Ok(body) => match sipauth_callback::parse_response_xml(&body) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(call = %call.call_uuid, error = %e, "answer_url returned invalid XML");
                dialog.bye().await;
                return End {
                    status: "failed",
                    cause: Cause::InvalidAnswerXml,
                };
            }
        },
        Err(e) => {
            tracing::warn!(call = %call.call_uuid, error = %e, "answer_url failed");
            dialog.bye().await;
            return End {
                status: "failed",
                cause: Cause::AnswerUrlUnreachable,
            };
        }
    };
    let completed = |cause| End {
        status: "completed",
        cause,
    };
    // The outcome of a `<Dial>` that reached nobody, while nothing else
    // has happened since.
    let mut unreached: Option<Outcome> = None;
    let mut actions = actions.into_iter();
    while let Some(action) = actions.next() {
        if tokio::time::Instant::now() >= until {
            // The call's time limit.
            dialog.bye().await;
            return completed(Cause::NormalHangup);
        }
        match action {
            Action::Hangup { .. } => {
                dialog.bye().await;
                return completed(Cause::NormalHangup);
            }
            Action::Wait { length_secs } => {
                unreached = None;
                let wait_until = (tokio::time::Instant::now()
                    + Duration::from_secs(u64::from(length_secs.min(3600))))
                .min(until);
                loop {
                    let left = wait_until.saturating_duration_since(tokio::time::Instant::now());
                    match dialog.hold(left).await {
                        Held::Elapsed => break,
                        Held::HungUp => return completed(Cause::NormalHangup),
                        Held::Reinvite(raw) | Held::Request(raw) => {
                            answer_alone(&mut dialog, &raw).await;
                        }
                    }
                }
                if tokio::time::Instant::now() >= until {
                    // The call's time limit.
                    dialog.bye().await;
                    return completed(Cause::NormalHangup);
                }
            }
            Action::Speak { .. } => unreached = None,
            Action::Dial(dial) => {
                let (dialed, alerted) = connect(call, calls, &mut dialog, &dial, until).await;
                let told = match dialed {
                    Dialed::AHungUp | Dialed::BHungUp => DialEnd {
                        status: "completed",
                        cause: Cause::NormalHangup,
                        alerted,
                    },
                    Dialed::Unreached(o) => DialEnd {
                        status: o.status,
                        cause: o.cause,
                        alerted,
                    },
                };
                // A gone, the action URL is only told; otherwise its XML
                // (with redirect) is what the call does next.
                let a_up = !matches!(dialed, Dialed::AHungUp);
                let next = dial_action(
                    calls,
                    &dial,
                    params(call, "in-progress"),
                    &call.auth_token,
                    &call.call_uuid,
                    &told,
                    a_up,
                )
                .await;
                match dialed {
                    Dialed::AHungUp => return completed(Cause::NormalHangup),
                    Dialed::BHungUp => unreached = None,
                    Dialed::Unreached(o) => unreached = Some(o),
                }
                match next {
                    Some(Ok(new)) => actions = new.into_iter(),
                    Some(Err(c)) => {
                        dialog.bye().await;
                        return End {
                            status: "failed",
                            cause: c,
                        };
                    }
                    None => {}
                }
            }
        }
    }
    dialog.bye().await;
    match unreached {
        Some(o) => End {
            status: o.status,
            cause: o.cause,
        },
        None => completed(Cause::EndOfXml),
    }
}

/// How a `<Dial>` of an answered call ended.
enum Dialed {
    /// A hung up (or the bridge ran out): the call is over.
    AHungUp,
    /// B hung up after talking (or the edge ended it): the XML goes on.
    BHungUp,
    /// No target answered.
    Unreached(Outcome),
}

/// Rings the `<Dial>` targets and bridges A to the first that answers,
/// until `until` (the call's time limit, or the Dial's `timeLimit` once
/// bridged if that comes first).
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
                Held::Reinvite(raw) | Held::Request(raw) => answer_alone(a, &raw).await,
                Held::Elapsed => {
                    a.bye().await;
                    return (Dialed::AHungUp, alerted);
                }
                // A hung up while B rang: the fork cancels what rings.
                Held::HungUp => return (Dialed::AHungUp, alerted),
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
                Held::Reinvite(raw) => relay(a, &mut b, &raw).await,
                Held::Request(raw) => relay_request(a, &mut b, &raw).await,
                Held::Elapsed => {
                    a.bye().await;
                    b.bye().await;
                    return (Dialed::AHungUp, alerted);
                }
                Held::HungUp => {
                    b.bye().await;
                    return (Dialed::AHungUp, alerted);
                }
            },
            held = b.hold(left) => match held {
                Held::Reinvite(raw) => relay(&mut b, a, &raw).await,
                Held::Request(raw) => relay_request(&mut b, a, &raw).await,
                Held::Elapsed => {
                    a.bye().await;
                    b.bye().await;
                    return (Dialed::AHungUp, alerted);
                }
                Held::HungUp => return (Dialed::BHungUp, alerted),
            },
        }
    }
}

/// Answers a request of A while it is connected to nothing: the session
/// stays ours (an offer gets [`OFFER`] as its answer), INFO is taken.
async fn answer_alone(a: &mut Dialog, raw: &[u8]) {
    let Ok(m) = sipauth_sip::parse(raw) else {
        return;
    };
    let sdp: &[u8] = match m.method() {
        Some("INVITE") => OFFER,
        Some("UPDATE") if !m.body().is_empty() => OFFER,
        _ => b"",
    };
    a.respond(raw, 200, sdp).await;
}

/// Passes an INFO or UPDATE of one party to the other and its answer
/// back.
async fn relay_request(from: &mut Dialog, to: &mut Dialog, raw: &[u8]) {
    let Ok(m) = sipauth_sip::parse(raw) else {
        return;
    };
    let method = m.method().unwrap_or("INFO").to_owned();
    let content_type = m.header("Content-Type").map(str::to_owned);
    match to.request(&method, content_type.as_deref(), m.body()).await {
        Ok((code, ct, body)) => from.respond_with(raw, code, ct.as_deref(), &body).await,
        Err(code) => from.respond_with(raw, code, None, b"").await,
    }
}

/// Passes a re-INVITE of one party to the other and its answer back (a
/// re-INVITE without an offer is answered with the other party's session
/// as it stands).
async fn relay(from: &mut Dialog, to: &mut Dialog, raw: &[u8]) {
    let offer = sipauth_sip::parse(raw)
        .map(|m| m.body().to_vec())
        .unwrap_or_default();
    if offer.is_empty() {
        let current = to.sdp.clone();
        from.respond(raw, 200, &current).await;
        return;
    }
    match to.reinvite(&offer).await {
        Ok(answer) => {
            from.sdp = offer;
            from.respond(raw, 200, &answer).await;
        }
        Err(code) => from.respond(raw, code, b"").await,
    }
}
