//! Node collectors: the machine or container the exporter runs on.
//!
//! Inside an LXC container every value is the container's, never the host's: each collector
//! picks its source from [`Environment::platform`] (lxcfs-virtualized files where they are
//! the container's, the cgroup namespace root `env.cgroup_path` otherwise) and says in
//! [`Collector::notes`] what it cannot derive there.
//!
//! A container on a host without a cgroup2 hierarchy (systemd's legacy mode) sees only cgroup
//! v1 hierarchies, mounted by LXC at `/sys/fs/cgroup/<controller>`: [`v1_cgroup`] finds the
//! container's cgroup in the one that carries a controller, from `$PROC_PATH/self/cgroup`
//! (`N:controller,...:/path`) and the mount table.

use std::path::PathBuf;

use crate::collectors::{Collector, Environment};
use crate::parse::mountinfo::Mount;

pub mod cpu;
pub mod diskstats;
pub mod filesystem;
pub mod load;
pub mod memory;
pub mod network;
pub mod pressure;
pub mod process;
pub mod zfs;

/// The collector for a catalogue name, `None` for a name that is not a node collector.
pub fn create(name: &str, env: &Environment) -> Option<Box<dyn Collector>> {
    Some(match name {
        "cpu" => Box::new(cpu::CpuCollector::new(env)),
        "load" => Box::new(load::LoadCollector::new(env)),
        "memory" => Box::new(memory::MemoryCollector::new(env)),
        "filesystem" => Box::new(filesystem::FilesystemCollector::new(env)),
        "network" => Box::new(network::NetworkCollector::new(env)),
        "pressure" => Box::new(pressure::PressureCollector::new(env)),
        "process" => Box::new(process::ProcessCollector::new(env)),
        "diskstats" => Box::new(diskstats::DiskstatsCollector::new(env)),
        "zfs" => Box::new(zfs::ZfsCollector::new(env)),
        _ => return None,
    })
}

/// One line of `/proc/<pid>/cgroup`: a v1 hierarchy's controllers (empty for cgroup2's `0::`
/// line) and the cgroup's path in it, relative to the reader's cgroup namespace root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup` (cgroups(7): `hierarchy-ID:controller-list:cgroup-path`). A
/// line that is not of that shape is skipped: the file is the kernel's and only the lines of
/// the controllers asked for matter.
pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// The mount point of the container's cgroup in the v1 hierarchy that carries `controller`:
/// of the mounts of that hierarchy whose root (the cgroup mounted there) is this process's own
/// cgroup or one of its ancestors, the deepest. With a cgroup namespace (LXC 4 and later) the
/// only such mount is that of `/`, the container's whole cgroup. Without one (older LXC) the
/// host's whole hierarchy is mounted read-only with the container's cgroup bound over
/// `<mount>/lxc/<vmid>`: the deeper mount is the container's, the other would be host-wide. A
/// mount of another branch (not holding this process) is never taken.
pub fn pick_v1_cgroup<'a>(mounts: &'a [Mount], memberships: &[Membership], controller: &str) -> Option<&'a Mount> {
    let own = &memberships
        .iter()
        .find(|m| m.controllers.iter().any(|c| c == controller))?
        .path;
    let is_ancestor_or_self = |root: &str| {
        root == "/"
            || own
                .strip_prefix(root.trim_end_matches('/'))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let depth = |root: &str| root.split('/').filter(|c| !c.is_empty()).count();
    mounts
        .iter()
        .filter(|m| m.is_cgroup_v1_with(controller) && is_ancestor_or_self(&m.root))
        .max_by_key(|m| depth(&m.root))
}

/// The container's cgroup directory in the v1 hierarchy carrying `controller`, resolved under
/// the tree `env.root_path`; `None` when that hierarchy is not mounted or this process is not
/// in it. Reads `$PROC_PATH/self/cgroup`; the mounts are those read at start.
pub fn v1_cgroup(env: &Environment, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(env.proc_path.join("self/cgroup")).ok()?;
    let mount = pick_v1_cgroup(&env.mounts, &parse_proc_cgroup(&text), controller)?;
    Some(env.root_path.join(mount.mount_point.trim_start_matches('/')))
}

