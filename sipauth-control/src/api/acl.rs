//! `SipAuth/IpAccessControlList/` and its `Entry/`: allow-lists of IPv4 and
//! IPv6 networks.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use ipnet::IpNet;
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, Fields, Item, Page, Resource, Scope, changed, no_content,
    refuse_if_assigned, reply, time,
};
use crate::ControlState;
use crate::fields::{Field, Kind, field, validate};
use sipauth_store::acls::{self, AclRow, EntryChange, EntryRow, NewAcl, NewEntry};
use sipauth_store::{Conn, applications};

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
const ACLS: Resource<AclRow> = Resource {
    table: &acls::TABLE,
    what: "IP ACL",
    path: "SipAuth/IpAccessControlList/",
};
/// Entries, under their IP ACL's path.
const ENTRIES: Resource<EntryRow> = Resource {
    table: &acls::ENTRIES,
    what: "IP ACL entry",
    path: "Entry/",
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

fn acl_object(r: &AclRow) -> Value {
    json!({
        "ip_acl_uuid": r.uuid,
        "name": r.name,
        "created_on": time(r.created_at),
        "modified_on": time(r.updated_at),
    })
}

fn entry_object(r: &EntryRow) -> Value {
    json!({
        "entry_uuid": r.uuid,
        "ip": r.ip,
        "cidr_prefix": r.cidr_prefix,
        "description": r.description,
        "created_on": time(r.created_at),
        "modified_on": time(r.updated_at),
    })
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

/// 404 unless account `acct` owns IP ACL `uuid`.
async fn owned_acl(c: &mut impl Conn, acct: &str, uuid: &str) -> Result<(), ApiError> {
    ACLS.row(c, acct, uuid).await.map(drop)
}

async fn create(Scope(s, acct): Scope, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, CREATE)?;
    let mut w = s.store.write().await?;
    if acls::TABLE.count(&mut w, &acct).await? >= MAX_PER_ACCOUNT {
        return Err(ApiError::bad(format!(
            "ip_acls: an account may hold at most {MAX_PER_ACCOUNT}"
        )));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    acls::insert(
        &mut w,
        &NewAcl {
            uuid: &uuid,
            account: &acct,
            name: v.str("name").unwrap_or_default(),
        },
    )
    .await?;
    s.committed(w).await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "ip_acl_uuid": uuid }),
    ))
}

async fn list(Scope(s, acct): Scope, page: Query<Page>) -> ApiResult {
    ACLS.list(&s, &acct, page, acl_object).await
}

async fn get_one(Item(s, acct, uuid): Item) -> ApiResult {
    let (acl, entries) = acls::get_with_entries(&s.store, &acct, &uuid)
        .await?
        .ok_or_else(|| ApiError::not_found(ACLS.what))?;
    let mut obj = acl_object(&acl);
    obj["entries"] = Value::Array(entries.iter().map(entry_object).collect());
    Ok(reply(StatusCode::OK, obj))
}

async fn update(Item(s, acct, uuid): Item, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, UPDATE)?;
    let mut w = s.store.write().await?;
    owned_acl(&mut w, &acct, &uuid).await?;
    acls::rename(&mut w, &uuid, v.str("name").unwrap_or_default()).await?;
    s.committed(w).await?;
    Ok(changed())
}

async fn delete(Item(s, acct, uuid): Item) -> ApiResult {
    ACLS.delete(&s, &acct, &uuid, async |w| {
        refuse_if_assigned(ACLS.what, &applications::using_acl(w, &uuid).await?)?;
        Ok(acls::delete(w, &uuid).await?)
    })
    .await
}

// --- entries ---

async fn entry_create(Item(s, acct, uuid): Item, Fields(body): Fields) -> ApiResult {
    let v = validate(&body, ENTRY_CREATE)?;
    let (ip, prefix) = network(v.str("ip").unwrap_or_default(), v.int("cidr_prefix"))?;
    let mut w = s.store.write().await?;
    owned_acl(&mut w, &acct, &uuid).await?;
    if acls::ENTRIES.count(&mut w, &uuid).await? >= MAX_ENTRIES {
        return Err(ApiError::bad(format!(
            "entries: an IP ACL may hold at most {MAX_ENTRIES}"
        )));
    }
    let entry = uuid::Uuid::new_v4().to_string();
    acls::insert_entry(
        &mut w,
        &NewEntry {
            uuid: &entry,
            acl: &uuid,
            ip: &ip,
            cidr_prefix: prefix,
            description: v.str("description").unwrap_or_default(),
        },
    )
    .await?;
    s.committed(w).await?;
    Ok(reply(
        StatusCode::CREATED,
        json!({ "message": "created", "entry_uuid": entry, "ip": ip, "cidr_prefix": prefix }),
    ))
}

async fn entry_list(Item(s, acct, uuid): Item, page: Query<Page>) -> ApiResult {
    let paging = Page::check(page)?;
    let mut r = s.store.read().await?;
    owned_acl(&mut r, &acct, &uuid).await?;
    drop(r);
    let path = format!("{}{uuid}/{}", ACLS.path, ENTRIES.path);
    ENTRIES
        .list_under(&s, &acct, &uuid, &path, &paging, entry_object)
        .await
}

/// Entry `entry` of IP ACL `acl`, or 404 when account `acct` does not own
/// the IP ACL or it has no such entry.
async fn entry_row(
    c: &mut impl Conn,
    acct: &str,
    acl: &str,
    entry: &str,
) -> Result<EntryRow, ApiError> {
    owned_acl(c, acct, acl).await?;
    ENTRIES.row(c, acl, entry).await
}

async fn entry_get(
    Scope(s, acct): Scope,
    Path((_, uuid, entry)): Path<(String, String, String)>,
) -> ApiResult {
    let mut r = s.store.read().await?;
    let row = entry_row(&mut r, &acct, &uuid, &entry).await?;
    Ok(reply(StatusCode::OK, entry_object(&row)))
}

async fn entry_update(
    Scope(s, acct): Scope,
    Path((_, uuid, entry)): Path<(String, String, String)>,
    Fields(body): Fields,
) -> ApiResult {
    let v = validate(&body, ENTRY_UPDATE)?;
    let mut w = s.store.write().await?;
    let row = entry_row(&mut w, &acct, &uuid, &entry).await?;
    let ip_given = v.str("ip");
    // A new address without a prefix takes its family's full length.
    let prefix = v.int("cidr_prefix").or(if ip_given.is_some() {
        None
    } else {
        Some(row.cidr_prefix)
    });
    let (ip, prefix) = network(ip_given.unwrap_or(&row.ip), prefix)?;
    let description = v.str("description").unwrap_or(&row.description);
    acls::update_entry(
        &mut w,
        &entry,
        &EntryChange {
            ip: &ip,
            cidr_prefix: prefix,
            description,
        },
    )
    .await?;
    s.committed(w).await?;
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({ "message": "changed", "ip": ip, "cidr_prefix": prefix }),
    ))
}

async fn entry_delete(
    Scope(s, acct): Scope,
    Path((_, uuid, entry)): Path<(String, String, String)>,
) -> ApiResult {
    let mut w = s.store.write().await?;
    entry_row(&mut w, &acct, &uuid, &entry).await?;
    acls::delete_entry(&mut w, &entry).await?;
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
