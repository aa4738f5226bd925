//! A fleet of edges acting as one: failure counts, lockouts and
//! registrations shared through Redis.
//!
//! The edge calls this module and nothing else for the fleet; with no
//! `cluster.redis_url` ([`Cluster::single`]) every call does nothing and
//! the edge is exactly a single node. With one, each edge keeps enforcing
//! from its own tables (the kernel's lockout map, the registrar), and this
//! module keeps those tables and the fleet's in step:
//!
//! - **Failures.** Every 200 ms the failures counted here since the last
//!   look, by user space and by the XDP program alike (one counter per
//!   source, see `sipauth_kernel::lockout`), are added to the source's
//!   fleet counter. The failure that brings the fleet's count to the
//!   threshold within the window opens a fleet lockout.
//! - **Lockouts.** A lockout opened anywhere (by the fleet count, by one
//!   edge's own count, by the XDP program, by an operator) goes into the
//!   fleet's table and its event stream; every edge applies the stream to
//!   its own table, so its XDP program drops the source. The end is the
//!   fleet's, on Redis's clock: a source's lockout ends at the same time on
//!   every edge, and attempts during it extend nothing.
//! - **Registrations.** A REGISTER through any edge goes into the fleet's
//!   table and stream; every edge's registrar holds every binding until it
//!   expires or is removed.
//!
//! Redis away: nothing waits for it (writes are sent from tasks of their
//! own and bounded to 50 ms), each edge goes on with what it knows, the
//! loss is logged once and `sipauth_cluster_up` is 0. On reconnection the
//! edge reads the fleet's tables, lifts what was lifted while it was away,
//! and hands over the lockouts and bindings it made meanwhile.
//!
//! Digest nonces need nothing here: a nonce is good only at the edge
//! process that issued it (`sipauth_digest::NonceKey`), and another edge
//! answers it with a `stale=true` challenge.
#![forbid(unsafe_code)]

mod redis;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sipauth_kernel::lockout::Lockouts;

use self::redis::{BindMode, Binding, Conn, Event, Keys, LockMode, Scripts};
use crate::registrar::Registrar;

/// The longest a write to Redis may take.
const WRITE_TIMEOUT: Duration = Duration::from_millis(50);
/// The longest a read of the fleet's tables may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// How often failures and lockouts made here are handed to the fleet.
const PUSH_EVERY: Duration = Duration::from_millis(200);
/// How often the whole state is read again (a safety net under the stream).
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How long the stream reader waits for an event per request.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Lockout ends that differ by less than this are the same.
const SAME_END_MS: u64 = 1000;

/// What the fleet is made of.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `redis://[:password@]host:port/db` or `rediss://...`; empty: a
    /// single edge.
    pub redis_url: String,
    /// Prefix (hash tag) of the keys, so that several fleets can share a
    /// Redis.
    pub key_prefix: String,
    /// PEM certificate authority of a `rediss://` server; None: the
    /// system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// The fleet's counters, for `/metrics`.
#[derive(Default)]
pub struct Counters {
    configured: AtomicBool,
    up: AtomicBool,
    /// Events read from the stream and applied.
    events: AtomicU64,
    /// Failures added to the fleet's counters.
    failures_sent: AtomicU64,
    /// Times the connection was lost.
    disconnects: AtomicU64,
}

