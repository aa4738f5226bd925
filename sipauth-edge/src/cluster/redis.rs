//! The fleet's state in Redis: the keys, the scripts that change them, and
//! the connection (one server, or a Redis Cluster found at connect time).
//!
//! Every key carries the hash tag `{prefix}`, so all of them live in one
//! slot: each change is one script that updates the state and appends its
//! event to the stream atomically, on a single server and on a Cluster
//! alike. The fleet's state is small (failure counters of sources that
//! fail, lockouts, registrations), so one slot is no bottleneck; a Cluster
//! gives the fleet failover, not sharding.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}:fail:<source>` | string | failures in the open window; expires with it |
//! | `{p}:lockouts` | hash | source -> end (Redis server time, ms) |
//! | `{p}:lifted` | hash | source -> end its lifted lockout would have had |
//! | `{p}:reg:<user>` | hash | contact -> "end (ms) user-agent" |
//! | `{p}:users` | set | users with a `reg` hash |
//! | `{p}:events` | stream | `lock`, `lift`, `bind`, `clear`, in order |
//!
//! Times are Redis's own (`TIME`), so edges need not agree on the clock:
//! each edge measures its offset to the server when it connects.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};

/// Events kept in the stream for edges that fall behind.
const STREAM_MAX: &str = "100000";

/// A connection to one server or to a Cluster.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the fleet's Redis is, and which certificate authority a
/// `rediss://` server's certificate must chain to.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    /// PEM; None: the system's roots.
    pub ca: Option<Vec<u8>>,
}

impl Target {
    fn certs(&self) -> Option<redis::TlsCertificates> {
        self.ca.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }
}

/// Connects to the target; when the server says it is part of a Cluster,
/// to the Cluster through it. `response` bounds each reply (the stream
/// reader blocks up to a second on purpose, so it asks for more).
pub async fn connect(target: &Target, response: Duration) -> RedisResult<Conn> {
    let url = target.url.as_str();
    let client = match target.certs() {
        Some(certs) => redis::Client::build_with_tls(url, certs)?,
        None => redis::Client::open(url)?,
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response));
    let mut single = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut single)
        .await?;
    if !info.contains("cluster_enabled:1") {
        return Ok(Conn::Single(single));
    }
    let mut builder = redis::cluster::ClusterClient::builder(vec![url])
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(response)
        .retries(1);
    if let Some(certs) = target.certs() {
        builder = builder.certs(certs);
    }
    let cluster = builder.build()?.get_async_connection().await?;
    Ok(Conn::Cluster(cluster))
}

/// The key names of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
}

impl Keys {
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self {
            tag: format!("{{{prefix}}}"),
        }
    }

    fn fail(&self, source: &str) -> String {
        format!("{}:fail:{source}", self.tag)
    }

    pub fn lockouts(&self) -> String {
        format!("{}:lockouts", self.tag)
    }

    pub fn lifted(&self) -> String {
        format!("{}:lifted", self.tag)
    }

    pub fn reg(&self, user: &str) -> String {
        format!("{}:reg:{user}", self.tag)
    }

    pub fn users(&self) -> String {
        format!("{}:users", self.tag)
    }

    pub fn events(&self) -> String {
        format!("{}:events", self.tag)
    }
}

/// The server's clock in milliseconds, as scripts read it.
const NOW: &str = "local t = redis.call('TIME')\n\
                   local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Adds `n` failures of a source. A source locked out already is not
/// counted (attempts during a lockout do not extend it); the failure that
/// reaches the threshold opens a lockout. Returns 1 when it did.
fn fail_script() -> Script {
    Script::new(&format!(
        "{NOW}\
         local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')\n\
         if held > now then return 0 end\n\
         local n = tonumber(ARGV[2])\n\
         local c = redis.call('INCRBY', KEYS[1], n)\n\
         if c == n then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end\n\
         if c < tonumber(ARGV[3]) then return 0 end\n\
         redis.call('DEL', KEYS[1])\n\
         local untl = now + tonumber(ARGV[5])\n\
         redis.call('HSET', KEYS[2], ARGV[1], untl)\n\
         redis.call('HDEL', KEYS[4], ARGV[1])\n\
         redis.call('XADD', KEYS[3], 'MAXLEN', '~', '{STREAM_MAX}', '*', 'op', 'lock', 'src', ARGV[1], 'until', untl)\n\
         return 1\n"
    ))
}

