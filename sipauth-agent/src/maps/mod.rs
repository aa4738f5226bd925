//! The only module that touches aya: it loads the XDP program, pins and
//! reuses its maps, attaches it, and offers typed access to the maps.
//!
//! Maps are pinned under `<pin_dir>/v<LAYOUT_VERSION>/` and reused when the
//! agent starts again, so a lockout written before a restart is enforced
//! after it. The program itself is attached by this process and detached
//! when [`Xdp`] is dropped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use sipauth_common::{addr, config as kconfig, lockout, stats};

use crate::config::{self, XdpMode as Mode};

/// The XDP object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sipauth-xdp"));

/// The program's name in the object (its function name).
const PROGRAM: &str = "sipauth";

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("preparing pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the XDP object: {0}")]
    Load(#[from] EbpfError),
    #[error("the XDP object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("XDP program: {0}")]
    Program(#[from] ProgramError),
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("attaching to {interface} in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        source: ProgramError,
    },
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> XdpError {
    move |source| XdpError::Map { map, source }
}

/// Where the program ended up.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub interface: String,
    pub mode: &'static str,
}

/// The loaded program and its maps.
pub struct Xdp {
    /// Owns the program and its links: dropping it detaches.
    ebpf: Ebpf,
    lockout: Mutex<HashMap<MapData, lockout::Key, lockout::Value>>,
    stats: PerCpuArray<MapData, u64>,
    pub attachments: Vec<Attachment>,
}

// === impl Xdp ===

impl Xdp {
    /// Loads the program with its maps pinned under `pin_dir` (reusing pins
    /// that exist), writes the settings map and attaches to every interface.
    pub fn start(cfg: &config::Xdp, sip_ports: &[u16]) -> Result<Self, XdpError> {
        let dir = pin_dir(&cfg.pin_dir);
        prepare_pin_dir(&dir)?;
        let mut xdp = Self::load(&dir, cfg.budget_per_sec, sip_ports)?;
        let interfaces = if cfg.interfaces.is_empty() {
            vec![default_interface()]
        } else {
            cfg.interfaces.clone()
        };
        for interface in interfaces {
            let mode = xdp.attach(&interface, cfg.mode)?;
            tracing::info!(interface = %interface, mode, "XDP program attached");
            xdp.attachments.push(Attachment { interface, mode });
        }
        Ok(xdp)
    }

    /// Loads the program with its maps pinned in `dir` (which must exist),
    /// without attaching it. `BPF_PROG_TEST_RUN` tests use this directly.
    pub fn load(dir: &Path, budget_per_sec: u32, sip_ports: &[u16]) -> Result<Self, XdpError> {
        let level = log_level();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .override_global(aya_log::LEVEL, &level, false)
            .load(OBJECT)?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing {
                what: "program",
                name: PROGRAM,
            })?
            .try_into()?;
        program.load()?;
        // After the load: the kernel now holds the log map, whatever
        // becomes of the reader.
        if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf).map(spawn_log_reader) {
            tracing::debug!(error = %e, "XDP program log not available");
        }

        let mut settings: Array<MapData, kconfig::Config> =
            Array::try_from(take(&mut ebpf, kconfig::NAME)?).map_err(map_err(kconfig::NAME))?;
        let mut value = kconfig::Config {
            budget_per_sec,
            ..Default::default()
        };
        for (slot, port) in value.sip_ports.iter_mut().zip(sip_ports) {
            *slot = *port;
        }
        settings.set(0, value, 0).map_err(map_err(kconfig::NAME))?;

        let lockout =
            HashMap::try_from(take(&mut ebpf, lockout::NAME)?).map_err(map_err(lockout::NAME))?;
        let stats =
            PerCpuArray::try_from(take(&mut ebpf, stats::NAME)?).map_err(map_err(stats::NAME))?;
        Ok(Self {
            ebpf,
            lockout: Mutex::new(lockout),
            stats,
            attachments: Vec::new(),
        })
    }

    fn attach(&mut self, interface: &str, mode: Mode) -> Result<&'static str, XdpError> {
        let program: &mut aya::programs::Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing {
                what: "program",
                name: PROGRAM,
            })?
            .try_into()?;
        let attempt = |program: &mut aya::programs::Xdp, mode: XdpMode, name: &'static str| {
            program
                .attach(interface, mode)
                .map(|_| name)
                .map_err(|source| XdpError::Attach {
                    interface: interface.to_owned(),
                    mode: name,
                    source,
                })
        };
        match mode {
            Mode::Native => attempt(program, XdpMode::Driver, "native"),
            Mode::Generic => attempt(program, XdpMode::Skb, "generic"),
            Mode::Auto => attempt(program, XdpMode::Driver, "native").or_else(|e| {
                tracing::warn!(interface, reason = %e, "native XDP failed, falling back to generic mode");
                attempt(program, XdpMode::Skb, "generic")
            }),
            Mode::Off => unreachable!("the caller does not load XDP when it is off"),
        }
    }

    /// The loaded program, for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> &mut aya::programs::Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Xdp::load")
    }

    // --- lockout map ---

    pub fn lockout_get(&self, ip: IpAddr) -> Result<Option<u64>, XdpError> {
        let map = self.lockout.lock().expect("lockout map lock");
        match map.get(&key(ip), 0) {
            Ok(v) => Ok(Some(v.until_ns)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(lockout::NAME)(e)),
        }
    }

    pub fn lockout_set(&self, ip: IpAddr, until_ns: u64) -> Result<(), XdpError> {
        let mut map = self.lockout.lock().expect("lockout map lock");
        map.insert(key(ip), lockout::Value { until_ns }, 0)
            .map_err(map_err(lockout::NAME))
    }

    /// Removes the entry; false when there was none.
    pub fn lockout_remove(&self, ip: IpAddr) -> Result<bool, XdpError> {
        let mut map = self.lockout.lock().expect("lockout map lock");
        match map.remove(&key(ip)) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
                Ok(false)
            }
            Err(e) => Err(map_err(lockout::NAME)(e)),
        }
    }

    pub fn lockout_list(&self) -> Result<Vec<(IpAddr, u64)>, XdpError> {
        let map = self.lockout.lock().expect("lockout map lock");
        map.iter()
            .map(|r| r.map(|(k, v)| (ip_of(k), v.until_ns)))
            .collect::<Result<_, _>>()
            .map_err(map_err(lockout::NAME))
    }

    // --- statistics ---

    /// Packets per [`stats::Reason`], summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(stats::Reason, u64)>, XdpError> {
        stats::REASONS
            .iter()
            .map(|&reason| {
                let per_cpu = self
                    .stats
                    .get(&(reason as u32), 0)
                    .map_err(map_err(stats::NAME))?;
                Ok((reason, per_cpu.iter().sum()))
            })
            .collect()
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, XdpError> {
    ebpf.take_map(name)
        .ok_or(XdpError::Missing { what: "map", name })
}