impl Counters {
    /// Appends the fleet's metrics (nothing on a single edge).
    pub fn render(&self, out: &mut String) {
        if !self.configured.load(Relaxed) {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP sipauth_cluster_up 1 while the edge is connected to the fleet's Redis.\n\
             # TYPE sipauth_cluster_up gauge\nsipauth_cluster_up {}",
            u8::from(self.up.load(Relaxed))
        );
        for (name, help, v) in [
            (
                "sipauth_cluster_events_total",
                "Fleet events (lockouts, lifts, bindings) applied by this edge.",
                &self.events,
            ),
            (
                "sipauth_cluster_failures_sent_total",
                "Failures counted here and added to the fleet's counters.",
                &self.failures_sent,
            ),
            (
                "sipauth_cluster_disconnects_total",
                "Times the connection to the fleet's Redis was lost.",
                &self.disconnects,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
    }
}

/// The edge's handle on the fleet.
#[derive(Clone, Default)]
pub struct Cluster {
    fleet: Option<Arc<Fleet>>,
}

struct Fleet {
    target: redis::Target,
    keys: Keys,
    scripts: Scripts,
    policy: redis::Policy,
    /// None for a follower of registrations only (the control plane).
    lockouts: Option<Arc<Lockouts>>,
    registrar: Arc<Registrar>,
    counters: Arc<Counters>,
    /// The writing connection while connected.
    conn: Mutex<Option<Conn>>,
    /// Redis's clock minus ours, in ms.
    offset_ms: AtomicI64,
    /// Lockouts as the fleet has them: source key -> end (Redis ms).
    known: Mutex<HashMap<IpAddr, u64>>,
    /// Failures already handed over: source key -> (window id, count).
    sent: Mutex<HashMap<IpAddr, (u64, u32)>>,
    /// Held while local and fleet lockouts are compared or changed, so a
    /// lift read from the stream and a hand-over do not cross.
    syncing: tokio::sync::Mutex<()>,
    /// Wakes the session when a write found the connection broken.
    broken: tokio::sync::Notify,
}

fn local_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `url` without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

// === impl Cluster ===

impl Cluster {
    /// One edge alone.
    #[must_use]
    pub fn single() -> Self {
        Self::default()
    }

    /// Joins the fleet of `settings` (a single edge when its URL is
    /// empty). Connecting happens in the background: the edge serves from
    /// the start and catches up once Redis answers.
    #[must_use]
    pub fn start(
        settings: &Settings,
        lockouts: Arc<Lockouts>,
        registrar: Arc<Registrar>,
        counters: Arc<Counters>,
    ) -> Self {
        Self::join(settings, Some(lockouts), registrar, counters)
    }

    /// Follows the fleet's registrations into `registrar`, changing
    /// nothing: what a control plane shows of its endpoints.
    #[must_use]
    pub fn follow_registrations(
        settings: &Settings,
        registrar: Arc<Registrar>,
        counters: Arc<Counters>,
    ) -> Self {
        Self::join(settings, None, registrar, counters)
    }

    fn join(
        settings: &Settings,
        lockouts: Option<Arc<Lockouts>>,
        registrar: Arc<Registrar>,
        counters: Arc<Counters>,
    ) -> Self {
        if settings.redis_url.is_empty() {
            return Self::single();
        }
        counters.configured.store(true, Relaxed);
        let policy = lockouts.as_ref().map_or(
            redis::Policy {
                threshold: u32::MAX,
                window_ms: 0,
                duration_ms: 0,
            },
            |l| {
                let p = l.policy();
                redis::Policy {
                    threshold: p.threshold(),
                    window_ms: millis(p.window()),
                    duration_ms: millis(p.duration()),
                }
            },
        );
        let prefix = if settings.key_prefix.is_empty() {
            "sipauth"
        } else {
            &settings.key_prefix
        };
        let fleet = Arc::new(Fleet {
            target: redis::Target {
                url: settings.redis_url.clone(),
                ca: settings.ca_pem.clone(),
            },
            keys: Keys::new(prefix),
            scripts: Scripts::default(),
            policy,
            lockouts,
            registrar,
            counters,
            conn: Mutex::new(None),
            offset_ms: AtomicI64::new(0),
            known: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
            syncing: tokio::sync::Mutex::new(()),
            broken: tokio::sync::Notify::new(),
        });
        tokio::spawn(fleet.clone().supervise());
        Self { fleet: Some(fleet) }
    }

    /// An operator locked `ip` out here for `duration`: the fleet's
    /// lockout is replaced by this one.
    pub fn lock(&self, ip: IpAddr, duration: Duration) {
        self.write(move |f, mut conn| async move {
            let Some(lockouts) = f.lockouts.as_deref() else {
                return Ok(());
            };
            let source = lockouts.key(ip);
            let until = f
                .scripts
                .lock(
                    &mut conn,
                    &f.keys,
                    &source.to_string(),
                    millis(duration),
                    LockMode::Set,
                )
                .await?;
            f.known.lock().expect("known").insert(source, until);
            Ok(())
        });
    }

    /// An operator lifted `ip`'s lockout here.
    pub fn lift(&self, ip: IpAddr) {
        self.write(move |f, mut conn| async move {
            let Some(lockouts) = f.lockouts.as_deref() else {
                return Ok(());
            };
            let source = lockouts.key(ip);
            f.scripts
                .lift(&mut conn, &f.keys, &source.to_string())
                .await
        });
    }

    /// A REGISTER from `user_agent` added, refreshed (`secs` > 0) or
    /// removed a binding here.
    pub fn bind(&self, user: &str, contact: &str, secs: u32, user_agent: &str) {
        let b = Binding {
            user: user.to_owned(),
            contact: contact.to_owned(),
            user_agent: user_agent.to_owned(),
        };
        self.write(move |f, mut conn| async move {
            f.scripts
                .bind(
                    &mut conn,
                    &f.keys,
                    &b,
                    u64::from(secs) * 1000,
                    BindMode::Set,
                )
                .await
                .map(drop)
        });
    }

    /// A REGISTER removed every binding of `user` here.
    pub fn clear(&self, user: &str) {
        let user = user.to_owned();
        self.write(
            move |f, mut conn| async move { f.scripts.clear(&mut conn, &f.keys, &user).await },
        );
    }

    /// Runs one write in a task of its own, bounded in time; nothing when
    /// single or while Redis is away (the state is handed over on
    /// reconnection).
    fn write<F, Fut>(&self, op: F)
    where
        F: FnOnce(Arc<Fleet>, Conn) -> Fut + Send + 'static,
        Fut: Future<Output = ::redis::RedisResult<()>> + Send,
    {
        let Some(fleet) = &self.fleet else { return };
        let Some(conn) = fleet.conn.lock().expect("conn").clone() else {
            return;
        };
        let fleet = fleet.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(WRITE_TIMEOUT, op(fleet.clone(), conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fleet.lost(&e.to_string()),
                Err(_) => fleet.lost("no answer within 50 ms"),
            }
        });
    }
}

// === impl Fleet ===

impl Fleet {
    /// Redis's clock now, as far as this edge can tell.
    fn server_now(&self) -> u64 {
        local_ms().saturating_add_signed(self.offset_ms.load(Relaxed))
    }

