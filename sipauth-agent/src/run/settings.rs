//! Where the file's settings become the components' settings.
//!
//! `config` holds the file as written and checks what it can alone; the
//! rules a component sets on its own settings (a lockout policy, a
//! never-lock prefix, an outbound URI) are the component's, and are
//! applied here, once, before anything starts. An error names the setting.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Config, XdpMode};
use sipauth_edge::conn::Limits;
use sipauth_edge::outbound::resolve::{Dest, Resolver};
use sipauth_edge::outbound::{self, Timers};
use sipauth_edge::tls::{ClientTls, ServerTls};
use sipauth_kernel::lockout::never_lock;
use sipauth_kernel::maps::{self, LockoutPolicy};

/// A setting a component refuses.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SettingsError {
    pub field: &'static str,
    pub reason: String,
}

/// What the edge's components are built from.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// `None`: XDP off, user space enforces everything.
    pub xdp: Option<maps::Options>,
    pub lockout: LockoutPolicy,
    pub never_lock: Vec<IpNet>,
    /// `max_total` as configured; lowered to the open-file limit at start.
    pub tcp: Limits,
    /// The TLS listeners' certificate; `None`: no TLS listener.
    pub tls: Option<Arc<ServerTls>>,
    pub outbound: outbound::Settings,
    pub cluster: sipauth_edge::cluster::Settings,
}

