//! `cargo xtask package`: the Debian package of the `sipauth` binary, made
//! by cargo-deb (installed on first use) from `[package.metadata.deb]` in
//! sipauth-agent/Cargo.toml: /usr/bin/sipauth, /etc/sipauth/sipauth.toml
//! (a conffile), the sipauth.service unit and the maintainer scripts of
//! sipauth-agent/debian/. The package lands in target/debian/.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Where the package is written, relative to the workspace root.
const OUT_DIR: &str = "target/debian";

/// Builds the release binary unless `no_build`, then the package; returns
/// the package's path.
pub fn run(no_build: bool) -> anyhow::Result<PathBuf> {
    let cargo_deb = crate::setup::cargo_deb_installed()?;
    if !no_build {
        crate::setup::ensure()?;
        crate::cargo(&["build", "--release", "-p", "sipauth-agent"])?;
    }
    std::fs::create_dir_all(OUT_DIR).with_context(|| format!("creating {OUT_DIR}"))?;
    let mut cmd = Command::new(cargo_deb);
    // The binary was built above: cargo-deb only packs it, its debug
    // information apart in sipauth-dbgsym_<version>-1_<arch>.ddeb.
    cmd.args([
        "-p",
        "sipauth-agent",
        "--no-build",
        "--dbgsym",
        "--output",
        OUT_DIR,
    ]);
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    // cargo-deb prints the package's path last.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .map(PathBuf::from)
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("no .deb path in cargo-deb's output: {stdout}"))?;
    if !deb.is_file() {
        bail!("cargo-deb named {}, which does not exist", deb.display());
    }
    println!("{}", deb.display());
    Ok(deb)
}