/// A collector's answer when the cgroup2 hierarchy it needs was not found at start.
pub(crate) fn no_cgroup(what: &str) -> crate::error::CollectError {
    crate::error::CollectError::Other(format!(
        "{what}: no cgroup2 hierarchy was found (set CGROUP_PATH); refusing to report host values for a container"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::mountinfo;

    /// /proc/self/cgroup of a process at the root of its container, as LXC 5.0.2 shows it on
    /// a host with cgroup v1 controllers (the `0::` line only where cgroup2 exists).
    const SELF_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n4:memory:/\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn proc_cgroup_lines() {
        let m = parse_proc_cgroup("2:cpu,cpuacct:/lxc/101/ns\n0::/system.slice/x.service\n1:name=systemd:/a:b\n");
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[0].path, "/lxc/101/ns");
        assert!(m[1].controllers.is_empty());
        assert_eq!(m[1].path, "/system.slice/x.service");
        // A colon inside the path stays in the path.
        assert_eq!(m[2].path, "/a:b");
    }

    #[test]
    fn the_namespace_root_mount_of_the_controllers_hierarchy() {
        let mounts = mountinfo::parse(
            "80 72 0:45 / /sys/fs/cgroup rw - tmpfs none rw,size=10240k,mode=755\n\
             82 80 0:36 / /sys/fs/cgroup/pids rw - cgroup none rw,pids\n\
             88 80 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup none rw,cpuacct\n\
             89 80 0:29 / /sys/fs/cgroup/cpu rw - cgroup none rw,cpu\n",
        )
        .unwrap();
        let own = parse_proc_cgroup(SELF_CGROUP);
        let mp = |c: &str| pick_v1_cgroup(&mounts, &own, c).map(|m| m.mount_point.as_str());
        assert_eq!(mp("cpuacct"), Some("/sys/fs/cgroup/cpuacct"));
        assert_eq!(mp("pids"), Some("/sys/fs/cgroup/pids"));
        assert_eq!(mp("memory"), None, "memory is not mounted");
        // A process deeper in the container (systemd's service cgroup) still gets the root.
        let deeper = parse_proc_cgroup("2:cpuacct:/system.slice/metrics-exporter.service\n");
        assert_eq!(
            pick_v1_cgroup(&mounts, &deeper, "cpuacct").map(|m| m.mount_point.as_str()),
            Some("/sys/fs/cgroup/cpuacct")
        );
        // Not a member of the hierarchy (no line for the controller): nothing.
        assert_eq!(pick_v1_cgroup(&mounts, &parse_proc_cgroup("0::/\n"), "cpuacct"), None);
    }

    #[test]
    fn without_a_cgroup_namespace_the_own_branch_only() {
        // Older LXC: the whole hierarchy read-only, the container's cgroup bound over it.
        let mounts = mountinfo::parse(
            "30 29 0:30 / /sys/fs/cgroup/cpuacct ro - cgroup cgroup rw,cpuacct\n\
             31 30 0:30 /lxc/101 /sys/fs/cgroup/cpuacct/lxc/101 rw - cgroup cgroup rw,cpuacct\n\
             32 30 0:30 /lxc/102 /sys/fs/cgroup/cpuacct/lxc/102 rw - cgroup cgroup rw,cpuacct\n",
        )
        .unwrap();
        let own = parse_proc_cgroup("2:cpuacct:/lxc/101/ns\n");
        assert_eq!(
            pick_v1_cgroup(&mounts, &own, "cpuacct").map(|m| m.mount_point.as_str()),
            Some("/sys/fs/cgroup/cpuacct/lxc/101")
        );
        // /lxc/10 is not an ancestor of /lxc/101.
        let prefix_only = mountinfo::parse("31 30 0:30 /lxc/10 /x rw - cgroup cgroup rw,cpuacct\n").unwrap();
        assert_eq!(pick_v1_cgroup(&prefix_only, &own, "cpuacct"), None);
    }
}
