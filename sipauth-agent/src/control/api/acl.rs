//! `SipAuth/IpAccessControlList/` and its `Entry/`: allow-lists of IPv4 and
//! IPv6 networks.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use ipnet::IpNet;
use serde_json::{Value, json};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{
    AccountId, ApiError, ApiResult, Page, Resource, body_fields, list_reply, no_content, reply,
    time,
};
use crate::control::ControlState;
use crate::control::fields::{Field, Kind, field, validate};
use crate::control::store::now;

pub const MAX_PER_ACCOUNT: i64 = 100;
pub const MAX_ENTRIES: i64 = 50;

pub const CREATE: &[Field] = &[field("name", Kind::Text { min: 1, max: 120 }, true, "")];
pub const UPDATE: &[Field] = CREATE;
pub const ENTRY_CREATE: &[Field] = &[
    field(
        "ip",
        Kind::Ip,
        true,
        "IPv4 or IPv6 literal; host bits beyond the prefix are cleared",
    ),
    field(
        "cidr_prefix",
        Kind::Int { min: 0, max: 128 },
        false,
        "0-32 for IPv4, 0-128 for IPv6; default 32 (IPv4) or 128 (IPv6)",
    ),
    field("description", Kind::Text { min: 0, max: 255 }, false, ""),
];
pub const ENTRY_UPDATE: &[Field] = &[
    field("ip", Kind::Ip, false, "IPv4 or IPv6 literal"),
    field(
        "cidr_prefix",
        Kind::Int { min: 0, max: 128 },
        false,
        "0-32 for IPv4, 0-128 for IPv6",
    ),
    field("description", Kind::Text { min: 0, max: 255 }, false, ""),
];

const ACL: &str = "/v1/Account/{auth_id}/SipAuth/IpAccessControlList";
const ACL_COLUMNS: &str = "uuid, name, created_at, updated_at";
const ENTRY_COLUMNS: &str = "uuid, ip, cidr_prefix, description, created_at, updated_at";

const ACLS: Resource = Resource {
    table: "ip_acls",
    key: "uuid",
    columns: ACL_COLUMNS,
    path: "SipAuth/IpAccessControlList/",
    what: "IP ACL",
};

pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route(ACL, get(list).post(create))
        .route(
            &format!("{ACL}/{{uuid}}"),
            get(get_one).post(update).delete(delete),
        )
        .route(
            &format!("{ACL}/{{uuid}}/Entry"),
            get(entry_list).post(entry_create),
        )
        .route(
            &format!("{ACL}/{{uuid}}/Entry/{{entry}}"),
            get(entry_get).post(entry_update).delete(entry_delete),
        )
}

fn acl_object(r: &AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "ip_acl_uuid": r.try_get::<String, _>("uuid")?,
        "name": r.try_get::<String, _>("name")?,
        "created_on": time(r.try_get("created_at")?),
        "modified_on": time(r.try_get("updated_at")?),
    }))
}

fn entry_object(r: &AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "entry_uuid": r.try_get::<String, _>("uuid")?,
        "ip": r.try_get::<String, _>("ip")?,
        "cidr_prefix": r.try_get::<i64, _>("cidr_prefix")?,
        "description": r.try_get::<String, _>("description")?,
        "created_on": time(r.try_get("created_at")?),
        "modified_on": time(r.try_get("updated_at")?),
    }))
}

/// The stored form of an entry: the network address of `ip/prefix`.
fn network(ip: &str, prefix: Option<i64>) -> Result<(String, i64), ApiError> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::field("ip", "must be a literal IPv4 or IPv6 address"))?;
    let max: i64 = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if !(0..=max).contains(&prefix) {
        return Err(ApiError::field(
            "cidr_prefix",
            &format!(
                "must be between 0 and {max} for an {} address",
                if ip.is_ipv4() { "IPv4" } else { "IPv6" }
            ),
        ));
    }
    let net = IpNet::new(ip, u8::try_from(prefix).unwrap_or(0))
        .map_err(|_| ApiError::field("cidr_prefix", "is out of range"))?
        .trunc();
    Ok((net.addr().to_string(), prefix))
}

