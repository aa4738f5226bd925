//! `sipauth control` (or `run` without XDP) started on loopback for API
//! tests, with one or more seeded accounts.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::agent::binary;
use crate::pg::free_port;

pub struct Account {
    pub auth_id: String,
    pub auth_token: String,
}

pub struct Control {
    child: Child,
    dir: tempfile::TempDir,
    pub base: String,
    pub accounts: Vec<Account>,
    pub edge_token: String,
}

/// Seeded accounts: `MATEST00000000000001` ... with fixed tokens.
fn seeds(n: usize) -> Vec<Account> {
    (1..=n)
        .map(|i| Account {
            auth_id: format!("MATEST{i:014}"),
            auth_token: format!("token{i:02}-abcdefghijklmnopqrstuvwxyz"),
        })
        .collect()
}

impl Control {
    /// `database`: a URL, or None for a SQLite file in the temp dir.
    pub fn start(database: Option<&str>, extra_toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let db = database.map_or_else(
            || format!("sqlite://{}", dir.path().join("sipauth.db").display()),
            str::to_owned,
        );
        let accounts = seeds(2);
        let mut toml = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[control]\ndatabase = \"{db}\"\nedge_token = \"edge-token-0123456789\"\n"
        );
        for a in &accounts {
            let _ = write!(
                toml,
                "[[control.accounts]]\nauth_id = \"{}\"\nauth_token = \"{}\"\n",
                a.auth_id, a.auth_token
            );
        }
        toml.push_str(extra_toml);
        let cfg = dir.path().join("sipauth.toml");
        std::fs::write(&cfg, toml).expect("config");
        let log = std::fs::File::create(dir.path().join("control.log")).expect("log");
        let child = std::process::Command::new(binary())
            .args(["control", "--log", "trace", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sipauth control");
        let c = Self {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
            accounts,
            edge_token: "edge-token-0123456789".to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::blocking::get(format!("{}/v1/openapi.json", c.base)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sipauth control did not start:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("control.log")).unwrap_or_default()
    }

    pub fn sqlite_file(&self) -> PathBuf {
        self.dir.path().join("sipauth.db")
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id().cast_signed()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sipauth control log (tail) ---");
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// `sipauth edge` with XDP off on loopback, following a control plane.
pub struct EdgeProc {
    child: Child,
    log: PathBuf,
    pub http: String,
    pub sip_port: u16,
}

pub const EDGE_ADMIN_TOKEN: &str = "edge-admin-token-0123456789";

impl EdgeProc {
    pub fn start(control_base: &str, edge_token: &str, state_dir: &std::path::Path) -> Self {
        let port = free_port();
        let sip_port = free_port();
        let token_file = state_dir.join("admin-token");
        std::fs::create_dir_all(state_dir).expect("state dir");
        std::fs::write(&token_file, EDGE_ADMIN_TOKEN).expect("token file");
        let cfg = state_dir.join("edge.toml");
        std::fs::write(
            &cfg,
            format!(
                "[sip]\nlisten = [\"127.0.0.1:{sip_port}\"]\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
                 [xdp]\nmode = \"off\"\n[edge]\ncontrol_url = \"{control_base}\"\ntoken = \"{edge_token}\"\nstate_dir = \"{}\"\n",
                state_dir.display()
            ),
        )
        .expect("edge config");
        let log = state_dir.join(format!("edge-{port}.log"));
        let f = std::fs::File::create(&log).expect("log");
        let child = std::process::Command::new(binary())
            .args(["edge", "--log", "debug", "--config"])
            .arg(&cfg)
            .arg("--admin-token-file")
            .arg(&token_file)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log"))
            .stderr(f)
            .spawn()
            .expect("start sipauth edge");
        let e = Self {
            child,
            log,
            http: format!("http://127.0.0.1:{port}"),
            sip_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::blocking::get(format!("{}/metrics", e.http)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sipauth edge did not start:\n{}",
                e.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        e
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What `/admin/snapshot` says.
    pub fn snapshot(&self, client: &reqwest::blocking::Client) -> serde_json::Value {
        client
            .get(format!("{}/admin/snapshot", self.http))
            .bearer_auth(EDGE_ADMIN_TOKEN)
            .send()
            .and_then(reqwest::blocking::Response::json)
            .expect("edge /admin/snapshot")
    }
}

impl Drop for EdgeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sipauth edge log ---\n{}", self.log());
        }
    }
}
