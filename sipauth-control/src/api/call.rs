//! `Call/`: the Make Call request and call records.
//!
//! A call record is written for every call, inbound or outbound, allowed or
//! denied. It never holds a credential: `sip_auth_password` lives in memory
//! for the life of the call only, and `sip_auth_username` is not stored.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Fields, Item, Resource, Scope, reply, time};
use crate::ControlState;
use crate::fields::{Field, HTTP_METHODS, Kind, field, is_sip_uri, validate};
use sipauth_model::{Credentials, MakeCall, Secret};
use sipauth_store::calls::{self, CallRecord, Requested};
use sipauth_store::now;
use tokio::sync::mpsc::error::TrySendError;

pub const CREATE: &[Field] = &[
    field("from", Kind::Text { min: 1, max: 255 }, true, "caller id"),
    field("to", Kind::Destination, true, "a SIP URI or a phone number"),
    field(
        "answer_url",
        Kind::Url,
        true,
        "fetched when the far end answers",
    ),
    field(
        "answer_method",
        Kind::OneOf(HTTP_METHODS),
        false,
        "default POST",
    ),
    field("hangup_url", Kind::Url, false, "default: answer_url"),
    field(
        "sip_auth_username",
        Kind::Text { min: 1, max: 128 },
        false,
        "only when to is a SIP URI",
    ),
    field(
        "sip_auth_password",
        Kind::Text { min: 1, max: 128 },
        false,
        "only when to is a SIP URI; never stored",
    ),
    field(
        "sip_headers",
        Kind::SipHeaders,
        false,
        "key=value,key2=value2",
    ),
    field(
        "ring_timeout",
        Kind::Int { min: 1, max: 300 },
        false,
        "seconds the far end may ring; default 60",
    ),
    field(
        "time_limit",
        Kind::Int {
            min: 1,
            max: 14_400,
        },
        false,
        "the longest the answered call may last, in seconds; default 14400",
    ),
];

const CALLS: Resource<CallRecord> = Resource {
    table: &calls::TABLE,
    what: "call",
    path: "Call/",
};

pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route("/v1/Account/{auth_id}/Call", post(create))
        .route("/v1/Account/{auth_id}/Call/{call_uuid}", get(get_one))
}

fn object(r: &CallRecord) -> Value {
    json!({
        "call_uuid": r.call_uuid,
        "direction": r.direction,
        "from_number": r.from_number,
        "to_number": r.to_number,
        "answer_url": r.answer_url,
        "call_status": r.call_status,
        "hangup_cause_name": r.hangup_cause_name,
        "hangup_cause_code": r.hangup_cause_code,
        "sip_auth_type": r.sip_auth_type,
        "source_ip": r.source_ip,
        "initiation_time": time(r.created_at),
        "end_time": r.ended_at.map(time),
    })
}

async fn create(Scope(s, acct): Scope, headers: HeaderMap, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, CREATE)?;
    let to = v.str("to").unwrap_or_default();
    for name in ["sip_auth_username", "sip_auth_password"] {
        if v.has(name) && !is_sip_uri(to) {
            return Err(ApiError::field(
                name,
                "is accepted only when to is a SIP URI",
            ));
        }
    }
    if v.has("sip_auth_username") != v.has("sip_auth_password") {
        let missing = if v.has("sip_auth_username") {
            "sip_auth_password"
        } else {
            "sip_auth_username"
        };
        return Err(ApiError::field(
            missing,
            "must be given with the other sip_auth_ field",
        ));
    }
    let sip_headers = sipauth_callback::parse_sip_headers(v.str("sip_headers").unwrap_or(""))
        .map_err(|e| ApiError::field("sip_headers", &e.to_string()))?;
    // A place in the edge's queue first: a call the edge cannot take is
    // refused now rather than stored as queued for ever.
    let permit = match s.originate.get() {
        Some(tx) => Some(tx.try_reserve().map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                match e {
                    TrySendError::Full(()) => {
                        "the edge has too many calls waiting; try again shortly"
                    }
                    TrySendError::Closed(()) => "the edge is stopping; try again shortly",
                },
            )
        })?),
        None => None,
    };
    let uuid = sipauth_store::calls::new_call_uuid();
    let created_at = now();
    let answer_url = v.str("answer_url").unwrap_or_default();
    let queued = CallRecord {
        call_uuid: uuid.clone(),
        account: acct.clone(),
        direction: "outbound".to_owned(),
        from_number: v.str("from").unwrap_or_default().to_owned(),
        to_number: to.to_owned(),
        answer_url: Some(answer_url.to_owned()),
        call_status: "queued".to_owned(),
        hangup_cause_name: None,
        hangup_cause_code: None,
        sip_auth_type: None,
        source_ip: None,
        created_at,
        ended_at: None,
    };
    let requested = Requested {
        answer_method: v.str("answer_method").unwrap_or("POST"),
        hangup_url: v.str("hangup_url").unwrap_or(answer_url),
    };
    s.queued.write(queued, &requested).await?;
    tracing::debug!(account = %acct, call = %uuid, "call requested");
    if let Some(permit) = permit {
        // The token this request authenticated with is the account's: it
        // signs the call's callbacks.
        let auth_token = super::basic(&headers).map(|(_, t)| t).unwrap_or_default();
        let credentials = match (v.str("sip_auth_username"), v.str("sip_auth_password")) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.to_owned(),
                password: Secret::new(p.to_owned()),
            }),
            _ => None,
        };
        permit.send(MakeCall {
            call_uuid: uuid.clone(),
            account: acct.clone(),
            auth_token,
            from: v.str("from").unwrap_or_default().to_owned(),
            to: to.to_owned(),
            answer_url: answer_url.to_owned(),
            answer_method: v.str("answer_method").unwrap_or("POST").to_owned(),
            hangup_url: v.str("hangup_url").unwrap_or(answer_url).to_owned(),
            credentials,
            sip_headers,
            ring_timeout: v
                .int("ring_timeout")
                .map(|t| std::time::Duration::from_secs(t.unsigned_abs())),
            time_limit: v
                .int("time_limit")
                .map_or(sipauth_model::DEFAULT_TIME_LIMIT, |t| {
                    std::time::Duration::from_secs(t.unsigned_abs())
                }),
            created_at,
        });
    }
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "call fired", "request_uuid": uuid }),
    ))
}

async fn get_one(Item(s, acct, uuid): Item) -> ApiResult {
    CALLS.get(&s, &acct, &uuid, object).await
}
