//! `cargo xtask`: set-up, run, test and bench orchestration. No product
//! logic lives here.

mod fuzz;
mod package;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the tests need (Debian packages, Debian's
    /// Rust toolchain for BPF registered with rustup, bpf-linker, sipp,
    /// trafgen). Idempotent.
    Setup,
    /// Build and run the edge (`sipauth run --config sipauth.toml`); extra
    /// arguments go to `sipauth run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// rustfmt's check, unit tests, then the `BPF_PROG_TEST_RUN` tests and
    /// the netns rig (root).
    Test {
        /// Only the tests whose name contains this.
        filter: Option<String>,
    },
    /// Benchmarks in the netns rig; figures go to bench-results/.
    Bench {
        /// Only these parts (propagation, xdp-flood, inbound, outbound,
        /// reflection, fleet, kamailio); all when none is named.
        parts: Vec<String>,
    },
    /// The Debian package (cargo-deb, installed on first use):
    /// /usr/bin/sipauth, /etc/sipauth/sipauth.toml and the sipauth.service
    /// unit, into target/debian/. Its path is printed last.
    Package {
        /// Pack the release binary as it is instead of building it first.
        #[arg(long)]
        no_build: bool,
    },
    /// Fuzz sipauth-sip (cargo-fuzz, installed on first use): by default
    /// the TCP stream framing and the digest header targets, one after the
    /// other, over their corpora in fuzz/corpus/ (minimized afterwards).
    /// Crashes go to fuzz/artifacts/ and fail the command. Needs no root.
    Fuzz {
        /// One target: frame_stream, digest_header or parse_message.
        target: Option<String>,
        /// Seconds of fuzzing per target.
        #[arg(long, default_value_t = 600)]
        secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    if !matches!(
        cli.command,
        Cmd::Setup | Cmd::Fuzz { .. } | Cmd::Package { .. }
    ) {
        // Setup says the same in its own words.
        setup::require_root()?;
    }
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Run { args } => {
            setup::ensure()?;
            cargo(&["build", "--release", "-p", "sipauth-agent"])?;
            let mut cmd = Command::new(root.join("target/release/sipauth"));
            cmd.args(["run", "--config", "sipauth.toml"]).args(args);
            exec(cmd)
        }
        Cmd::Test { filter } => {
            setup::ensure()?;
            let filter: Vec<&str> = filter.as_deref().into_iter().collect();
            let t = std::time::Instant::now();
            // Formatting first: it takes a second and needs no build.
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(
                &[
                    &[
                        "test",
                        "--workspace",
                        "--exclude",
                        "sipauth-tests",
                        "--exclude",
                        "sipauth-ebpf",
                    ],
                    filter.as_slice(),
                ]
                .concat(),
            )?;
            println!("xtask: unit tests passed in {:.0?}", t.elapsed());
            let t = std::time::Instant::now();
            cargo(&["build", "--release", "-p", "sipauth-agent"])?;
            cargo(
                &[
                    &["test", "--release", "-p", "sipauth-tests", "--"],
                    filter.as_slice(),
                    &["--test-threads=1"],
                ]
                .concat(),
            )?;
            println!("xtask: XDP and rig tests passed in {:.0?}", t.elapsed());
            Ok(())
        }
        Cmd::Fuzz { target, secs } => fuzz::run(target.as_deref(), secs),
        Cmd::Package { no_build } => package::run(no_build).map(drop),
        Cmd::Bench { parts } => {
            setup::ensure()?;
            cargo(&["build", "--release", "-p", "sipauth-agent"])?;
            let mut args = vec![
                "run",
                "--release",
                "-p",
                "sipauth-tests",
                "--bin",
                "sipauth-bench",
                "--",
            ];
            args.extend(parts.iter().map(String::as_str));
            cargo(&args)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Runs rustup's cargo (the one that runs us), with the agent binary's path
/// in `SIPAUTH_BIN` for the rig.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).env(
        "SIPAUTH_BIN",
        workspace_root().join("target/release/sipauth"),
    );
    status(&mut cmd)
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn exec(mut cmd: Command) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    Err(cmd.exec()).context("starting sipauth")
}
