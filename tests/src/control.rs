//! `sipauth control` (or `run` without XDP) started on loopback for API
//! tests, with one or more seeded accounts.

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
            toml.push_str(&format!(
                "[[control.accounts]]\nauth_id = \"{}\"\nauth_token = \"{}\"\n",
                a.auth_id, a.auth_token
            ));
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
