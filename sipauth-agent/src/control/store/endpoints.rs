//! `endpoints`: SIP endpoints that REGISTER with the edge, each with a
//! globally unique username and its HA1 values.
#![forbid(unsafe_code)]

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Conn, FromRow, Ha1, Page, Store, StoreError, WriteTx, now};

const TABLE: &str = "endpoints";
const KEY: &str = "endpoint_id";
/// The columns the API shows, the key first.
const COLUMNS: &str = "endpoint_id, username, alias, app_id, created_at, updated_at";

/// An endpoint as the API shows it (never its HA1 values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    pub endpoint_id: String,
    pub username: String,
    pub alias: String,
    pub app_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FromRow for EndpointRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            endpoint_id: r.try_get("endpoint_id")?,
            username: r.try_get("username")?,
            alias: r.try_get("alias")?,
            app_id: r.try_get("app_id")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// An endpoint to insert.
#[derive(Debug, Clone)]
pub struct NewEndpoint<'a> {
    pub endpoint_id: &'a str,
    pub account: &'a str,
    pub username: &'a str,
    pub alias: &'a str,
    pub app_id: Option<&'a str>,
    pub ha1: &'a Ha1,
}

/// Inserts an endpoint, created now. A username already taken (by any
/// account) is a database error.
pub async fn insert(w: &mut WriteTx, e: &NewEndpoint<'_>) -> Result<(), StoreError> {
    let t = now();
    sqlx::query(
        "INSERT INTO endpoints (endpoint_id, account, username, alias, app_id, ha1_md5, ha1_sha256, ha1_sha512_256, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.endpoint_id)
    .bind(e.account)
    .bind(e.username)
    .bind(e.alias)
    .bind(e.app_id)
    .bind(&e.ha1.md5)
    .bind(&e.ha1.sha256)
    .bind(&e.ha1.sha512_256)
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// A page of `acct`'s endpoints, oldest first.
pub async fn list(
    store: &Store,
    acct: &str,
    limit: i64,
    offset: i64,
) -> Result<Page<EndpointRow>, StoreError> {
    super::page(store, TABLE, COLUMNS, "account", acct, limit, offset).await
}

/// Endpoint `id` if account `acct` owns it.
pub async fn get(
    c: &mut impl Conn,
    acct: &str,
    id: &str,
) -> Result<Option<EndpointRow>, StoreError> {
    super::owned(c.conn(), TABLE, KEY, COLUMNS, acct, id).await
}

/// Sets endpoint `id`'s alias and application (`None` detaches it).
pub async fn update(
    w: &mut WriteTx,
    id: &str,
    alias: &str,
    app_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE endpoints SET alias = $1, app_id = $2, updated_at = $3 WHERE endpoint_id = $4",
    )
    .bind(alias)
    .bind(app_id)
    .bind(now())
    .bind(id)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// Replaces endpoint `id`'s HA1 values (a new password).
pub async fn set_ha1(w: &mut WriteTx, id: &str, ha1: &Ha1) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE endpoints SET ha1_md5 = $1, ha1_sha256 = $2, ha1_sha512_256 = $3 WHERE endpoint_id = $4",
    )
    .bind(&ha1.md5)
    .bind(&ha1.sha256)
    .bind(&ha1.sha512_256)
    .bind(id)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// Deletes endpoint `id`.
pub async fn delete(w: &mut WriteTx, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM endpoints WHERE endpoint_id = $1")
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
    Ok(())
}
