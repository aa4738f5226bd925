//! The fleet against a private `redis-server` started by each test (on a
//! free loopback port, no persistence): two or three edges' tables, each
//! with its own [`Cluster`], kept in step through it.

use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipauth_kernel::lockout::Lockouts;
use sipauth_kernel::maps::LockoutPolicy;
use sipauth_model::Registrations as _;

use super::*;

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Self::on(port)
    }

    fn on(port: u16) -> Self {
        Self::with(port, &[])
    }

    fn with(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (cargo xtask setup installs it)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One edge's tables and its handle on the fleet.
struct Node {
    lockouts: Arc<Lockouts>,
    registrar: Arc<Registrar>,
    counters: Arc<Counters>,
    cluster: Cluster,
}

fn node(url: &str, prefix: &str) -> Node {
    node_with(url, prefix, None)
}

fn node_with(url: &str, prefix: &str, ca: Option<&[u8]>) -> Node {
    let policy = LockoutPolicy::new(10, 60, 60, 64).expect("policy");
    let lockouts = Arc::new(Lockouts::memory(policy, &[]));
    let registrar = Arc::new(Registrar::default());
    let counters = Arc::new(Counters::default());
    let cluster = Cluster::start(
        &Settings {
            redis_url: url.to_owned(),
            key_prefix: prefix.to_owned(),
            ca_pem: ca.map(<[u8]>::to_vec),
        },
        lockouts.clone(),
        registrar.clone(),
        counters.clone(),
    );
    Node {
        lockouts,
        registrar,
        counters,
        cluster,
    }
}

async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.elapsed()
}

async fn connected(nodes: &[&Node]) {
    for n in nodes {
        until("connected", Duration::from_secs(5), || {
            n.counters.up.load(Relaxed)
        })
        .await;
    }
}