    /// A write found the connection broken: the session starts again.
    fn lost(&self, why: &str) {
        if self.conn.lock().expect("conn").take().is_some() {
            tracing::debug!(error = %why, "cluster: a write failed");
            self.broken.notify_one();
        }
    }

    /// Connects, follows, and reconnects after a loss, forever.
    async fn supervise(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut reported = false;
        loop {
            let err = self.session(&mut backoff).await;
            self.conn.lock().expect("conn").take();
            if self.counters.up.swap(false, Relaxed) {
                self.counters.disconnects.fetch_add(1, Relaxed);
                reported = false;
            }
            if !reported {
                tracing::warn!(
                    redis = %redacted(&self.target.url),
                    error = %err,
                    "cluster: Redis unreachable; enforcing what this edge knows until it is back"
                );
                reported = true;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One connected stretch; returns why it ended.
    async fn session(self: &Arc<Self>, backoff: &mut Duration) -> String {
        let connect = async {
            let reader = redis::connect(&self.target, READ_BLOCK + SYNC_TIMEOUT).await?;
            let writer = redis::connect(&self.target, SYNC_TIMEOUT).await?;
            Ok::<_, ::redis::RedisError>((reader, writer))
        };
        let (mut reader, mut writer) = match tokio::time::timeout(SYNC_TIMEOUT * 2, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return "connecting took too long".to_owned(),
        };
        let start = async {
            let after = redis::last_event_id(&mut reader, &self.keys).await?;
            self.resync(&mut writer).await?;
            Ok::<_, ::redis::RedisError>(after)
        };
        let after = match tokio::time::timeout(SYNC_TIMEOUT * 2, start).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return "reading the fleet's state took too long".to_owned(),
        };
        *self.conn.lock().expect("conn") = Some(writer.clone());
        self.counters.up.store(true, Relaxed);
        *backoff = Duration::from_millis(100);
        tracing::info!(redis = %redacted(&self.target.url), "cluster: connected; following the fleet");

        let result = tokio::select! {
            r = async { tokio::try_join!(self.follow(&mut reader, after), self.keep_up(&mut writer)) } => r,
            () = self.broken.notified() => return "a write failed".to_owned(),
        };
        match result {
            Err(e) => e.to_string(),
            Ok(_) => "the session ended".to_owned(),
        }
    }

    /// Reads the stream from `after` on and applies each event.
    async fn follow(&self, reader: &mut Conn, mut after: String) -> ::redis::RedisResult<()> {
        loop {
            let (last, events) = redis::read_events(reader, &self.keys, &after, READ_BLOCK).await?;
            after = last;
            let _held = self.syncing.lock().await;
            for e in events {
                self.apply(e);
            }
        }
    }

    /// Hands over what this edge counted and opened, every 200 ms, and
    /// reads the whole state again every 30 s.
    async fn keep_up(&self, writer: &mut Conn) -> ::redis::RedisResult<()> {
        let mut push = tokio::time::interval(PUSH_EVERY);
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.tick().await;
        loop {
            tokio::select! {
                _ = push.tick() => {
                    tokio::time::timeout(SYNC_TIMEOUT, self.push(writer))
                        .await
                        .map_err(|_| timeout_error())??;
                }
                _ = resync.tick() => {
                    tokio::time::timeout(SYNC_TIMEOUT, self.resync(writer))
                        .await
                        .map_err(|_| timeout_error())??;
                }
            }
        }
    }

    /// Applies one event of the stream to this edge's tables.
    fn apply(&self, event: Event) {
        self.counters.events.fetch_add(1, Relaxed);
        match event {
            Event::Lock { source, until_ms } => {
                if let Ok(key) = source.parse() {
                    self.apply_lock(key, until_ms);
                }
            }
            Event::Lift { source } => {
                if let (Ok(key), Some(lockouts)) =
                    (source.parse::<IpAddr>(), self.lockouts.as_deref())
                {
                    // Lifted here first, forgotten after: a hand-over in
                    // between must not see a lockout the fleet dropped.
                    if let Err(e) = lockouts.lift(key) {
                        tracing::error!(src = %source, error = %e, "cluster: lifting failed");
                    }
                    self.known.lock().expect("known").remove(&key);
                    self.sent.lock().expect("sent").remove(&key);
                }
            }
            Event::Bind { binding, until_ms } => {
                let left = until_ms.saturating_sub(self.server_now()).div_ceil(1000);
                let secs = if until_ms == 0 {
                    0
                } else {
                    u32::try_from(left).unwrap_or(u32::MAX)
                };
                self.registrar
                    .bind(&binding.user, &binding.contact, secs, &binding.user_agent);
            }
            Event::Clear { user } => self.registrar.clear(&user),
        }
    }

    /// The fleet locked `key` out until `until_ms`: so does this edge,
    /// ending at the same time (within a second).
    fn apply_lock(&self, key: IpAddr, until_ms: u64) {
        let Some(lockouts) = self.lockouts.as_deref() else {
            return;
        };
        let now = self.server_now();
        if until_ms <= now {
            return;
        }
        self.known.lock().expect("known").insert(key, until_ms);
        let left = until_ms - now;
        let here = lockouts.remaining(key).ok().flatten().map(millis);
        if here.is_some_and(|h| h.abs_diff(left) < SAME_END_MS) {
            return;
        }
        match lockouts.lock(key, Duration::from_millis(left)) {
            Ok(_) => {}
            Err(sipauth_kernel::lockout::LockoutError::NeverLock { cidr, .. }) => {
                tracing::debug!(src = %key, never_lock = %cidr, "cluster: fleet lockout of a never-lock source not applied here");
            }
            Err(e) => tracing::error!(src = %key, error = %e, "cluster: applying a lockout failed"),
        }
    }

    /// Hands the fleet the failures counted here since the last look and
    /// the lockouts opened here that it does not have.
    async fn push(&self, conn: &mut Conn) -> ::redis::RedisResult<()> {
        let Some(lockouts) = self.lockouts.as_deref() else {
            return Ok(());
        };
        let windows = lockouts.failure_windows().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cluster: reading failure counts failed");
            Vec::new()
        });
        let mut deltas = Vec::new();
        {
            let mut sent = self.sent.lock().expect("sent");
            let open: HashSet<IpAddr> = windows.iter().map(|w| w.0).collect();
            sent.retain(|k, _| open.contains(k));
            for (key, id, count) in windows {
                let delta = match sent.get(&key) {
                    Some(&(sid, scount)) if sid == id => count.saturating_sub(scount),
                    _ => count,
                };
                if delta > 0 {
                    deltas.push((key, id, count, delta));
                }
            }
        }
        for (key, id, count, delta) in deltas {
            self.scripts
                .fail(conn, &self.keys, &key.to_string(), delta, self.policy)
                .await?;
            self.counters
                .failures_sent
                .fetch_add(u64::from(delta), Relaxed);
            self.sent.lock().expect("sent").insert(key, (id, count));
        }
        self.hand_over_lockouts(conn).await
    }