async fn owned_acl(tx: &mut sqlx::AnyConnection, acct: &str, uuid: &str) -> Result<(), ApiError> {
    ACLS.owned(tx, acct, uuid).await.map(|_| ())
}

async fn create(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, CREATE)?;
    let mut w = s.store.write().await?;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM ip_acls WHERE account = $1")
        .bind(&acct)
        .fetch_one(&mut *w.tx)
        .await?
        .try_get(0)?;
    if n >= MAX_PER_ACCOUNT {
        return Err(ApiError::bad(format!(
            "ip_acls: an account may hold at most {MAX_PER_ACCOUNT}"
        )));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let t = now();
    sqlx::query("INSERT INTO ip_acls (uuid, account, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&uuid)
        .bind(&acct)
        .bind(v.str("name").unwrap_or_default())
        .bind(t)
        .bind(t)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "ip_acl_uuid": uuid }),
    ))
}

async fn list(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    page: Query<Page>,
) -> ApiResult {
    ACLS.list(s.store.pool(), &acct, page, acl_object).await
}

async fn get_one(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid)): Path<(String, String)>,
) -> ApiResult {
    let mut tx = s.store.pool().begin().await?;
    let row = ACLS.owned(&mut tx, &acct, &uuid).await?;
    let entries = sqlx::query(
        "SELECT uuid, ip, cidr_prefix, description, created_at, updated_at FROM ip_acl_entries \
         WHERE acl = $1 ORDER BY created_at, uuid",
    )
    .bind(&uuid)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut obj = acl_object(&row)?;
    obj["entries"] = Value::Array(entries.iter().map(entry_object).collect::<Result<_, _>>()?);
    Ok(reply(StatusCode::OK, obj))
}

async fn update(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, UPDATE)?;
    let mut w = s.store.write().await?;
    owned_acl(&mut w.tx, &acct, &uuid).await?;
    sqlx::query("UPDATE ip_acls SET name = $1, updated_at = $2 WHERE uuid = $3")
        .bind(v.str("name").unwrap_or_default())
        .bind(now())
        .bind(&uuid)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(reply(StatusCode::ACCEPTED, json!({ "message": "changed" })))
}

async fn delete(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid)): Path<(String, String)>,
) -> ApiResult {
    let mut w = s.store.write().await?;
    owned_acl(&mut w.tx, &acct, &uuid).await?;
    ACLS.refuse_if_assigned(&mut w.tx, "ip_acl_uuid", &uuid)
        .await?;
    sqlx::query("DELETE FROM ip_acl_entries WHERE acl = $1")
        .bind(&uuid)
        .execute(&mut *w.tx)
        .await?;
    sqlx::query("DELETE FROM ip_acls WHERE uuid = $1")
        .bind(&uuid)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(no_content())
}

// --- entries ---

async fn entry_create(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, ENTRY_CREATE)?;
    let (ip, prefix) = network(v.str("ip").unwrap_or_default(), v.int("cidr_prefix"))?;
    let mut w = s.store.write().await?;
    owned_acl(&mut w.tx, &acct, &uuid).await?;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM ip_acl_entries WHERE acl = $1")
        .bind(&uuid)
        .fetch_one(&mut *w.tx)
        .await?
        .try_get(0)?;
    if n >= MAX_ENTRIES {
        return Err(ApiError::bad(format!(
            "entries: an IP ACL may hold at most {MAX_ENTRIES}"
        )));
    }
    let entry = uuid::Uuid::new_v4().to_string();
    let t = now();
    sqlx::query(
        "INSERT INTO ip_acl_entries (uuid, acl, ip, cidr_prefix, description, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&entry)
    .bind(&uuid)
    .bind(&ip)
    .bind(prefix)
    .bind(v.str("description").unwrap_or_default())
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    sqlx::query("UPDATE ip_acls SET updated_at = $1 WHERE uuid = $2")
        .bind(t)
        .bind(&uuid)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "entry_uuid": entry, "ip": ip, "cidr_prefix": prefix }),
    ))
}

