//! The machine's cgroup hierarchies (from `/proc/self/mountinfo`: the cgroup2 mount, wherever it
//! is, and every v1 hierarchy with the controllers it carries), and the cgroups the rig makes in
//! all of them at once, as Proxmox VE's layout has them on a hybrid host
//! (`qemu.slice/<vmid>.scope` in every hierarchy) or a pure cgroup2 one.
//! Produces [`Hierarchies`]; writes cgroup directories, `cpuset.cpus`/`cpuset.mems` of new v1
//! cpuset cgroups (empty ones admit no process) and the limit files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::ledger::{Ledger, Undo, unescape_mount_field};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// `None` for cgroup2; the v1 controllers (`cpu`, `memory`, `name=systemd`…) otherwise.
    pub controllers: Option<Vec<String>>,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers
            .as_ref()
            .is_some_and(|c| c.iter().any(|x| x == controller))
    }
}

/// Every cgroup hierarchy of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    pub all: Vec<Hierarchy>,
}

/// Parses mountinfo: `cgroup2` mounts and `cgroup` mounts with their super options.
pub fn parse_hierarchies(mountinfo: &str) -> Hierarchies {
    let mut all = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let after: Vec<&str> = after.split(' ').collect();
        let (Some(mount_point), Some(fs_type)) = (fields.get(4), after.first()) else {
            continue;
        };
        let controllers = match *fs_type {
            "cgroup2" => None,
            "cgroup" => Some(
                after
                    .get(2)
                    .unwrap_or(&"")
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("clone_children"))
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => continue,
        };
        all.push(Hierarchy {
            mount_point: PathBuf::from(unescape_mount_field(mount_point)),
            controllers,
        });
    }
    Hierarchies { all }
}

impl Hierarchies {
    pub fn read() -> anyhow::Result<Hierarchies> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        Ok(parse_hierarchies(&text))
    }

    /// The cgroup2 mount point.
    pub fn unified(&self) -> Option<&Path> {
        self.all
            .iter()
            .find(|h| h.controllers.is_none())
            .map(|h| h.mount_point.as_path())
    }

    /// The v1 hierarchy that carries `controller`, if it is bound to v1.
    pub fn v1(&self, controller: &str) -> Option<&Path> {
        self.all
            .iter()
            .find(|h| h.has(controller))
            .map(|h| h.mount_point.as_path())
    }

    /// True when memory is a v1 controller (this project's hybrid test machine).
    pub fn hybrid(&self) -> bool {
        self.v1("memory").is_some()
    }

    /// The directory of `relative` in every hierarchy.
    pub fn dirs(&self, relative: &str) -> Vec<PathBuf> {
        self.all.iter().map(|h| h.mount_point.join(relative)).collect()
    }

    /// True when `relative` exists in any hierarchy.
    pub fn exists_anywhere(&self, relative: &str) -> bool {
        self.dirs(relative).iter().any(|d| d.exists())
    }

    /// Creates `relative` (each missing component) in every hierarchy, records what it made,
    /// and fills `cpuset.cpus`/`cpuset.mems` of new v1 cpuset cgroups from their parent.
    pub fn create(&self, relative: &str, ledger: &mut Ledger) -> anyhow::Result<()> {
        for h in &self.all {
            let mut dir = h.mount_point.clone();
            for component in relative.split('/').filter(|c| !c.is_empty()) {
                let parent = dir.clone();
                dir.push(component);
                if dir.exists() {
                    continue;
                }
                std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
                ledger.record(Undo::RemoveCgroup(dir.clone()))?;
                if h.has("cpuset") {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let value = std::fs::read_to_string(parent.join(file))
                            .with_context(|| format!("reading {}", parent.join(file).display()))?;
                        write(&dir.join(file), value.trim())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A shell prefix that moves the shell into `relative` in every hierarchy, so that what it
    /// `exec`s next starts there (QEMU in its scope).
    pub fn join_script(&self, relative: &str) -> String {
        self.dirs(relative)
            .iter()
            .map(|d| format!("echo $$ > '{}/cgroup.procs' || exit 1; ", d.display()))
            .collect()
    }
}

pub fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Limits as Proxmox VE's config keys give them, applied to a guest's cgroup the way `pct set`
/// (and qemu-server's scope properties) write them: on `lxc/<vmid>` or
/// `qemu.slice/<vmid>.scope` itself, never on the inner `ns`. `None` leaves a limit unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// `memory:` in MiB.
    pub memory_mib: Option<u64>,
    /// `swap:` in MiB (v1: memsw = memory + swap; v2: memory.swap.max = swap).
    pub swap_mib: Option<u64>,
    /// `cpulimit:` in cores, applied as a CFS quota per 100 ms period.
    pub cpulimit: Option<f64>,
    /// A pids limit (Proxmox has no key of its own; `lxc.cgroup2.pids.max` in raw config).
    pub pids_max: Option<u64>,
}

pub const CFS_PERIOD_US: u64 = 100_000;
const MIB: u64 = 1024 * 1024;

impl Limits {
    pub fn cfs_quota_us(cpulimit: f64) -> u64 {
        (cpulimit * CFS_PERIOD_US as f64).round() as u64
    }

    /// Writes the limits to `relative` in the hierarchy that holds each controller.
    pub fn apply(&self, cgroups: &Hierarchies, relative: &str) -> anyhow::Result<()> {
        let unified = || cgroups.unified().map(|u| u.join(relative)).context("no cgroup2 mount");
        if let Some(memory) = self.memory_mib {
            match cgroups.v1("memory") {
                Some(root) => {
                    let dir = root.join(relative);
                    write(&dir.join("memory.limit_in_bytes"), &(memory * MIB).to_string())?;
                    if let Some(swap) = self.swap_mib
                        && dir.join("memory.memsw.limit_in_bytes").exists()
                    {
                        write(
                            &dir.join("memory.memsw.limit_in_bytes"),
                            &((memory + swap) * MIB).to_string(),
                        )?;
                    }
                }
                None => {
                    let dir = unified()?;
                    write(&dir.join("memory.max"), &(memory * MIB).to_string())?;
                    if let Some(swap) = self.swap_mib {
                        write(&dir.join("memory.swap.max"), &(swap * MIB).to_string())?;
                    }
                }
            }
        }
        if let Some(cpulimit) = self.cpulimit {
            let quota = Self::cfs_quota_us(cpulimit);
            match cgroups.v1("cpu") {
                Some(root) => {
                    let dir = root.join(relative);
                    write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                None => write(&unified()?.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?,
            }
        }
        if let Some(pids) = self.pids_max {
            let dir = match cgroups.v1("pids") {
                Some(root) => root.join(relative),
                None => unified()?,
            };
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_hierarchies() {
        let h = parse_hierarchies(HYBRID);
        assert_eq!(h.all.len(), 4);
        assert_eq!(h.unified(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(h.v1("memory"), Some(Path::new("/sys/fs/cgroup/memory")));
        assert_eq!(h.v1("name=systemd"), Some(Path::new("/sys/fs/cgroup/systemd")));
        assert_eq!(h.v1("pids"), None);
        assert!(h.hybrid());
        assert_eq!(h.dirs("lxc/9101")[3], PathBuf::from("/sys/fs/cgroup/unified/lxc/9101"));
    }

    #[test]
    fn pure_cgroup2() {
        let h = parse_hierarchies("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert!(!h.hybrid());
        assert_eq!(h.unified(), Some(Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn proxmox_limits() {
        assert_eq!(Limits::cfs_quota_us(0.2), 20_000);
        assert_eq!(Limits::cfs_quota_us(1.5), 150_000);
    }
}
