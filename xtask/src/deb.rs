//! `cargo xtask deb [--deb-version VERSION] [--output DIR]`: the Debian package
//! `metrics-exporter_<version>_amd64.deb` for Debian 12 and 13 (Proxmox VE 8 and 9).
//!
//! Installs what is missing (the eBPF toolchain, cargo-deb), builds the release binary with its
//! eBPF programs through cargo-deb (`[package.metadata.deb]` in exporter/Cargo.toml: the binary,
//! both systemd units, debian/'s maintainer scripts and default file, the README, mixin/ when it
//! exists), then runs lintian when it is installed and fails on any lintian error.
//! Prints the package's path and size; the path is also the last line of stdout, for scripts.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::{run, setup, workspace_root};

/// The cargo-deb release that builds with the project's Rust (1.95).
const CARGO_DEB_VERSION: &str = "3.8.0";

fn cargo_deb_installed() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION))
        .unwrap_or(false)
}

/// True when `dir` or a directory below it holds a file.
fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| !t.is_dir()) || has_files(&e.path()))
        })
        .unwrap_or(false)
}

pub fn run_deb(args: &[String]) -> anyhow::Result<()> {
    let mut deb_version = None;
    let mut output = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--deb-version" => deb_version = Some(rest.next().context("--deb-version needs a value")?.clone()),
            "--output" => output = Some(rest.next().context("--output needs a directory")?.clone()),
            other => bail!("usage: cargo xtask deb [--deb-version VERSION] [--output DIR] (got {other:?})"),
        }
    }
    setup::all(false)?;
    if !cargo_deb_installed() {
        run(
            "cargo",
            &["install", &format!("cargo-deb@{CARGO_DEB_VERSION}"), "--locked"],
            &[],
        )?;
    }
    let mut cargo_deb = vec!["deb", "--package", "metrics-exporter"];
    if !has_files(&workspace_root().join("mixin")) {
        eprintln!("mixin/ holds no file: the package ships no dashboards or rules");
        cargo_deb.extend(["--variant", "no-mixin"]);
    }
    if let Some(version) = &deb_version {
        cargo_deb.extend(["--deb-version", version]);
    }
    if let Some(dir) = &output {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
        cargo_deb.extend(["--output", dir]);
    }
    eprintln!("+ cargo {}", cargo_deb.join(" "));
    let built = Command::new("cargo")
        .args(&cargo_deb)
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo deb")?;
    if !built.status.success() {
        bail!("cargo {} failed with {}", cargo_deb.join(" "), built.status);
    }
    // cargo-deb prints the path of the package it wrote as its last line.
    let stdout = String::from_utf8_lossy(&built.stdout);
    let package = stdout
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .context("cargo deb printed no .deb path")?
        .trim()
        .to_owned();
    let size = std::fs::metadata(&package)
        .with_context(|| format!("reading {package}"))?
        .len();
    if setup::lintian_available() {
        // lintian runs as a user's tool; its tags of severity "error" fail the build.
        run("lintian", &["--fail-on", "error", &package], &[])?;
    } else {
        eprintln!("lintian is not installed (cargo xtask setup installs it): package not checked");
    }
    eprintln!("package: {package} ({size} bytes)");
    println!("{package}");
    Ok(())
}
