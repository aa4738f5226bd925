//! `ip_acls` and `ip_acl_entries`: an account's allow-lists of networks,
//! each entry stored as the network address and its prefix length.
#![forbid(unsafe_code)]

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Conn, FromRow, Page, Store, StoreError, WriteTx, from_rows, now};

const TABLE: &str = "ip_acls";
const KEY: &str = "uuid";
/// The columns the API shows, the key first.
const COLUMNS: &str = "uuid, name, created_at, updated_at";
const ENTRIES: &str = "ip_acl_entries";
const ENTRY_COLUMNS: &str = "uuid, ip, cidr_prefix, description, created_at, updated_at";

/// An IP ACL as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRow {
    pub uuid: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FromRow for AclRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            uuid: r.try_get("uuid")?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

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

impl FromRow for EntryRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            uuid: r.try_get("uuid")?,
            ip: r.try_get("ip")?,
            cidr_prefix: r.try_get("cidr_prefix")?,
            description: r.try_get("description")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
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

/// How many IP ACLs account `acct` holds.
pub async fn count(w: &mut WriteTx, acct: &str) -> Result<i64, StoreError> {
    super::count(&mut w.tx, TABLE, "account", acct).await
}

/// Whether account `acct` owns IP ACL `uuid`.
pub async fn exists(c: &mut impl Conn, acct: &str, uuid: &str) -> Result<bool, StoreError> {
    super::exists(c.conn(), TABLE, KEY, acct, uuid).await
}

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

/// A page of `acct`'s IP ACLs, oldest first.
pub async fn list(
    store: &Store,
    acct: &str,
    limit: i64,
    offset: i64,
) -> Result<Page<AclRow>, StoreError> {
    super::page(store, TABLE, COLUMNS, "account", acct, limit, offset).await
}

/// IP ACL `uuid` if account `acct` owns it.
pub async fn get(c: &mut impl Conn, acct: &str, uuid: &str) -> Result<Option<AclRow>, StoreError> {
    super::owned(c.conn(), TABLE, KEY, COLUMNS, acct, uuid).await
}

/// IP ACL `uuid` if account `acct` owns it, with all its entries (oldest
/// first), read in one transaction.
pub async fn get_with_entries(
    store: &Store,
    acct: &str,
    uuid: &str,
) -> Result<Option<(AclRow, Vec<EntryRow>)>, StoreError> {
    let mut tx = store.pool().begin().await?;
    let Some(acl) = super::owned(&mut tx, TABLE, KEY, COLUMNS, acct, uuid).await? else {
        return Ok(None);
    };
    let entries = sqlx::query(
        "SELECT uuid, ip, cidr_prefix, description, created_at, updated_at FROM ip_acl_entries \
         WHERE acl = $1 ORDER BY created_at, uuid",
    )
    .bind(uuid)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((acl, from_rows(&entries)?)))
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

/// How many entries IP ACL `acl` holds.
pub async fn count_entries(w: &mut WriteTx, acl: &str) -> Result<i64, StoreError> {
    super::count(&mut w.tx, ENTRIES, "acl", acl).await
}

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

/// A page of IP ACL `acl`'s entries, oldest first.
pub async fn list_entries(
    store: &Store,
    acl: &str,
    limit: i64,
    offset: i64,
) -> Result<Page<EntryRow>, StoreError> {
    super::page(store, ENTRIES, ENTRY_COLUMNS, "acl", acl, limit, offset).await
}

/// Entry `entry` of IP ACL `acl`, if it has one so named.
pub async fn get_entry(
    c: &mut impl Conn,
    acl: &str,
    entry: &str,
) -> Result<Option<EntryRow>, StoreError> {
    let row = sqlx::query(
        "SELECT uuid, ip, cidr_prefix, description, created_at, updated_at FROM ip_acl_entries \
         WHERE acl = $1 AND uuid = $2",
    )
    .bind(acl)
    .bind(entry)
    .fetch_optional(c.conn())
    .await?;
    Ok(row.as_ref().map(EntryRow::from_row).transpose()?)
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
        assert_eq!(count(&mut w, "MA1").await.unwrap(), 2);
        assert_eq!(count_entries(&mut w, "a1").await.unwrap(), 2);
        assert!(exists(&mut w, "MA1", "a2").await.unwrap());
        assert!(!exists(&mut w, "MA1", "b1").await.unwrap());
        drop(w);

        let page = list(&store, "MA1", 20, 0).await.unwrap();
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
        let page = list_entries(&store, "a1", 1, 1).await.unwrap();
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
            get(&mut r, "MA1", "a1").await.unwrap().unwrap().name,
            "head office"
        );
        assert_eq!(get(&mut r, "MA1", "a2").await.unwrap(), None);
        let e1 = get_entry(&mut r, "a1", "e1").await.unwrap().unwrap();
        assert_eq!(
            (e1.ip.as_str(), e1.cidr_prefix, e1.description.as_str()),
            ("203.0.113.0", 25, "moved")
        );
        assert_eq!(get_entry(&mut r, "a1", "e2").await.unwrap(), None);
        assert_eq!(
            get_entry(&mut r, "b1", "e1").await.unwrap(),
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
            get(&mut r, "MA1", "a1").await.unwrap().unwrap().name,
            "office"
        );
    }
}
