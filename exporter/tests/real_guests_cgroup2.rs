//! The real-guest proof on a pure cgroup v2 kernel (issue 11, point 2), as Proxmox VE 8 and 9
//! run it: a throwaway VM booted with QEMU's TCG from Debian's own kernel package (cached in
//! /var/cache/metrics-exporter-rig/vm, or RIG_CACHE), whose payload (`rig-payload`, built here)
//! builds Proxmox-shaped guests, runs this exporter binary in host mode inside, reads every
//! quantity itself and prints the comparison. This test reads the verdict from the serial
//! console, prints the table and asserts that every check passed.
//!
//! Needs root (QEMU itself does not, but the kernel cache is system-wide and CI runs as root)
//! and the packages `cargo xtask setup` installs (qemu-system-x86, busybox-static, xz-utils,
//! binutils, iproute2, lxcfs). A run that cannot build the image fails with the reason.

#[allow(unused_imports)] // the shared support re-exports helpers this test does not use
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use guest_rig::vm::{self, Machine, kernel::Kernel};

/// Builds `rig-payload` with the cargo that builds this test, into a target directory of its
/// own below this test's (so the outer build's lock is never waited on).
fn build_payload() -> PathBuf {
    let exporter = Path::new(env!("CARGO_BIN_EXE_metrics-exporter"));
    let profile_dir = exporter.parent().unwrap();
    let target = profile_dir.parent().unwrap().join("rig-payload");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "guest-rig",
            "--bin",
            "rig-payload",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(workspace)
        .status()
        .expect("start cargo");
    assert!(status.success(), "building rig-payload failed: {status}");
    target.join("debug/rig-payload")
}

#[test]
fn real_guests_on_pure_cgroup2() {
    if !common::require("root (the VM's kernel cache is system-wide)", common::is_root()) {
        return;
    }
    let whole = Instant::now();
    let payload = build_payload();
    let cache = std::env::var("RIG_CACHE").unwrap_or_else(|_| vm::kernel::DEFAULT_CACHE.to_owned());
    let kernel = Kernel::cached(Path::new(&cache)).unwrap_or_else(|e| panic!("cannot build the VM image: {e:#}"));
    let work = tempfile::tempdir().unwrap();
    // RIG_EXPORTER runs the same proof against another build (a release binary, an older
    // commit); by default, this build's.
    let exporter = std::env::var_os("RIG_EXPORTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_metrics-exporter")));
    println!("exporter under test: {}", exporter.display());
    let archive = vm::payload_archive(&kernel.release, &payload, &exporter, work.path())
        .unwrap_or_else(|e| panic!("cannot build the payload archive: {e:#}"));
    let payload_cpio = work.path().join("payload.cpio");
    std::fs::write(&payload_cpio, archive).unwrap();
    // The virtio scratch disk the guests write to with O_DIRECT (sparse: no host IO to speak of).
    let disk = work.path().join("scratch.img");
    std::fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();

    let machine = Machine {
        vmlinux: kernel.vmlinux.clone(),
        initramfs: vec![kernel.base_initramfs.clone(), payload_cpio],
        scratch_disk: Some(disk),
        memory_mib: 1024,
        cpus: 2,
        timeout: Duration::from_secs(600),
    };
    let boot = machine
        .boot(work.path())
        .unwrap_or_else(|e| panic!("the VM run failed: {e:#}"));
    let (code, report) =
        vm::parse_verdict(&boot.serial).unwrap_or_else(|e| panic!("{e:#}. Serial log:\n{}", boot.serial));
    println!("{}", report.table());
    // The payload's phase timings (and anything else it said) from the console.
    for line in boot.serial.lines().filter(|l| l.starts_with("rig-payload")) {
        println!("{line}");
    }
    println!(
        "kernel {} ({}); boot to verdict {:?}, VM {:?}, whole test {:?}",
        kernel.release,
        kernel.package,
        boot.to_verdict,
        boot.elapsed,
        whole.elapsed()
    );
    assert_eq!(code, 0, "the payload failed. Serial log:\n{}", boot.serial);
    if !report.failures().is_empty() {
        eprintln!("Serial log:\n{}", boot.serial);
    }
    report.assert_all_passed();
}
