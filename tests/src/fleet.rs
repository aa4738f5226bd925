//! A fleet on one LAN: three `sipauth edge` processes, each in its own
//! namespace with XDP on its interface, following one `sipauth control`
//! and sharing one Redis (a single server, or a three-primary Redis
//! Cluster), with one caller that can reach every edge:
//!
//! ```text
//!                    hub: br0 10.203.0.1 (control :8090, Redis :6379 or :7001-7003)
//!         +-------------+--------------+--------------+
//!   edge1 eth0     edge2 eth0     edge3 eth0      caller eth0
//!   10.203.0.11    10.203.0.12    10.203.0.13     10.203.0.100
//! ```
//!
//! Every process is started here and ended by its PID when the fleet is
//! dropped; the addresses exist only inside the namespaces.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::agent::binary;
use crate::http;
use crate::netns::{Netns, ip, sh};

pub const HUB: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
pub const CALLER: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 100);
const CONTROL_PORT: u16 = 8090;
const ADMIN_TOKEN: &str = "fleet-admin-token-0123456789";
const EDGE_TOKEN: &str = "fleet-edge-token-0123456789";
pub const AUTH_ID: &str = "MAFLEET0000000000001";
pub const AUTH_TOKEN: &str = "fleet-account-token-0123456789";
/// The fleet's shared nonce seal.
const NONCE_SECRET: &str = "5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1";
/// Each edge's HTTP, on its own loopback.
const EDGE_HTTP: &str = "127.0.0.1:8080";

/// Which Redis the fleet shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Single,
    /// Three primaries made with `redis-cli --cluster create`.
    Cluster,
}

pub struct Edge {
    pub ns: Netns,
    pub addr: Ipv4Addr,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    pin_dir: PathBuf,
}

pub struct Fleet {
    pub edges: Vec<Edge>,
    pub caller: Netns,
    redis: Vec<Redis>,
    pub backend: Backend,
    control: Child,
    dir: tempfile::TempDir,
    /// Declared last: removed after everything in it has ended.
    pub hub: Netns,
}

