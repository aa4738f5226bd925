//! The data layer: every SQL statement of the agent, over SQLite (a file,
//! the default) and PostgreSQL (several control replicas may share it),
//! through sqlx's `Any` driver. One module per table family; each exposes
//! typed functions and the plain row structs they read and write. The
//! store depends on nothing of the API or the edge: they call it.
//!
//! Every write is one transaction that starts by advancing the global
//! version (`UPDATE meta ... RETURNING version`). That first statement takes
//! the write lock (SQLite) or the row lock on `meta` (PostgreSQL), so writes
//! are serialised: a count checked inside a write transaction cannot be
//! raced past its limit, and each committed change has its own version.
//! A transaction dropped without `commit` rolls back and leaves nothing.
//!
//! Placeholders: a statement of fixed text numbers its values `$1`, `$2`,
//! ... (both backends take them). A statement whose number of values grows
//! with its input asks [`Backend::push_param`], which gives SQLite `?` (bound
//! by position; `$n` it looks up by name, a cost that grows with the number
//! of values) and PostgreSQL `$n`.
#![forbid(unsafe_code)]

/// Declares a row struct and its [`FromRow`]: each field is read from the
/// column of its name, and `COLUMNS` names them all, in order, for the
/// statements that select the row.
macro_rules! row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::FromRow for $name {
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn from_row(r: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
                Ok(Self {
                    $( $field: sqlx::Row::try_get(r, stringify!($field))?, )*
                })
            }
        }
    };
}

pub mod accounts;
pub mod acls;
pub mod applications;
pub mod calls;
pub mod credentials;
pub mod endpoints;
mod schema;
pub mod snapshot;

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Row as _, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("unsupported database URL {0:?} (sqlite://PATH or postgres://...)")]
    Url(String),
    #[error("creating {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Appends the placeholder of a statement's `n`th value (from 1) as the
    /// module doc says.
    pub fn push_param(self, sql: &mut String, n: usize) {
        match self {
            Self::Sqlite => sql.push('?'),
            Self::Postgres => {
                let _ = write!(sql, "${n}");
            }
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where call records are written (the one statement of [`calls`]).
    records: Records,
    backend: Backend,
}

/// Where call records are written.
#[derive(Clone)]
enum Records {
    /// PostgreSQL, and SQLite in memory (a database per pool): the shared
    /// pool.
    Shared,
    /// SQLite in a file: a connection of its own, held for the store's
    /// life, its statements one at a time. Through the shared pool, whose
    /// connections take turns, records would read their pages back from
    /// the file batch after batch (a SQLite connection drops its page cache
    /// whenever another wrote since it last read). Held rather than pooled:
    /// a pool pings a connection each time it comes back, one more round
    /// trip to the connection's thread per statement.
    Own(Arc<tokio::sync::Mutex<AnyConnection>>),
}

/// A write in progress; `version` is what the snapshot becomes on commit.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    pub version: u64,
}

impl WriteTx {
    pub async fn commit(self) -> Result<u64, StoreError> {
        self.tx.commit().await?;
        Ok(self.version)
    }
}

/// A pooled connection for reads outside a write.
pub struct Read(PoolConnection<Any>);

/// What a single-row read goes through: a [`Read`], or a [`WriteTx`] (the
/// read then sees the write's own changes and is part of it).
pub trait Conn: Send {
    #[doc(hidden)]
    fn conn(&mut self) -> &mut AnyConnection;
}

impl Conn for Read {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.0
    }
}

impl Conn for WriteTx {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// The three HA1 values of a digest username, hex, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha1 {
    pub md5: String,
    pub sha256: String,
    pub sha512_256: String,
}

/// One page of an owner's rows, and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub total: i64,
    pub rows: Vec<T>,
}

/// A row struct read from the columns it names (most are declared with
/// `row!`).
pub trait FromRow: Sized {
    /// The columns a statement selects to read the row.
    const COLUMNS: &'static [&'static str];

    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error>;
}

/// The columns of `T`, as a statement lists them.
fn columns<T: FromRow>() -> String {
    T::COLUMNS.join(", ")
}

/// A table whose rows belong to an owner (an account, or for IP ACL
/// entries their IP ACL): its name, its key column, its owner column and
/// the row the API reads from it. One descriptor per table module; the
/// reads below are the same for all of them.
pub struct Table<T> {
    name: &'static str,
    key: &'static str,
    owner: &'static str,
    row: PhantomData<fn() -> T>,
}

fn from_rows<T: FromRow>(rows: &[AnyRow]) -> Result<Vec<T>, StoreError> {
    Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
}

