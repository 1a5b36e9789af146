//! The run inside the VM: cgroup2 controllers down the tree, the guests (container 101 in
//! `lxc/101/ns`, "VM" 200 in `qemu.slice/200.scope`), the Proxmox config tree, the exporter,
//! and the comparison of its values with the payload's own reads of the raw files.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use guest_rig::exposition::{Series, parse_exposition, value};
use guest_rig::report::{Expect, Report};
use guest_rig::vm::EXPORTER_PATH;

use crate::work::{self, Netns, read, write};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PVE_PATH: &str = "/etc/pve";
const NODE: &str = "pve1";
const CONTROLLERS: &str = "+cpuset +cpu +io +memory +pids";

/// Creates `relative` and its parents, enabling every controller in each parent's
/// `cgroup.subtree_control` on the way down (as systemd and pve-lxc-syscalld leave it).
fn make_cgroup(relative: &str) -> anyhow::Result<PathBuf> {
    let mut path = PathBuf::from(CGROUP_ROOT);
    for part in relative.split('/') {
        write(&path.join("cgroup.subtree_control"), CONTROLLERS)?;
        path.push(part);
        if !path.exists() {
            std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        }
    }
    Ok(path)
}

fn raw_u64(path: &Path) -> anyhow::Result<u64> {
    let text = read(path)?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}, not a number", path.display()))
}

/// Distinct PIDs in `cgroup.procs` of `dir` and every cgroup below it.
fn processes_below(dir: &Path) -> anyhow::Result<usize> {
    let mut pids = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for line in read(&dir.join("cgroup.procs"))?.lines() {
            pids.insert(line.trim().to_owned());
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(pids.len())
}

/// The Proxmox cluster filesystem of a standalone node `pve1` with its guests, as pmxcfs
/// shows it: `nodes/<node>/{lxc,qemu-server}/<vmid>.conf`, the `lxc`, `qemu-server` and
/// `local` symlinks, `.members`, `.vmlist`, `.version`.
fn write_pve_tree(containers: &[(u32, String)], vms: &[(u32, String)]) -> anyhow::Result<()> {
    let root = Path::new(PVE_PATH);
    let node = root.join("nodes").join(NODE);
    std::fs::create_dir_all(node.join("lxc"))?;
    std::fs::create_dir_all(node.join("qemu-server"))?;
    for (link, target) in [
        ("local", format!("nodes/{NODE}")),
        ("lxc", format!("nodes/{NODE}/lxc")),
        ("qemu-server", format!("nodes/{NODE}/qemu-server")),
    ] {
        std::os::unix::fs::symlink(target, root.join(link))?;
    }
    let mut ids = Vec::new();
    for (vmid, conf) in containers {
        std::fs::write(node.join(format!("lxc/{vmid}.conf")), conf)?;
        ids.push(format!(
            "\"{vmid}\": {{ \"node\": \"{NODE}\", \"type\": \"lxc\", \"version\": 1 }}"
        ));
    }
    for (vmid, conf) in vms {
        std::fs::write(node.join(format!("qemu-server/{vmid}.conf")), conf)?;
        ids.push(format!(
            "\"{vmid}\": {{ \"node\": \"{NODE}\", \"type\": \"qemu\", \"version\": 1 }}"
        ));
    }
    std::fs::write(
        root.join(".vmlist"),
        format!("{{\n\"version\": 3,\n\"ids\": {{\n{}}}\n\n}}\n", ids.join(",\n")),
    )?;
    std::fs::write(
        root.join(".members"),
        format!("{{\n\"nodename\": \"{NODE}\",\n\"version\": 0\n}}\n"),
    )?;
    std::fs::write(
        root.join(".version"),
        "{\n\"starttime\": 1764900000,\n\"clinfo\": 0,\n\"vmlist\": 3\n}\n",
    )?;
    Ok(())
}

/// The exporter's environment: Proxmox host mode over the VM's real files.
fn exporter_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PLATFORM", "proxmox"),
        ("PROC_PATH", "/proc"),
        ("SYS_PATH", "/sys"),
        ("CGROUP_PATH", CGROUP_ROOT),
        ("PVE_PATH", PVE_PATH),
        ("LOG_LEVEL", "warn"),
    ]
}

fn once() -> anyhow::Result<Vec<Series>> {
    let output = Command::new(EXPORTER_PATH)
        .arg("--once")
        .env_clear()
        .envs(exporter_env())
        .env("EBPF", "off")
        .output()
        .context("starting the exporter")?;
    if !output.status.success() {
        bail!(
            "metrics-exporter --once exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_exposition(&String::from_utf8_lossy(&output.stdout)))
}

pub fn run() -> anyhow::Result<Report> {
    let mut report = Report::new("cgroup2");
    let ct = make_cgroup("lxc/101")?;
    let ct_ns = make_cgroup("lxc/101/ns")?;
    write(&ct.join("memory.max"), "67108864")?;
    let _init = work::spawn(&ct_ns, Netns::New, "sleep", &[])?;
    let vm = make_cgroup("qemu.slice/200.scope")?;
    let _vm_process = work::spawn(&vm, Netns::Host, "sleep", &[])?;
    write_pve_tree(
        &[(
            101,
            "arch: amd64\ncores: 1\nhostname: ct101\nmemory: 64\nswap: 64\nostype: debian\n".into(),
        )],
        &[(200, "cores: 1\nmemory: 128\nname: vm200\nostype: l26\n".into())],
    )?;

    let series = once()?;
    let guest = [("container_id", "101"), ("type", "lxc")];
    report.push(
        "lxc/101",
        "processes (container_processes)",
        value(&series, "container_processes", &guest),
        Expect::Equal(processes_below(&ct)? as f64),
    );
    report.push(
        "lxc/101",
        "memory limit (container_spec_memory_limit_bytes)",
        value(&series, "container_spec_memory_limit_bytes", &guest),
        Expect::Equal(raw_u64(&ct.join("memory.max"))? as f64),
    );
    report.push(
        "qemu/200",
        "processes (container_processes)",
        value(
            &series,
            "container_processes",
            &[("container_id", "200"), ("type", "qemu")],
        ),
        Expect::Equal(processes_below(&vm)? as f64),
    );
    Ok(report)
}
