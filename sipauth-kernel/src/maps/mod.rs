//! The only module that touches aya: it loads the XDP program, pins and
//! reuses its maps, attaches it, and offers typed access to the maps.
//!
//! Maps are pinned under `<pin_dir>/v<LAYOUT_VERSION>/` and reused when the
//! agent starts again, so lockouts, failure counts and the ACLs written
//! before a restart are enforced after it. The program itself is attached
//! by this process and detached when [`Xdp`] is dropped.
//!
//! Failures judged by user space (credential failures, ACL denials of
//! packets the program passed) go into the same per-source counter as the
//! program's own ACL denials. User space cannot update a map value
//! atomically (a lookup then an update loses the program's increments made
//! in between), so [`Xdp::record_failure`] runs a second program of the
//! object, `sipauth_record`, through `BPF_PROG_TEST_RUN` with a frame that
//! carries the source address: it performs, in the kernel, the very
//! compare-exchange the packet path performs, and writes a lockout when the
//! threshold is reached. That program is loaded but never attached.
//!
//! Applications with an IP ACL and the ACLs themselves are written from a
//! snapshot by [`Xdp::sync_snapshot`], in two generations (see [`acl`]).
//!
//! The lockout and failure maps are keyed by a source's lockout key: an
//! IPv4 address, or an IPv6 address masked to the configured prefix
//! ([`addr::lockout_key`], the rule the program applies). The never-lock
//! trie is written by the agent only; its entries carry their origin, so a
//! restarted agent keeps what operators added and replaces what the config
//! said.

mod acl;
mod policy;
mod sources;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, ProgramArray};
use aya::programs::{ProgramError, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use ipnet::IpNet;
use sipauth_common::{
    ack, acl as kacl, addr, apps, config as kconfig, failures, lockout, never_lock, stats,
};

pub use self::acl::AclView;
pub use self::policy::{LockoutPolicy, PolicyError};
use sipauth_model::snapshot::Snapshot;

/// The XDP object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sipauth-xdp"));

/// The program's name in the object (its function name).
const PROGRAM: &str = "sipauth";
/// The failure-recording program, run through `BPF_PROG_TEST_RUN` only.
const RECORD_PROGRAM: &str = "sipauth_record";

const XDP_PASS: u32 = 2;
/// Runs of `sipauth_record` when the failure word keeps changing under it.
const RECORD_RUNS: usize = 4;

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
    #[error("putting the ACK walk in its slot: {0}")]
    Tail(std::io::Error),
    #[error("recording a failure in the kernel: {0}")]
    Record(&'static str),
    #[error("ACL ids exhausted")]
    AclIds,
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> XdpError {
    move |source| XdpError::Map { map, source }
}

/// How to attach the program to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Native (driver) mode, falling back to generic mode with a log line.
    Auto,
    /// Native mode only.
    Native,
    /// Generic (SKB) mode.
    Generic,
}

/// Where and how the program runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// Interfaces to attach to; empty: the default route's.
    pub interfaces: Vec<String>,
    /// Packets per second from denied sources still passed up to user
    /// space, all sources together.
    pub budget_per_sec: u32,
    /// bpffs directory of the pins; the layout version is appended.
    pub pin_dir: PathBuf,
}

/// Where the program ended up.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub interface: String,
    pub mode: &'static str,
}

/// The settings map and the value last written to it.
struct Settings {
    map: Array<MapData, kconfig::Config>,
    value: kconfig::Config,
}

impl Settings {
    fn update(&mut self, f: impl FnOnce(&mut kconfig::Config)) -> Result<(), XdpError> {
        let mut value = self.value;
        f(&mut value);
        self.map.set(0, value, 0).map_err(map_err(kconfig::NAME))?;
        self.value = value;
        Ok(())
    }
}

/// The loaded program and its maps.
pub struct Xdp {
    /// Owns the program and its links: dropping it detaches.
    ebpf: Ebpf,
    settings: Mutex<Settings>,
    lockout: Mutex<HashMap<MapData, lockout::Key, lockout::Value>>,
    failures: Mutex<HashMap<MapData, failures::Key, u64>>,
    never_lock: Mutex<LpmTrie<MapData, never_lock::Key, never_lock::Value>>,
    acl: Mutex<acl::AclMaps>,
    stats: PerCpuArray<MapData, u64>,
    pub attachments: Vec<Attachment>,
}

// === impl Xdp ===

impl Xdp {
    /// Loads the program with its maps pinned under `pin_dir` (reusing pins
    /// that exist), writes the settings map and attaches to every interface.
    pub fn start(
        options: &Options,
        sip_ports: &[u16],
        policy: &LockoutPolicy,
    ) -> Result<Self, XdpError> {
        let dir = pin_dir(&options.pin_dir);
        prepare_pin_dir(&dir)?;
        let mut xdp = Self::load(&dir, options.budget_per_sec, sip_ports, policy)?;
        let interfaces = if options.interfaces.is_empty() {
            vec![default_interface()]
        } else {
            options.interfaces.clone()
        };
        for interface in interfaces {
            let mode = xdp.attach(&interface, options.mode)?;
            tracing::info!(interface = %interface, mode, "XDP program attached");
            xdp.attachments.push(Attachment { interface, mode });
        }
        Ok(xdp)
    }

