//! The Debian package on this machine, as an operator uses it: built by
//! `cargo xtask package`, installed with dpkg, its unit checked by
//! `systemd-analyze verify`, its configuration edited in /etc/sipauth, the
//! installed binary started the way the unit starts it (PID 1 here is not
//! systemd: the unit's `ExecStartPre=+` lines as root, then `ExecStart`
//! under `setpriv` with the unit's user, group, capabilities, no new
//! privileges and umask), in the rig's edge namespace, a call placed
//! through it, and the package purged without a trace.

use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sipauth_tests::answer::AnswerServer;
use sipauth_tests::calls::id;
use sipauth_tests::http;
use sipauth_tests::peers::Sipp;
use sipauth_tests::topo::Rig;

const PACKAGE: &str = "sipauth";
const UNIT: &str = "/usr/lib/systemd/system/sipauth.service";
const CONFIG: &str = "/etc/sipauth/sipauth.toml";
const ADMIN_TOKEN_FILE: &str = "/etc/sipauth/admin-token";
const ADMIN_TOKEN: &str = "package-admin-token-0123456789";
const STATE: &str = "/var/lib/sipauth";
const PINS: &str = "/sys/fs/bpf/sipauth";
const HTTP: &str = "127.0.0.1:8080";
const ANSWER: &str = "127.0.0.1:8090";
const REJECT: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup reason="rejected"/></Response>"#;
const SIP_USER: &str = "trunk-user";
const SIP_PASSWORD: &str = "Trunk-Secret-4821";

/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
const CAPS: u64 = (1 << 12) | (1 << 38) | (1 << 39);

/// Runs `cmd` for at most `secs` seconds; its output.
fn run(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    // Read both pipes on threads so a chatty command cannot block on them.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs `cmd` (at most `secs` seconds), panicking with its output when it
/// fails; its stdout.
fn ok(cmd: &mut Command, secs: u64) -> String {
    let out = run(cmd, secs);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
}

/// `getent DATABASE KEY`, split at the colons; None when there is none.
fn getent(db: &str, key: &str) -> Option<Vec<String>> {
    let out = Command::new("getent").args([db, key]).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(':')
            .map(str::to_owned)
            .collect()
    })
}

/// Purges the package when dropped, also when the test fails.
struct Installed;

impl Installed {
    fn new(deb: &Path) -> Self {
        if installed() {
            // Left by a run that was killed.
            eprintln!("package: purging the {PACKAGE} package left installed");
            ok(Command::new("dpkg").args(["--purge", PACKAGE]), 120);
        }
        let guard = Self;
        ok(
            Command::new("dpkg")
                .arg("--install")
                .arg(deb)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            120,
        );
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let _ = run(Command::new("dpkg").args(["--purge", PACKAGE]), 120);
        }
    }
}

/// What the test reads from the installed unit.
struct Unit {
    user: String,
    group: String,
    /// `ExecStartPre=+...` commands: run as root.
    pre: Vec<Vec<String>>,
    exec_start: Vec<String>,
    ambient: Vec<String>,
    bounding: Vec<String>,
    no_new_privileges: bool,
    umask: String,
}