/// Locks a source out for ARGV[2] ms. With ARGV[3] = `keep`, a lockout in
/// force stays as it is (a lockout found on one edge joins the fleet's
/// without extending it); with `set` it is replaced (an operator's).
/// Returns the lockout's end.
fn lock_script() -> Script {
    Script::new(&format!(
        "{NOW}\
         local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')\n\
         if ARGV[3] == 'keep' and held > now then return held end\n\
         local untl = now + tonumber(ARGV[2])\n\
         redis.call('HSET', KEYS[1], ARGV[1], untl)\n\
         redis.call('DEL', KEYS[3])\n\
         redis.call('HDEL', KEYS[4], ARGV[1])\n\
         redis.call('XADD', KEYS[2], 'MAXLEN', '~', '{STREAM_MAX}', '*', 'op', 'lock', 'src', ARGV[1], 'until', untl)\n\
         return untl\n"
    ))
}

/// Lifts a source's lockout and forgets its failures. The end the lockout
/// would have had is kept, so an edge that was away and still holds it
/// can tell it was lifted.
fn lift_script() -> Script {
    Script::new(&format!(
        "local held = redis.call('HGET', KEYS[1], ARGV[1])\n\
         if held then redis.call('HSET', KEYS[4], ARGV[1], held) end\n\
         redis.call('HDEL', KEYS[1], ARGV[1])\n\
         redis.call('DEL', KEYS[3])\n\
         redis.call('XADD', KEYS[2], 'MAXLEN', '~', '{STREAM_MAX}', '*', 'op', 'lift', 'src', ARGV[1])\n\
         return 1\n"
    ))
}

/// Adds, refreshes (ARGV[3] ms from now) or, with 0, removes a binding made
/// by user agent ARGV[5]. With ARGV[4] = `max` an existing later end is
/// kept (an edge handing over what it learnt while apart). Returns the
/// binding's end (0: removed).
fn bind_script() -> Script {
    Script::new(&format!(
        "{NOW}\
         local ms = tonumber(ARGV[3])\n\
         local untl = 0\n\
         if ms == 0 then\n\
           redis.call('HDEL', KEYS[1], ARGV[2])\n\
         else\n\
           untl = now + ms\n\
           local held = redis.call('HGET', KEYS[1], ARGV[2])\n\
           local held_end = tonumber(held and string.match(held, '^%d+') or '0')\n\
           if ARGV[4] == 'max' and held_end > untl then untl = held_end end\n\
           redis.call('HSET', KEYS[1], ARGV[2], untl .. ' ' .. ARGV[5])\n\
           if redis.call('PTTL', KEYS[1]) < ms then redis.call('PEXPIRE', KEYS[1], ms) end\n\
           redis.call('SADD', KEYS[2], ARGV[1])\n\
         end\n\
         redis.call('XADD', KEYS[3], 'MAXLEN', '~', '{STREAM_MAX}', '*', 'op', 'bind', 'user', ARGV[1], 'contact', ARGV[2], 'until', untl, 'ua', ARGV[5])\n\
         return untl\n"
    ))
}

/// Removes every binding of a user (`Contact: *`).
fn clear_script() -> Script {
    Script::new(&format!(
        "redis.call('DEL', KEYS[1])\n\
         redis.call('SREM', KEYS[2], ARGV[1])\n\
         redis.call('XADD', KEYS[3], 'MAXLEN', '~', '{STREAM_MAX}', '*', 'op', 'clear', 'user', ARGV[1])\n\
         return 1\n"
    ))
}

/// The scripts, loaded once.
pub struct Scripts {
    fail: Script,
    lock: Script,
    lift: Script,
    bind: Script,
    clear: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            fail: fail_script(),
            lock: lock_script(),
            lift: lift_script(),
            bind: bind_script(),
            clear: clear_script(),
        }
    }
}

/// How a lockout meets one in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Keep the one in force.
    Keep,
    /// Replace it.
    Set,
}

/// How a binding meets one in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The REGISTER's own expiry.
    Set,
    /// The later of the two.
    Max,
}

/// A lockout policy in the units the scripts take.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub threshold: u32,
    pub window_ms: u64,
    pub duration_ms: u64,
}

