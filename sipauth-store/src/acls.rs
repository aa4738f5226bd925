//! `ip_acls` and `ip_acl_entries`: an account's allow-lists of networks,
//! each entry stored as the network address and its prefix length.
#![forbid(unsafe_code)]

use super::{Store, StoreError, Table, WriteTx, now};

/// IP ACLs, read by account; the key is `uuid`.
pub const TABLE: Table<AclRow> = Table::new("ip_acls", "uuid", "account");
/// Entries, read by their IP ACL; the key is `uuid`.
pub const ENTRIES: Table<EntryRow> = Table::new("ip_acl_entries", "uuid", "acl");

row! {
    /// An IP ACL as the API shows it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AclRow {
        pub uuid: String,
        pub name: String,
        pub created_at: i64,
        pub updated_at: i64,
    }
}

row! {
    /// An entry of an IP ACL.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct EntryRow {
        pub uuid: String,
        /// The network address.
        pub ip: String,
        pub cidr_prefix: i64,
        pub description: String,
        pub created_at: i64,
        pub updated_at: i64,
    }
}

/// An IP ACL to insert.
#[derive(Debug, Clone)]
pub struct NewAcl<'a> {
    pub uuid: &'a str,
    pub account: &'a str,
    pub name: &'a str,
}

/// An entry to insert into IP ACL `acl`.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub uuid: &'a str,
    pub acl: &'a str,
    pub ip: &'a str,
    pub cidr_prefix: i64,
    pub description: &'a str,
}

/// What an entry holds after a change.
#[derive(Debug, Clone)]
pub struct EntryChange<'a> {
    pub ip: &'a str,
    pub cidr_prefix: i64,
    pub description: &'a str,
}

// --- lists ---