#[must_use]
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What every connection needs before its first statement: for SQLite,
/// its pragmas.
async fn prepare(conn: &mut AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        for pragma in [
            "PRAGMA foreign_keys = ON",
            "PRAGMA busy_timeout = 10000",
            // Readers do not wait for the writer, and a commit costs no
            // fsync of the main file (the WAL is synced at checkpoints):
            // call records are written per call.
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
        ] {
            sqlx::query(pragma).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

// === impl Store ===

impl Store {
    /// Connects (creating a SQLite file and its directory if needed) and
    /// runs the migrations that have not run yet.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let pool = Self::pool_options(backend, if backend == Backend::Sqlite { 4 } else { 8 })
            .connect(&url)
            .await?;
        let mut store = Self {
            records: Records::Shared,
            pool,
            backend,
        };
        schema::migrate(&store.pool, backend).await?;
        // SQLite in a file: records get a connection of their own (see
        // [`Records`]), opened once the schema is there.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if backend == Backend::Sqlite && !in_memory {
            let mut conn = AnyConnection::connect(&url).await?;
            prepare(&mut conn, backend).await?;
            store.records = Records::Own(Arc::new(tokio::sync::Mutex::new(conn)));
        }
        Ok(store)
    }

    /// Pool settings: at most `max` connections, and for SQLite the
    /// pragmas every connection needs.
    fn pool_options(backend: Backend, max: u32) -> AnyPoolOptions {
        AnyPoolOptions::new()
            .max_connections(max)
            // A SQLite connection is a file handle in this process: nothing
            // to test before each use (a round trip to its worker thread
            // per statement otherwise). Network connections are tested.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| Box::pin(prepare(conn, backend)))
    }

    /// Starts a write: the version is advanced first (see the module doc).
    pub async fn write(&self) -> Result<WriteTx, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("UPDATE meta SET version = version + 1 WHERE id = 1 RETURNING version")
                .fetch_one(&mut *tx)
                .await?;
        let version: i64 = row.try_get(0)?;
        Ok(WriteTx {
            tx,
            version: u64::try_from(version).unwrap_or(0),
        })
    }

    /// The version of the last committed change.
    pub async fn version(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT version FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
    }

    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs `query` where call records are written (see [`Records`]).
    async fn write_records<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<(), sqlx::Error> {
        match &self.records {
            Records::Shared => query.execute(&self.pool).await?,
            Records::Own(conn) => query.execute(&mut *conn.lock().await).await?,
        };
        Ok(())
    }

    /// A connection for reads outside a write.
    pub async fn read(&self) -> Result<Read, StoreError> {
        Ok(Read(self.pool.acquire().await?))
    }
}

// === impl Table ===
// Table and column names are constants of the table modules, never input.

impl<T: FromRow> Table<T> {
    const fn new(name: &'static str, key: &'static str, owner: &'static str) -> Self {
        Self {
            name,
            key,
            owner,
            row: PhantomData,
        }
    }

    /// Row `id` if `owner` owns it: another owner's id is as unknown as
    /// one that does not exist.
    pub async fn get(
        &self,
        c: &mut impl Conn,
        owner: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.owned(c.conn(), owner, id).await
    }