async fn entry_list(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid)): Path<(String, String)>,
    page: Query<Page>,
) -> ApiResult {
    let paging = Page::check(page)?;
    let mut conn = s.store.pool().acquire().await?;
    owned_acl(&mut conn, &acct, &uuid).await?;
    drop(conn);
    let (total, rows) = super::page(
        s.store.pool(),
        "ip_acl_entries",
        ENTRY_COLUMNS,
        "acl",
        &uuid,
        &paging,
    )
    .await?;
    let objects = rows.iter().map(entry_object).collect::<Result<_, _>>()?;
    Ok(list_reply(
        &format!("/v1/Account/{acct}/SipAuth/IpAccessControlList/{uuid}/Entry/"),
        &paging,
        total,
        objects,
    ))
}

async fn entry_row(
    tx: &mut sqlx::AnyConnection,
    acct: &str,
    acl: &str,
    entry: &str,
) -> Result<AnyRow, ApiError> {
    owned_acl(tx, acct, acl).await?;
    sqlx::query(
        "SELECT uuid, ip, cidr_prefix, description, created_at, updated_at FROM ip_acl_entries \
         WHERE acl = $1 AND uuid = $2",
    )
    .bind(acl)
    .bind(entry)
    .fetch_optional(tx)
    .await?
    .ok_or_else(|| ApiError::not_found("IP ACL entry"))
}

async fn entry_get(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid, entry)): Path<(String, String, String)>,
) -> ApiResult {
    let mut conn = s.store.pool().acquire().await?;
    let row = entry_row(&mut conn, &acct, &uuid, &entry).await?;
    Ok(reply(StatusCode::OK, entry_object(&row)?))
}

async fn entry_update(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid, entry)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let v = validate(&body_fields(&headers, &body)?, ENTRY_UPDATE)?;
    let mut w = s.store.write().await?;
    let row = entry_row(&mut w.tx, &acct, &uuid, &entry).await?;
    let old_ip: String = row.try_get("ip")?;
    let old_prefix: i64 = row.try_get("cidr_prefix")?;
    let ip_given = v.str("ip");
    // A new address without a prefix takes its family's full length.
    let prefix = v.int("cidr_prefix").or(if ip_given.is_some() {
        None
    } else {
        Some(old_prefix)
    });
    let (ip, prefix) = network(ip_given.unwrap_or(&old_ip), prefix)?;
    let description = match v.str("description") {
        Some(d) => d.to_owned(),
        None => row.try_get("description")?,
    };
    let t = now();
    sqlx::query("UPDATE ip_acl_entries SET ip = $1, cidr_prefix = $2, description = $3, updated_at = $4 WHERE uuid = $5")
        .bind(&ip)
        .bind(prefix)
        .bind(&description)
        .bind(t)
        .bind(&entry)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({ "message": "changed", "ip": ip, "cidr_prefix": prefix }),
    ))
}

async fn entry_delete(
    State(s): State<Arc<ControlState>>,
    AccountId(acct): AccountId,
    Path((_, uuid, entry)): Path<(String, String, String)>,
) -> ApiResult {
    let mut w = s.store.write().await?;
    entry_row(&mut w.tx, &acct, &uuid, &entry).await?;
    sqlx::query("DELETE FROM ip_acl_entries WHERE uuid = $1")
        .bind(&entry)
        .execute(&mut *w.tx)
        .await?;
    s.committed(w).await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::network;

    #[test]
    fn networks_are_stored_as_network_addresses() {
        assert_eq!(
            network("198.51.100.77", Some(24)).unwrap(),
            ("198.51.100.0".into(), 24)
        );
        assert_eq!(
            network("198.51.100.77", None).unwrap(),
            ("198.51.100.77".into(), 32)
        );
        assert_eq!(
            network("2001:db8::1", Some(32)).unwrap(),
            ("2001:db8::".into(), 32)
        );
        assert_eq!(
            network("2001:db8::1", None).unwrap(),
            ("2001:db8::1".into(), 128)
        );
        assert!(
            network("198.51.100.1", Some(33))
                .unwrap_err()
                .message
                .contains("0 and 32 for an IPv4")
        );
        assert!(network("0.0.0.0", Some(0)).is_ok());
    }
}
