//! `cargo xtask`: what cargo alone cannot do.
//!
//! - `cargo xtask run`: installs what is missing, builds the release binary (with its eBPF
//!   programs) and runs the exporter with the default configuration.
//! - `cargo xtask test`: installs what is missing (including the test peers: Prometheus,
//!   promtool, node_exporter) and runs the whole suite: fmt, clippy, tests.
//! - `cargo xtask setup`: only installs.
//! - `cargo xtask deb [--deb-version V] [--output DIR]`: the Debian package (cargo-deb), checked
//!   by lintian.
//! - `cargo xtask rig up|down|status [DIR]`: the real-guest rig (real LXC containers and QEMU
//!   guests laid out as Proxmox VE lays them out), for a person who wants to look.
//! - `cargo xtask fuzz [--minutes N | --seconds N] [TARGET...]`: the parsers' cargo-fuzz targets
//!   (`fuzz/`), seeded from `fixtures/` (`fuzz.rs`).
//! - `cargo xtask soak otlp-outage [--minutes N] | churn [--cycles N]`: the long runs of the
//!   OTLP-outage and guest-churn fault tests (`soak.rs`).
//!
//! Installation is idempotent: each step checks first and installs only what is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

mod compare;
mod deb;
mod fuzz;
mod rig;
mod setup;
mod soak;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, inheriting stdio; fails on a non-zero status.
pub fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("{program} {} failed with {status}", args.join(" "));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::all(true),
        Some("run") => run_exporter(&args[1..]),
        Some("test") => test(),
        Some("compare") => compare::run(&args[1..]),
        Some("rig") => rig::run(&args[1..]),
        Some("deb") => deb::run_deb(&args[1..]),
        Some("fuzz") => fuzz::run_fuzz(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <setup|run|test|compare|rig|deb|fuzz|soak>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_exporter(extra: &[String]) -> anyhow::Result<()> {
    setup::all(false)?;
    run("cargo", &["build", "--release", "--package", "metrics-exporter"], &[])?;
    let binary = workspace_root().join("target/release/metrics-exporter");
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    run(binary.to_str().context("non-UTF-8 path")?, &extra, &[])
}

fn test() -> anyhow::Result<()> {
    setup::all(true)?;
    run("cargo", &["fmt", "--all", "--check"], &[])?;
    run(
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        &[],
    )?;
    // One test thread per binary: the root tests create cgroups, namespaces and veth pairs
    // whose names are unique per test, but the machine has 2 cores and the kernel-counter
    // comparisons are steadier without parallel CPU burners.
    run(
        "cargo",
        &["test", "--workspace", "--no-fail-fast", "--", "--test-threads=2"],
        &[],
    )?;
    // Smoke run of every parser's fuzz target (issue 14): prints its build and run cost.
    fuzz::smoke()?;
    Ok(())
}