impl Scripts {
    /// Adds `n` failures; true when they locked the source out.
    pub async fn fail(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        source: &str,
        n: u32,
        p: Policy,
    ) -> RedisResult<bool> {
        let locked: i64 = self
            .fail
            .key(keys.fail(source))
            .key(keys.lockouts())
            .key(keys.events())
            .key(keys.lifted())
            .arg(source)
            .arg(n)
            .arg(p.threshold)
            .arg(p.window_ms)
            .arg(p.duration_ms)
            .invoke_async(conn)
            .await?;
        Ok(locked == 1)
    }

    /// Locks a source out; returns the lockout's end (server ms).
    pub async fn lock(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        source: &str,
        ms: u64,
        mode: LockMode,
    ) -> RedisResult<u64> {
        self.lock
            .key(keys.lockouts())
            .key(keys.events())
            .key(keys.fail(source))
            .key(keys.lifted())
            .arg(source)
            .arg(ms.max(1))
            .arg(if mode == LockMode::Keep {
                "keep"
            } else {
                "set"
            })
            .invoke_async(conn)
            .await
    }

    pub async fn lift(&self, conn: &mut Conn, keys: &Keys, source: &str) -> RedisResult<()> {
        let _: i64 = self
            .lift
            .key(keys.lockouts())
            .key(keys.events())
            .key(keys.fail(source))
            .key(keys.lifted())
            .arg(source)
            .invoke_async(conn)
            .await?;
        Ok(())
    }

    pub async fn bind(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        b: &Binding,
        ms: u64,
        mode: BindMode,
    ) -> RedisResult<u64> {
        self.bind
            .key(keys.reg(&b.user))
            .key(keys.users())
            .key(keys.events())
            .arg(&b.user)
            .arg(&b.contact)
            .arg(ms)
            .arg(if mode == BindMode::Max { "max" } else { "set" })
            .arg(&b.user_agent)
            .invoke_async(conn)
            .await
    }

    pub async fn clear(&self, conn: &mut Conn, keys: &Keys, user: &str) -> RedisResult<()> {
        let _: i64 = self
            .clear
            .key(keys.reg(user))
            .key(keys.users())
            .key(keys.events())
            .arg(user)
            .invoke_async(conn)
            .await?;
        Ok(())
    }
}

/// The server's clock, in Unix milliseconds.
pub async fn server_ms(conn: &mut Conn) -> RedisResult<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}

/// One binding of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub user: String,
    pub contact: String,
    pub user_agent: String,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Lock { source: String, until_ms: u64 },
    Lift { source: String },
    Bind { binding: Binding, until_ms: u64 },
    Clear { user: String },
}

impl Event {
    /// An event from its stream fields; None for one this edge does not know
    /// (a newer edge's), which is skipped.
    fn parse(fields: &[String]) -> Option<Self> {
        let get = |name: &str| {
            fields
                .chunks_exact(2)
                .find(|kv| kv[0] == name)
                .map(|kv| kv[1].clone())
        };
        let until = || get("until").and_then(|u| u.parse().ok());
        Some(match get("op")?.as_str() {
            "lock" => Event::Lock {
                source: get("src")?,
                until_ms: until()?,
            },
            "lift" => Event::Lift {
                source: get("src")?,
            },
            "bind" => Event::Bind {
                binding: Binding {
                    user: get("user")?,
                    contact: get("contact")?,
                    user_agent: get("ua").unwrap_or_default(),
                },
                until_ms: until()?,
            },
            "clear" => Event::Clear { user: get("user")? },
            _ => return None,
        })
    }
}

/// The id of the stream's last event (`0-0` when empty), where a reader
/// that has just read the whole state starts.
pub async fn last_event_id(conn: &mut Conn, keys: &Keys) -> RedisResult<String> {
    let last: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
        .arg(keys.events())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(last
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
}

/// Events after `after`, waiting up to `block` for the first; returns the
/// id of the last one read (or `after`).
pub async fn read_events(
    conn: &mut Conn,
    keys: &Keys,
    after: &str,
    block: Duration,
) -> RedisResult<(String, Vec<Event>)> {
    type Reply = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;
    let reply: Reply = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1000)
        .arg("BLOCK")
        .arg(u64::try_from(block.as_millis()).unwrap_or(1000))
        .arg("STREAMS")
        .arg(keys.events())
        .arg(after)
        .query_async(conn)
        .await?;
    let mut last = after.to_owned();
    let mut events = Vec::new();
    for (_, entries) in reply.into_iter().flatten() {
        for (id, fields) in entries {
            events.extend(Event::parse(&fields));
            last = id;
        }
    }
    Ok((last, events))
}

