//! What a snapshot is built from: every table the edges enforce, read in
//! one transaction so that the rows and the version agree.
#![forbid(unsafe_code)]

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Backend, FromRow, Ha1, Store, StoreError, from_rows};

/// An account and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub auth_id: String,
    pub auth_token: String,
}

/// An application, as the edges route and check calls by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub app_id: String,
    pub account: String,
    pub answer_url: String,
    pub answer_method: String,
    pub hangup_url: Option<String>,
    pub hangup_method: String,
    pub sip_auth_type: String,
    pub credential_uuid: Option<String>,
    pub ip_acl_uuid: Option<String>,
}

/// A credential with its HA1 values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub uuid: String,
    pub account: String,
    pub username: String,
    pub ha1: Ha1,
}

/// An IP ACL's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub uuid: String,
    pub account: String,
}

/// An entry of IP ACL `acl`: a network address and its prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub acl: String,
    pub ip: String,
    pub cidr_prefix: i64,
}

/// An endpoint with its HA1 values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub endpoint_id: String,
    pub account: String,
    pub username: String,
    pub app_id: Option<String>,
    pub ha1: Ha1,
}

/// Every table a snapshot holds at `version`, each ordered by its key
/// (entries by IP ACL, then their own uuid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub version: u64,
    pub accounts: Vec<Account>,
    pub applications: Vec<Application>,
    pub credentials: Vec<Credential>,
    pub acls: Vec<Acl>,
    pub entries: Vec<AclEntry>,
    pub endpoints: Vec<Endpoint>,
}

fn ha1(r: &AnyRow) -> Result<Ha1, sqlx::Error> {
    Ok(Ha1 {
        md5: r.try_get("ha1_md5")?,
        sha256: r.try_get("ha1_sha256")?,
        sha512_256: r.try_get("ha1_sha512_256")?,
    })
}

impl FromRow for Account {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            auth_id: r.try_get("auth_id")?,
            auth_token: r.try_get("auth_token")?,
        })
    }
}

impl FromRow for Application {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            app_id: r.try_get("app_id")?,
            account: r.try_get("account")?,
            answer_url: r.try_get("answer_url")?,
            answer_method: r.try_get("answer_method")?,
            hangup_url: r.try_get("hangup_url")?,
            hangup_method: r.try_get("hangup_method")?,
            sip_auth_type: r.try_get("sip_auth_type")?,
            credential_uuid: r.try_get("credential_uuid")?,
            ip_acl_uuid: r.try_get("ip_acl_uuid")?,
        })
    }
}

impl FromRow for Credential {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            uuid: r.try_get("uuid")?,
            account: r.try_get("account")?,
            username: r.try_get("username")?,
            ha1: ha1(r)?,
        })
    }
}

impl FromRow for Acl {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            uuid: r.try_get("uuid")?,
            account: r.try_get("account")?,
        })
    }
}

impl FromRow for AclEntry {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            acl: r.try_get("acl")?,
            ip: r.try_get("ip")?,
            cidr_prefix: r.try_get("cidr_prefix")?,
        })
    }
}

impl FromRow for Endpoint {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            endpoint_id: r.try_get("endpoint_id")?,
            account: r.try_get("account")?,
            username: r.try_get("username")?,
            app_id: r.try_get("app_id")?,
            ha1: ha1(r)?,
        })
    }
}