/// Inserts an IP ACL without entries, created now.
pub async fn insert(w: &mut WriteTx, a: &NewAcl<'_>) -> Result<(), StoreError> {
    let t = now();
    sqlx::query(
        "INSERT INTO ip_acls (uuid, account, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(a.uuid)
    .bind(a.account)
    .bind(a.name)
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// IP ACL `uuid` if account `acct` owns it, with all its entries (oldest
/// first), read in one transaction.
pub async fn get_with_entries(
    store: &Store,
    acct: &str,
    uuid: &str,
) -> Result<Option<(AclRow, Vec<EntryRow>)>, StoreError> {
    let mut tx = store.pool().begin().await?;
    let Some(acl) = TABLE.owned(&mut tx, acct, uuid).await? else {
        return Ok(None);
    };
    let entries = ENTRIES.all_of(&mut tx, uuid).await?;
    tx.commit().await?;
    Ok(Some((acl, entries)))
}

/// Renames IP ACL `uuid`.
pub async fn rename(w: &mut WriteTx, uuid: &str, name: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE ip_acls SET name = $1, updated_at = $2 WHERE uuid = $3")
        .bind(name)
        .bind(now())
        .bind(uuid)
        .execute(&mut *w.tx)
        .await?;
    Ok(())
}

/// Deletes IP ACL `uuid` and its entries.
pub async fn delete(w: &mut WriteTx, uuid: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ip_acl_entries WHERE acl = $1")
        .bind(uuid)
        .execute(&mut *w.tx)
        .await?;
    sqlx::query("DELETE FROM ip_acls WHERE uuid = $1")
        .bind(uuid)
        .execute(&mut *w.tx)
        .await?;
    Ok(())
}

// --- entries ---

/// Inserts an entry, created now; its IP ACL is modified now too.
pub async fn insert_entry(w: &mut WriteTx, e: &NewEntry<'_>) -> Result<(), StoreError> {
    let t = now();
    sqlx::query(
        "INSERT INTO ip_acl_entries (uuid, acl, ip, cidr_prefix, description, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.uuid)
    .bind(e.acl)
    .bind(e.ip)
    .bind(e.cidr_prefix)
    .bind(e.description)
    .bind(t)
    .bind(t)
    .execute(&mut *w.tx)
    .await?;
    sqlx::query("UPDATE ip_acls SET updated_at = $1 WHERE uuid = $2")
        .bind(t)
        .bind(e.acl)
        .execute(&mut *w.tx)
        .await?;
    Ok(())
}

/// Replaces what entry `entry` holds.
pub async fn update_entry(
    w: &mut WriteTx,
    entry: &str,
    e: &EntryChange<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE ip_acl_entries SET ip = $1, cidr_prefix = $2, description = $3, updated_at = $4 WHERE uuid = $5",
    )
    .bind(e.ip)
    .bind(e.cidr_prefix)
    .bind(e.description)
    .bind(now())
    .bind(entry)
    .execute(&mut *w.tx)
    .await?;
    Ok(())
}

/// Deletes entry `entry`.
pub async fn delete_entry(w: &mut WriteTx, entry: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ip_acl_entries WHERE uuid = $1")
        .bind(entry)
        .execute(&mut *w.tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{snapshot, testing};
    use super::*;

    async fn acl(store: &Store, uuid: &str, acct: &str, name: &str) {
        let mut w = store.write().await.unwrap();
        insert(
            &mut w,
            &NewAcl {
                uuid,
                account: acct,
                name,
            },
        )
        .await
        .unwrap();
        w.commit().await.unwrap();
    }

    async fn entry(store: &Store, uuid: &str, acl: &str, ip: &str, prefix: i64) {
        let mut w = store.write().await.unwrap();
        insert_entry(
            &mut w,
            &NewEntry {
                uuid,
                acl,
                ip,
                cidr_prefix: prefix,
                description: "d",
            },
        )
        .await
        .unwrap();
        w.commit().await.unwrap();
    }

    #[tokio::test]
    async fn acls_and_entries_round_trip() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        testing::account(&store, "MA2").await;
        acl(&store, "a1", "MA1", "office").await;
        acl(&store, "a2", "MA1", "lab").await;
        acl(&store, "b1", "MA2", "other").await;
        entry(&store, "e1", "a1", "198.51.100.0", 24).await;
        entry(&store, "e2", "a1", "2001:db8::", 32).await;
        entry(&store, "e3", "a2", "192.0.2.7", 32).await;

        let mut w = store.write().await.unwrap();
        assert_eq!(TABLE.count(&mut w, "MA1").await.unwrap(), 2);
        assert_eq!(ENTRIES.count(&mut w, "a1").await.unwrap(), 2);
        assert!(TABLE.exists(&mut w, "MA1", "a2").await.unwrap());
        assert!(!TABLE.exists(&mut w, "MA1", "b1").await.unwrap());
        drop(w);

        let page = TABLE.list(&store, "MA1", 20, 0).await.unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(
            page.rows
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["office", "lab"]
        );
        let (a, entries) = get_with_entries(&store, "MA1", "a1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.name, "office");
        // Adding an entry modifies its ACL.
        assert_eq!(a.updated_at, entries[1].created_at);
        let nets: Vec<_> = entries
            .iter()
            .map(|e| (e.uuid.as_str(), e.ip.as_str(), e.cidr_prefix))
            .collect();
        assert_eq!(nets, [("e1", "198.51.100.0", 24), ("e2", "2001:db8::", 32)]);
        assert_eq!(get_with_entries(&store, "MA2", "a1").await.unwrap(), None);
        let page = ENTRIES.list(&store, "a1", 1, 1).await.unwrap();
        assert_eq!((page.total, page.rows[0].uuid.as_str()), (2, "e2"));

        let mut w = store.write().await.unwrap();
        rename(&mut w, "a1", "head office").await.unwrap();
        let change = EntryChange {
            ip: "203.0.113.0",
            cidr_prefix: 25,
            description: "moved",
        };
        update_entry(&mut w, "e1", &change).await.unwrap();
        delete_entry(&mut w, "e2").await.unwrap();
        // Deleting an ACL takes its entries along.
        delete(&mut w, "a2").await.unwrap();
        w.commit().await.unwrap();

        let mut r = store.read().await.unwrap();
        assert_eq!(
            TABLE.get(&mut r, "MA1", "a1").await.unwrap().unwrap().name,
            "head office"
        );
        assert_eq!(TABLE.get(&mut r, "MA1", "a2").await.unwrap(), None);
        let e1 = ENTRIES.get(&mut r, "a1", "e1").await.unwrap().unwrap();
        assert_eq!(
            (e1.ip.as_str(), e1.cidr_prefix, e1.description.as_str()),
            ("203.0.113.0", 25, "moved")
        );
        assert_eq!(ENTRIES.get(&mut r, "a1", "e2").await.unwrap(), None);
        assert_eq!(
            ENTRIES.get(&mut r, "b1", "e1").await.unwrap(),
            None,
            "another ACL's"
        );
        drop(r);
        let t = snapshot::read_all(&store).await.unwrap();
        let acls: Vec<_> = t.acls.iter().map(|a| a.uuid.as_str()).collect();
        assert_eq!(acls, ["a1", "b1"]);
        let entries: Vec<_> = t
            .entries
            .iter()
            .map(|e| (e.acl.as_str(), e.ip.as_str(), e.cidr_prefix))
            .collect();
        assert_eq!(entries, [("a1", "203.0.113.0", 25)]);
    }

    #[tokio::test]
    async fn an_entry_for_no_acl_is_refused_and_nothing_stays() {
        let (_dir, store) = testing::open().await;
        testing::account(&store, "MA1").await;
        acl(&store, "a1", "MA1", "office").await;
        let before = snapshot::read_all(&store).await.unwrap();
        let mut w = store.write().await.unwrap();
        rename(&mut w, "a1", "renamed").await.unwrap();
        let orphan = NewEntry {
            uuid: "e1",
            acl: "nope",
            ip: "192.0.2.1",
            cidr_prefix: 32,
            description: "",
        };
        assert!(matches!(
            insert_entry(&mut w, &orphan).await,
            Err(StoreError::Db(_))
        ));
        drop(w);
        assert_eq!(snapshot::read_all(&store).await.unwrap(), before);
        let mut r = store.read().await.unwrap();
        assert_eq!(
            TABLE.get(&mut r, "MA1", "a1").await.unwrap().unwrap().name,
            "office"
        );
    }
}
