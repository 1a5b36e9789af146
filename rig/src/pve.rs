//! The Proxmox cluster filesystem tree (PVE_PATH) the rig writes for its guests, as pmxcfs and
//! pve-container / qemu-server lay it out: `nodes/<node>/lxc/<vmid>.conf`,
//! `nodes/<node>/qemu-server/<vmid>.conf`, the `lxc`, `qemu-server` and `local` symlinks,
//! `.members` (a standalone node), `.vmlist` and `.version`. Pure text functions (tested) plus
//! one writer.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One guest as its config describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestConfig {
    pub vmid: u32,
    pub lxc: bool,
    /// `hostname:` (LXC) or `name:` (QEMU).
    pub name: String,
    pub memory_mib: u64,
    pub swap_mib: Option<u64>,
    pub cores: u32,
    pub cpulimit: Option<f64>,
    /// One entry per `netN`: (MAC, in-guest name for LXC, address for LXC).
    pub nets: Vec<Net>,
    pub tags: Vec<String>,
    pub unprivileged: bool,
    /// The rootfs volume as Proxmox names it (`local:9101/vm-9101-disk-0.raw`).
    pub rootfs: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    pub mac: String,
    pub bridge: String,
    pub guest_name: Option<String>,
    pub address: Option<String>,
}

/// The config file text (main section only: the rig takes no snapshots).
pub fn config_text(g: &GuestConfig) -> String {
    let mut out = String::new();
    if g.lxc {
        out.push_str("arch: amd64\n");
    } else {
        out.push_str("boot: order=net0\n");
    }
    out.push_str(&format!("cores: {}\n", g.cores));
    if let Some(limit) = g.cpulimit {
        out.push_str(&format!("cpulimit: {limit}\n"));
    }
    if g.lxc {
        out.push_str(&format!("hostname: {}\n", g.name));
    }
    out.push_str(&format!("memory: {}\n", g.memory_mib));
    if !g.lxc {
        out.push_str(&format!("name: {}\n", g.name));
    }
    for (index, net) in g.nets.iter().enumerate() {
        if g.lxc {
            out.push_str(&format!(
                "net{index}: name={},bridge={},hwaddr={},ip={}/24,type=veth\n",
                net.guest_name.as_deref().unwrap_or("eth0"),
                net.bridge,
                net.mac,
                net.address.as_deref().unwrap_or("dhcp")
            ));
        } else {
            out.push_str(&format!("net{index}: virtio={},bridge={}\n", net.mac, net.bridge));
        }
    }
    if g.lxc {
        out.push_str("ostype: unmanaged\n");
    } else {
        out.push_str("ostype: l26\n");
    }
    if let Some(rootfs) = &g.rootfs {
        out.push_str(&format!("rootfs: {rootfs}\n"));
    }
    if let Some(swap) = g.swap_mib {
        out.push_str(&format!("swap: {swap}\n"));
    }
    if !g.tags.is_empty() {
        out.push_str(&format!("tags: {}\n", g.tags.join(";")));
    }
    if g.unprivileged {
        out.push_str("unprivileged: 1\n");
    }
    out
}

/// `.vmlist` as pmxcfs prints it.
pub fn vmlist_text(node: &str, guests: &[GuestConfig]) -> String {
    let ids: Vec<String> = guests
        .iter()
        .map(|g| {
            format!(
                "\"{}\": {{ \"node\": \"{node}\", \"type\": \"{}\", \"version\": 1 }}",
                g.vmid,
                if g.lxc { "lxc" } else { "qemu" }
            )
        })
        .collect();
    format!("{{\n\"version\": 1,\n\"ids\": {{\n{}}}\n\n}}\n", ids.join(",\n"))
}

/// `.members` of a standalone node (no cluster section).
pub fn members_text(node: &str) -> String {
    format!("{{\n\"nodename\": \"{node}\",\n\"version\": 1\n}}\n")
}

pub fn version_text(start_time: u64) -> String {
    format!("{{\n\"starttime\": {start_time},\n\"clinfo\": 1,\n\"vmlist\": 1\n}}\n")
}

/// Writes the whole tree under `pve_path` (which exists and is the rig's).
pub fn write_tree(pve_path: &Path, node: &str, guests: &[GuestConfig], start_time: u64) -> anyhow::Result<()> {
    let node_dir = pve_path.join("nodes").join(node);
    for sub in ["lxc", "qemu-server"] {
        std::fs::create_dir_all(node_dir.join(sub))?;
        let link = pve_path.join(sub);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("nodes/{node}/{sub}"), &link)?;
        }
    }
    let local = pve_path.join("local");
    if !local.exists() {
        std::os::unix::fs::symlink(format!("nodes/{node}"), &local)?;
    }
    for g in guests {
        let dir = if g.lxc { "lxc" } else { "qemu-server" };
        let path = node_dir.join(dir).join(format!("{}.conf", g.vmid));
        std::fs::write(&path, config_text(g)).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(pve_path.join(".vmlist"), vmlist_text(node, guests))?;
    std::fs::write(pve_path.join(".members"), members_text(node))?;
    std::fs::write(pve_path.join(".version"), version_text(start_time))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> GuestConfig {
        GuestConfig {
            vmid: 9101,
            lxc: true,
            name: "rig-a".into(),
            memory_mib: 256,
            swap_mib: Some(64),
            cores: 1,
            cpulimit: Some(0.2),
            nets: vec![Net {
                mac: "BC:24:11:91:01:00".into(),
                bridge: "rigbr0".into(),
                guest_name: Some("eth0".into()),
                address: Some("10.213.0.11".into()),
            }],
            tags: vec!["rig".into(), "busybox".into()],
            unprivileged: false,
            rootfs: Some("local:9101/vm-9101-disk-0.raw,size=512M".into()),
        }
    }

    #[test]
    fn lxc_config() {
        let text = config_text(&a());
        assert_eq!(
            text,
            "arch: amd64\ncores: 1\ncpulimit: 0.2\nhostname: rig-a\nmemory: 256\n\
             net0: name=eth0,bridge=rigbr0,hwaddr=BC:24:11:91:01:00,ip=10.213.0.11/24,type=veth\n\
             ostype: unmanaged\nrootfs: local:9101/vm-9101-disk-0.raw,size=512M\nswap: 64\ntags: rig;busybox\n"
        );
    }

    #[test]
    fn vmlist_and_members_are_json() {
        let mut vm = a();
        vm.vmid = 9104;
        vm.lxc = false;
        let text = vmlist_text("node1", &[a(), vm]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ids"]["9101"]["type"], "lxc");
        assert_eq!(v["ids"]["9104"]["type"], "qemu");
        assert_eq!(v["ids"]["9104"]["node"], "node1");
        let m: serde_json::Value = serde_json::from_str(&members_text("node1")).unwrap();
        assert_eq!(m["nodename"], "node1");
        let ver: serde_json::Value = serde_json::from_str(&version_text(5)).unwrap();
        assert_eq!(ver["starttime"], 5);
    }
}
