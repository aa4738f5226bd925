//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` over their
//! corpora kept in the repository (`fuzz/corpus/<target>/`), then minimizes
//! each corpus with `cargo fuzz cmin` so what is committed stays small.
//! Crashes go to `fuzz/artifacts/<target>/` (not committed) and fail the
//! command.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// The targets run when none is named: the TCP stream framing and the
/// digest header parsers.
pub const DEFAULT_TARGETS: &[&str] = &["frame_stream", "digest_header"];

/// Every target of `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &["frame_stream", "digest_header", "parse_message"];

/// Build flags shared by `run` and `cmin`, so the second reuses the first's
/// build: optimized, with debug assertions (integer overflow panics), and no
/// sanitizer (sipauth-sip forbids unsafe code; panics, overflows and hangs
/// are what is looked for, at twice ASan's speed).
const BUILD: &[&str] = &["-O", "--debug-assertions", "--sanitizer", "none"];

/// What libFuzzer reported for one run.
struct Stats {
    target: &'static str,
    runs: Option<u64>,
    per_sec: Option<u64>,
    secs: u64,
    corpus_files: usize,
    ok: bool,
}

pub fn run(target: Option<&str>, secs: u64) -> anyhow::Result<()> {
    let targets: Vec<&'static str> =
        match target {
            None => DEFAULT_TARGETS.to_vec(),
            Some(t) => vec![*TARGETS.iter().find(|k| **k == t).with_context(|| {
                format!("no fuzz target {t}; there are {}", TARGETS.join(", "))
            })?],
        };
    let toolchain = crate::setup::fuzz_toolchain()?;
    let mut all = Vec::new();
    for t in targets {
        all.push(one(t, secs, &toolchain)?);
    }
    println!("xtask: fuzz summary");
    for s in &all {
        let fmt = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        println!(
            "  {:<14} {} ({} s): {} executions, {} per second, corpus {} files",
            s.target,
            if s.ok { "ok" } else { "CRASHED" },
            s.secs,
            fmt(s.runs),
            fmt(s.per_sec),
            s.corpus_files,
        );
    }
    let crashed: Vec<&str> = all.iter().filter(|s| !s.ok).map(|s| s.target).collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found crashes in {}: inputs in fuzz/artifacts/<target>/; reproduce with \
             `cargo fuzz run {} <target> <file>`",
            crashed.join(", "),
            BUILD.join(" ")
        );
    }
    Ok(())
}

fn cargo_fuzz(toolchain: &crate::setup::FuzzToolchain) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain.name, "cargo", "fuzz"]);
    if toolchain.bootstrap {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    cmd
}

fn one(
    target: &'static str,
    secs: u64,
    toolchain: &crate::setup::FuzzToolchain,
) -> anyhow::Result<Stats> {
    let corpus = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let before = count_files(&corpus)?;
    println!("xtask: fuzzing {target} for {secs} s from {before} corpus files");
    let t = Instant::now();
    let mut child = cargo_fuzz(toolchain)
        .arg("run")
        .args(BUILD)
        .arg(target)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        // A single input taking this long is a hang: reported as a crash.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo fuzz")?;
    let mut runs = None;
    let mut per_sec = None;
    let mut fuzz_secs = None;
    let stderr = child.stderr.take().context("libFuzzer's output")?;
    let mut out = std::io::stderr().lock();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        let _ = writeln!(out, "{line}");
        let stat = |name: &str| {
            line.strip_prefix(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        runs = stat("stat::number_of_executed_units:").or(runs);
        per_sec = stat("stat::average_exec_per_sec:").or(per_sec);
        // "Done 529592 runs in 41 second(s)"
        if let Some(done) = line.strip_prefix("Done ") {
            fuzz_secs = done
                .split_once(" runs in ")
                .and_then(|(_, s)| s.split(' ').next()?.parse::<u64>().ok())
                .or(fuzz_secs);
        }
    }
    drop(out);
    let ok = child.wait()?.success();
    let elapsed = t.elapsed().as_secs();
    let secs = fuzz_secs.unwrap_or(elapsed);
    if ok {
        // Keep a smallest set of inputs that covers every edge seen.
        let st = cargo_fuzz(toolchain)
            .arg("cmin")
            .args(BUILD)
            .arg(target)
            .arg(&corpus)
            .args(["--", "-set_cover_merge=1", "-use_counters=0"])
            .status()
            .context("starting cargo fuzz cmin")?;
        if !st.success() {
            bail!("cargo fuzz cmin {target} failed: {st}");
        }
    }
    let corpus_files = count_files(&corpus)?;
    println!(
        "xtask: {target}: {} after {secs} s of fuzzing ({elapsed} s in all); corpus {before} -> \
         {corpus_files} files",
        if ok { "no crash" } else { "CRASH" }
    );
    Ok(Stats {
        target,
        runs,
        per_sec,
        secs,
        corpus_files,
        ok,
    })
}

fn count_files(dir: &Path) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
        .count())
}
