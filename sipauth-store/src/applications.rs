//! `applications`: where calls to an application go, and who may place
//! them (`sip_auth_type` with its credential and IP ACL).
#![forbid(unsafe_code)]

use sqlx::Any;
use sqlx::Row as _;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;

use super::{FromRow, StoreError, Table, WriteTx, now};

/// Read by account; the key is `app_id`.
pub const TABLE: Table<ApplicationRow> = Table::new("applications", "app_id", "account");

row! {
    /// What an application is set to: what a create stores and an update
    /// replaces.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Settings {
        pub app_name: String,
        pub answer_url: String,
        pub answer_method: String,
        pub hangup_url: Option<String>,
        pub hangup_method: String,
        /// As the API names it (`""`, `ip_acl`, `credential`, ...).
        pub sip_auth_type: String,
        pub credential_uuid: Option<String>,
        pub ip_acl_uuid: Option<String>,
        /// Comma-separated digest algorithms offered to callers; empty:
        /// the edge's default.
        pub challenge_algorithms: String,
    }
}

/// An application as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationRow {
    pub app_id: String,
    pub settings: Settings,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FromRow for ApplicationRow {
    const COLUMNS: &'static [&'static str] = &[
        "app_id",
        "app_name",
        "answer_url",
        "answer_method",
        "hangup_url",
        "hangup_method",
        "sip_auth_type",
        "credential_uuid",
        "ip_acl_uuid",
        "challenge_algorithms",
        "created_at",
        "updated_at",
    ];

    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            app_id: r.try_get("app_id")?,
            settings: Settings::from_row(r)?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// Inserts application `app_id` of account `acct`, created now.
