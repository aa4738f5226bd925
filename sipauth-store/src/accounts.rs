//! `accounts`: the API's tenants and their auth tokens.
#![forbid(unsafe_code)]

use sqlx::Row as _;

use super::{Store, StoreError, WriteTx, now};

/// An account to insert.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    pub auth_id: &'a str,
    pub auth_token: &'a str,
    pub name: &'a str,
}

/// Whether account `auth_id` exists.
pub async fn exists(w: &mut WriteTx, auth_id: &str) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT 1 FROM accounts WHERE auth_id = $1")
        .bind(auth_id)
        .fetch_optional(&mut *w.tx)
        .await?;
    Ok(row.is_some())
}

/// Inserts an account, created now.
pub async fn insert(w: &mut WriteTx, a: &NewAccount<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO accounts (auth_id, auth_token, name, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(a.auth_id)
    .bind(a.auth_token)
    .bind(a.name)
    .bind(now())
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// The auth token of account `auth_id`, `None` when there is no such
/// account.
pub async fn token(store: &Store, auth_id: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT auth_token FROM accounts WHERE auth_id = $1")
        .bind(auth_id)
        .fetch_optional(store.pool())
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    #[tokio::test]
    async fn inserted_accounts_have_their_token() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        assert_eq!(store.version().await.unwrap(), 1);
        assert_eq!(
            token(&store, "MA1").await.unwrap().as_deref(),
            Some("t-MA1")
        );
        assert_eq!(token(&store, "MA2").await.unwrap(), None);
        let mut w = store.write().await.unwrap();
        assert!(exists(&mut w, "MA1").await.unwrap());
        assert!(!exists(&mut w, "MA2").await.unwrap());
        // The same id again breaks the primary key: the write fails and,
        // dropped, leaves the store as it was.
        let again = NewAccount {
            auth_id: "MA1",
            auth_token: "other",
            name: "n",
        };
        assert!(matches!(
            insert(&mut w, &again).await,
            Err(StoreError::Db(_))
        ));
        drop(w);
        assert_eq!(store.version().await.unwrap(), 1);
        assert_eq!(
            token(&store, "MA1").await.unwrap().as_deref(),
            Some("t-MA1")
        );
    }
}
