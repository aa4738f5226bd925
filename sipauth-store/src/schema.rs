//! The schema: its migrations, in order, and how a store brings its
//! database up to the last of them.
#![forbid(unsafe_code)]

use sqlx::{AnyPool, Row as _};

use crate::{Backend, StoreError};

/// Migrations, in order; `schema_version` holds how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE meta (id INTEGER PRIMARY KEY, version BIGINT NOT NULL);
     INSERT INTO meta (id, version) VALUES (1, 0);
     CREATE TABLE accounts (
        auth_id TEXT PRIMARY KEY,
        auth_token TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL);
     CREATE TABLE credentials (
        uuid TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(auth_id),
        username TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        ha1_sha512_256 TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (account, username));
     CREATE TABLE ip_acls (
        uuid TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(auth_id),
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL);
     CREATE TABLE ip_acl_entries (
        uuid TEXT PRIMARY KEY,
        acl TEXT NOT NULL REFERENCES ip_acls(uuid) ON DELETE CASCADE,
        ip TEXT NOT NULL,
        cidr_prefix INTEGER NOT NULL,
        description TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL);
     CREATE INDEX ip_acl_entries_acl ON ip_acl_entries (acl);
     CREATE TABLE applications (
        app_id TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(auth_id),
        app_name TEXT NOT NULL,
        answer_url TEXT NOT NULL,
        answer_method TEXT NOT NULL,
        hangup_url TEXT,
        hangup_method TEXT NOT NULL,
        sip_auth_type TEXT NOT NULL,
        credential_uuid TEXT REFERENCES credentials(uuid),
        ip_acl_uuid TEXT REFERENCES ip_acls(uuid),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL);
     CREATE TABLE endpoints (
        endpoint_id TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(auth_id),
        username TEXT NOT NULL UNIQUE,
        alias TEXT NOT NULL,
        app_id TEXT REFERENCES applications(app_id),
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        ha1_sha512_256 TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL);
     CREATE TABLE calls (
        call_uuid TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(auth_id),
        direction TEXT NOT NULL,
        from_number TEXT NOT NULL,
        to_number TEXT NOT NULL,
        answer_url TEXT,
        answer_method TEXT,
        hangup_url TEXT,
        call_status TEXT NOT NULL,
        hangup_cause_name TEXT,
        hangup_cause_code BIGINT,
        sip_auth_type TEXT,
        source_ip TEXT,
        created_at BIGINT NOT NULL,
        ended_at BIGINT);",
    // 2: an application's own challenge algorithms ('' = the edge's).
    "ALTER TABLE applications ADD COLUMN challenge_algorithms TEXT NOT NULL DEFAULT ''",
];

/// Runs the migrations `schema_version` says have not run yet, in one
/// transaction.
pub(crate) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    if backend == Backend::Postgres {
        // Replicas starting together migrate one at a time.
        sqlx::query("LOCK TABLE schema_version IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
    }
    let done: Option<i64> = sqlx::query("SELECT version FROM schema_version")
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let done = usize::try_from(done.unwrap_or(0)).unwrap_or(0);
    if done == 0 {
        sqlx::query("INSERT INTO schema_version (version) VALUES (0)")
            .execute(&mut *tx)
            .await?;
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(done) {
        for statement in migration
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE schema_version SET version = $1")
            .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = i + 1, "database migrated");
    }
    tx.commit().await?;
    Ok(())
}
