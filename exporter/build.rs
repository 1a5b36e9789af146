//! Builds the eBPF programs of `exporter-ebpf` for `bpfel-unknown-none` with aya-build and
//! leaves the object at `$OUT_DIR/exporter-ebpf`, where `exporter/src/ebpf` embeds it.
//!
//! `AYA_BUILD_SKIP=1` builds the userspace without nightly or bpf-linker: the object is then
//! an empty file and the cfg `ebpf_object_empty` is set, so the binary knows (and says in its
//! log, /status and `metrics_exporter_ebpf_enabled 0`) that it carries no eBPF programs.
//! `cargo xtask setup` (xtask/src/setup.rs) installs what the full build needs.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(ebpf_object_empty)");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| anyhow::anyhow!("OUT_DIR not set"))?);
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow::anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let skip = std::env::var("AYA_BUILD_SKIP")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    let object = out_dir.join("exporter-ebpf");
    if skip {
        std::fs::write(&object, [])?;
        println!("cargo:rustc-cfg=ebpf_object_empty");
        println!("cargo:warning=AYA_BUILD_SKIP is set: this build embeds no eBPF programs");
        return Ok(());
    }
    let workspace = manifest_dir
        .parent()
        .ok_or_else(|| anyhow::anyhow!("exporter has no parent directory"))?;
    let ebpf_dir = workspace.join("exporter-ebpf");
    let common_dir = workspace.join("exporter-common");
    // aya-build watches the eBPF crate; the contract crate it depends on must be watched too.
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "exporter-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
