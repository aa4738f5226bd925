//! A real SIP user agent in a caller namespace: Debian's baresip 1.0
//! (`baresip-core`), headless (a sine tone as its microphone, no player),
//! driven from its command line (`-e` commands at start, `-t` seconds until
//! it hangs up and quits) and judged by what it prints.
//!
//! What baresip 1.0 cannot do, and the tests say so where it matters:
//! - it gives up on a 401/407 when any challenge is not MD5, even with an
//!   MD5 one beside it ("Function not implemented");
//! - over TLS it neither checks the server's certificate nor sends SNI.
//!
//! It resolves names itself, so it is given only IP addresses, and its
//! DNS server is set to an address of its own namespace (nothing listens
//! there; no query can leave).

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::topo::Link;

pub use sipauth_edge::transport::Transport;

/// The edge's port for `transport` (5061 for TLS, RFC 3261 26.2).
fn edge_port(transport: Transport) -> u16 {
    if transport == Transport::Tls {
        5061
    } else {
        5060
    }
}

/// One baresip account: its address of record at the edge, the password,
/// and whether it registers.
pub struct Account<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub register: bool,
}

/// A baresip process, ended (and waited for) when dropped: `-t` counts from
/// its start, after which it ends its calls and unregisters, which may
/// take a transaction's time; [`Baresip::wait_exit`] bounds the wait.
pub struct Baresip {
    child: Child,
    dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip in `c`'s namespace on `port` (UDP and TCP; TLS on
    /// the next port) with `account`, every request sent to the edge at
    /// `edge` over `transport` (its outbound proxy), then runs `commands`
    /// (`/dial sip:...`) and quits after `secs` seconds.
    #[must_use]
    pub fn start(
        c: &Link,
        port: u16,
        edge: IpAddr,
        transport: Transport,
        account: &Account<'_>,
        commands: &[String],
        secs: u32,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = SocketAddr::new(c.v4, port);
        let config = format!(
            "poll_method\tepoll\n\
             sip_listen\t{local}\n\
             net_interface\t{}\n\
             dns_server\t{}:53\n\
             call_local_timeout\t20\n\
             call_max_calls\t4\n\
             audio_source\tausine,440\n\
             audio_player\tnone,none\n\
             audio_alert\tnone,none\n\
             ausrc_srate\t48000\n\
             ausrc_channels\t2\n\
             auplay_srate\t48000\n\
             auplay_channels\t2\n\
             audio_level\tno\n\
             rtp_ports\t20000-20100\n\
             statmode_default\toff\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\tg711.so\n\
             module\tausine.so\n\
             module_tmp\taccount.so\n\
             module_app\tmenu.so\n",
            c.v4, c.v4,
        );
        let proxy = format!(
            "sip:{}:{};transport={}",
            host(edge),
            edge_port(transport),
            transport.name()
        );
        let accounts = format!(
            "<sip:{}@{};transport={}>;auth_pass={};outbound=\"{proxy}\";regint={}\n",
            account.user,
            host(edge),
            transport.name(),
            account.password,
            if account.register { 600 } else { 0 },
        );
        std::fs::write(dir.path().join("config"), config).expect("baresip config");
        std::fs::write(dir.path().join("accounts"), accounts).expect("baresip accounts");
        let log = std::fs::File::create(dir.path().join("out.log")).expect("log");
        let mut cmd = c.ns.cmd("baresip");
        cmd.arg("-f").arg(dir.path());
        for e in commands {
            cmd.args(["-e", e]);
        }
        let child = cmd
            .args(["-t", &secs.to_string()])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("baresip (cargo xtask setup installs baresip-core)");
        Self { child, dir }
    }

    /// What it printed so far, colour codes removed.
    #[must_use]
    pub fn output(&self) -> String {
        let raw = std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(i) = rest.find('\u{1b}') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            rest = rest.find('m').map_or("", |m| &rest[m + 1..]);
        }
        out.push_str(rest);
        out
    }

    /// Waits up to `within` until its output has a line containing `what`.
    #[must_use]
    pub fn wait_for(&self, what: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.output().contains(what) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to quit by itself (its `-t`), at most `within`.
    pub fn wait_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Baresip {
    /// SIGTERM, a few seconds to unregister, then SIGKILL.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        self.wait_exit(Duration::from_secs(3));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