pub async fn insert(
    w: &mut WriteTx,
    app_id: &str,
    acct: &str,
    s: &Settings,
) -> Result<(), StoreError> {
    let t = now();
    bind_settings(
        sqlx::query(
            "INSERT INTO applications (app_name, answer_url, answer_method, hangup_url, hangup_method, \
             sip_auth_type, credential_uuid, ip_acl_uuid, challenge_algorithms, app_id, account, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        ),
        s,
    )
    .bind(app_id)
    .bind(acct)
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// Replaces the settings of application `app_id`.
pub async fn update(w: &mut WriteTx, app_id: &str, s: &Settings) -> Result<(), StoreError> {
    bind_settings(
        sqlx::query(
            "UPDATE applications SET app_name = $1, answer_url = $2, answer_method = $3, hangup_url = $4, \
             hangup_method = $5, sip_auth_type = $6, credential_uuid = $7, ip_acl_uuid = $8, \
             challenge_algorithms = $9, updated_at = $10 WHERE app_id = $11",
        ),
        s,
    )
    .bind(now())
    .bind(app_id)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// `q` with `s` bound as its first nine values, in the order of the
/// fields of [`Settings`].
fn bind_settings<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    s: &'q Settings,
) -> Query<'q, Any, AnyArguments<'q>> {
    q.bind(&s.app_name)
        .bind(&s.answer_url)
        .bind(&s.answer_method)
        .bind(&s.hangup_url)
        .bind(&s.hangup_method)
        .bind(&s.sip_auth_type)
        .bind(&s.credential_uuid)
        .bind(&s.ip_acl_uuid)
        .bind(&s.challenge_algorithms)
}

/// Deletes application `app_id`; its endpoints stay, detached.
pub async fn delete(w: &mut WriteTx, app_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE endpoints SET app_id = NULL WHERE app_id = $1")
        .bind(app_id)
        .execute(&mut *w.tx)
        .await?;
    sqlx::query("DELETE FROM applications WHERE app_id = $1")
        .bind(app_id)
        .execute(&mut *w.tx)
        .await?;
    Ok(())
}

/// The applications (ids, in order) that check callers with credential
/// `uuid`.
pub async fn using_credential(w: &mut WriteTx, uuid: &str) -> Result<Vec<String>, StoreError> {
    using(w, "credential_uuid", uuid).await
}

/// The applications (ids, in order) that check callers with IP ACL `uuid`.
pub async fn using_acl(w: &mut WriteTx, uuid: &str) -> Result<Vec<String>, StoreError> {
    using(w, "ip_acl_uuid", uuid).await
}

async fn using(w: &mut WriteTx, column: &str, id: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT app_id FROM applications WHERE {column} = $1 ORDER BY app_id"
    ))
    .bind(id)
    .fetch_all(&mut *w.tx)
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::super::{Ha1, acls, credentials, endpoints, snapshot, testing};
    use super::*;

    fn settings(name: &str) -> Settings {
        Settings {
            app_name: name.to_owned(),
            answer_url: "http://127.0.0.1/answer".to_owned(),
            answer_method: "POST".to_owned(),
            hangup_url: None,
            hangup_method: "GET".to_owned(),
            sip_auth_type: String::new(),
            credential_uuid: None,
            ip_acl_uuid: None,
            challenge_algorithms: String::new(),
        }
    }

    #[tokio::test]
    async fn applications_round_trip_and_know_who_uses_what() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        let ha1 = Ha1 {
            md5: "m".into(),
            sha256: "s".into(),
            sha512_256: "t".into(),
        };
        let mut w = store.write().await.unwrap();
        credentials::insert(
            &mut w,
            &credentials::NewCredential {
                uuid: "c1",
                account: "MA1",
                username: "alice",
                ha1: &ha1,
            },
        )
        .await
        .unwrap();
        acls::insert(
            &mut w,
            &acls::NewAcl {
                uuid: "a1",
                account: "MA1",
                name: "office",
            },
        )
        .await
        .unwrap();
        let both = Settings {
            sip_auth_type: "ip_acl_and_credential".to_owned(),
            credential_uuid: Some("c1".to_owned()),
            ip_acl_uuid: Some("a1".to_owned()),
            challenge_algorithms: "SHA-256,MD5".to_owned(),
            hangup_url: Some("http://127.0.0.1/hangup".to_owned()),
            ..settings("both")
        };
        insert(&mut w, "200", "MA1", &both).await.unwrap();
        insert(&mut w, "100", "MA1", &settings("plain"))
            .await
            .unwrap();
        let mut acl_only = settings("acl");
        acl_only.sip_auth_type = "ip_acl".to_owned();
        acl_only.ip_acl_uuid = Some("a1".to_owned());
        insert(&mut w, "150", "MA1", &acl_only).await.unwrap();
        endpoints::insert(
            &mut w,
            &endpoints::NewEndpoint {
                endpoint_id: "e1",
                account: "MA1",
                username: "phone1",
                alias: "desk",
                app_id: Some("200"),
                ha1: &ha1,
            },
        )
        .await
        .unwrap();
        assert_eq!(using_credential(&mut w, "c1").await.unwrap(), ["200"]);
        assert_eq!(using_acl(&mut w, "a1").await.unwrap(), ["150", "200"]);
        assert!(using_acl(&mut w, "a9").await.unwrap().is_empty());
        assert!(TABLE.exists(&mut w, "MA1", "150").await.unwrap());
        assert!(!TABLE.exists(&mut w, "MA2", "150").await.unwrap());
        w.commit().await.unwrap();

        let mut r = store.read().await.unwrap();
        let row = TABLE.get(&mut r, "MA1", "200").await.unwrap().unwrap();
        assert_eq!(row.settings, both);
        assert_eq!(TABLE.get(&mut r, "MA2", "200").await.unwrap(), None);
        drop(r);
        let page = TABLE.list(&store, "MA1", 2, 0).await.unwrap();
        assert_eq!(page.total, 3);
        assert_eq!(page.rows.len(), 2);

        let mut w = store.write().await.unwrap();
        let changed = Settings {
            app_name: "renamed".to_owned(),
            ..settings("x")
        };
        update(&mut w, "200", &changed).await.unwrap();
        assert!(using_credential(&mut w, "c1").await.unwrap().is_empty());
        delete(&mut w, "200").await.unwrap();
        w.commit().await.unwrap();

        let t = snapshot::read_all(&store).await.unwrap();
        let apps: Vec<_> = t.applications.iter().map(|a| a.app_id.as_str()).collect();
        assert_eq!(apps, ["100", "150"]);
        assert_eq!(
            t.applications[1].settings.ip_acl_uuid.as_deref(),
            Some("a1")
        );
        // Its endpoint stays, detached.
        assert_eq!(t.endpoints.len(), 1);
        assert_eq!(t.endpoints[0].app_id, None);
    }

    #[tokio::test]
    async fn an_application_naming_no_credential_is_refused_and_nothing_stays() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        let mut w = store.write().await.unwrap();
        insert(&mut w, "100", "MA1", &settings("ok")).await.unwrap();
        let bad = Settings {
            sip_auth_type: "credential".to_owned(),
            credential_uuid: Some("missing".to_owned()),
            ..settings("bad")
        };
        assert!(matches!(
            insert(&mut w, "101", "MA1", &bad).await,
            Err(StoreError::Db(_))
        ));
        drop(w);
        assert_eq!(store.version().await.unwrap(), 1);
        assert_eq!(TABLE.list(&store, "MA1", 20, 0).await.unwrap().total, 0);
    }
}
