//! Configuration: a TOML file with commented defaults, overridden by flags.
//!
//! Every section has `#[serde(default)]`, so a file only names what it
//! changes. `sipauth run --print-config` prints the defaults as TOML.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: Sip,
    pub tcp: Tcp,
    pub http: Http,
    pub admin: Admin,
    pub xdp: Xdp,
    pub lockout: Lockout,
    pub control: Control,
    pub edge: EdgeFollow,
    pub cluster: Cluster,
    pub dns: Dns,
    pub tls: Tls,
    pub log: Log,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    /// `sqlite://PATH` (created on first start) or `postgres://...`.
    pub database: String,
    /// Bearer token that `sipauth edge` presents for snapshots. Empty: this
    /// control plane serves no remote edges.
    pub edge_token: String,
    /// A file whose first line is the edge token.
    pub edge_token_file: Option<PathBuf>,
    /// Accounts created at start when missing (auth_id and auth_token).
    pub accounts: Vec<AccountSeed>,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            database: "sqlite:///var/lib/sipauth/sipauth.db".to_owned(),
            edge_token: String::new(),
            edge_token_file: None,
            accounts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountSeed {
    pub auth_id: String,
    pub auth_token: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeFollow {
    /// Base URL of a control plane (`sipauth edge`).
    pub control_url: String,
    /// The control plane's edge token.
    pub token: String,
    /// Where the last snapshot is kept, so that the edge enforces it after
    /// a restart while the control plane is away.
    pub state_dir: PathBuf,
}

impl Default for EdgeFollow {
    fn default() -> Self {
        Self {
            control_url: String::new(),
            token: String::new(),
            state_dir: PathBuf::from("/var/lib/sipauth"),
        }
    }
}

/// How outbound targets that name hosts are looked up (RFC 3263).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// Name servers (`ip:port`); empty: those of `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// How long one query may take; a target's whole lookup (NAPTR, SRV,
    /// addresses) takes at most four times this.
    pub timeout_ms: u64,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout_ms: 2000,
        }
    }
}

/// SIP over TLS: the edge's certificate for `sip.tls_listen`, and the
/// roots outbound `sips:` targets are checked against.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain (PEM, leaf first) the TLS listeners present.
    /// Read again on SIGHUP. Empty: no TLS listener.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1). Read again on SIGHUP.
    pub key_file: PathBuf,
    /// Roots (PEM) that outbound TLS servers must chain to. Empty: the
    /// system's roots.
    pub ca_file: PathBuf,
}

/// A fleet of edges sharing failure counts, lockouts and registrations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// `redis://[:password@]host:port/db` or `rediss://...` (TLS); the
    /// address of one node of a Redis Cluster works too. Empty: this edge
    /// alone.
    pub redis_url: String,
    /// Hash tag of the fleet's keys, so several fleets can share a Redis.
    pub key_prefix: String,
    /// PEM certificate authority a `rediss://` server's certificate must
    /// chain to; unset: the system's roots.
    pub redis_ca_file: Option<PathBuf>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            key_prefix: "sipauth".to_owned(),
            redis_ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Sip {
    /// Addresses the edge listens on, each for UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Addresses the edge takes SIP over TLS on. Empty with a
    /// `tls.cert_file`: each address of `listen` on port 5061.
    pub tls_listen: Vec<SocketAddr>,
    /// The SIP domain of application URIs (`sip:{app_id}@{domain}`) and the
    /// digest realm.
    pub domain: String,
    /// Digest challenges offered in a 407/401, in this order: `SHA-256`,
    /// `MD5`, `SHA-512-256`. SHA-256 first is what RFC 8760 asks for; some
    /// clients only try the first one (sipp needs MD5 first).
    pub challenge_algorithms: Vec<String>,
    /// How long a digest nonce stays valid.
    pub nonce_ttl_secs: u64,
    /// 64 hex digits: the key that seals nonces. Every edge of a cluster
    /// needs the same one to accept each other's nonces. Empty: a random key
    /// per process.
    pub nonce_secret: String,
    /// Registration lifetimes: `Expires` above `max_expires` is lowered,
    /// below `min_expires` (but not 0) gets 423.
    pub min_expires: u32,
    pub max_expires: u32,
    /// Time allowed for each answer_url / hangup_url attempt (one retry).
    pub callback_timeout_ms: u64,
    /// Outbound legs: Timer B, how long an INVITE waits for any response
    /// (RFC 3261: 64*T1 = 32 s).
    pub outbound_timer_b_ms: u64,
    /// Where `<Number>` targets of `<Dial>` go: a SIP URI with an IP host
    /// in which `{number}` is replaced by the number, such as
    /// `sip:{number}@192.0.2.7:5060;transport=tcp`. Empty: a `<Number>`
    /// ends with `dial_not_available`.
    pub number_gateway: String,
    /// Responses per second over UDP, all together, to sources that have
    /// not passed admission (an INVITE let in, a REGISTER accepted, within
    /// the last hour): the most a flood from forged sources can reflect.
    /// Each such request gets one response at most; 0 answers none of them.
    pub unproven_replies_per_sec: u32,
    /// Inbound calls in progress at once (let in, not yet ended: waiting
    /// on their answer_url, or bridged). An INVITE let in beyond them gets
    /// 503 Service Unavailable with `Retry-After`. At least 1.
    pub max_inbound_calls: u32,
    /// On SIGTERM or SIGINT: how long the edge waits for the calls in
    /// progress to end, refusing new ones with 503 and Retry-After, before
    /// it stops. Ended calls' records and hangup_urls go out first; a
    /// second signal stops at once.
    pub drain_secs: u64,
}