const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 77));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_spread_over_edges_lock_the_source_out_on_all() {
    let redis = Redis::start();
    let (a, b, c) = (
        node(&redis.url(), "t1"),
        node(&redis.url(), "t1"),
        node(&redis.url(), "t1"),
    );
    connected(&[&a, &b, &c]).await;
    for (n, count) in [(&a, 4), (&b, 3), (&c, 2)] {
        for _ in 0..count {
            assert!(!n.lockouts.record_failure(SRC), "no edge reaches 10 alone");
        }
    }
    // Nine in all: nobody is locked out.
    tokio::time::sleep(PUSH_EVERY * 3).await;
    for n in [&a, &b, &c] {
        assert!(!n.lockouts.is_locked(SRC));
    }
    c.lockouts.record_failure(SRC);
    for n in [&a, &b, &c] {
        let took = until("locked out everywhere", Duration::from_secs(1), || {
            n.lockouts.is_locked(SRC)
        })
        .await;
        assert!(took < Duration::from_secs(1));
    }
    // One end for all, the fleet's: within a second of each other.
    let ends: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|n| millis(n.lockouts.remaining(SRC).unwrap().unwrap()))
        .collect();
    let spread = ends.iter().max().unwrap() - ends.iter().min().unwrap();
    assert!(spread < SAME_END_MS, "ends {ends:?}");
    // Attempts during the lockout are not failures and extend nothing.
    assert!(b.counters.failures_sent.load(Relaxed) <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lockout_and_lift_reach_every_edge() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url(), "t2"), node(&redis.url(), "t2"));
    connected(&[&a, &b]).await;
    a.lockouts.lock(SRC, Duration::from_mins(5)).unwrap();
    a.cluster.lock(SRC, Duration::from_mins(5));
    until("locked on b", Duration::from_secs(1), || {
        b.lockouts.is_locked(SRC)
    })
    .await;
    let left = b.lockouts.remaining(SRC).unwrap().unwrap();
    assert!(left > Duration::from_secs(290), "{left:?}");
    b.lockouts.lift(SRC).unwrap();
    b.cluster.lift(SRC);
    until("lifted on a", Duration::from_secs(1), || {
        !a.lockouts.is_locked(SRC)
    })
    .await;
    // The fleet forgot it: a later hand-over does not bring it back.
    tokio::time::sleep(PUSH_EVERY * 3).await;
    assert!(!a.lockouts.is_locked(SRC) && !b.lockouts.is_locked(SRC));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_made_by_one_edge_alone_joins_the_fleet() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url(), "t3"), node(&redis.url(), "t3"));
    connected(&[&a, &b]).await;
    // Ten failures on one edge lock it there first.
    for _ in 0..10 {
        a.lockouts.record_failure(SRC);
    }
    assert!(a.lockouts.is_locked(SRC));
    until("locked on b", Duration::from_secs(1), || {
        b.lockouts.is_locked(SRC)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_through_one_edge_is_seen_by_the_others() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url(), "t4"), node(&redis.url(), "t4"));
    connected(&[&a, &b]).await;
    a.registrar
        .bind("alice", "sip:alice@192.0.2.5:5060", 120, "Desk/2.1");
    a.cluster
        .bind("alice", "sip:alice@192.0.2.5:5060", 120, "Desk/2.1");
    until("bound on b", Duration::from_secs(1), || {
        b.registrar.is_live("alice")
    })
    .await;
    let left = b.registrar.bindings("alice")[0].1;
    assert!((118..=120).contains(&left), "{left}");
    assert_eq!(b.registrar.current("alice").unwrap().user_agent, "Desk/2.1");
    // A third edge started later learns it from the table, and so does a
    // control plane that only follows.
    let c = node(&redis.url(), "t4");
    let shown = Arc::new(Registrar::default());
    let follower = Cluster::follow_registrations(
        &Settings {
            redis_url: redis.url(),
            key_prefix: "t4".to_owned(),
            ca_pem: None,
        },
        shown.clone(),
        Arc::new(Counters::default()),
    );
    connected(&[&c]).await;
    assert!(c.registrar.is_live("alice"));
    until("seen by the follower", Duration::from_secs(2), || {
        shown.is_live("alice")
    })
    .await;
    assert_eq!(shown.current("alice").unwrap().user_agent, "Desk/2.1");
    // Expires: 0 through another edge removes it everywhere.
    b.registrar.bind("alice", "sip:alice@192.0.2.5:5060", 0, "");
    b.cluster.bind("alice", "sip:alice@192.0.2.5:5060", 0, "");
    until("unbound on a", Duration::from_secs(1), || {
        !a.registrar.is_live("alice")
    })
    .await;
    until("unbound on c", Duration::from_secs(1), || {
        !c.registrar.is_live("alice")
    })
    .await;
    // Contact: *
    c.registrar.bind("bob", "sip:bob@192.0.2.6", 60, "");
    c.cluster.bind("bob", "sip:bob@192.0.2.6", 60, "");
    until("bound on a", Duration::from_secs(1), || {
        a.registrar.is_live("bob")
    })
    .await;
    a.registrar.clear("bob");
    a.cluster.clear("bob");
    until("cleared on c", Duration::from_secs(1), || {
        !c.registrar.is_live("bob")
    })
    .await;
    until("unbound at the follower", Duration::from_secs(1), || {
        !shown.is_live("alice")
    })
    .await;
    drop(follower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_go_on_alone_while_redis_is_away_and_catch_up_after() {
    let redis = Redis::start();
    let port = redis.port;
    let (a, b) = (node(&redis.url(), "t5"), node(&redis.url(), "t5"));
    connected(&[&a, &b]).await;
    drop(redis);
    until("down on a", Duration::from_secs(5), || {
        !a.counters.up.load(Relaxed)
    })
    .await;
    // Alone, an edge still counts and locks out by itself, at once.
    let t = Instant::now();
    for _ in 0..10 {
        a.lockouts.record_failure(SRC);
    }
    assert!(a.lockouts.is_locked(SRC));
    a.registrar.bind("carol", "sip:carol@192.0.2.7", 300, "");
    a.cluster.bind("carol", "sip:carol@192.0.2.7", 300, "");
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "nothing waits for Redis"
    );
    let mut text = String::new();
    a.counters.render(&mut text);
    assert!(text.contains("sipauth_cluster_up 0\n"), "{text}");
    assert!(!b.lockouts.is_locked(SRC));

    // Back (empty: it kept nothing): what a made while apart reaches b.
    let _redis = Redis::on(port);
    connected(&[&a, &b]).await;
    until("locked on b", Duration::from_secs(5), || {
        b.lockouts.is_locked(SRC)
    })
    .await;
    until("bound on b", Duration::from_secs(5), || {
        b.registrar.is_live("carol")
    })
    .await;
    assert!(a.counters.disconnects.load(Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_with_a_password_is_joined_with_it_and_not_without() {
    let port = Redis::start().port;
    let redis = Redis::with(port, &["--requirepass", "s3cret-pw"]);
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/0", redis.port);
    let (a, b) = (node(&url, "t6"), node(&url, "t6"));
    connected(&[&a, &b]).await;
    a.lockouts.lock(SRC, Duration::from_mins(1)).unwrap();
    a.cluster.lock(SRC, Duration::from_mins(1));
    until("locked on b", Duration::from_secs(1), || {
        b.lockouts.is_locked(SRC)
    })
    .await;
    let wrong = node(&redis.url(), "t6");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!wrong.counters.up.load(Relaxed), "no password, no fleet");
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl.
fn tls_files(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=fleet test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_over_tls_is_joined_when_its_certificate_chains_to_the_ca() {
    let certs = tempfile::tempdir().unwrap();
    tls_files(certs.path());
    let port = Redis::start().port;
    let p = |f: &str| certs.path().join(f).display().to_string();
    // The plain port is turned off (the later --port wins), the TLS one
    // takes its place.
    let _redis = Redis::with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server.key"),
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
    );
    let ca = std::fs::read(certs.path().join("ca.pem")).unwrap();
    let url = format!("rediss://127.0.0.1:{port}/0");
    let (a, b) = (
        node_with(&url, "t7", Some(&ca)),
        node_with(&url, "t7", Some(&ca)),
    );
    connected(&[&a, &b]).await;
    a.registrar.bind("dave", "sip:dave@192.0.2.8", 60, "");
    a.cluster.bind("dave", "sip:dave@192.0.2.8", 60, "");
    until("bound on b", Duration::from_secs(1), || {
        b.registrar.is_live("dave")
    })
    .await;
    // Without the CA (the system's roots), the certificate is refused.
    let untrusted = node(&url, "t7");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!untrusted.counters.up.load(Relaxed));
}

#[test]
fn a_password_is_not_shown() {
    assert_eq!(
        redacted("redis://:s3cret@10.0.0.1:6379/0"),
        "redis://***@10.0.0.1:6379/0"
    );
    assert_eq!(
        redacted("rediss://user:pw@r.test:6380"),
        "rediss://***@r.test:6380"
    );
    assert_eq!(redacted("redis://10.0.0.1"), "redis://10.0.0.1");
}
