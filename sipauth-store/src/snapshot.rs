//! What a snapshot is built from: every table the edges enforce, read in
//! one transaction so that the rows and the version agree.
#![forbid(unsafe_code)]

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::applications::Settings;
use super::{Backend, FromRow, Ha1, Store, StoreError, all};

row! {
    /// An account and its token.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Account {
        pub auth_id: String,
        pub auth_token: String,
    }
}

/// An application, as the edges route and check calls by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub app_id: String,
    pub account: String,
    pub settings: Settings,
}

/// A credential with its HA1 values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub uuid: String,
    pub account: String,
    pub username: String,
    pub ha1: Ha1,
}

row! {
    /// An IP ACL's owner.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Acl {
        pub uuid: String,
        pub account: String,
    }
}

row! {
    /// An entry of IP ACL `acl`: a network address and its prefix length.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AclEntry {
        pub acl: String,
        pub ip: String,
        pub cidr_prefix: i64,
    }
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

impl FromRow for Ha1 {
    const COLUMNS: &'static [&'static str] = &["ha1_md5", "ha1_sha256", "ha1_sha512_256"];

    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            md5: r.try_get("ha1_md5")?,
            sha256: r.try_get("ha1_sha256")?,
            sha512_256: r.try_get("ha1_sha512_256")?,
        })
    }
}

impl FromRow for Application {
    const COLUMNS: &'static [&'static str] = &[
        "app_id",
        "account",
        "app_name",
        "answer_url",
        "answer_method",
        "hangup_url",
        "hangup_method",
        "sip_auth_type",
        "credential_uuid",
        "ip_acl_uuid",
        "challenge_algorithms",
    ];

    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            app_id: r.try_get("app_id")?,
            account: r.try_get("account")?,
            settings: Settings::from_row(r)?,
        })
    }
}

impl FromRow for Credential {
    const COLUMNS: &'static [&'static str] = &[
        "uuid",
        "account",
        "username",
        "ha1_md5",
        "ha1_sha256",
        "ha1_sha512_256",
    ];

    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            uuid: r.try_get("uuid")?,
            account: r.try_get("account")?,
            username: r.try_get("username")?,
            ha1: Ha1::from_row(r)?,
        })
    }
}

impl FromRow for Endpoint {
    const COLUMNS: &'static [&'static str] = &[
        "endpoint_id",
        "account",
        "username",
        "app_id",
        "ha1_md5",
        "ha1_sha256",
        "ha1_sha512_256",
    ];

    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            endpoint_id: r.try_get("endpoint_id")?,
            account: r.try_get("account")?,
            username: r.try_get("username")?,
            app_id: r.try_get("app_id")?,
            ha1: Ha1::from_row(r)?,
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
    let tables = Tables {
        version: u64::try_from(version).unwrap_or(0),
        accounts: all(&mut tx, "accounts", "auth_id").await?,
        applications: all(&mut tx, "applications", "app_id").await?,
        credentials: all(&mut tx, "credentials", "uuid").await?,
        acls: all(&mut tx, "ip_acls", "uuid").await?,
        entries: all(&mut tx, "ip_acl_entries", "acl, uuid").await?,
        endpoints: all(&mut tx, "endpoints", "endpoint_id").await?,
    };
    tx.commit().await?;
    Ok(tables)
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