    /// Lockouts in force here that the fleet does not know join it, without
    /// extending one it has; this edge then ends them when the fleet does.
    async fn hand_over_lockouts(&self, conn: &mut Conn) -> ::redis::RedisResult<()> {
        let Some(lockouts) = self.lockouts.as_deref() else {
            return Ok(());
        };
        let _held = self.syncing.lock().await;
        let active = lockouts.active().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cluster: reading lockouts failed");
            Vec::new()
        });
        let now = self.server_now();
        let new: Vec<(IpAddr, Duration)> = {
            let known = self.known.lock().expect("known");
            active
                .into_iter()
                .filter(|(key, _)| known.get(key).is_none_or(|&until| until <= now))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        // A lockout this edge holds that the fleet lifted while the edge
        // was away (or down: the kernel's map outlives the process) ends no
        // later than the lifted one would have: it goes. Anything else was
        // opened here meanwhile, and joins the fleet.
        let lifted: HashMap<String, u64> =
            redis::lifted(conn, &self.keys).await?.into_iter().collect();
        for (key, left) in new {
            let source = key.to_string();
            let end = now.saturating_add(millis(left));
            if lifted
                .get(&source)
                .is_some_and(|&was| end <= was + SAME_END_MS)
            {
                if let Err(e) = lockouts.lift(key) {
                    tracing::error!(src = %key, error = %e, "cluster: lifting failed");
                }
                tracing::info!(src = %key, "cluster: lockout lifted by the fleet while this edge was away");
                continue;
            }
            let until = self
                .scripts
                .lock(conn, &self.keys, &source, millis(left), LockMode::Keep)
                .await?;
            self.apply_lock(key, until);
        }
        Ok(())
    }

