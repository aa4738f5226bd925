//! `endpoints`: SIP endpoints that REGISTER with the edge, each with a
//! globally unique username and its HA1 values.
#![forbid(unsafe_code)]

use super::{Ha1, StoreError, Table, WriteTx, now};

/// Read by account; the key is `endpoint_id`.
pub const TABLE: Table<EndpointRow> = Table::new("endpoints", "endpoint_id", "account");

row! {
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

#[cfg(test)]
mod tests {
    use super::super::testing::ha1;
    use super::super::{applications, snapshot, testing};
    use super::*;

    #[tokio::test]
    async fn endpoints_round_trip() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        let mut w = store.write().await.unwrap();
        let app = applications::Settings {
            app_name: "a".into(),
            answer_url: "http://127.0.0.1/a".into(),
            answer_method: "POST".into(),
            hangup_url: None,
            hangup_method: "POST".into(),
            sip_auth_type: String::new(),
            credential_uuid: None,
            ip_acl_uuid: None,
            challenge_algorithms: String::new(),
        };
        applications::insert(&mut w, "100", "MA1", &app)
            .await
            .unwrap();
        for (id, user, app_id) in [("e1", "desk1", Some("100")), ("e2", "desk2", None)] {
            insert(
                &mut w,
                &NewEndpoint {
                    endpoint_id: id,
                    account: "MA1",
                    username: user,
                    alias: "alias",
                    app_id,
                    ha1: &ha1(user),
                },
            )
            .await
            .unwrap();
        }
        w.commit().await.unwrap();

        let mut r = store.read().await.unwrap();
        let e1 = TABLE.get(&mut r, "MA1", "e1").await.unwrap().unwrap();
        assert_eq!(
            (
                e1.username.as_str(),
                e1.alias.as_str(),
                e1.app_id.as_deref()
            ),
            ("desk1", "alias", Some("100"))
        );
        assert_eq!(TABLE.get(&mut r, "MA2", "e1").await.unwrap(), None);
        drop(r);
        let page = TABLE.list(&store, "MA1", 20, 1).await.unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.rows[0].endpoint_id, "e2");

        let mut w = store.write().await.unwrap();
        update(&mut w, "e1", "kitchen", None).await.unwrap();
        update(&mut w, "e2", "hall", Some("100")).await.unwrap();
        set_ha1(&mut w, "e2", &ha1("new")).await.unwrap();
        w.commit().await.unwrap();
        let t = snapshot::read_all(&store).await.unwrap();
        let held: Vec<_> = t
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.endpoint_id.as_str(),
                    e.app_id.as_deref(),
                    e.ha1.md5.as_str(),
                )
            })
            .collect();
        assert_eq!(
            held,
            [("e1", None, "md5-desk1"), ("e2", Some("100"), "md5-new")]
        );
        let mut r = store.read().await.unwrap();
        assert_eq!(
            TABLE.get(&mut r, "MA1", "e1").await.unwrap().unwrap().alias,
            "kitchen"
        );
        drop(r);

        let mut w = store.write().await.unwrap();
        delete(&mut w, "e1").await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(TABLE.list(&store, "MA1", 20, 0).await.unwrap().total, 1);
    }

    #[tokio::test]
    async fn a_taken_username_is_refused_and_nothing_stays() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        testing::account(&store, "MA2").await;
        let x = ha1("x");
        let new = |id, acct| NewEndpoint {
            endpoint_id: id,
            account: acct,
            username: "shared",
            alias: "a",
            app_id: None,
            ha1: &x,
        };
        let mut w = store.write().await.unwrap();
        insert(&mut w, &new("e1", "MA1")).await.unwrap();
        w.commit().await.unwrap();
        let mut w = store.write().await.unwrap();
        update(&mut w, "e1", "changed", None).await.unwrap();
        // Usernames are unique across accounts.
        assert!(matches!(
            insert(&mut w, &new("e2", "MA2")).await,
            Err(StoreError::Db(_))
        ));
        drop(w);
        let mut r = store.read().await.unwrap();
        assert_eq!(
            TABLE.get(&mut r, "MA1", "e1").await.unwrap().unwrap().alias,
            "a"
        );
        assert_eq!(TABLE.get(&mut r, "MA2", "e2").await.unwrap(), None);
    }
}