/// Reads every table in one read transaction (repeatable read on
/// PostgreSQL), so the rows and the version agree.
pub async fn read_all(store: &Store) -> Result<Tables, StoreError> {
    let mut tx = store.pool().begin().await?;
    if store.backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
    }
    let version: i64 = sqlx::query("SELECT version FROM meta WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let accounts = sqlx::query("SELECT auth_id, auth_token FROM accounts ORDER BY auth_id")
        .fetch_all(&mut *tx)
        .await?;
    let applications = sqlx::query(
        "SELECT app_id, account, answer_url, answer_method, hangup_url, hangup_method, \
         sip_auth_type, credential_uuid, ip_acl_uuid FROM applications ORDER BY app_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let credentials = sqlx::query(
        "SELECT uuid, account, username, ha1_md5, ha1_sha256, ha1_sha512_256 \
         FROM credentials ORDER BY uuid",
    )
    .fetch_all(&mut *tx)
    .await?;
    let acls = sqlx::query("SELECT uuid, account FROM ip_acls ORDER BY uuid")
        .fetch_all(&mut *tx)
        .await?;
    let entries = sqlx::query("SELECT acl, ip, cidr_prefix FROM ip_acl_entries ORDER BY acl, uuid")
        .fetch_all(&mut *tx)
        .await?;
    let endpoints = sqlx::query(
        "SELECT endpoint_id, account, username, app_id, ha1_md5, ha1_sha256, ha1_sha512_256 \
         FROM endpoints ORDER BY endpoint_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Tables {
        version: u64::try_from(version).unwrap_or(0),
        accounts: from_rows(&accounts)?,
        applications: from_rows(&applications)?,
        credentials: from_rows(&credentials)?,
        acls: from_rows(&acls)?,
        entries: from_rows(&entries)?,
        endpoints: from_rows(&endpoints)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{acls, credentials, testing};
    use super::*;

    #[tokio::test]
    async fn read_all_gives_every_table_by_key_at_its_version() {
        let (_dir, store) = testing::open().await;
        let empty = read_all(&store).await.unwrap();
        assert_eq!(empty.version, 0);
        assert!(empty.accounts.is_empty() && empty.entries.is_empty());
        testing::account(&store, "MA2").await;
        testing::account(&store, "MA1").await;
        let mut w = store.write().await.unwrap();
        for (uuid, user) in [("c2", "bob"), ("c1", "alice")] {
            let ha1 = Ha1 {
                md5: format!("m-{user}"),
                sha256: format!("s-{user}"),
                sha512_256: format!("t-{user}"),
            };
            credentials::insert(
                &mut w,
                &credentials::NewCredential {
                    uuid,
                    account: "MA1",
                    username: user,
                    ha1: &ha1,
                },
            )
            .await
            .unwrap();
        }
        for acl in ["a2", "a1"] {
            let new = acls::NewAcl {
                uuid: acl,
                account: "MA2",
                name: "n",
            };
            acls::insert(&mut w, &new).await.unwrap();
        }
        for (uuid, acl, ip) in [
            ("e3", "a2", "192.0.2.3"),
            ("e2", "a1", "192.0.2.2"),
            ("e1", "a2", "192.0.2.1"),
        ] {
            let new = acls::NewEntry {
                uuid,
                acl,
                ip,
                cidr_prefix: 32,
                description: "",
            };
            acls::insert_entry(&mut w, &new).await.unwrap();
        }
        let v = w.commit().await.unwrap();
        assert_eq!(v, 3);

        let t = read_all(&store).await.unwrap();
        assert_eq!(t.version, 3);
        assert_eq!(
            t.accounts,
            [
                Account {
                    auth_id: "MA1".into(),
                    auth_token: "t-MA1".into()
                },
                Account {
                    auth_id: "MA2".into(),
                    auth_token: "t-MA2".into()
                },
            ]
        );
        assert_eq!(t.credentials[0].uuid, "c1");
        assert_eq!(
            t.credentials[0].ha1,
            Ha1 {
                md5: "m-alice".into(),
                sha256: "s-alice".into(),
                sha512_256: "t-alice".into(),
            }
        );
        let acls: Vec<_> = t.acls.iter().map(|a| a.uuid.as_str()).collect();
        assert_eq!(acls, ["a1", "a2"]);
        let entries: Vec<_> = t
            .entries
            .iter()
            .map(|e| (e.acl.as_str(), e.ip.as_str()))
            .collect();
        assert_eq!(
            entries,
            [
                ("a1", "192.0.2.2"),
                ("a2", "192.0.2.1"),
                ("a2", "192.0.2.3")
            ]
        );
        assert!(t.applications.is_empty() && t.endpoints.is_empty());
    }
}