    /// Loads the programs with their maps pinned in `dir` (which must
    /// exist), without attaching. `BPF_PROG_TEST_RUN` tests use this
    /// directly.
    ///
    /// The ACL generation of pinned maps is kept: until the first
    /// [`Xdp::sync_snapshot`], the applications and ACLs written by the
    /// previous agent stay enforced. When the pinned maps were keyed with
    /// another IPv6 prefix length, their IPv6 lockouts and failure counts
    /// are dropped (their keys mean other sources now).
    pub fn load(
        dir: &Path,
        budget_per_sec: u32,
        sip_ports: &[u16],
        policy: &LockoutPolicy,
    ) -> Result<Self, XdpError> {
        let level = log_level();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .override_global(aya_log::LEVEL, &level, false)
            .load(OBJECT)?;
        for name in [PROGRAM, ack::PROGRAM, RECORD_PROGRAM] {
            let program: &mut aya::programs::Xdp = ebpf
                .program_mut(name)
                .ok_or(XdpError::Missing {
                    what: "program",
                    name,
                })?
                .try_into()?;
            program.load()?;
        }
        // The ACK walk, tail-called by the packet program. The map stays in
        // `ebpf`: a program array loses its entries when user space closes
        // its last descriptor of it.
        let walk = ebpf
            .program(ack::PROGRAM)
            .ok_or(XdpError::Missing {
                what: "program",
                name: ack::PROGRAM,
            })?
            .fd()?
            .try_clone()
            .map_err(XdpError::Tail)?;
        let mut tail =
            ProgramArray::try_from(ebpf.map_mut(ack::TAIL_NAME).ok_or(XdpError::Missing {
                what: "map",
                name: ack::TAIL_NAME,
            })?)
            .map_err(map_err(ack::TAIL_NAME))?;
        tail.set(ack::TAIL_SLOT, &walk, 0)
            .map_err(map_err(ack::TAIL_NAME))?;
        // After the load: the kernel now holds the log map, whatever
        // becomes of the reader.
        if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf).map(spawn_log_reader) {
            tracing::debug!(error = %e, "XDP program log not available");
        }

        let map: Array<MapData, kconfig::Config> =
            Array::try_from(take(&mut ebpf, kconfig::NAME)?).map_err(map_err(kconfig::NAME))?;
        // A fresh map reads as zeros: generation 0.
        let previous = map.get(&0, 0).map_err(map_err(kconfig::NAME))?;
        let mut settings = Settings {
            map,
            value: kconfig::Config::default(),
        };
        settings.update(|c| {
            c.budget_per_sec = budget_per_sec;
            for (slot, port) in c.sip_ports.iter_mut().zip(sip_ports) {
                *slot = *port;
            }
            c.generation = previous.generation & 1;
            policy.apply(c);
        })?;

