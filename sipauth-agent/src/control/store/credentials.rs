//! `credentials`: digest usernames of an account with their HA1 values
//! (applications with a credential check take callers by them).
#![forbid(unsafe_code)]

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Conn, FromRow, Ha1, Page, Store, StoreError, WriteTx, now};

const TABLE: &str = "credentials";
const KEY: &str = "uuid";
/// The columns the API shows, the key first.
const COLUMNS: &str = "uuid, username, created_at, updated_at";

/// A credential as the API shows it (never its HA1 values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    pub uuid: String,
    pub username: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FromRow for CredentialRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            uuid: r.try_get("uuid")?,
            username: r.try_get("username")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// A credential to insert.
#[derive(Debug, Clone)]
pub struct NewCredential<'a> {
    pub uuid: &'a str,
    pub account: &'a str,
    pub username: &'a str,
    pub ha1: &'a Ha1,
}

/// How many credentials account `acct` holds.
pub async fn count(w: &mut WriteTx, acct: &str) -> Result<i64, StoreError> {
    super::count(&mut w.tx, TABLE, "account", acct).await
}

/// Whether account `acct` has a credential named `username`.
pub async fn username_taken(
    w: &mut WriteTx,
    acct: &str,
    username: &str,
) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT 1 FROM credentials WHERE account = $1 AND username = $2")
        .bind(acct)
        .bind(username)
        .fetch_optional(&mut *w.tx)
        .await?;
    Ok(row.is_some())
}

/// Whether account `acct` owns credential `uuid`.
pub async fn exists(c: &mut impl Conn, acct: &str, uuid: &str) -> Result<bool, StoreError> {
    super::exists(c.conn(), TABLE, KEY, acct, uuid).await
}

/// Inserts a credential, created now.
pub async fn insert(w: &mut WriteTx, c: &NewCredential<'_>) -> Result<(), StoreError> {
    let t = now();
    sqlx::query(
        "INSERT INTO credentials (uuid, account, username, ha1_md5, ha1_sha256, ha1_sha512_256, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(c.uuid)
    .bind(c.account)
    .bind(c.username)
    .bind(&c.ha1.md5)
    .bind(&c.ha1.sha256)
    .bind(&c.ha1.sha512_256)
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// A page of `acct`'s credentials, oldest first.
pub async fn list(
    store: &Store,
    acct: &str,
    limit: i64,
    offset: i64,
) -> Result<Page<CredentialRow>, StoreError> {
    super::page(store, TABLE, COLUMNS, "account", acct, limit, offset).await
}

/// Credential `uuid` if account `acct` owns it.
pub async fn get(
    c: &mut impl Conn,
    acct: &str,
    uuid: &str,
) -> Result<Option<CredentialRow>, StoreError> {
    super::owned(c.conn(), TABLE, KEY, COLUMNS, acct, uuid).await
}

/// Replaces the HA1 values of `acct`'s credential `uuid` (a new password).
pub async fn set_ha1(w: &mut WriteTx, acct: &str, uuid: &str, ha1: &Ha1) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE credentials SET ha1_md5 = $1, ha1_sha256 = $2, ha1_sha512_256 = $3, updated_at = $4 \
         WHERE account = $5 AND uuid = $6",
    )
    .bind(&ha1.md5)
    .bind(&ha1.sha256)
    .bind(&ha1.sha512_256)
    .bind(now())
    .bind(acct)
    .bind(uuid)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// Deletes `acct`'s credential `uuid`.
pub async fn delete(w: &mut WriteTx, acct: &str, uuid: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM credentials WHERE account = $1 AND uuid = $2")
        .bind(acct)
        .bind(uuid)
        .execute(&mut *w.tx)
        .await?;
    Ok(())
}
