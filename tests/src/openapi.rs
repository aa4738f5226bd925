//! Python packages from PyPI (`openapi-spec-validator`, Plivo's SDK) in
//! virtualenvs of the rig's own, made on first use with Debian's `python3
//! -m venv` (package python3-venv, installed by `cargo xtask setup`) and
//! kept for later runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::sh;

/// The validator's version: a newer one may judge differently.
const VERSION: &str = "0.9.0";

/// Debian's interpreter when there, else the first `python3` on PATH.
fn python() -> PathBuf {
    let debian = Path::new("/usr/bin/python3");
    if debian.exists() {
        debian.to_owned()
    } else {
        PathBuf::from("python3")
    }
}

/// The validator's command, in a virtualenv under `dir` (made when absent
/// or incomplete).
#[must_use]
pub fn validator(dir: &Path) -> PathBuf {
    venv(dir, "openapi-spec-validator", VERSION).join("bin/openapi-spec-validator")
}

/// A virtualenv under `dir` holding `package==version` from PyPI, made
/// when absent or incomplete; returns its directory.
#[must_use]
pub fn venv(dir: &Path, package: &str, version: &str) -> PathBuf {
    let venv = dir.join(format!("{package}-{version}"));
    let done = venv.join(".installed");
    if done.exists() {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(dir).expect("virtualenv parent");
    sh(Command::new(python()).args(["-m", "venv"]).arg(&venv));
    sh(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        &format!("{package}=={version}"),
    ]));
    std::fs::write(&done, "").expect("mark the virtualenv complete");
    venv
}

/// What the validator says of `doc`: Ok with its output when it accepts
/// the document, Err with its output when it rejects it.
pub fn validate(validator: &Path, doc: &serde_json::Value) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).expect("JSON")).expect("write");
    let out = Command::new(validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", validator.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
