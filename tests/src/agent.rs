//! The real `sipauth` binary, started in the edge namespace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::http;
use crate::topo::Rig;

pub const ADMIN_TOKEN: &str = "rig-admin-token-0123456789";
pub const HTTP: &str = "127.0.0.1:8080";
pub const RIG_AUTH_ID: &str = "MARIG000000000000001";
pub const RIG_AUTH_TOKEN: &str = "rig-account-token-0123456789";

/// Settings a test may vary.
pub struct Options {
    pub xdp_mode: &'static str,
    pub budget_per_sec: u32,
    /// XDP interfaces; None: the edge side of every caller link.
    pub interfaces: Option<Vec<String>>,
    /// Lines added to `[sip]`.
    pub sip_extra: String,
    /// `[lockout]` threshold, window and duration in seconds.
    pub lockout: (u32, u64, u64),
    /// Lines added to `[lockout]`.
    pub lockout_extra: String,
    /// Whole sections added at the end (`[cluster]`, say).
    pub sections: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            xdp_mode: "native",
            budget_per_sec: 10,
            interfaces: None,
            // sipp answers only the first challenge and only MD5.
            sip_extra: "challenge_algorithms = [\"MD5\", \"SHA-256\"]\n".to_owned(),
            lockout: (10, 60, 60),
            lockout_extra: String::new(),
            sections: String::new(),
        }
    }
}

pub struct Agent<'r> {
    child: Child,
    rig: &'r Rig,
    dir: tempfile::TempDir,
    pub http: SocketAddr,
}

/// The binary `cargo xtask test` built (`SIPAUTH_BIN`), else the release
/// build of this workspace.
#[must_use]
pub fn binary() -> PathBuf {
    std::env::var_os("SIPAUTH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/sipauth"),
        PathBuf::from,
    )
}

impl<'r> Agent<'r> {
    /// Starts the agent and waits until it answers on HTTP.
    #[must_use]
    pub fn start(rig: &'r Rig, opts: &Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let interfaces: Vec<String> = opts
            .interfaces
            .clone()
            .unwrap_or_else(|| rig.edge_devs())
            .iter()
            .map(|d| format!("{d:?}"))
            .collect();
        let config = format!(
            "[sip]\nlisten = [\"0.0.0.0:5060\", \"[::]:5060\"]\n{}\
             [lockout]\nthreshold = {}\nwindow_secs = {}\nduration_secs = {}\n{}\
             [http]\nlisten = \"{HTTP}\"\n\
             [admin]\ntoken = \"{ADMIN_TOKEN}\"\n\
             [xdp]\nmode = \"{}\"\ninterfaces = [{}]\nbudget_per_sec = {}\npin_dir = \"{}\"\n\
             [control]\ndatabase = \"sqlite://{}\"\n\
             [[control.accounts]]\nauth_id = \"{RIG_AUTH_ID}\"\nauth_token = \"{RIG_AUTH_TOKEN}\"\n\
             [edge]\nstate_dir = \"{}\"\n\
             [log]\nfilter = \"info\"\n{}",
            opts.sip_extra,
            opts.lockout.0,
            opts.lockout.1,
            opts.lockout.2,
            opts.lockout_extra,
            opts.xdp_mode,
            interfaces.join(", "),
            opts.budget_per_sec,
            rig.pin_dir.display(),
            dir.path().join("sipauth.db").display(),
            dir.path().display(),
            opts.sections,
        );
        let cfg_path = dir.path().join("sipauth.toml");
        std::fs::write(&cfg_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log file");
        let bin = binary();
        assert!(
            bin.exists(),
            "{} missing: build it (cargo xtask test does)",
            bin.display()
        );
        let child = rig
            .edge
            .cmd(bin.to_str().expect("utf-8 path"))
            .args(["run", "--config"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start sipauth");
        let agent = Self {
            child,
            rig,
            dir,
            http: HTTP.parse().expect("addr"),
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if http::request(&self.rig.edge, self.http, "GET", "/metrics", None, None)
                .is_ok_and(|r| r.status == 200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sipauth did not come up in 15 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    #[must_use]
    pub fn metrics(&self) -> String {
        let r = http::request(&self.rig.edge, self.http, "GET", "/metrics", None, None)
            .expect("GET /metrics");
        assert_eq!(r.status, 200);
        r.body
    }

    /// The status of `GET /ready`: 200 while the edge takes calls.
    #[must_use]
    pub fn ready(&self) -> u16 {
        http::request(&self.rig.edge, self.http, "GET", "/ready", None, None)
            .expect("GET /ready")
            .status
    }

    /// `(status, body)` of an admin request with the rig's token.
    #[must_use]
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let r = http::request(
            &self.rig.edge,
            self.http,
            method,
            path,
            Some(&format!("Bearer {ADMIN_TOKEN}")),
            body,
        )
        .expect("admin request");
        (r.status, r.body)
    }

    /// `(status, JSON)` of an API request as the rig's account.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let auth = format!("Basic {}", basic(RIG_AUTH_ID, RIG_AUTH_TOKEN));
        let body = body.map(ToString::to_string);
        let r = http::request(
            &self.rig.edge,
            self.http,
            method,
            &format!("/v1/Account/{RIG_AUTH_ID}/{path}"),
            Some(&auth),
            body.as_deref(),
        )
        .expect("API request");
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// POST to the API that must succeed; returns the body.
    pub fn create(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let (s, v) = self.api("POST", path, Some(body));
        assert!(s == 201 || s == 202, "POST {path} {body}: {s} {v}");
        v
    }

    pub fn lock_out(&self, addr: std::net::IpAddr, secs: u64) {
        let (status, body) = self.admin(
            "POST",
            "/admin/lockouts",
            Some(&format!(
                "{{\"address\":\"{addr}\",\"duration_secs\":{secs}}}"
            )),
        );
        assert_eq!(status, 201, "lock out {addr}: {body}");
    }

    pub fn lift(&self, addr: std::net::IpAddr) {
        let (status, body) = self.admin("DELETE", &format!("/admin/lockouts/{addr}"), None);
        assert_eq!(status, 204, "lift {addr}: {body}");
    }

    /// Stops the agent with SIGTERM (SIGKILL after 5 s) and returns its log.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.log()
    }

    /// Sends SIGTERM and returns at once: the agent drains its calls
    /// (`sip.drain_secs`) and exits.
    pub fn sigterm(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid().cast_signed()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// The agent's exit status once it has exited, waiting `within` at
    /// most; `None` if it still runs.
    pub fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.sigterm();
        if self.exit_within(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            eprintln!("--- sipauth log ---\n{}", self.log());
        }
    }
}

/// `user:password` in base64, for HTTP Basic.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
