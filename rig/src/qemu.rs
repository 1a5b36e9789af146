//! QEMU guests laid out as Proxmox VE lays them out: `qemu-system-x86_64` exec'd inside
//! `qemu.slice/<vmid>.scope` (every hierarchy on a hybrid host), `-daemonize` with a pid file,
//! one `-netdev tap,ifname=tap<vmid>i<N>,script=no,downscript=no` per NIC on the rig's bridge,
//! no disk (SeaBIOS finds nothing to boot and spins a vCPU: the scope's CPU quota bounds it).
//! TCG, because this machine kind's KVM cannot run guests. Produces the daemon's pid.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub vmid: u32,
    pub name: String,
    pub memory_mib: u64,
    /// The MAC of each NIC, in netN order.
    pub macs: Vec<String>,
}

impl VmSpec {
    pub fn tap(&self, index: usize) -> String {
        format!("tap{}i{index}", self.vmid)
    }
    pub fn cgroup(&self) -> String {
        format!("qemu.slice/{}.scope", self.vmid)
    }
}

/// QEMU's arguments (after the program name).
pub fn arguments(spec: &VmSpec, pid_file: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-name",
        &spec.name,
        "-machine",
        "pc,accel=tcg",
        "-m",
        &spec.memory_mib.to_string(),
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "none",
        "-monitor",
        "none",
        "-daemonize",
        "-pidfile",
        &pid_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (index, mac) in spec.macs.iter().enumerate() {
        args.push("-netdev".into());
        args.push(format!(
            "tap,id=net{index},ifname={},script=no,downscript=no",
            spec.tap(index)
        ));
        args.push("-device".into());
        // No option ROM: iPXE would otherwise send DHCP requests at its own pace.
        args.push(format!("virtio-net-pci,netdev=net{index},mac={mac},romfile="));
    }
    args
}

/// Starts QEMU in its scope; returns the daemon's pid once it wrote its pid file.
pub fn start(spec: &VmSpec, join_script: &str, pid_file: &Path) -> anyhow::Result<i32> {
    let mut script = join_script.to_owned();
    script.push_str("exec qemu-system-x86_64");
    for a in arguments(spec, pid_file) {
        script.push_str(&format!(" '{a}'"));
    }
    let output = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .context("starting qemu-system-x86_64")?;
    if !output.status.success() {
        bail!(
            "qemu for {} failed with {}: {}",
            spec.vmid,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = std::fs::read_to_string(pid_file).with_context(|| format!("reading {}", pid_file.display()))?;
    text.trim().parse().with_context(|| format!("pid file said {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nics_two_taps() {
        let spec = VmSpec {
            vmid: 9105,
            name: "rig-vm2".into(),
            memory_mib: 128,
            macs: vec!["BC:24:11:91:05:00".into(), "BC:24:11:91:05:01".into()],
        };
        let args = arguments(&spec, Path::new("/r/9105.pid")).join(" ");
        assert!(args.contains("-netdev tap,id=net0,ifname=tap9105i0,script=no,downscript=no"));
        assert!(args.contains("-netdev tap,id=net1,ifname=tap9105i1,script=no,downscript=no"));
        assert!(args.contains("virtio-net-pci,netdev=net1,mac=BC:24:11:91:05:01"));
        assert!(args.contains("-daemonize -pidfile /r/9105.pid"));
        assert_eq!(spec.cgroup(), "qemu.slice/9105.scope");
    }
}
