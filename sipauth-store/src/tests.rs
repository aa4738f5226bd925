use super::*;

#[test]
fn sqlite_urls() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a/b.db");
    let u = sqlite_url(&format!("sqlite://{}", p.display())).unwrap();
    assert_eq!(u, format!("sqlite://{}?mode=rwc", p.display()));
    assert!(dir.path().join("a").is_dir());
    assert_eq!(
        sqlite_url("sqlite::memory:").unwrap(),
        "sqlite://:memory:?mode=rwc"
    );
}

#[tokio::test]
async fn versions_advance_on_commit_only() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.version().await.unwrap(), 0);
    let w = store.write().await.unwrap();
    assert_eq!(w.version, 1);
    drop(w);
    assert_eq!(store.version().await.unwrap(), 0);
    let w = store.write().await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 1);
    assert_eq!(store.version().await.unwrap(), 1);
    // Reopening runs no migration twice.
    drop(store);
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.version().await.unwrap(), 1);
}

#[test]
fn placeholders_follow_the_backend() {
    let mut sql = String::new();
    for n in 1..=3 {
        Backend::Sqlite.push_param(&mut sql, n);
    }
    assert_eq!(sql, "???");
    let mut sql = String::new();
    for n in [1, 2, 15] {
        Backend::Postgres.push_param(&mut sql, n);
        sql.push(',');
    }
    assert_eq!(sql, "$1,$2,$15,");
}

#[tokio::test]
async fn reads_through_a_write_see_its_changes_and_a_dropped_write_leaves_nothing() {
    let (_dir, store) = testing::open().await;
    let mut w = store.write().await.unwrap();
    accounts::insert(
        &mut w,
        &accounts::NewAccount {
            auth_id: "MA1",
            auth_token: "t1",
            name: "one",
        },
    )
    .await
    .unwrap();
    assert!(accounts::exists(&mut w, "MA1").await.unwrap());
    drop(w);
    assert_eq!(store.version().await.unwrap(), 0);
    assert_eq!(accounts::token(&store, "MA1").await.unwrap(), None);
    let mut w = store.write().await.unwrap();
    assert!(!accounts::exists(&mut w, "MA1").await.unwrap());
}
