//! `cargo xtask setup`: everything the build and the tests need, from
//! Debian's archive and crates.io, on Debian 12. Each step says what it
//! does, skips what is already there, and stops on the first failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

/// Debian packages: Debian's Rust for BPF (rustc 1.96 on LLVM 22, with a
/// prebuilt `core` for bpfel-unknown-none), what bpf-linker builds against,
/// the rig's peers and tools, PostgreSQL (the store's tests start
/// private servers of their own; the packaged cluster is not used), the
/// sqlite3 shell (the API tests change a live store under the server),
/// redis-server and redis-tools (the fleet's tests start private servers
/// and a Redis Cluster of their own; the packaged service is not used),
/// dnsmasq-base (the DNS test's own server for names under `.test`) and
/// python3-venv (the API tests install openapi-spec-validator from PyPI
/// into a virtualenv of their own); for the Debian package and its test,
/// dpkg-dev (cargo-deb's dependency lookup), adduser (the package's
/// scripts), systemd (`systemd-analyze verify`) and util-linux (`setpriv`).
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "sip-tester",
    "netsniff-ng",
    // The benchmark's setup latencies from packet timestamps.
    "tcpdump",
    "iproute2",
    "iptables",
    "iputils-ping",
    "procps",
    "curl",
    "postgresql",
    "sqlite3",
    "redis-server",
    "redis-tools",
    "dnsmasq-base",
    // `cargo xtask bench` runs Kamailio beside sipauth (tests/kamailio/).
    "kamailio",
    // A real SIP user agent for the rig (tests/ua.rs).
    "baresip-core",
    "python3-venv",
    "dpkg-dev",
    "adduser",
    "systemd",
    "util-linux",
];

/// The rustup name of Debian's toolchain (see sipauth-kernel/build.rs).
const TOOLCHAIN: &str = "sipauth-bpf";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz for `cargo xtask fuzz`; installed on its first use, not by
/// `setup` (neither the build nor the tests need it).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// cargo-deb for `cargo xtask package` (and the package test, which runs
/// it); installed on its first use.
const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn run() -> anyhow::Result<()> {
    require_root()?;
    let t = Instant::now();
    step("Debian packages", packages)?;
    step(
        "Kamailio's own service kept off port 5060",
        kamailio_service_off,
    )?;
    step("rustup link to Debian's toolchain", toolchain)?;
    step("bpf-linker", bpf_linker)?;
    println!("setup: done in {:.0?}", t.elapsed());
    Ok(())
}

/// Runs set-up when something it installs is missing.
pub fn ensure() -> anyhow::Result<()> {
    if missing_packages().is_empty() && toolchain_linked() && bpf_linker_ok() {
        return Ok(());
    }
    println!("setup: something is missing; running `cargo xtask setup`");
    run()
}

fn step(name: &str, f: fn() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let t = Instant::now();
    println!("setup: {name} ...");
    f().with_context(|| format!("setup step '{name}' failed"))?;
    println!("setup: {name}: ok ({:.0?})", t.elapsed());
    Ok(())
}

pub fn require_root() -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "setup installs Debian packages, and the edge and its tests load XDP programs and \
             create network namespaces: run as root"
        );
    }
    Ok(())
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn packages() -> anyhow::Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        println!("  all {} present", PACKAGES.len());
        return Ok(());
    }
    println!("  installing: {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Debian's kamailio package enables a service that listens on 5060, the
/// port sipauth takes. The benchmark starts its own Kamailio in a
/// namespace; the service is disabled where systemd runs.
fn kamailio_service_off() -> anyhow::Result<()> {
    if !std::path::Path::new("/run/systemd/system").exists() {
        println!("  no systemd here: nothing to do");
        return Ok(());
    }
    run_cmd(Command::new("systemctl").args(["disable", "--now", "kamailio.service"]))
}

fn toolchain_linked() -> bool {
    Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "/usr")
}

fn toolchain() -> anyhow::Result<()> {
    if toolchain_linked() {
        println!("  {TOOLCHAIN} -> /usr already linked");
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["toolchain", "link", TOOLCHAIN, "/usr"]))?;
    if !toolchain_linked() {
        bail!("rustup toolchain {TOOLCHAIN} does not run /usr/bin/rustc");
    }
    Ok(())
}

fn cargo_home_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker_ok() -> bool {
    Command::new(cargo_home_bin().join("bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

fn bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_ok() {
        println!("  bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    // Built against Debian's LLVM 22; without LLVM_PREFIX its build finds
    // /usr/bin/llvm-config (LLVM 14) and fails.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_cmd(
        Command::new(cargo)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
    )
}

/// The toolchain `cargo fuzz` runs with: rustup's nightly when installed,
/// else stable with `RUSTC_BOOTSTRAP=1` (cargo-fuzz passes `-Z` flags).
pub struct FuzzToolchain {
    pub name: &'static str,
    pub bootstrap: bool,
}

fn toolchain_runs(name: &str) -> bool {
    Command::new("rustup")
        .args(["run", name, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cargo_fuzz_ok() -> bool {
    Command::new(cargo_home_bin().join("cargo-fuzz"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION))
}

fn cargo_fuzz() -> anyhow::Result<()> {
    if cargo_fuzz_ok() {
        println!("  cargo-fuzz {CARGO_FUZZ_VERSION} present");
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_cmd(Command::new(cargo).args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

fn cargo_deb_ok() -> bool {
    Command::new(cargo_home_bin().join("cargo-deb"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION))
}

fn cargo_deb() -> anyhow::Result<()> {
    if cargo_deb_ok() {
        println!("  cargo-deb {CARGO_DEB_VERSION} present");
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_cmd(Command::new(cargo).args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))
}

/// Installs cargo-deb when missing; the path of its binary.
pub fn cargo_deb_installed() -> anyhow::Result<PathBuf> {
    step("cargo-deb", cargo_deb)?;
    Ok(cargo_home_bin().join("cargo-deb"))
}

/// Installs cargo-fuzz when missing and picks the toolchain to run it with.
pub fn fuzz_toolchain() -> anyhow::Result<FuzzToolchain> {
    step("cargo-fuzz", cargo_fuzz)?;
    let toolchain = if toolchain_runs("nightly") {
        FuzzToolchain {
            name: "nightly",
            bootstrap: false,
        }
    } else if toolchain_runs("stable") {
        FuzzToolchain {
            name: "stable",
            bootstrap: true,
        }
    } else {
        bail!(
            "neither a nightly nor a stable rustup toolchain runs; `rustup toolchain install nightly`"
        );
    };
    println!(
        "xtask: fuzzing with rustup's {}{}",
        toolchain.name,
        if toolchain.bootstrap {
            " (RUSTC_BOOTSTRAP=1)"
        } else {
            ""
        }
    );
    Ok(toolchain)
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}