impl EdgeSettings {
    pub fn new(cfg: &Config) -> Result<Self, SettingsError> {
        let l = &cfg.lockout;
        let lockout =
            LockoutPolicy::new(l.threshold, l.window_secs, l.duration_secs, l.ipv6_prefix)
                .map_err(|e| SettingsError {
                    field: "lockout",
                    reason: e.to_string(),
                })?;
        let never_lock = l
            .never_lock
            .iter()
            .map(|cidr| never_lock::parse(cidr))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SettingsError {
                field: "lockout.never_lock",
                reason: e.to_string(),
            })?;
        let mode = match cfg.xdp.mode {
            XdpMode::Off => None,
            XdpMode::Auto => Some(maps::Mode::Auto),
            XdpMode::Native => Some(maps::Mode::Native),
            XdpMode::Generic => Some(maps::Mode::Generic),
        };
        let xdp = mode.map(|mode| maps::Options {
            mode,
            interfaces: cfg.xdp.interfaces.clone(),
            budget_per_sec: cfg.xdp.budget_per_sec,
            pin_dir: cfg.xdp.pin_dir.clone(),
        });
        let t = &cfg.tcp;
        let tcp = Limits {
            per_source: t.max_per_source,
            total: t.max_total,
            idle: Duration::from_secs(t.idle_timeout_secs),
            first_message: Duration::from_secs(t.first_message_secs),
            max_header: t.max_header_bytes as usize,
            ipv6_prefix: lockout.ipv6_prefix(),
        };
        let gateway = &cfg.sip.number_gateway;
        if !gateway.is_empty()
            && (!gateway.contains("{number}")
                || Dest::parse(&gateway.replace("{number}", "15550100")).is_err())
        {
            return Err(SettingsError {
                field: "sip.number_gateway",
                reason: "a sip: URI with {number} in it".to_owned(),
            });
        }
        let timeout = Duration::from_millis(cfg.dns.timeout_ms);
        let resolver = Resolver::new(&cfg.dns.servers, timeout).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no DNS resolver: outbound targets must be IP literals");
            Resolver::none()
        });
        let files = &cfg.tls;
        let tls = if files.cert_file.as_os_str().is_empty() {
            None
        } else {
            let server =
                ServerTls::load(&files.cert_file, &files.key_file).map_err(|e| SettingsError {
                    field: "tls.cert_file",
                    reason: e.to_string(),
                })?;
            Some(Arc::new(server))
        };
        let ca_file = Some(files.ca_file.as_path()).filter(|p| !p.as_os_str().is_empty());
        let client_tls = ClientTls::new(ca_file).map_err(|e| SettingsError {
            field: "tls.ca_file",
            reason: e.to_string(),
        })?;
        let outbound = outbound::Settings {
            timers: Timers {
                timer_b: Duration::from_millis(cfg.sip.outbound_timer_b_ms),
                ..Timers::default()
            },
            number_gateway: Some(gateway.clone()).filter(|g| !g.is_empty()),
            resolver,
            tls: Some(client_tls),
            udp: outbound::conn::UdpPool::default(),
        };
        Ok(Self {
            xdp,
            lockout,
            never_lock,
            tcp,
            tls,
            outbound,
            cluster: sipauth_edge::cluster::Settings {
                redis_url: cfg.cluster.redis_url.clone(),
                key_prefix: cfg.cluster.key_prefix.clone(),
                ca_pem: cfg
                    .cluster
                    .redis_ca_file
                    .as_ref()
                    .map(|path| {
                        std::fs::read(path).map_err(|e| SettingsError {
                            field: "cluster.redis_ca_file",
                            reason: format!("{}: {e}", path.display()),
                        })
                    })
                    .transpose()?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> Result<EdgeSettings, SettingsError> {
        let cfg: Config = toml::from_str(toml_text).unwrap();
        EdgeSettings::new(&cfg.finish().unwrap())
    }

    #[test]
    fn the_defaults_make_settings() {
        let s = settings("").unwrap();
        assert_eq!(s.lockout, LockoutPolicy::default());
        assert!(s.never_lock.is_empty());
        assert_eq!(s.xdp.unwrap().mode, maps::Mode::Auto);
        assert_eq!(s.tcp.per_source, 32);
        assert_eq!(s.tcp.idle, Duration::from_mins(3));
        assert_eq!(s.outbound.number_gateway, None);
    }

    #[test]
    fn the_lockout_policy_is_the_files() {
        let s = settings(
            "[lockout]\nthreshold = 3\nwindow_secs = 30\nduration_secs = 5\nipv6_prefix = 56\n",
        )
        .unwrap();
        assert_eq!(s.lockout.threshold(), 3);
        assert_eq!(s.lockout.window(), Duration::from_secs(30));
        assert_eq!(s.lockout.duration(), Duration::from_secs(5));
        assert_eq!(s.lockout.ipv6_prefix(), 56);
        assert!(settings("[xdp]\nmode = \"off\"\n").unwrap().xdp.is_none());
        let t = settings("[tcp]\nidle_timeout_secs = 3\n").unwrap().tcp;
        assert_eq!((t.idle, t.per_source), (Duration::from_secs(3), 32));
    }

    #[test]
    fn a_lockout_policy_outside_its_rules_is_refused() {
        for (text, rule) in [
            ("threshold = 0", "at least 1"),
            ("window_secs = 0", "window_secs"),
            ("duration_secs = 0", "duration_secs"),
            ("ipv6_prefix = 0", "1 to 128"),
            ("ipv6_prefix = 129", "1 to 128"),
        ] {
            let e = settings(&format!("[lockout]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("lockout: ") && e.contains(rule),
                "{text}: {e}"
            );
        }
        for good in [1, 48, 64, 128] {
            assert!(settings(&format!("[lockout]\nipv6_prefix = {good}\n")).is_ok());
        }
    }

    #[test]
    fn never_lock_entries_are_checked() {
        let s = settings(
            "[lockout]\nnever_lock = [\"203.0.113.0/24\", \"2001:db8::/32\", \"198.51.100.7\"]\n",
        )
        .unwrap();
        let nets: Vec<String> = s.never_lock.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]);
        for bad in ["203.0.113.7/24", "not-a-net", "10.0.0.0/40"] {
            let e = settings(&format!("[lockout]\nnever_lock = [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("lockout.never_lock: "), "{e}");
        }
    }

    #[test]
    fn a_number_gateway_needs_an_ip_host_and_the_number() {
        let s = settings("[sip]\nnumber_gateway = \"sip:{number}@192.0.2.1:5060\"\n").unwrap();
        assert_eq!(
            s.outbound.number_gateway.as_deref(),
            Some("sip:{number}@192.0.2.1:5060")
        );
        for bad in ["sip:gw@192.0.2.1", "http://{number}"] {
            let e = settings(&format!("[sip]\nnumber_gateway = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("sip.number_gateway: "), "{e}");
        }
    }
}
