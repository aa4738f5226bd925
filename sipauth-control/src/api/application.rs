//! `Application/`: where calls to `sip:{app_id}@{domain}` go, and who may
//! place them (`sip_auth_type` with its credential and IP ACL).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, Fields, Item, Page, Resource, Scope, changed, numeric_id, reply, time,
};
use crate::ControlState;
use crate::fields::{AUTH_TYPES, Field, HTTP_METHODS, Kind, Valid, auth_type, field, validate};
use sipauth_model::snapshot::AuthType;
use sipauth_store::applications::{self, ApplicationRow, Settings};
use sipauth_store::{WriteTx, acls, credentials};

const NAME: Kind = Kind::Text { min: 1, max: 255 };
/// The digest algorithms an application may offer its callers.
const ALGORITHMS: Kind = Kind::ListOf(&["SHA-256", "SHA-512-256", "MD5"]);
const ALGORITHMS_DOC: &str = "digest algorithms to challenge this application's callers with, in order \
     (e.g. \"SHA-256,MD5\"); empty: the edge's sip.challenge_algorithms";

pub const CREATE: &[Field] = &[
    field("app_name", NAME, true, ""),
    field(
        "answer_url",
        Kind::Url,
        true,
        "fetched when a call is allowed",
    ),
    field(
        "answer_method",
        Kind::OneOf(HTTP_METHODS),
        false,
        "default POST",
    ),
    field("hangup_url", Kind::Url, false, "default: answer_url"),
    field(
        "hangup_method",
        Kind::OneOf(HTTP_METHODS),
        false,
        "default POST",
    ),
    field(
        "sip_auth_type",
        Kind::OneOf(AUTH_TYPES),
        false,
        "default \"\" (registered endpoints only)",
    ),
    field(
        "credential_uuid",
        Kind::Id,
        false,
        "required by credential and ip_acl_and_credential",
    ),
    field(
        "ip_acl_uuid",
        Kind::Id,
        false,
        "required by ip_acl and ip_acl_and_credential",
    ),
    field("challenge_algorithms", ALGORITHMS, false, ALGORITHMS_DOC),
];
pub const UPDATE: &[Field] = &[
    field("app_name", NAME, false, ""),
    field("answer_url", Kind::Url, false, ""),
    field("answer_method", Kind::OneOf(HTTP_METHODS), false, ""),
    field("hangup_url", Kind::Url, false, ""),
    field("hangup_method", Kind::OneOf(HTTP_METHODS), false, ""),
    field(
        "sip_auth_type",
        Kind::OneOf(AUTH_TYPES),
        false,
        "\"\" clears both assignments",
    ),
    field(
        "credential_uuid",
        Kind::Id,
        false,
        "required with sip_auth_type credential or ip_acl_and_credential",
    ),
    field(
        "ip_acl_uuid",
        Kind::Id,
        false,
        "required with sip_auth_type ip_acl or ip_acl_and_credential",
    ),
    field("challenge_algorithms", ALGORITHMS, false, ALGORITHMS_DOC),
];

const APPLICATIONS: Resource<ApplicationRow> = Resource {
    table: &applications::TABLE,
    what: "application",
    path: "Application/",
};

pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route("/v1/Account/{auth_id}/Application", get(list).post(create))
        .route(
            "/v1/Account/{auth_id}/Application/{app_id}",
            get(get_one).post(update).delete(delete),
        )
}

fn object(r: &ApplicationRow, domain: &str) -> Value {
    let a = &r.settings;
    json!({
        "app_id": r.app_id,
        "app_name": a.app_name,
        "answer_url": a.answer_url,
        "answer_method": a.answer_method,
        "hangup_url": a.hangup_url,
        "hangup_method": a.hangup_method,
        "sip_auth_type": a.sip_auth_type,
        "credential_uuid": a.credential_uuid,
        "ip_acl_uuid": a.ip_acl_uuid,
        "challenge_algorithms": a.challenge_algorithms,
        "sip_uri": format!("sip:{}@{domain}", r.app_id),
        "created_on": time(r.created_at),
        "modified_on": time(r.updated_at),
    })
}

/// The assignment after this request: `(type, credential, acl)`.
struct Auth {
    kind: AuthType,
    credential: Option<String>,
    acl: Option<String>,
}