impl Unit {
    fn read(path: &str) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut section = "";
        let mut values: Vec<(String, String)> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                section = if line == "[Service]" { "service" } else { "" };
                continue;
            }
            if section == "service"
                && let Some((k, v)) = line.split_once('=')
            {
                values.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let one = |key: &str| -> String {
            let all: Vec<&String> = values
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v)
                .collect();
            assert_eq!(all.len(), 1, "{key} in {path}: {all:?}");
            all[0].clone()
        };
        let words = |v: &str| -> Vec<String> { v.split_whitespace().map(str::to_owned).collect() };
        let pre = values
            .iter()
            .filter(|(k, _)| k == "ExecStartPre")
            .map(|(_, v)| {
                let root = v
                    .strip_prefix('+')
                    .unwrap_or_else(|| panic!("ExecStartPre without +: {v}"));
                words(root)
            })
            .collect();
        let caps = |key: &str| -> Vec<String> {
            let mut c: Vec<String> = words(&one(key))
                .iter()
                .map(|c| {
                    c.strip_prefix("CAP_")
                        .unwrap_or_else(|| panic!("{key}: {c}"))
                        .to_ascii_lowercase()
                })
                .collect();
            c.sort();
            c
        };
        Self {
            user: one("User"),
            group: one("Group"),
            pre,
            exec_start: words(&one("ExecStart")),
            ambient: caps("AmbientCapabilities"),
            bounding: caps("CapabilityBoundingSet"),
            no_new_privileges: one("NoNewPrivileges") == "yes",
            umask: one("UMask"),
        }
    }

    /// `argv` under the unit's user, group, capabilities and umask, in the
    /// network namespace `netns`.
    fn command(&self, netns: &Path, argv: &[String]) -> Command {
        self.confined(netns, argv, &self.ambient, &self.bounding)
    }

    /// `argv` as the unit runs it, but with these capabilities.
    fn confined(
        &self,
        netns: &Path,
        argv: &[String],
        ambient: &[String],
        bounding: &[String],
    ) -> Command {
        let caps = |set: &[String]| {
            std::iter::once("-all".to_owned())
                .chain(set.iter().map(|c| format!("+{c}")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut cmd = Command::new("sh");
        // sh sets the umask, nsenter enters the namespace, setpriv drops to
        // the unit's identity; each execs the next, so the child's PID is
        // sipauth's.
        cmd.args(["-c", "umask \"$0\" && exec \"$@\"", &self.umask])
            .arg("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["--", "setpriv"])
            .arg(format!("--reuid={}", self.user))
            .arg(format!("--regid={}", self.group))
            .arg("--init-groups")
            .arg(format!("--inh-caps={}", caps(ambient)))
            .arg(format!("--ambient-caps={}", caps(ambient)))
            .arg(format!("--bounding-set={}", caps(bounding)));
        if self.no_new_privileges {
            cmd.arg("--no-new-privs");
        }
        cmd.arg("--").args(argv);
        cmd
    }
}

/// The service process; SIGKILL when dropped while still running.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then at most 10 s for it to exit; whether it exited cleanly.
    fn stop(&mut self) -> bool {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id().cast_signed()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- sipauth log ---\n{}", self.log());
        }
    }
}

/// The fields of a `/proc/PID/status` line.
fn status_line(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Changes one line of the installed configuration, as an operator would.
fn edit(config: &mut String, from: &str, to: &str) {
    assert!(
        config.contains(from),
        "the packaged {CONFIG} has no line {from:?}"
    );
    *config = config.replacen(from, to, 1);
}

#[test]
fn package_installs_runs_confined_and_purges_cleanly() {
    sipauth_tests::require_root();
    let root = workspace();

    // === build ===
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = ok(
        Command::new(cargo)
            .args(["xtask", "package"])
            .current_dir(&root),
        1800,
    );
    let deb = PathBuf::from(built.lines().last().expect("the package's path"));
    let deb = if deb.is_absolute() {
        deb
    } else {
        root.join(deb)
    };
    assert!(
        deb.starts_with(root.join("target/debian")),
        "{}",
        deb.display()
    );
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb), 30);
    for path in ["/usr/bin/sipauth", CONFIG, UNIT] {
        assert!(
            contents.lines().any(|l| l.ends_with(&format!(".{path}"))),
            "{path} not in the package:\n{contents}"
        );
    }

    // === install ===
    let pkg = Installed::new(&deb);
    let conffiles = ok(
        Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]),
        10,
    );
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    let bin = std::fs::metadata("/usr/bin/sipauth").expect("/usr/bin/sipauth");
    assert_eq!(bin.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read_to_string(CONFIG).expect("config"),
        std::fs::read_to_string(root.join("sipauth.toml")).expect("repo config"),
        "the packaged configuration is the repository's sipauth.toml"
    );

    let user = getent("passwd", "sipauth").expect("the sipauth user");
    let uid: u32 = user[2].parse().expect("uid");
    let gid: u32 = user[3].parse().expect("gid");
    assert!(uid < 1000, "a system user: {user:?}");
    assert_eq!(user[5], STATE, "home: {user:?}");
    assert!(user[6].ends_with("nologin"), "shell: {user:?}");
    let group = getent("group", "sipauth").expect("the sipauth group");
    assert_eq!(group[2], gid.to_string());

    // Only root and sipauth read the configuration (it may hold tokens).
    let cfg = std::fs::metadata(CONFIG).expect("config");
    assert_eq!((cfg.uid(), cfg.gid()), (0, gid));
    assert_eq!(cfg.permissions().mode() & 0o777, 0o640);
    let state = std::fs::metadata(STATE).expect("state dir");
    assert_eq!((state.uid(), state.gid()), (uid, gid));
    assert_eq!(state.permissions().mode() & 0o777, 0o750);

    // The unit as systemd would read it.
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]), 60);
    let said = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && !said.contains("sipauth"),
        "systemd-analyze verify {UNIT}: {}\n{said}",
        verify.status
    );
    let unit = Unit::read(UNIT);
    assert_eq!(
        (unit.user.as_str(), unit.group.as_str()),
        ("sipauth", "sipauth")
    );
    assert_eq!(unit.ambient, ["bpf", "net_admin", "perfmon"]);
    assert_eq!(unit.bounding, unit.ambient);
    assert!(unit.no_new_privileges);
    assert_eq!(
        unit.exec_start,
        ["/usr/bin/sipauth", "run", "--config", CONFIG]
    );

    // === configure, as an operator does ===
    let rig = Rig::new(1);
    let c = rig.caller(0);
    let mut config = std::fs::read_to_string(CONFIG).expect("config");
    // sipp answers only the first challenge, and only MD5.
    edit(
        &mut config,
        "challenge_algorithms = [\"SHA-256\", \"MD5\"]",
        "challenge_algorithms = [\"MD5\", \"SHA-256\"]",
    );
    edit(
        &mut config,
        "interfaces = []",
        &format!("interfaces = [{:?}]", c.edge_dev),
    );
    edit(
        &mut config,
        "# token_file = \"/etc/sipauth/admin-token\"",
        &format!("token_file = \"{ADMIN_TOKEN_FILE}\""),
    );
    edit(&mut config, "format = \"text\"", "format = \"json\"");
    std::fs::write(CONFIG, config).expect("edit config");
    std::fs::write(ADMIN_TOKEN_FILE, format!("{ADMIN_TOKEN}\n")).expect("admin token");
    std::os::unix::fs::chown(ADMIN_TOKEN_FILE, Some(0), Some(gid)).expect("chown token");
    std::fs::set_permissions(ADMIN_TOKEN_FILE, std::fs::Permissions::from_mode(0o640))
        .expect("chmod token");

    // An account, made by the sipauth user in the packaged store.
    let mut create = unit.command(
        &rig.edge.path(),
        &[
            "/usr/bin/sipauth".to_owned(),
            "account".to_owned(),
            "create".to_owned(),
            "--config".to_owned(),
            CONFIG.to_owned(),
            "--name".to_owned(),
            "package test".to_owned(),
            "--json".to_owned(),
        ],
    );
    let account: Value = serde_json::from_str(&ok(&mut create, 60)).expect("account JSON");
    let auth_id = id(&account, "auth_id");
    let auth_token = id(&account, "auth_token");
    let db = std::fs::metadata(format!("{STATE}/sipauth.db")).expect("the store");
    assert_eq!((db.uid(), db.gid()), (uid, gid), "the store is sipauth's");
    assert_eq!(db.permissions().mode() & 0o007, 0, "umask 0027");

    // === start, as the unit does ===
    for pre in &unit.pre {
        ok(Command::new(&pre[0]).args(&pre[1..]), 30);
    }
    let pins = std::fs::metadata(PINS).expect("pin dir");
    assert_eq!((pins.uid(), pins.gid()), (uid, gid));
    // Each capability is needed: without one, sipauth stops at once and
    // names it.
    for dropped in &unit.ambient {
        let less: Vec<String> = unit
            .ambient
            .iter()
            .filter(|c| *c != dropped)
            .cloned()
            .collect();
        let out = run(
            &mut unit.confined(&rig.edge.path(), &unit.exec_start, &less, &less),
            30,
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started without {dropped}: {said}");
        let name = format!("CAP_{} is missing", dropped.to_ascii_uppercase());
        assert!(said.contains(&name), "without {dropped}: {said}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("sipauth.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // What systemd sets when stderr is the journal: here the log file.
    let meta = log.metadata().expect("log metadata");
    let mut cmd = unit.command(&rig.edge.path(), &unit.exec_start);
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log);
    let mut service = Service {
        child: cmd.spawn().expect("start sipauth"),
        log: log_path,
    };
    let pid = service.child.id();
    let http: SocketAddr = HTTP.parse().expect("addr");
    let t = Instant::now();
    while !http::request(&rig.edge, http, "GET", "/metrics", None, None)
        .is_ok_and(|r| r.status == 200)
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "sipauth did not come up in 15 s:\n{}",
            service.log()
        );
        assert!(
            service.child.try_wait().expect("wait").is_none(),
            "sipauth exited:\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Its user, and exactly its three capabilities.
    assert_eq!(status_line(pid, "Name"), "sipauth");
    assert_eq!(
        status_line(pid, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_line(pid, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    for set in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(
            u64::from_str_radix(&status_line(pid, set), 16).expect("hex"),
            CAPS,
            "{set}"
        );
    }
    assert_eq!(status_line(pid, "NoNewPrivs"), "1");
    // XDP is attached and its maps are pinned, by sipauth.
    let log = service.log();
    assert!(
        log.contains("XDP program attached"),
        "no XDP attach in the log:\n{log}"
    );
    let layouts: Vec<PathBuf> = std::fs::read_dir(PINS)
        .expect("pin dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(layouts.len(), 1, "{layouts:?}");
    let maps = std::fs::read_dir(&layouts[0]).expect("pins").count();
    assert!(maps >= 5, "{maps} maps pinned in {}", layouts[0].display());
    assert_eq!(std::fs::metadata(&layouts[0]).expect("pins").uid(), uid);

    // === a call ===
    let answer = AnswerServer::start(
        &rig.edge,
        ANSWER.parse().expect("addr"),
        REJECT,
        &auth_token,
    );
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{auth_id}:{auth_token}"))
    };
    let api = |path: &str, body: &Value| -> Value {
        let r = http::request(
            &rig.edge,
            http,
            "POST",
            &format!("/v1/Account/{auth_id}/{path}"),
            Some(&format!("Basic {basic}")),
            Some(&body.to_string()),
        )
        .expect("API request");
        assert!(
            r.status == 201 || r.status == 202,
            "POST {path}: {} {}",
            r.status,
            r.body
        );
        serde_json::from_str(&r.body).expect("API JSON")
    };
    let cred = id(
        &api(
            "SipAuth/Credential/",
            &json!({"username": SIP_USER, "password": SIP_PASSWORD}),
        ),
        "credential_uuid",
    );
    let app = id(
        &api(
            "Application/",
            &json!({
                "app_name": "trunk",
                "answer_url": answer.url("/answer"),
                "hangup_url": answer.url("/hangup"),
                "sip_auth_type": "credential",
                "credential_uuid": cred,
            }),
        ),
        "app_id",
    );
    let t = Instant::now();
    loop {
        let r = http::request(
            &rig.edge,
            http,
            "GET",
            "/admin/snapshot",
            Some(&format!("Bearer {ADMIN_TOKEN}")),
            None,
        )
        .expect("admin snapshot");
        assert_eq!(
            r.status, 200,
            "the admin token from {ADMIN_TOKEN_FILE}: {}",
            r.body
        );
        if r.body.contains(&app) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the edge never had {app}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // INVITE, 407, INVITE with credentials, the answer XML's 603.
    Sipp {
        ns: &c.ns,
        scenario: "auth_603.xml",
        local: c.v4,
        target: SocketAddr::new(c.edge_v4, 5060),
        tcp: false,
        calls: 1,
        rate: 10,
        service: &app,
        auth: Some((SIP_USER, SIP_PASSWORD)),
        vars: Vec::new(),
    }
    .run()
    .unwrap_or_else(|e| panic!("the call: {e}\n{}", service.log()));
    let hits = answer.wait_for(1);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].signature_ok, "{:?}", hits[0]);
    assert_eq!(hits[0].params["SIPAuthType"], "credential");
    assert_eq!(hits[0].params["SIPAuthUser"], SIP_USER);

    // === stop; the journal's lines ===
    assert!(
        service.stop(),
        "sipauth did not exit cleanly on SIGTERM:\n{}",
        service.log()
    );
    let log = service.log();
    let mut messages = Vec::new();
    for line in log.lines() {
        let (priority, json) = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap_or_else(|| panic!("no priority prefix: {line}"));
        assert!(matches!(priority, "3" | "4" | "6" | "7"), "{line}");
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"));
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("level: {line}"));
        let expected = match level {
            "ERROR" => "3",
            "WARN" => "4",
            "INFO" => "6",
            _ => "7",
        };
        assert_eq!(priority, expected, "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        messages.push(v["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        messages.iter().any(|m| m == "XDP program attached"),
        "{messages:?}"
    );
    for secret in [SIP_PASSWORD, auth_token.as_str(), ADMIN_TOKEN] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }

    // === purge ===
    ok(Command::new("dpkg").args(["--purge", PACKAGE]), 120);
    assert!(!installed());
    assert!(getent("passwd", "sipauth").is_none(), "the user is gone");
    assert!(getent("group", "sipauth").is_none(), "the group is gone");
    for gone in ["/usr/bin/sipauth", UNIT, "/etc/sipauth", STATE, PINS] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
    drop(pkg);
}
