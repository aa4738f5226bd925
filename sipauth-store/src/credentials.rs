//! `credentials`: digest usernames of an account with their HA1 values
//! (applications with a credential check take callers by them).
#![forbid(unsafe_code)]

use super::{Ha1, StoreError, Table, WriteTx, now};

/// Read by account; the key is `uuid`.
pub const TABLE: Table<CredentialRow> = Table::new("credentials", "uuid", "account");

row! {
    /// A credential as the API shows it (never its HA1 values).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CredentialRow {
        pub uuid: String,
        pub username: String,
        pub created_at: i64,
        pub updated_at: i64,
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

#[cfg(test)]
mod tests {
    use super::super::testing::ha1;
    use super::super::{Store, snapshot, testing};
    use super::*;

    async fn add(store: &Store, uuid: &str, acct: &str, username: &str) {
        let mut w = store.write().await.unwrap();
        insert(
            &mut w,
            &NewCredential {
                uuid,
                account: acct,
                username,
                ha1: &ha1(username),
            },
        )
        .await
        .unwrap();
        w.commit().await.unwrap();
    }

    #[tokio::test]
    async fn insert_list_get_rotate_delete() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        testing::account(&store, "MA2").await;
        for (i, name) in ["alice", "bob", "carol"].iter().enumerate() {
            add(&store, &format!("c{i}"), "MA1", name).await;
        }
        add(&store, "d0", "MA2", "alice").await;

        let mut w = store.write().await.unwrap();
        assert_eq!(TABLE.count(&mut w, "MA1").await.unwrap(), 3);
        assert_eq!(TABLE.count(&mut w, "MA2").await.unwrap(), 1);
        assert!(username_taken(&mut w, "MA1", "bob").await.unwrap());
        assert!(!username_taken(&mut w, "MA2", "bob").await.unwrap());
        assert!(TABLE.exists(&mut w, "MA1", "c1").await.unwrap());
        assert!(
            !TABLE.exists(&mut w, "MA2", "c1").await.unwrap(),
            "another's"
        );
        drop(w);

        // Oldest first, then by key.
        let page = TABLE.list(&store, "MA1", 2, 1).await.unwrap();
        assert_eq!(page.total, 3);
        let names: Vec<_> = page.rows.iter().map(|r| r.username.as_str()).collect();
        assert_eq!(names, ["bob", "carol"]);
        assert_eq!(TABLE.list(&store, "MA3", 20, 0).await.unwrap().total, 0);

        let mut r = store.read().await.unwrap();
        let row = TABLE.get(&mut r, "MA1", "c0").await.unwrap().unwrap();
        assert_eq!((row.uuid.as_str(), row.username.as_str()), ("c0", "alice"));
        assert_eq!(row.created_at, row.updated_at);
        assert_eq!(TABLE.get(&mut r, "MA2", "c0").await.unwrap(), None);
        drop(r);

        let mut w = store.write().await.unwrap();
        set_ha1(&mut w, "MA1", "c0", &ha1("new")).await.unwrap();
        // Another account's uuid changes nothing.
        set_ha1(&mut w, "MA2", "c1", &ha1("other")).await.unwrap();
        delete(&mut w, "MA1", "c2").await.unwrap();
        delete(&mut w, "MA2", "c1").await.unwrap();
        let v = w.commit().await.unwrap();

        let t = snapshot::read_all(&store).await.unwrap();
        assert_eq!(t.version, v);
        let held: Vec<_> = t
            .credentials
            .iter()
            .map(|c| (c.uuid.as_str(), c.account.as_str(), c.ha1.md5.as_str()))
            .collect();
        assert_eq!(
            held,
            [
                ("c0", "MA1", "md5-new"),
                ("c1", "MA1", "md5-bob"),
                ("d0", "MA2", "md5-alice"),
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_insert_leaves_the_store_as_it_was() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        add(&store, "c0", "MA1", "alice").await;
        let before = snapshot::read_all(&store).await.unwrap();
        let mut w = store.write().await.unwrap();
        insert(
            &mut w,
            &NewCredential {
                uuid: "c1",
                account: "MA1",
                username: "bob",
                ha1: &ha1("bob"),
            },
        )
        .await
        .unwrap();
        // (account, username) is unique.
        let dup = NewCredential {
            uuid: "c2",
            account: "MA1",
            username: "alice",
            ha1: &ha1("x"),
        };
        assert!(matches!(insert(&mut w, &dup).await, Err(StoreError::Db(_))));
        drop(w);
        assert_eq!(snapshot::read_all(&store).await.unwrap(), before);
        // No such account: the foreign key refuses it.
        let mut w = store.write().await.unwrap();
        let orphan = NewCredential {
            uuid: "c3",
            account: "MA9",
            username: "dave",
            ha1: &ha1("dave"),
        };
        assert!(insert(&mut w, &orphan).await.is_err());
    }
}
