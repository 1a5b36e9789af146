//! A throwaway VM with a pure cgroup v2 hierarchy (what Proxmox VE 8 and 9 run), booted with
//! QEMU's TCG from Debian's own kernel package: KVM cannot boot a stock kernel on this machine
//! kind (REAL-GUESTS.md). Its /init mounts the kernel filesystems and cgroup2 at
//! /sys/fs/cgroup, loads the guests' modules and runs the rig's payload (`rig-payload`), which
//! builds the guests, runs the exporter and prints its [`Report`] between marker lines on the
//! serial console.
//!
//! Reads the cached [`kernel::Kernel`], the payload and exporter binaries (with the libraries
//! `ldd` names); produces a [`Boot`] outcome: the serial log, the payload's exit code and its
//! report. QEMU runs under a deadline and is killed when it passes.

pub mod cpio;
pub mod kernel;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::report::Report;
use cpio::Archive;

/// The line before the report's JSON on the console.
pub const VERDICT_BEGIN: &str = "RIG-VERDICT-BEGIN";
/// The line after it.
pub const VERDICT_END: &str = "RIG-VERDICT-END";
/// `RIG-PAYLOAD-EXIT <code>`: printed by /init after the payload exited.
pub const PAYLOAD_EXIT: &str = "RIG-PAYLOAD-EXIT";

/// Where the payload finds the exporter, the scratch disk, and where /init finds the payload.
pub const PAYLOAD_PATH: &str = "/rig-payload";
pub const EXPORTER_PATH: &str = "/usr/bin/metrics-exporter";
pub const SCRATCH_DISK: &str = "/dev/vda";
pub const LXCFS_PATH: &str = "/usr/bin/lxcfs";
const LXCFS_LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/lxcfs/liblxcfs.so";

/// /init: the kernel filesystems, cgroup2 with every controller, the modules, loopback; then
/// the payload, its exit code on the console, and power off (the VM never outlives its run).
fn init_script(release: &str) -> String {
    let modules = kernel::MODULES
        .iter()
        .map(|m| format!("modprobe {m} || echo 'rig init: modprobe {m} failed'\n"))
        .collect::<String>();
    format!(
        r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpffs /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /run
[ "$(uname -r)" = "{release}" ] || echo "rig init: kernel $(uname -r), modules for {release}"
{modules}ip link set lo up
{PAYLOAD_PATH}
code=$?
echo "{PAYLOAD_EXIT} $code"
poweroff -f
"#
    )
}

/// A copy of `program` in `work` without debug information (binutils' `strip`): a debug build
/// of the exporter is ~120 MB, most of it DWARF the VM never reads, and every byte of the
/// initramfs is copied by an emulated CPU.
fn stripped(program: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let name = program.file_name().context("program without a name")?;
    let out = work.join(name);
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(program)
        .status()
        .context("cannot start strip (package binutils)")?;
    if !status.success() {
        bail!("strip {} failed with {status}", program.display());
    }
    Ok(out)
}