        let lockout =
            HashMap::try_from(take(&mut ebpf, lockout::NAME)?).map_err(map_err(lockout::NAME))?;
        let failures =
            HashMap::try_from(take(&mut ebpf, failures::NAME)?).map_err(map_err(failures::NAME))?;
        let apps = HashMap::try_from(take(&mut ebpf, apps::NAME)?).map_err(map_err(apps::NAME))?;
        let v4 =
            LpmTrie::try_from(take(&mut ebpf, kacl::V4_NAME)?).map_err(map_err(kacl::V4_NAME))?;
        let v6 =
            LpmTrie::try_from(take(&mut ebpf, kacl::V6_NAME)?).map_err(map_err(kacl::V6_NAME))?;
        let stats =
            PerCpuArray::try_from(take(&mut ebpf, stats::NAME)?).map_err(map_err(stats::NAME))?;
        let never_lock = LpmTrie::try_from(take(&mut ebpf, never_lock::NAME)?)
            .map_err(map_err(never_lock::NAME))?;
        let xdp = Self {
            ebpf,
            settings: Mutex::new(settings),
            lockout: Mutex::new(lockout),
            failures: Mutex::new(failures),
            never_lock: Mutex::new(never_lock),
            acl: Mutex::new(acl::AclMaps::new(apps, v4, v6)),
            stats,
            attachments: Vec::new(),
        };
        if previous.ipv6_prefix != 0 && previous.ipv6_prefix != u32::from(policy.ipv6_prefix()) {
            xdp.forget_ipv6(previous.ipv6_prefix)?;
        }
        Ok(xdp)
    }

    /// Rewrites the lockout policy the program and [`Xdp::record_failure`]
    /// apply. Changing the IPv6 prefix length drops the IPv6 lockouts and
    /// failure counts kept under the old one (their keys mean other sources
    /// now).
    pub fn set_lockout_policy(&self, policy: &LockoutPolicy) -> Result<(), XdpError> {
        let old = self.settings().ipv6_prefix;
        self.settings
            .lock()
            .expect("settings lock")
            .update(|c| policy.apply(c))?;
        if old != u32::from(policy.ipv6_prefix()) {
            self.forget_ipv6(old)?;
        }
        Ok(())
    }

    /// Removes every IPv6 entry from the lockout and failure maps.
    fn forget_ipv6(&self, old_prefix: u32) -> Result<(), XdpError> {
        let mut dropped = 0usize;
        {
            let mut map = self.lockout.lock().expect("lockout map lock");
            let keys: Vec<lockout::Key> = map
                .keys()
                .collect::<Result<_, _>>()
                .map_err(map_err(lockout::NAME))?;
            for k in keys.iter().filter(|k| !addr::is_v4(k)) {
                if map.remove(k).is_ok() {
                    dropped += 1;
                }
            }
        }
        {
            let mut map = self.failures.lock().expect("failure map lock");
            let keys: Vec<failures::Key> = map
                .keys()
                .collect::<Result<_, _>>()
                .map_err(map_err(failures::NAME))?;
            for k in keys.iter().filter(|k| !addr::is_v4(k)) {
                let _ = map.remove(k);
            }
        }
        tracing::info!(
            old_prefix,
            lockouts = dropped,
            "IPv6 prefix length changed: IPv6 lockouts and failure counts dropped"
        );
        Ok(())
    }

    /// The settings the program currently reads.
    pub fn settings(&self) -> kconfig::Config {
        self.settings.lock().expect("settings lock").value
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
        }
    }

    /// The loaded program, for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> &mut aya::programs::Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Xdp::load")
    }

    /// The loaded packet program through a shared reference (concurrent
    /// `BPF_PROG_TEST_RUN`s, program info).
    pub fn packet_program(&self) -> &aya::programs::Xdp {
        self.ebpf
            .program(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Xdp::load")
    }

    /// The failure-recording program (never attached).
    pub fn record_program(&self) -> &aya::programs::Xdp {
        self.ebpf
            .program(RECORD_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Xdp::load")
    }

    // --- applications and ACLs ---

    /// Loads the applications whose `sip_auth_type` uses an IP ACL, and
    /// their ACLs, into the program's maps. The new set is written as a
    /// whole next to the live one and made live by one store; the old one
    /// is deleted afterwards (see [`acl`]). On error the live set is
    /// unchanged.
    ///
    /// Applications whose id could not be a Request-URI user part (empty,
    /// over 64 bytes, holding `@ ; > :` or a space), or whose ACL is not in
    /// the snapshot, are left to user space.
    pub fn sync_snapshot(&self, snapshot: &Snapshot) -> Result<(), XdpError> {
        let mut maps = self.acl.lock().expect("ACL maps lock");
        let live = self.settings().generation & 1;
        let next = live ^ 1;
        maps.clear(next)?;
        maps.write(next, snapshot)?;
        self.settings
            .lock()
            .expect("settings lock")
            .update(|c| c.generation = next)?;
        maps.clear(live)
    }

    /// The application and ACL entries in the maps, both generations.
    pub fn acl_view(&self) -> Result<AclView, XdpError> {
        let maps = self.acl.lock().expect("ACL maps lock");
        maps.view(self.settings().generation)
    }

    /// The id `uuid` has in the ACL tries (without its generation bit),
    /// once a sync has written it.
    pub fn acl_id(&self, uuid: &str) -> Option<u32> {
        self.acl.lock().expect("ACL maps lock").known_id(uuid)
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

/// The never-lock trie key of a prefix: its prefix length over the 128-bit
/// key (96 + n for IPv4) and the address.
#[must_use]
pub fn net_key(net: IpNet) -> (u32, never_lock::Key) {
    match net {
        IpNet::V4(n) => (
            96 + u32::from(n.prefix_len()),
            addr::from_v4(n.network().octets()),
        ),
        IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
    }
}

/// The prefix a never-lock trie key stands for.
#[must_use]
pub fn net_of(len: u32, key: never_lock::Key) -> IpNet {
    let len = u8::try_from(len.min(128)).unwrap_or(128);
    if addr::is_v4(&key) && len >= 96 {
        let v4 = std::net::Ipv4Addr::new(key[12], key[13], key[14], key[15]);
        IpNet::V4(ipnet::Ipv4Net::new(v4, len - 96).expect("at most 32"))
    } else {
        IpNet::V6(ipnet::Ipv6Net::new(key.into(), len).expect("at most 128"))
    }
}

/// Whole seconds of `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`.
fn monotonic_secs() -> u32 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u32::try_from(ts.tv_sec).unwrap_or(u32::MAX)
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