    /// Reads the fleet's whole state: its lockouts and bindings are applied
    /// here, lockouts it lifted while this edge was away are lifted, and
    /// what this edge made meanwhile is handed over.
    async fn resync(&self, conn: &mut Conn) -> ::redis::RedisResult<()> {
        let server = redis::server_ms(conn).await?;
        self.offset_ms.store(
            i64::try_from(server).unwrap_or(i64::MAX) - i64::try_from(local_ms()).unwrap_or(0),
            Relaxed,
        );
        if let Some(lockouts) = self.lockouts.as_deref() {
            let _held = self.syncing.lock().await;
            redis::drop_ended(conn, &self.keys, server).await?;
            let fleet = redis::lockouts(conn, &self.keys).await?;
            let mut current = HashSet::new();
            for (source, until) in fleet {
                if let Ok(key) = source.parse::<IpAddr>() {
                    current.insert(key);
                    self.apply_lock(key, until);
                }
            }
            let gone: Vec<IpAddr> = self
                .known
                .lock()
                .expect("known")
                .keys()
                .filter(|k| !current.contains(k))
                .copied()
                .collect();
            for key in gone {
                if let Err(e) = lockouts.lift(key) {
                    tracing::error!(src = %key, error = %e, "cluster: lifting failed");
                }
                self.known.lock().expect("known").remove(&key);
            }
        }
        self.hand_over_lockouts(conn).await?;

        let fleet = redis::bindings(conn, &self.keys).await?;
        let mut theirs = HashSet::new();
        for (b, until) in fleet {
            if until > server {
                let secs = u32::try_from((until - server).div_ceil(1000)).unwrap_or(u32::MAX);
                self.registrar
                    .bind(&b.user, &b.contact, secs, &b.user_agent);
                theirs.insert((b.user, b.contact));
            }
        }
        if self.lockouts.is_none() {
            // A follower only reads.
            return Ok(());
        }
        for (user, contact, left, user_agent) in self.registrar.all() {
            if !theirs.contains(&(user.clone(), contact.clone())) && left > 0 {
                let b = Binding {
                    user,
                    contact,
                    user_agent,
                };
                self.scripts
                    .bind(conn, &self.keys, &b, left * 1000, BindMode::Max)
                    .await?;
            }
        }
        Ok(())
    }
}

fn timeout_error() -> ::redis::RedisError {
    ::redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

#[cfg(test)]
mod tests;