    async fn owned(
        &self,
        conn: &mut AnyConnection,
        owner: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM {} WHERE {} = $1 AND {} = $2",
            columns::<T>(),
            self.name,
            self.owner,
            self.key
        ))
        .bind(owner)
        .bind(id)
        .fetch_optional(conn)
        .await?;
        Ok(row.as_ref().map(T::from_row).transpose()?)
    }

    /// Whether `owner` owns row `id`.
    pub async fn exists(
        &self,
        c: &mut impl Conn,
        owner: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT 1 FROM {} WHERE {} = $1 AND {} = $2",
            self.name, self.owner, self.key
        ))
        .bind(owner)
        .bind(id)
        .fetch_optional(c.conn())
        .await?;
        Ok(row.is_some())
    }

    /// How many rows `owner` holds, counted inside a write (see the module
    /// doc: a limit checked so cannot be raced past).
    pub async fn count(&self, w: &mut WriteTx, owner: &str) -> Result<i64, StoreError> {
        self.count_in(&mut w.tx, owner).await
    }

    async fn count_in(&self, conn: &mut AnyConnection, owner: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT COUNT(*) FROM {} WHERE {} = $1",
            self.name, self.owner
        ))
        .bind(owner)
        .fetch_one(conn)
        .await?
        .try_get(0)?)
    }

    /// Every row `owner` holds, oldest first (then by key).
    async fn all_of(&self, conn: &mut AnyConnection, owner: &str) -> Result<Vec<T>, StoreError> {
        let rows = sqlx::query(&self.select_of_owner())
            .bind(owner)
            .fetch_all(conn)
            .await?;
        from_rows(&rows)
    }

    /// The rows of owner `$1`, oldest first, then by key.
    fn select_of_owner(&self) -> String {
        format!(
            "SELECT {} FROM {} WHERE {} = $1 ORDER BY created_at, {}",
            columns::<T>(),
            self.name,
            self.owner,
            self.key
        )
    }

    /// One page of `owner`'s rows, oldest first (then by key), and how
    /// many there are.
    pub async fn list(
        &self,
        store: &Store,
        owner: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<T>, StoreError> {
        self.list_where(store, owner, None, limit, offset).await
    }

    /// [`Table::list`] of the rows whose `column` equals the value given
    /// (every row when `filter` is `None`); the total counts those rows.
    pub async fn list_where(
        &self,
        store: &Store,
        owner: &str,
        filter: Option<(&'static str, &str)>,
        limit: i64,
        offset: i64,
    ) -> Result<Page<T>, StoreError> {
        let (filter_sql, next) = match filter {
            Some((column, _)) => (format!(" AND {column} = $2"), 3),
            None => (String::new(), 2),
        };
        let (limit_at, offset_at) = (next, next + 1);
        let count_sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {} = $1{filter_sql}",
            self.name, self.owner
        );
        let select_sql = format!(
            "SELECT {} FROM {} WHERE {} = $1{filter_sql} ORDER BY created_at, {} LIMIT ${limit_at} OFFSET ${offset_at}",
            columns::<T>(),
            self.name,
            self.owner,
            self.key,
        );
        let mut count = sqlx::query(&count_sql).bind(owner);
        let mut select = sqlx::query(&select_sql).bind(owner);
        if let Some((_, value)) = filter {
            count = count.bind(value);
            select = select.bind(value);
        }
        let mut conn = store.pool().acquire().await?;
        let total: i64 = count.fetch_one(&mut *conn).await?.try_get(0)?;
        let rows = select
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await?;
        Ok(Page {
            total,
            rows: from_rows(&rows)?,
        })
    }
}

/// Every row of `T` in `table`, ordered by `order`.
async fn all<T: FromRow>(
    conn: &mut AnyConnection,
    table: &str,
    order: &str,
) -> Result<Vec<T>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM {table} ORDER BY {order}",
        columns::<T>()
    ))
    .fetch_all(conn)
    .await?;
    from_rows(&rows)
}

/// `sqlite://PATH` with the directory created and `mode=rwc` so that the
/// file is created on first start.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:"
        && let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let query = if query.is_empty() {
        "mode=rwc".to_owned()
    } else if query.contains("mode=") {
        query.to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

#[cfg(test)]
mod tests;

/// What the table modules' tests share: a store in a temp dir and accounts
/// in it.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::{Ha1, Store, accounts, calls::CallRecord};

    /// A fresh SQLite store; it lives as long as the directory.
    pub async fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url).await.unwrap();
        (dir, store)
    }

    /// HA1 values that name `tag` (`md5-TAG`, `sha256-TAG`, `sha512-TAG`).
    #[must_use]
    pub fn ha1(tag: &str) -> Ha1 {
        Ha1 {
            md5: format!("md5-{tag}"),
            sha256: format!("sha256-{tag}"),
            sha512_256: format!("sha512-{tag}"),
        }
    }

    /// An inbound call's record, ended with `status` and the cause
    /// `cause_name`/`cause_code`; its other columns fixed (account
    /// `MA0001`).
    #[must_use]
    pub fn call_record(uuid: &str, status: &str, cause_name: &str, cause_code: i64) -> CallRecord {
        CallRecord {
            call_uuid: uuid.to_owned(),
            account: "MA0001".to_owned(),
            direction: "inbound".to_owned(),
            from_number: "alice".to_owned(),
            to_number: "app".to_owned(),
            answer_url: Some("http://127.0.0.1/answer".to_owned()),
            call_status: status.to_owned(),
            hangup_cause_name: Some(cause_name.to_owned()),
            hangup_cause_code: Some(cause_code),
            sip_auth_type: Some("ip_acl".to_owned()),
            source_ip: Some("192.0.2.1".to_owned()),
            created_at: 1,
            ended_at: Some(2),
        }
    }

    /// Account `auth_id` (token `t-` and the id), committed.
    pub async fn account(store: &Store, auth_id: &str) {
        let mut w = store.write().await.unwrap();
        accounts::insert(
            &mut w,
            &accounts::NewAccount {
                auth_id,
                auth_token: &format!("t-{auth_id}"),
                name: "test",
            },
        )
        .await
        .unwrap();
        w.commit().await.unwrap();
    }
}