/// The map key of an address: IPv4 as IPv4-mapped IPv6.
#[must_use]
pub fn key(ip: IpAddr) -> lockout::Key {
    match ip {
        IpAddr::V4(v4) => addr::from_v4(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[must_use]
pub fn ip_of(key: lockout::Key) -> IpAddr {
    std::net::Ipv6Addr::from(key).to_canonical()
}

/// The versioned pin directory.
#[must_use]
pub fn pin_dir(base: &Path) -> PathBuf {
    base.join(format!("v{}", sipauth_common::LAYOUT_VERSION))
}

/// Mounts bpffs at /sys/fs/bpf when the pin directory lives there and it is
/// not mounted, then creates the directory (aya does not).
pub fn prepare_pin_dir(dir: &Path) -> Result<(), XdpError> {
    let bpffs = Path::new("/sys/fs/bpf");
    let err = |source| XdpError::PinDir {
        path: dir.to_owned(),
        source,
    };
    if dir.starts_with(bpffs) && !is_bpffs(bpffs) {
        rustix::mount::mount(
            "bpf",
            bpffs,
            "bpf",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .map_err(|e| err(e.into()))?;
        tracing::info!("mounted bpffs at /sys/fs/bpf");
    }
    std::fs::create_dir_all(dir).map_err(err)
}

fn is_bpffs(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|l| {
            let mut f = l.split_whitespace();
            let _dev = f.next();
            f.next() == path.to_str() && f.next() == Some("bpf")
        })
    })
}

/// The interface of the default route (IPv4, then IPv6), else `lo`.
#[must_use]
pub fn default_interface() -> String {
    let v4 = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| {
            t.lines().skip(1).find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_owned())
            })
        });
    let v6 = || {
        std::fs::read_to_string("/proc/net/ipv6_route")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() == 10
                        && f[0].chars().all(|c| c == '0')
                        && f[1] == "00"
                        && f[9] != "lo")
                        .then(|| f[9].to_owned())
                })
            })
    };
    v4.or_else(v6).unwrap_or_else(|| "lo".to_owned())
}

/// The kernel-side log level: what the tracing filter lets through.
fn log_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    let level = match LevelFilter::current() {
        LevelFilter::OFF => return 0,
        LevelFilter::ERROR => aya_log::Level::Error,
        LevelFilter::WARN => aya_log::Level::Warn,
        LevelFilter::INFO => aya_log::Level::Info,
        LevelFilter::DEBUG => aya_log::Level::Debug,
        LevelFilter::TRACE => aya_log::Level::Trace,
    };
    level as u8
}

fn spawn_log_reader(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        // SAFETY: the logger owns its ring buffer's fd for its whole life
        // and always reports that same fd.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let Ok(mut fd) = registered else {
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