/// The per-run archive: /init, the payload, the exporter, iproute2's `ip` (busybox's ignores
/// a veth peer's name and namespace) and lxcfs, each with its libraries. `work` holds stripped copies.
pub fn payload_archive(release: &str, payload: &Path, exporter: &Path, work: &Path) -> anyhow::Result<Vec<u8>> {
    let mut archive = Archive::new();
    archive.file("init", init_script(release).into_bytes(), true)?;
    archive.host_program(&stripped(payload, work)?, PAYLOAD_PATH)?;
    archive.host_program(&stripped(exporter, work)?, EXPORTER_PATH)?;
    let ip = ["/usr/bin/ip", "/bin/ip", "/sbin/ip"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("iproute2's ip is not installed (package iproute2)")?;
    archive.host_program(ip, "usr/sbin/ip")?;
    // lxcfs, which Proxmox mounts over a container's /proc files (and its library, which it
    // loads with dlopen, so ldd does not name it).
    archive.host_program(Path::new(LXCFS_PATH), LXCFS_PATH)?;
    let library = Path::new(LXCFS_LIBRARY);
    archive
        .host_program(library, LXCFS_LIBRARY)
        .with_context(|| format!("{LXCFS_LIBRARY} (package lxcfs)"))?;
    Ok(archive.to_bytes())
}

/// What a boot produced.
#[derive(Debug)]
pub struct Boot {
    /// Everything the console printed (kernel, /init, payload).
    pub serial: String,
    /// From QEMU's start to its exit.
    pub elapsed: Duration,
    /// From QEMU's start to the verdict's end marker on the console.
    pub to_verdict: Option<Duration>,
}

/// How to boot.
#[derive(Debug, Clone)]
pub struct Machine {
    pub vmlinux: PathBuf,
    /// Archives concatenated into one initrd, later entries overriding earlier ones.
    pub initramfs: Vec<PathBuf>,
    /// A raw image attached as the virtio disk `/dev/vda`.
    pub scratch_disk: Option<PathBuf>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
}

impl Machine {
    /// Boots, waits for QEMU to exit or kills it at the deadline. A timeout is an error that
    /// carries the serial log.
    pub fn boot(&self, work: &Path) -> anyhow::Result<Boot> {
        let initrd = work.join("initrd.cpio");
        let mut joined = Vec::new();
        for part in &self.initramfs {
            joined.extend(std::fs::read(part).with_context(|| format!("reading {}", part.display()))?);
        }
        std::fs::write(&initrd, joined).with_context(|| format!("writing {}", initrd.display()))?;

        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-accel", "tcg,thread=multi", "-cpu", "max"])
            .args(["-m", &self.memory_mib.to_string(), "-smp", &self.cpus.to_string()])
            .arg("-kernel")
            .arg(&self.vmlinux)
            .arg("-initrd")
            .arg(&initrd)
            // loglevel=3: the OOM killer's report (KERN_ERR) stays off the console, where it
            // could split the verdict's JSON line.
            .args(["-append", "console=ttyS0 quiet loglevel=3 panic=-1"])
            .args(["-display", "none", "-no-reboot", "-nodefaults", "-serial", "stdio"]);
        if let Some(disk) = &self.scratch_disk {
            command
                .arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = KillOnDrop(
            command
                .spawn()
                .context("cannot start qemu-system-x86_64 (package qemu-system-x86)")?,
        );
        let child = &mut child.0;

        let serial = Arc::new(Mutex::new(Vec::<u8>::new()));
        let verdict_at = Arc::new(Mutex::new(None::<Duration>));
        let reader = {
            let serial = Arc::clone(&serial);
            let verdict_at = Arc::clone(&verdict_at);
            let mut stdout = child.stdout.take().context("qemu stdout")?;
            std::thread::spawn(move || {
                let mut buffer = [0u8; 8192];
                while let Ok(n) = stdout.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    let mut serial = serial.lock().unwrap();
                    serial.extend_from_slice(&buffer[..n]);
                    let mut at = verdict_at.lock().unwrap();
                    if at.is_none() && serial.windows(VERDICT_END.len()).any(|w| w == VERDICT_END.as_bytes()) {
                        *at = Some(start.elapsed());
                    }
                }
            })
        };
        let mut stderr = child.stderr.take().context("qemu stderr")?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let elapsed = start.elapsed();
        let _ = reader.join();
        let mut qemu_errors = String::new();
        let _ = stderr.read_to_string(&mut qemu_errors);
        let serial = String::from_utf8_lossy(&serial.lock().unwrap()).replace('\r', "");
        match status {
            None => bail!(
                "the VM did not power off within {:?}; killed. Serial log:\n{serial}\nQEMU: {qemu_errors}",
                self.timeout
            ),
            Some(status) if !status.success() => {
                bail!("QEMU exited with {status}: {qemu_errors}\nSerial log:\n{serial}")
            }
            Some(_) => Ok(Boot {
                serial,
                elapsed,
                to_verdict: *verdict_at.lock().unwrap(),
            }),
        }
    }
}

/// QEMU, killed if the boot ends early on an error (it never outlives the run).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The payload's exit code and report from the console text. An error names what is missing
/// (the payload crashed, the kernel panicked) so that a run never passes without a verdict.
pub fn parse_verdict(serial: &str) -> anyhow::Result<(i32, Report)> {
    let code = serial
        .lines()
        .filter_map(|l| l.trim().strip_prefix(PAYLOAD_EXIT))
        .find_map(|c| c.trim().parse::<i32>().ok())
        .context("no exit code from the payload on the console")?;
    let begin = serial.find(VERDICT_BEGIN).context("no verdict on the console")?;
    let rest = &serial[begin + VERDICT_BEGIN.len()..];
    let end = rest.find(VERDICT_END).context("the verdict has no end marker")?;
    let json: String = rest[..end].lines().map(str::trim).collect();
    let report: Report = serde_json::from_str(&json).with_context(|| format!("the verdict is not a report: {json}"))?;
    Ok((code, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Expect;

    #[test]
    fn verdict_from_console() {
        let mut report = Report::new("cgroup2");
        report.push("lxc/101", "limit", Some(1.0), Expect::Equal(1.0));
        let json = serde_json::to_string(&report).unwrap();
        let serial = format!("[ 1.0] boot\n{VERDICT_BEGIN}\n{json}\n{VERDICT_END}\n{PAYLOAD_EXIT} 0\n");
        let (code, back) = parse_verdict(&serial).unwrap();
        assert_eq!(code, 0);
        assert_eq!(back, report);
        assert!(parse_verdict("[ 1.0] Kernel panic\n").is_err());
        let truncated = format!("{VERDICT_BEGIN}\n{json}\n{PAYLOAD_EXIT} 1\n");
        assert!(parse_verdict(&truncated).is_err());
    }

    #[test]
    fn init_runs_the_payload_and_powers_off() {
        let script = init_script("6.1.0-57-amd64");
        assert!(script.contains("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
        assert!(script.contains("modprobe veth"));
        assert!(script.contains(&format!("{PAYLOAD_PATH}\ncode=$?\necho \"{PAYLOAD_EXIT} $code\"")));
        assert!(script.trim_end().ends_with("poweroff -f"));
    }
}