impl Default for Sip {
    fn default() -> Self {
        Self {
            listen: vec![
                SocketAddr::from(([0, 0, 0, 0], 5060)),
                SocketAddr::from(([0u16; 8], 5060)),
            ],
            tls_listen: Vec::new(),
            domain: "app.plivo.com".to_owned(),
            challenge_algorithms: vec!["SHA-256".to_owned(), "MD5".to_owned()],
            nonce_ttl_secs: 300,
            nonce_secret: String::new(),
            min_expires: 60,
            max_expires: 3600,
            callback_timeout_ms: 5000,
            outbound_timer_b_ms: 32_000,
            number_gateway: String::new(),
            unproven_replies_per_sec: 1000,
            max_inbound_calls: 10_000,
            drain_secs: 20,
        }
    }
}

/// Bounds on SIP over TCP. A source is an IPv4 address or an IPv6 prefix
/// of `lockout.ipv6_prefix` bits, as for lockouts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tcp {
    /// Connections open at once from one source; more are closed at accept.
    pub max_per_source: u32,
    /// Connections open at once, all sources together; more are closed at
    /// accept. Lowered at start to what the file descriptor limit allows.
    pub max_total: u32,
    /// A connection that carries no complete message and no keep-alive for
    /// this long is closed.
    pub idle_timeout_secs: u64,
    /// A new connection whose first complete message has not arrived within
    /// this is closed.
    pub first_message_secs: u64,
    /// Bytes of a message's header section (start line to the empty line);
    /// a longer one closes the connection. At most 65536.
    pub max_header_bytes: u32,
}