/// Applies the request's `sip_auth_type`, `credential_uuid` and
/// `ip_acl_uuid` to `current`. With a type, the uuids it needs must be given
/// and no other; without one, a given uuid replaces the current one if the
/// current type uses it. Referenced uuids must belong to the account.
async fn resolve_auth(
    w: &mut WriteTx,
    acct: &str,
    current: Auth,
    v: &Valid,
) -> Result<Auth, ApiError> {
    let given = |name: &str| v.str(name).filter(|s| !s.is_empty()).map(str::to_owned);
    let (cred_given, acl_given) = (given("credential_uuid"), given("ip_acl_uuid"));
    let next = match auth_type(v) {
        Some(kind) => {
            if kind.uses_credential() && cred_given.is_none() {
                return Err(ApiError::field(
                    "credential_uuid",
                    &format!("is required when sip_auth_type is {}", kind.as_str()),
                ));
            }
            if kind.uses_acl() && acl_given.is_none() {
                return Err(ApiError::field(
                    "ip_acl_uuid",
                    &format!("is required when sip_auth_type is {}", kind.as_str()),
                ));
            }
            Auth {
                kind,
                credential: if kind.uses_credential() {
                    cred_given.clone()
                } else {
                    None
                },
                acl: if kind.uses_acl() {
                    acl_given.clone()
                } else {
                    None
                },
            }
        }
        None => Auth {
            kind: current.kind,
            credential: cred_given.clone().or(current.credential),
            acl: acl_given.clone().or(current.acl),
        },
    };
    if cred_given.is_some() && !next.kind.uses_credential() {
        return Err(ApiError::field(
            "credential_uuid",
            "is only used with sip_auth_type credential or ip_acl_and_credential",
        ));
    }
    if acl_given.is_some() && !next.kind.uses_acl() {
        return Err(ApiError::field(
            "ip_acl_uuid",
            "is only used with sip_auth_type ip_acl or ip_acl_and_credential",
        ));
    }
    if let Some(uuid) = &cred_given
        && !credentials::TABLE.exists(w, acct, uuid).await?
    {
        return Err(ApiError::field(
            "credential_uuid",
            "no such credential in this account",
        ));
    }
    if let Some(uuid) = &acl_given
        && !acls::TABLE.exists(w, acct, uuid).await?
    {
        return Err(ApiError::field(
            "ip_acl_uuid",
            "no such IP ACL in this account",
        ));
    }
    Ok(next)
}

async fn create(Scope(s, acct): Scope, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, CREATE)?;
    let mut w = s.store.write().await?;
    let none = Auth {
        kind: AuthType::None,
        credential: None,
        acl: None,
    };
    let auth = resolve_auth(&mut w, &acct, none, &v).await?;
    let app_id = numeric_id(17);
    let answer_url = v.str("answer_url").unwrap_or_default();
    let settings = Settings {
        app_name: v.str("app_name").unwrap_or_default().to_owned(),
        answer_url: answer_url.to_owned(),
        answer_method: v.str("answer_method").unwrap_or("POST").to_owned(),
        hangup_url: Some(v.str("hangup_url").unwrap_or(answer_url).to_owned()),
        hangup_method: v.str("hangup_method").unwrap_or("POST").to_owned(),
        sip_auth_type: auth.kind.as_str().to_owned(),
        credential_uuid: auth.credential,
        ip_acl_uuid: auth.acl,
        challenge_algorithms: v.str("challenge_algorithms").unwrap_or_default().to_owned(),
    };
    applications::insert(&mut w, &app_id, &acct, &settings).await?;
    s.committed(w).await?;
    tracing::info!(account = %acct, app = %app_id, sip_auth_type = auth.kind.as_str(), "application created");
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "app_id": app_id }),
    ))
}

/// The List Application filter.
#[derive(serde::Deserialize)]
struct Filter {
    /// Only the applications of this name (exact match).
    app_name: Option<String>,
}

async fn list(Scope(s, acct): Scope, page: Query<Page>, Query(f): Query<Filter>) -> ApiResult {
    let mut paging = Page::check(page)?;
    let name = f.app_name.filter(|n| !n.is_empty());
    if let Some(n) = &name {
        paging.filter = format!(
            "{}&",
            serde_urlencoded::to_string([("app_name", n)]).unwrap_or_default()
        );
    }
    let rows = APPLICATIONS
        .table
        .list_where(
            &s.store,
            &acct,
            name.as_deref().map(|n| ("app_name", n)),
            paging.limit,
            paging.offset,
        )
        .await?;
    Ok(super::page_reply(
        &acct,
        APPLICATIONS.path,
        &paging,
        &rows,
        |r| object(r, &s.realm),
    ))
}

async fn get_one(Item(s, acct, app_id): Item) -> ApiResult {
    APPLICATIONS
        .get(&s, &acct, &app_id, |r| object(r, &s.realm))
        .await
}

async fn update(Item(s, acct, app_id): Item, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, UPDATE)?;
    let mut w = s.store.write().await?;
    let row = APPLICATIONS.row(&mut w, &acct, &app_id).await?;
    let old = row.settings;
    let current = Auth {
        kind: AuthType::parse(&old.sip_auth_type).unwrap_or_default(),
        credential: old.credential_uuid,
        acl: old.ip_acl_uuid,
    };
    let auth = resolve_auth(&mut w, &acct, current, &v).await?;
    let keep = |name: &str, old: String| v.str(name).map_or(old, str::to_owned);
    let settings = Settings {
        app_name: keep("app_name", old.app_name),
        answer_url: keep("answer_url", old.answer_url),
        answer_method: keep("answer_method", old.answer_method),
        hangup_url: v.str("hangup_url").map(str::to_owned).or(old.hangup_url),
        hangup_method: keep("hangup_method", old.hangup_method),
        sip_auth_type: auth.kind.as_str().to_owned(),
        credential_uuid: auth.credential,
        ip_acl_uuid: auth.acl,
        challenge_algorithms: keep("challenge_algorithms", old.challenge_algorithms),
    };
    applications::update(&mut w, &app_id, &settings).await?;
    s.committed(w).await?;
    tracing::info!(account = %acct, app = %app_id, sip_auth_type = auth.kind.as_str(), "application changed");
    Ok(changed())
}

async fn delete(Item(s, acct, app_id): Item) -> ApiResult {
    APPLICATIONS
        .delete(&s, &acct, &app_id, async |w| {
            Ok(applications::delete(w, &app_id).await?)
        })
        .await
}