/// The fleet's lockouts as (source, end ms).
pub async fn lockouts(conn: &mut Conn, keys: &Keys) -> RedisResult<Vec<(String, u64)>> {
    redis::cmd("HGETALL")
        .arg(keys.lockouts())
        .query_async(conn)
        .await
}

/// Lockouts lifted before their end, as (source, the end they had).
pub async fn lifted(conn: &mut Conn, keys: &Keys) -> RedisResult<Vec<(String, u64)>> {
    redis::cmd("HGETALL")
        .arg(keys.lifted())
        .query_async(conn)
        .await
}

/// Forgets lockouts and lifts whose end has passed.
pub async fn drop_ended(conn: &mut Conn, keys: &Keys, now_ms: u64) -> RedisResult<()> {
    for (hash, entries) in [
        (keys.lockouts(), lockouts(conn, keys).await?),
        (keys.lifted(), lifted(conn, keys).await?),
    ] {
        let ended: Vec<String> = entries
            .into_iter()
            .filter(|&(_, until)| until <= now_ms)
            .map(|(source, _)| source)
            .collect();
        if !ended.is_empty() {
            let () = redis::cmd("HDEL")
                .arg(hash)
                .arg(ended)
                .query_async(conn)
                .await?;
        }
    }
    Ok(())
}

/// The fleet's registrations with their ends (ms).
pub async fn bindings(conn: &mut Conn, keys: &Keys) -> RedisResult<Vec<(Binding, u64)>> {
    let users: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.users())
        .query_async(conn)
        .await?;
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for chunk in users.chunks(500) {
        let mut pipe = redis::pipe();
        for user in chunk {
            pipe.cmd("HGETALL").arg(keys.reg(user));
        }
        let maps: Vec<Vec<(String, String)>> = pipe.query_async(conn).await?;
        for (user, contacts) in chunk.iter().zip(maps) {
            if contacts.is_empty() {
                gone.push(user.clone());
            }
            out.extend(contacts.into_iter().filter_map(|(contact, value)| {
                let (until, user_agent) = value.split_once(' ').unwrap_or((&value, ""));
                let binding = Binding {
                    user: user.clone(),
                    contact,
                    user_agent: user_agent.to_owned(),
                };
                Some((binding, until.parse().ok()?))
            }));
        }
    }
    if !gone.is_empty() {
        let () = redis::cmd("SREM")
            .arg(keys.users())
            .arg(&gone)
            .query_async(conn)
            .await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|&x| x.to_owned()).collect()
    }

    #[test]
    fn events_parse_from_their_fields() {
        assert_eq!(
            Event::parse(&s(&["op", "lock", "src", "192.0.2.1", "until", "17"])),
            Some(Event::Lock {
                source: "192.0.2.1".into(),
                until_ms: 17
            })
        );
        assert_eq!(
            Event::parse(&s(&[
                "op",
                "bind",
                "user",
                "alice",
                "contact",
                "sip:a@192.0.2.1",
                "until",
                "0",
                "ua",
                "Phone/1.0 (x)"
            ])),
            Some(Event::Bind {
                binding: Binding {
                    user: "alice".into(),
                    contact: "sip:a@192.0.2.1".into(),
                    user_agent: "Phone/1.0 (x)".into(),
                },
                until_ms: 0
            })
        );
        assert_eq!(
            Event::parse(&s(&["op", "clear", "user", "bob"])),
            Some(Event::Clear { user: "bob".into() })
        );
        assert_eq!(
            Event::parse(&s(&["op", "lift", "src", "2001:db8::"])),
            Some(Event::Lift {
                source: "2001:db8::".into()
            })
        );
        assert_eq!(Event::parse(&s(&["op", "later", "x", "y"])), None);
        assert_eq!(Event::parse(&s(&["op", "lock", "src", "192.0.2.1"])), None);
    }

    #[test]
    fn every_key_shares_the_tag() {
        let k = Keys::new("edge-a");
        for key in [
            k.fail("192.0.2.1"),
            k.lockouts(),
            k.reg("alice"),
            k.users(),
            k.events(),
        ] {
            assert!(key.starts_with("{edge-a}:"), "{key}");
        }
    }
}