impl Default for Tcp {
    fn default() -> Self {
        Self {
            max_per_source: 32,
            max_total: 10_000,
            idle_timeout_secs: 180,
            first_message_secs: 10,
            max_header_bytes: 32 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Where `/metrics`, `/ready` and the admin endpoints are served.
    pub listen: SocketAddr,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Bearer token of the operator endpoints (`/admin/...`). Empty: the
    /// admin endpoints answer 404. Prefer `token_file` on shared hosts.
    pub token: String,
    /// A file whose first line is the token; read at start-up.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic mode with a log line.
    #[default]
    Auto,
    /// Native mode only; fail if the driver cannot.
    Native,
    /// Generic (SKB) mode: works on every interface, costs more per packet.
    Generic,
    /// No XDP program: user space enforces everything.
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Xdp {
    pub mode: XdpMode,
    /// Interfaces to attach to. Empty: the interface of the default route
    /// (IPv4, then IPv6), or `lo` when there is none.
    pub interfaces: Vec<String>,
    /// Packets per second from denied sources still passed up to user
    /// space (so that it can answer 403), all sources together. 0: none.
    pub budget_per_sec: u32,
    /// bpffs directory where the maps are pinned, so that lockouts survive
    /// an agent restart. A layout version is appended.
    pub pin_dir: PathBuf,
}

impl Default for Xdp {
    fn default() -> Self {
        Self {
            mode: XdpMode::Auto,
            interfaces: Vec::new(),
            budget_per_sec: 10,
            pin_dir: PathBuf::from("/sys/fs/bpf/sipauth"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Lockout {
    /// Denied requests (ACL or credential) from one source within
    /// `window_secs` that lock it out; at least 1 (a source that must never
    /// be locked out belongs in `never_lock`).
    pub threshold: u32,
    /// At least 1.
    pub window_secs: u64,
    /// How long a lockout lasts (also an operator lockout without a
    /// duration); at least 1. Attempts during a lockout get 403 and do not
    /// extend it.
    pub duration_secs: u64,
    /// IPv6 sources are counted and locked out per prefix of this many
    /// bits (1..=128; 128: per address). IPv4 sources per address.
    pub ipv6_prefix: u8,
    /// CIDRs (IPv4 or IPv6; a bare address is a /32 or /128) whose sources
    /// are never locked out: still judged, their failures counted in
    /// metrics only.
    pub never_lock: Vec<String>,
}

impl Default for Lockout {
    fn default() -> Self {
        Self {
            threshold: 10,
            window_secs: 60,
            duration_secs: 60,
            ipv6_prefix: 64,
            never_lock: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A tracing filter: `info`, `debug`, `sipauth_edge=trace,aya=warn`, ...
    pub filter: String,
    /// How each line on stderr is written.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event for a person to read.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields at the top level, and its spans.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{field}: {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks what serde cannot, and resolves `admin.token_file`.
    pub fn finish(mut self) -> Result<Self, ConfigError> {
        if !(100..=30_000).contains(&self.dns.timeout_ms) {
            return Err(ConfigError::Invalid {
                field: "dns.timeout_ms",
                rule: "between 100 and 30000",
            });
        }
        let url = &self.cluster.redis_url;
        if !url.is_empty() && !url.starts_with("redis://") && !url.starts_with("rediss://") {
            return Err(ConfigError::Invalid {
                field: "cluster.redis_url",
                rule: "a redis:// or rediss:// URL, or empty",
            });
        }
        if self.cluster.key_prefix.is_empty()
            || !self
                .cluster
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::Invalid {
                field: "cluster.key_prefix",
                rule: "letters, digits, - and _ only, not empty",
            });
        }
        if self.sip.listen.is_empty() {
            return Err(ConfigError::Invalid {
                field: "sip.listen",
                rule: "needs at least one address",
            });
        }
        let tls = &self.tls;
        if tls.cert_file.as_os_str().is_empty() != tls.key_file.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                field: "tls.key_file",
                rule: "tls.cert_file and tls.key_file go together",
            });
        }
        if tls.cert_file.as_os_str().is_empty() {
            if !self.sip.tls_listen.is_empty() {
                return Err(ConfigError::Invalid {
                    field: "sip.tls_listen",
                    rule: "needs tls.cert_file and tls.key_file",
                });
            }
        } else if self.sip.tls_listen.is_empty() {
            // RFC 3261 26.2: 5061 is the default port of SIP over TLS.
            self.sip.tls_listen = self
                .sip
                .listen
                .iter()
                .map(|a| SocketAddr::new(a.ip(), 5061))
                .collect();
        }
        if self.sip_ports().len() > sipauth_common::config::MAX_PORTS {
            return Err(ConfigError::Invalid {
                field: "sip.listen",
                rule: "at most 8 distinct ports (sip.listen and sip.tls_listen together)",
            });
        }
        if self.sip.challenge_algorithms.is_empty()
            || self
                .sip
                .challenge_algorithms
                .iter()
                .any(|a| !matches!(a.as_str(), "MD5" | "SHA-256" | "SHA-512-256"))
        {
            return Err(ConfigError::Invalid {
                field: "sip.challenge_algorithms",
                rule: "one or more of \"SHA-256\", \"MD5\", \"SHA-512-256\"",
            });
        }
        if !self.sip.nonce_secret.is_empty()
            && (self.sip.nonce_secret.len() != 64
                || !self.sip.nonce_secret.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ConfigError::Invalid {
                field: "sip.nonce_secret",
                rule: "64 hex digits",
            });
        }
        if self.sip.max_inbound_calls == 0 {
            return Err(ConfigError::Invalid {
                field: "sip.max_inbound_calls",
                rule: "must be at least 1",
            });
        }
        if self.sip.domain.is_empty() {
            return Err(ConfigError::Invalid {
                field: "sip.domain",
                rule: "must not be empty",
            });
        }
        let t = &self.tcp;
        for (field, value) in [
            ("tcp.max_per_source", u64::from(t.max_per_source)),
            ("tcp.max_total", u64::from(t.max_total)),
            ("tcp.idle_timeout_secs", t.idle_timeout_secs),
            ("tcp.first_message_secs", t.first_message_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    field,
                    rule: "must be at least 1",
                });
            }
        }
        if !(1024..=sipauth_sip::MAX_HEADER_SECTION).contains(&(t.max_header_bytes as usize)) {
            return Err(ConfigError::Invalid {
                field: "tcp.max_header_bytes",
                rule: "from 1024 to 65536",
            });
        }
        if self.lockout.never_lock.len() > sipauth_common::never_lock::MAX_ENTRIES as usize {
            return Err(ConfigError::Invalid {
                field: "lockout.never_lock",
                rule: "at most 4096 prefixes",
            });
        }
        if let Some(path) = self.control.edge_token_file.take() {
            self.control.edge_token = first_line(path)?;
        }
        for a in &self.control.accounts {
            if a.auth_id.len() < 8 || a.auth_token.len() < 16 {
                return Err(ConfigError::Invalid {
                    field: "control.accounts",
                    rule: "auth_id needs at least 8 characters and auth_token at least 16",
                });
            }
        }
        if let Some(path) = self.admin.token_file.take() {
            self.admin.token = first_line(path)?;
        }
        Ok(self)
    }

    /// The distinct ports of `sip.listen` and `sip.tls_listen`, for the XDP
    /// program (a lockout drops every one of them).
    #[must_use]
    pub fn sip_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .sip
            .listen
            .iter()
            .chain(&self.sip.tls_listen)
            .map(SocketAddr::port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The first line of a token file, trimmed.
fn first_line(path: PathBuf) -> Result<String, ConfigError> {
    let text =
        std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path, source })?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.sip_ports(), vec![5060]);
    }

    #[test]
    fn partial_sections() {
        let c: Config =
            toml::from_str("[xdp]\nmode = \"off\"\n[sip]\nlisten = [\"127.0.0.1:5070\"]\n")
                .unwrap();
        assert_eq!(c.xdp.mode, XdpMode::Off);
        assert_eq!(c.xdp.budget_per_sec, 10);
        assert_eq!(c.sip.domain, "app.plivo.com");
        assert_eq!(c.sip_ports(), vec![5070]);
    }

    #[test]
    fn the_shipped_file_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sipauth.toml");
        assert_eq!(Config::from_file(&path).unwrap(), Config::default());
    }

    #[test]
    fn log_format_is_text_or_json() {
        let c: Config = toml::from_str("[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.filter, "info");
        assert_eq!(Config::default().log.format, LogFormat::Text);
        assert!(toml::from_str::<Config>("[log]\nformat = \"syslog\"\n").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("[xdp]\nbudget = 3\n").is_err());
    }

    /// The error of the defaults changed by `edit`.
    fn refused(edit: impl FnOnce(&mut Config)) -> String {
        let mut c = Config::default();
        edit(&mut c);
        c.finish().unwrap_err().to_string()
    }

    #[test]
    fn tcp_limits_are_checked() {
        let e = refused(|c| c.tcp.max_per_source = 0);
        assert!(e.contains("tcp.max_per_source"), "{e}");
        let e = refused(|c| c.tcp.max_header_bytes = 128 * 1024);
        assert!(e.contains("tcp.max_header_bytes"), "{e}");
    }

    #[test]
    fn empty_listen_rejected() {
        let e = refused(|c| c.sip.listen.clear());
        assert!(e.contains("sip.listen"), "{e}");
    }

    #[test]
    fn an_edge_carries_at_least_one_inbound_call() {
        let e = refused(|c| c.sip.max_inbound_calls = 0);
        assert!(e.contains("sip.max_inbound_calls"), "{e}");
    }
}
