//! Builds the XDP program (`sipauth-ebpf`) for bpfel-unknown-none and puts
//! the object in `OUT_DIR`, where `src/maps` embeds it.
//!
//! The eBPF build uses Debian's Rust toolchain (it ships a prebuilt `core`
//! for the BPF targets), registered with rustup under [`TOOLCHAIN`] by
//! `cargo xtask setup`, and bpf-linker.

use std::path::Path;

/// The rustup name `cargo xtask setup` gives Debian's toolchain in /usr.
const TOOLCHAIN: &str = "sipauth-bpf";

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let root_dir = Path::new(&manifest)
        .parent()
        .expect("the kernel crate lives in the workspace")
        .join("sipauth-ebpf");
    let root_dir = root_dir.to_str().expect("workspace path is UTF-8");
    println!("cargo:rerun-if-changed=../sipauth-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sipauth-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(TOOLCHAIN),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "building the XDP program failed: {e:#}\n\
             (the eBPF toolchain comes from `cargo xtask setup`)"
        )
    })
}
