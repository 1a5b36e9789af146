//! One Debian (bookworm or trixie) LXC container with systemd as PID 1 and a memory limit, in Proxmox VE's
//! layout (`lxc/<vmid>/ns`, lxcfs, a veth on a bridge of its own), for tests that need a real
//! system container and nothing else (the package test installs the .deb into it).
//!
//! Reuses the rig's pieces (ledger, bridge, lxcfs, [`crate::lxc`], [`crate::cgroups::Limits`]);
//! everything it makes lives in its own dir (a tmpfs) and is removed on drop, also on failure.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::cgroups::{Hierarchies, Limits};
use crate::ledger::{Ledger, Undo};
use crate::lxc::{self, ContainerSpec, Template};
use crate::net::{Bridge, create_bridge, link_exists};
use crate::rootfs::Suite;
use crate::{lxcfs, rootfs};

/// A running Debian systemd container. Dropping it stops and removes everything.
#[derive(Debug)]
pub struct SystemdContainer {
    pub spec: ContainerSpec,
    pub lxcpath: PathBuf,
    pub bridge: Bridge,
    pub limits: Limits,
    pub cgroups: Hierarchies,
    ledger: Ledger,
}

/// The first vmid from 9500 with no cgroup and no veth anywhere.
fn free_vmid(cgroups: &Hierarchies) -> anyhow::Result<u32> {
    (9500..9990)
        .find(|vmid| {
            !cgroups.exists_anywhere(&format!("lxc/{vmid}"))
                && !cgroups.exists_anywhere(&format!("lxc.monitor/{vmid}"))
                && !link_exists(&format!("veth{vmid}i0"))
        })
        .context("no free vmid between 9500 and 9990")
}

impl SystemdContainer {
    /// Brings the container up in `dir` (which must not exist) from the tree of `suite`, with
    /// `memory_mib` as its memory limit, written on `lxc/<vmid>` as `pct set` does; returns once
    /// systemd reports `running`.
    pub fn up(dir: &Path, suite: Suite, memory_mib: u64, unprivileged: bool) -> anyhow::Result<SystemdContainer> {
        if let Some(why) = crate::rig::unavailable() {
            bail!("the container needs {why}");
        }
        if dir.exists() {
            bail!("{} exists already", dir.display());
        }
        // Ordered with `Rig::up` by the same lock: both pick free vmids and bridge names.
        let (_lock, ledger) = crate::rig::claim_dir(dir, "2g")?;
        let cgroups = Hierarchies::read()?;
        let mut container = SystemdContainer {
            spec: ContainerSpec {
                vmid: 0,
                hostname: String::new(),
                template: Template::DebianSystemd(suite),
                unprivileged,
                rootfs: PathBuf::new(),
                bridge: String::new(),
                address: Ipv4Addr::UNSPECIFIED,
                mac: String::new(),
                lxcfs_hook: PathBuf::new(),
            },
            lxcpath: dir.join("lxc"),
            bridge: Bridge {
                name: String::new(),
                subnet: 0,
            },
            limits: Limits {
                memory_mib: Some(memory_mib),
                swap_mib: None,
                cpulimit: None,
                pids_max: None,
            },
            cgroups,
            ledger,
        };
        // On error, `container` is dropped here and unwinds what was made.
        container.build(dir)?;
        Ok(container)
    }

    fn build(&mut self, dir: &Path) -> anyhow::Result<()> {
        for parent in ["lxc", "lxc.monitor", "lxc.pivot"] {
            self.cgroups.create(parent, &mut self.ledger)?;
        }
        let vmid = free_vmid(&self.cgroups)?;
        self.bridge = create_bridge(&mut self.ledger)?;
        let lxcfs_dir = lxcfs::ensure(dir, &mut self.ledger)?;
        let hook = dir.join("lxcfs.hook");
        std::fs::write(&hook, lxcfs::mount_hook(&lxcfs_dir))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir_all(&self.lxcpath)?;
        let rootfs_dir = rootfs::subvol_path(&dir.join("images"), vmid);
        std::fs::create_dir_all(&rootfs_dir)?;
        for d in [dir.join("images"), dir.join(format!("images/{vmid}"))] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        self.spec = ContainerSpec {
            vmid,
            hostname: format!("ct{vmid}"),
            template: self.spec.template.clone(),
            unprivileged: self.spec.unprivileged,
            rootfs: rootfs_dir,
            bridge: self.bridge.name.clone(),
            address: self.bridge.host(10),
            mac: format!("BC:24:11:{:02X}:{:02X}:00", vmid / 100, vmid % 100),
            lxcfs_hook: hook,
        };
        lxc::create(&self.lxcpath, &self.spec, dir)?;
        if self.spec.unprivileged {
            // debugfs cannot be mounted from a user namespace: without the mask systemd ends
            // its boot "degraded" with sys-kernel-debug.mount failed (seen here), and
            // `lxc::start` waits for "running".
            let mask = self.spec.rootfs.join("etc/systemd/system/sys-kernel-debug.mount");
            std::os::unix::fs::symlink("/dev/null", &mask)?;
            std::os::unix::fs::lchown(&mask, Some(lxc::IDMAP_BASE), Some(lxc::IDMAP_BASE))?;
        }
        // Recorded before the start, so they unwind after the stop.
        for rel in [format!("lxc/{vmid}"), format!("lxc.monitor/{vmid}")] {
            for d in self.cgroups.dirs(&rel) {
                self.ledger.record(Undo::RemoveCgroupTree(d))?;
            }
        }
        self.ledger.record(Undo::DeleteLink(self.spec.veth()))?;
        self.ledger.record(Undo::StopContainer {
            lxcpath: self.lxcpath.clone(),
            name: self.spec.name(),
        })?;
        lxc::start(&self.lxcpath, &self.spec, &dir.join("lxc.log"))?;
        self.limits.apply(&self.cgroups, &self.spec.cgroup())?;
        Ok(())
    }

    /// Runs `argv` inside the container; its stdout, or an error with its stderr.
    pub fn attach(&self, argv: &[&str]) -> anyhow::Result<String> {
        lxc::attach_output(&self.lxcpath, self.spec.vmid, argv)
    }

    /// Copies a host file into the container's root filesystem at `inside` (an absolute path),
    /// owned by the container's root.
    pub fn copy_in(&self, host: &Path, inside: &str) -> anyhow::Result<()> {
        let target = self.spec.rootfs.join(inside.trim_start_matches('/'));
        std::fs::copy(host, &target).with_context(|| format!("copying {} to {}", host.display(), target.display()))?;
        if self.spec.unprivileged {
            std::os::unix::fs::chown(&target, Some(lxc::IDMAP_BASE), Some(lxc::IDMAP_BASE))?;
        }
        Ok(())
    }

    /// The memory limit in bytes, as written to the container's cgroup.
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        self.limits.memory_mib.map(|m| m * 1024 * 1024)
    }

    /// Stops the container and removes everything now.
    pub fn down(mut self) {
        self.ledger.unwind();
    }
}

impl Drop for SystemdContainer {
    fn drop(&mut self) {
        self.ledger.unwind();
    }
}