fn kill(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Joins `ns` to the hub's bridge as `eth0` with `addr`.
fn plug(hub: &Netns, ns: &Netns, addr: Ipv4Addr, port: &str) {
    let tag = format!("{:x}", std::process::id() % 0xfffff);
    let (a, b) = (format!("sf{tag}{port}a"), format!("sf{tag}{port}b"));
    ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    ip(&["link", "set", &a, "netns", &ns.name]);
    ip(&["link", "set", &b, "netns", &hub.name]);
    ns.ip(&["link", "set", &a, "name", "eth0"]);
    hub.ip(&["link", "set", &b, "name", port]);
    hub.ip(&["link", "set", port, "master", "br0", "up"]);
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
}

impl Fleet {
    /// The hub with control and Redis, three edges and the caller.
    #[must_use]
    pub fn start(backend: Backend) -> Self {
        crate::require_root();
        crate::sweep_pins();
        let dir = tempfile::tempdir().expect("temp dir");
        let hub = Netns::new("hub");
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.ip(&["addr", "add", &format!("{HUB}/24"), "dev", "br0"]);
        hub.ip(&["link", "set", "br0", "up"]);
        let caller = Netns::new("caller");
        plug(&hub, &caller, CALLER, "pc");

        let redis = match backend {
            Backend::Single => vec![Redis::start(&hub, HUB, 6379)],
            Backend::Cluster => {
                let nodes: Vec<Redis> = (7001..=7003)
                    .map(|p| Redis::node(&hub, HUB, p, true))
                    .collect();
                let mut create = hub.cmd("redis-cli");
                create.args(["--cluster", "create"]);
                for p in 7001..=7003 {
                    create.arg(format!("{HUB}:{p}"));
                }
                create.args(["--cluster-replicas", "0", "--cluster-yes"]);
                sh(create.stdin(Stdio::null()));
                wait_cluster_ok(&hub);
                nodes
            }
        };
        let control = start_control(&hub, &dir, &redis_url(backend));

        let mut fleet = Self {
            edges: Vec::new(),
            caller,
            redis,
            backend,
            control,
            dir,
            hub,
        };
        for i in 1..=3u8 {
            let ns = Netns::new(&format!("edge{i}"));
            let addr = Ipv4Addr::new(10, 203, 0, 10 + i);
            plug(&fleet.hub, &ns, addr, &format!("p{i}"));
            let edge = fleet.edge(ns, addr, i);
            fleet.edges.push(edge);
        }
        for i in 0..3 {
            fleet.start_edge(i);
        }
        fleet
    }

    /// The Redis URL the edges use.
    #[must_use]
    pub fn redis_url(&self) -> String {
        redis_url(self.backend)
    }

    fn edge(&self, ns: Netns, addr: Ipv4Addr, i: u8) -> Edge {
        let state = self.dir.path().join(format!("edge{i}"));
        std::fs::create_dir_all(&state).expect("state dir");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/sipauth-rig-{}-fleet{i}",
            std::process::id()
        ));
        let config = state.join("sipauth.toml");
        let mut toml = format!(
            "[sip]\nlisten = [\"{addr}:5060\"]\ndomain = \"fleet.test\"\n\
             nonce_secret = \"{NONCE_SECRET}\"\n\
             [lockout]\nthreshold = 10\nwindow_secs = 60\nduration_secs = 60\n\
             [http]\nlisten = \"{EDGE_HTTP}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\
             [xdp]\nmode = \"native\"\ninterfaces = [\"eth0\"]\nbudget_per_sec = 0\npin_dir = \"{}\"\n\
             [edge]\ncontrol_url = \"http://{HUB}:{CONTROL_PORT}\"\ntoken = \"{EDGE_TOKEN}\"\nstate_dir = \"{}\"\n",
            pin_dir.display(),
            state.display(),
        );
        let _ = write!(
            toml,
            "[cluster]\nredis_url = \"{}\"\n[log]\nfilter = \"info,sipauth_edge::cluster=debug\"\n",
            self.redis_url()
        );
        std::fs::write(&config, toml).expect("edge config");
        Edge {
            ns,
            addr,
            child: None,
            config,
            log: state.join("edge.log"),
            pin_dir,
        }
    }

    /// Starts edge `i` and waits until it answers on HTTP.
    pub fn start_edge(&mut self, i: usize) {
        let e = &mut self.edges[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&e.log)
            .expect("log");
        let child =
            e.ns.cmd(binary().to_str().expect("utf-8 path"))
                .args(["edge", "--config"])
                .arg(&e.config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start sipauth edge");
        e.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http::request(
            &e.ns,
            EDGE_HTTP.parse().expect("addr"),
            "GET",
            "/metrics",
            None,
            None,
        )
        .is_ok_and(|r| r.status == 200)
        {
            assert!(
                Instant::now() < deadline,
                "edge {i} did not start:\n{}",
                e.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops edge `i` (SIGTERM).
    pub fn stop_edge(&mut self, i: usize) {
        if let Some(mut c) = self.edges[i].child.take() {
            kill(&mut c);
        }
    }

    /// Stops the (single) Redis server; [`Fleet::restart_redis`] brings
    /// it back, empty.
    pub fn stop_redis(&mut self) {
        assert_eq!(self.backend, Backend::Single);
        self.redis.clear();
    }

    pub fn restart_redis(&mut self) {
        assert_eq!(self.backend, Backend::Single);
        self.redis = vec![Redis::start(&self.hub, HUB, 6379)];
    }

    /// `(status, JSON)` of an API request to the control plane.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        use base64::Engine as _;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{AUTH_ID}:{AUTH_TOKEN}"));
        let body = body.map(ToString::to_string);
        let r = http::request(
            &self.hub,
            SocketAddr::new(IpAddr::V4(HUB), CONTROL_PORT),
            method,
            &format!("/v1/Account/{AUTH_ID}/{path}"),
            Some(&format!("Basic {basic}")),
            body.as_deref(),
        )
        .expect("API request");
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Waits until every edge's snapshot holds `needle` (an id).
    pub fn until_known(&self, needle: &str) {
        let t = Instant::now();
        while !self.edges.iter().all(|e| e.knows(needle)) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "edges never saw {needle}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An application that admits only 192.0.2.0/24: every INVITE from
    /// the caller's addresses is a failure (dropped and counted by XDP, or
    /// refused in user space). Returns its app_id once every edge has it.
    #[must_use]
    pub fn acl_app(&self) -> String {
        let acl = self.create(
            "SipAuth/IpAccessControlList/",
            &serde_json::json!({"name": "office"}),
        )["ip_acl_uuid"]
            .as_str()
            .expect("ip_acl_uuid")
            .to_owned();
        self.create(
            &format!("SipAuth/IpAccessControlList/{acl}/Entry/"),
            &serde_json::json!({"ip": "192.0.2.0", "cidr_prefix": 24}),
        );
        let app = self.create(
            "Application/",
            &serde_json::json!({"app_name": "fleet", "answer_url": "http://192.0.2.1/answer",
                    "sip_auth_type": "ip_acl", "ip_acl_uuid": acl}),
        )["app_id"]
            .as_str()
            .expect("app_id")
            .to_owned();
        self.until_known(&app);
        app
    }

    /// Sends `n` INVITEs to `app` through `edge` from `src` (an address of
    /// the caller), 20 ms apart.
    pub fn fire(&self, src: Ipv4Addr, edge: &Edge, app: &str, n: usize, tag: &str) {
        let sock = self.caller.enter(|| {
            std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(src), 0)).expect("bind")
        });
        let from = sock.local_addr().expect("local address");
        for i in 0..n {
            let msg = crate::peers::invite(app, from, edge.sip(), &format!("{tag}{i}"));
            sock.send_to(msg.as_bytes(), edge.sip()).expect("send");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// POST that must succeed; returns the body.
    pub fn create(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let (s, v) = self.api("POST", path, Some(body));
        assert!(s == 201 || s == 202, "POST {path} {body}: {s} {v}");
        v
    }
}

impl Edge {
    #[must_use]
    pub fn sip(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addr), 5060)
    }

    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `(status, body)` of an admin request.
    #[must_use]
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let r = http::request(
            &self.ns,
            EDGE_HTTP.parse().expect("addr"),
            method,
            path,
            Some(&format!("Bearer {ADMIN_TOKEN}")),
            body,
        )
        .expect("admin request");
        (r.status, r.body)
    }

    #[must_use]
    pub fn metrics(&self) -> String {
        http::request(
            &self.ns,
            EDGE_HTTP.parse().expect("addr"),
            "GET",
            "/metrics",
            None,
            None,
        )
        .expect("GET /metrics")
        .body
    }

    /// Whether `/admin/lockouts` lists `addr`.
    #[must_use]
    pub fn lists(&self, addr: Ipv4Addr) -> bool {
        let (status, body) = self.admin("GET", "/admin/lockouts", None);
        assert_eq!(status, 200, "{body}");
        body.contains(&format!("\"{addr}\""))
    }

    /// Whether the edge's snapshot holds `needle` (an id).
    #[must_use]
    pub fn knows(&self, needle: &str) -> bool {
        let (status, body) = self.admin("GET", "/admin/snapshot", None);
        status == 200 && body.contains(needle)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for (i, e) in self.edges.iter_mut().enumerate() {
            if let Some(mut c) = e.child.take() {
                kill(&mut c);
            }
            let _ = std::fs::remove_dir_all(&e.pin_dir);
            if panicking {
                let log = e.log();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- edge {} log (tail) ---", i + 1);
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
        }
        kill(&mut self.control);
        self.redis.clear();
    }
}

/// A private `redis-server` (no persistence) in a namespace, ended when
/// dropped.
pub struct Redis {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// A single server on `bind:port` inside `ns`.
    #[must_use]
    pub fn start(ns: &Netns, bind: Ipv4Addr, port: u16) -> Self {
        Self::node(ns, bind, port, false)
    }

    /// A server, as a Cluster node when `cluster`.
    #[must_use]
    pub fn node(ns: &Netns, bind: Ipv4Addr, port: u16, cluster: bool) -> Self {
        let dir = tempfile::tempdir().expect("redis dir");
        let mut cmd = ns.cmd("redis-server");
        cmd.args(["--bind", &bind.to_string(), "--port", &port.to_string()])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        if cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.path().join("nodes.conf"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (cargo xtask setup installs it)");
        let redis = Self { child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = ns
                .cmd("redis-cli")
                .args(["-h", &bind.to_string(), "-p", &port.to_string(), "PING"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
            if pong {
                return redis;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server {bind}:{port} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn wait_cluster_ok(hub: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = (7001..=7003).all(|p| {
            hub.cmd("redis-cli")
                .args([
                    "-h",
                    &HUB.to_string(),
                    "-p",
                    &p.to_string(),
                    "CLUSTER",
                    "INFO",
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "the Redis Cluster did not form");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn redis_url(backend: Backend) -> String {
    match backend {
        Backend::Single => format!("redis://{HUB}:6379/0"),
        Backend::Cluster => format!("redis://{HUB}:7001"),
    }
}

/// `sipauth control`, which shows the fleet's registrations from Redis.
fn start_control(hub: &Netns, dir: &tempfile::TempDir, redis: &str) -> Child {
    let cfg = dir.path().join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[http]\nlisten = \"{HUB}:{CONTROL_PORT}\"\n[sip]\ndomain = \"fleet.test\"\n\
             [control]\ndatabase = \"sqlite://{}\"\nedge_token = \"{EDGE_TOKEN}\"\n\
             [[control.accounts]]\nauth_id = \"{AUTH_ID}\"\nauth_token = \"{AUTH_TOKEN}\"\n\
             [cluster]\nredis_url = \"{redis}\"\n",
            dir.path().join("sipauth.db").display()
        ),
    )
    .expect("control config");
    let log = std::fs::File::create(dir.path().join("control.log")).expect("log");
    let child = hub
        .cmd(binary().to_str().expect("utf-8 path"))
        .args(["control", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start sipauth control");
    let addr = SocketAddr::new(IpAddr::V4(HUB), CONTROL_PORT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http::request(hub, addr, "GET", "/v1/openapi.json", None, None)
        .is_ok_and(|r| r.status == 200)
    {
        assert!(Instant::now() < deadline, "sipauth control did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
