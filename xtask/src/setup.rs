//! Idempotent installation of what building and testing need on a fresh Debian 12 machine:
//! the nightly toolchain's rust-src and bpf-linker with its LLVM 22 (for the eBPF programs),
//! and for tests Debian's prometheus (promtool), prometheus-node-exporter, iproute2 and
//! util-linux. Each step checks first and installs only what is missing.

use std::process::{Command, Stdio};

use anyhow::Context;

use crate::run;

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn dpkg_installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", package]).contains("install ok installed")
}

/// Installs Debian packages that are missing, without starting their services (a packaged
/// node_exporter would otherwise take port 9100 from us).
pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    if !had_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").context("writing /usr/sbin/policy-rc.d")?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = (|| {
        // A fresh machine's package lists may not know llvm-22-dev yet.
        run("apt-get", &["update", "-qq"], &[])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        run("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
    })();
    if !had_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn ebpf_toolchain() -> anyhow::Result<()> {
    if !output("rustup", &["toolchain", "list"]).contains("nightly") {
        run(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
            &[],
        )?;
    }
    if !output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    )
    .contains("rust-src")
    {
        run(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
            &[],
        )?;
    }
    apt_install(&["llvm-22-dev", "libllvm22"])?;
    if !output("bpf-linker", &["--version"]).contains("0.13.0") {
        run(
            "cargo",
            &[
                "install",
                "bpf-linker@0.13.0",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ],
            &[("LLVM_PREFIX", "/usr/lib/llvm-22")],
        )?;
    }
    Ok(())
}

/// What the real-guest rig (crate `guest-rig`, exporter/tests/real_guests.rs) runs: LXC with
/// lxcfs and the busybox template, QEMU, debootstrap for the Debian guest, and the tools that
/// make its raw image and loop device.
pub(crate) const RIG_PACKAGES: &[&str] = &[
    "lxc",
    "lxcfs",
    "busybox-static",
    "bridge-utils",
    "qemu-system-x86",
    "debootstrap",
    "e2fsprogs",
    "mount",
    // The pure cgroup v2 VM (exporter/tests/real_guests_cgroup2.rs): xz unpacks Debian's
    // kernel image, binutils' strip keeps debug info out of the initramfs.
    "xz-utils",
    "binutils",
];

pub(crate) fn lintian_available() -> bool {
    succeeds("lintian", &["--version"])
}

/// Installs what `run` needs, and with `for_tests` what the test suite needs too.
pub fn all(for_tests: bool) -> anyhow::Result<()> {
    ebpf_toolchain()?;
    if for_tests {
        apt_install(&[
            "prometheus",
            "prometheus-node-exporter",
            "iproute2",
            "util-linux",
            "iputils-ping",
            "systemd",
            // exporter/tests/ebpf_binary.rs proves --check-config and --once make no bpf() call.
            "strace",
            // exporter/tests/package.rs and `cargo xtask deb`: the package has no lintian error.
            "lintian",
            // exporter/tests/mixin.rs reads the rules and the collector example with PyYAML.
            "python3-yaml",
            // exporter/tests/web_tls.rs: TLS and basic auth proven with curl, certificates made by openssl.
            "curl",
            "openssl",
        ])?;
        apt_install(RIG_PACKAGES)?;
        if !succeeds("rustup", &["component", "list", "--installed"]) {
            anyhow::bail!("rustup is required");
        }
        let installed = output("rustup", &["component", "list", "--installed"]);
        for component in ["clippy", "rustfmt"] {
            if !installed.contains(component) {
                run("rustup", &["component", "add", component], &[])?;
            }
        }
    }
    Ok(())
}
