//! Which cgroup hierarchy holds each controller a guest is read from, decided once at start.
//!
//! Reads: `$PROC_PATH/self/mountinfo` (the `cgroup` v1 mounts and their super options, which
//! name the controllers: `rw,memory`, `rw,cpu,cpuacct`; the cgroup2 mount's super options, which
//! say whether `memory.events` is local) and `$CGROUP_PATH/cgroup.controllers`.
//! Produces: a [`Layout`].
//!
//! - Pure cgroup2 (Proxmox VE 7 and later): every controller in the cgroup2 tree.
//! - Hybrid (systemd's "hybrid" mode, and this project's test machine): cgroup2 mounted
//!   somewhere (e.g. `/sys/fs/cgroup/unified`) holds CPU time and pressure; memory, pids, cpu
//!   (CFS bandwidth), cpuacct and blkio are v1 hierarchies mounted separately (alone or
//!   combined, `cpu,cpuacct`), in which the guest has the same relative path. The cgroup2 files
//!   of a controller bound to v1 (`cpu.max`, the throttling lines of `cpu.stat`, `io.stat`) are
//!   absent there, so the v1 files are read instead.
//!
//! A file that a layout lacks makes its metric absent, never zero.

use std::path::{Path, PathBuf};

use crate::parse::mountinfo;

/// Where a controller's files for a guest are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// In the guest's cgroup2 directory.
    Unified,
    /// In a cgroup v1 hierarchy: the directory that corresponds to `CGROUP_PATH`.
    V1(PathBuf),
    /// Nowhere: the metrics of this controller are absent.
    None,
}

/// The layout found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub memory: Source,
    pub pids: Source,
    /// CPU bandwidth control: the quota and the throttling counters (cgroup2 `cpu.max` and
    /// `cpu.stat`; v1 `cpu.cfs_quota_us`, `cpu.cfs_period_us`, `cpu.stat`).
    pub cpu: Source,
    /// v1 `cpuacct`: CPU time where the cgroup2 tree has no `cpu.stat`. cgroup2 has no such
    /// controller, so this is [`Source::V1`] or [`Source::None`].
    pub cpuacct: Source,
    /// Block IO: cgroup2 `io.stat`; v1 `blkio.throttle.io_service{d,_bytes}_recursive`.
    pub io: Source,
    /// cgroup2 mounted with `memory_localevents`: `memory.events` counts only the cgroup's own
    /// events instead of its subtree's (cgroup-v2.rst, "Mount Options"), so a guest's events
    /// are the sum over its subtree.
    pub memory_local_events: bool,
}

impl Layout {
    /// The layout of a collector that has no cgroup tree: nothing is read.
    pub fn none() -> Self {
        Layout {
            memory: Source::None,
            pids: Source::None,
            cpu: Source::None,
            cpuacct: Source::None,
            io: Source::None,
            memory_local_events: false,
        }
    }

    /// A short description for /status.
    pub fn describe(&self) -> String {
        let one = |s: &Source| match s {
            Source::Unified => "cgroup2".to_owned(),
            Source::V1(p) => format!("cgroup v1 at {}", p.display()),
            Source::None => "not available".to_owned(),
        };
        let mut text = format!(
            "memory: {}; pids: {}; cpu: {}; cpuacct: {}; io: {}",
            one(&self.memory),
            one(&self.pids),
            one(&self.cpu),
            one(&self.cpuacct),
            one(&self.io)
        );
        if self.memory_local_events {
            text.push_str("; memory.events local (memory_localevents): summed over each guest's subtree");
        }
        text
    }
}

/// A cgroup v1 mount: where it is and which controllers it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    pub mount_point: String,
    /// The cgroup path mounted there (`/` unless mounted from inside a cgroup namespace).
    pub root: String,
    pub controllers: Vec<String>,
}

/// The cgroup v1 mounts of a mountinfo text. The super options (after the source) name the
/// controllers; [`mountinfo::Mount`] does not keep them, so they are taken here.
pub fn v1_mounts(mountinfo_text: &str) -> Vec<V1Mount> {
    let mut out = Vec::new();
    for line in mountinfo_text.lines() {
        let Ok(mount) = mountinfo::parse_line(line) else {
            continue;
        };
        if mount.fs_type != "cgroup" {
            continue;
        }
        let Some((_, after)) = line.split_once(" - ") else {
            continue;
        };
        let super_options = after.split(' ').nth(2).unwrap_or_default();
        out.push(V1Mount {
            mount_point: mount.mount_point,
            root: mount.root,
            controllers: super_options.split(',').map(str::to_owned).collect(),
        });
    }
    out
}

/// Whether the cgroup2 mount at `mount_point` has the `memory_localevents` super option.
pub fn cgroup2_local_events(mountinfo_text: &str, mount_point: &str) -> bool {
    mountinfo_text.lines().any(|line| {
        let Ok(mount) = mountinfo::parse_line(line) else {
            return false;
        };
        let super_options = line
            .split_once(" - ")
            .and_then(|(_, after)| after.split(' ').nth(2))
            .unwrap_or_default();
        mount.fs_type == "cgroup2"
            && mount.mount_point == mount_point
            && super_options.split(',').any(|o| o == "memory_localevents")
    })
}

/// Decides the layout.
///
/// - `cgroup_path`: CGROUP_PATH (a cgroup2 directory, possibly below the mount point);
/// - `cgroup2_mount`: the cgroup2 mount point resolved under the tree root, if known;
/// - `v1`: the v1 mounts, with mount points resolved under the tree root;
/// - `controllers`: the content of `$CGROUP_PATH/cgroup.controllers`, if readable;
/// - `memory_local_events`: the cgroup2 mount has `memory_localevents`.
pub fn decide(
    cgroup_path: &Path,
    cgroup2_mount: Option<&Path>,
    v1: &[(PathBuf, V1Mount)],
    controllers: Option<&str>,
    memory_local_events: bool,
) -> Layout {
    let enabled = |name: &str| controllers.is_some_and(|c| c.split_whitespace().any(|x| x == name));
    // The guest's path relative to the cgroup2 mount is the same in every v1 hierarchy.
    let relative = cgroup2_mount
        .and_then(|m| cgroup_path.strip_prefix(m).ok())
        .map(Path::to_path_buf);
    let source = |name: &str| -> Source {
        if enabled(name) {
            return Source::Unified;
        }
        let v1_mount = v1.iter().find(|(_, m)| m.controllers.iter().any(|c| c == name));
        match (v1_mount, &relative) {
            (Some((resolved, _)), Some(rel)) => Source::V1(resolved.join(rel)),
            // v1 exists but CGROUP_PATH is not below the cgroup2 mount: no way to map paths.
            (Some(_), None) => Source::None,
            // No v1 hierarchy for it: the cgroup2 tree is the only candidate (an unreadable
            // cgroup.controllers, as in a partial fixture tree, should not hide the files).
            (None, _) => Source::Unified,
        }
    };
    let memory = source("memory");
    Layout {
        // cpuacct exists only in v1: without a v1 hierarchy for it there is nothing to read.
        cpuacct: match source("cpuacct") {
            v1 @ Source::V1(_) => v1,
            _ => Source::None,
        },
        pids: source("pids"),
        cpu: source("cpu"),
        // v1 calls the io controller blkio.
        io: if enabled("io") {
            Source::Unified
        } else {
            source("blkio")
        },
        // The option changes cgroup2's memory.events only; a v1 memory hierarchy has its own
        // rules (the guests collector sums its subtree in any case).
        memory_local_events: memory_local_events && memory == Source::Unified,
        memory,
    }
}

/// Reads what [`decide`] needs from the environment.
pub fn detect(proc_path: &Path, root_path: &Path, cgroup_path: &Path, mounts: &[mountinfo::Mount]) -> Layout {
    let resolve = |mount_point: &str| root_path.join(mount_point.trim_start_matches('/'));
    let cgroup2 = mounts
        .iter()
        .rev()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| resolve(&m.mount_point));
    let text = std::fs::read_to_string(proc_path.join("self/mountinfo")).unwrap_or_default();
    let local_events = mounts
        .iter()
        .rev()
        .find(|m| m.fs_type == "cgroup2")
        .is_some_and(|m| cgroup2_local_events(&text, &m.mount_point));
    let v1: Vec<(PathBuf, V1Mount)> = v1_mounts(&text)
        .into_iter()
        // A hierarchy mounted from inside a cgroup namespace has another root: guest paths
        // relative to the host's cgroup2 mount do not apply to it.
        .filter(|m| m.root == "/")
        .map(|m| (resolve(&m.mount_point), m))
        .collect();
    let controllers = std::fs::read_to_string(cgroup_path.join("cgroup.controllers")).ok();
    // CGROUP_PATH may be a subtree (a test's own); the controllers enabled for guests are
    // those of the directory, and an empty list below a hybrid mount is expected.
    decide(
        cgroup_path,
        cgroup2.as_deref(),
        &v1,
        controllers.as_deref(),
        local_events,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's test machine (Debian 12, kernel 6.18, no systemd as PID 1), verbatim.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn resolved(text: &str) -> Vec<(PathBuf, V1Mount)> {
        v1_mounts(text)
            .into_iter()
            .map(|m| (PathBuf::from(&m.mount_point), m))
            .collect()
    }

    #[test]
    fn finds_v1_controllers_from_super_options() {
        let m = v1_mounts(HYBRID);
        assert_eq!(m.len(), 9);
        assert_eq!(m[3].mount_point, "/sys/fs/cgroup/memory");
        assert_eq!(m[3].controllers, ["rw", "memory"]);
        assert_eq!(m[8].controllers, ["rw", "name=systemd"]);
    }

    #[test]
    fn hybrid_maps_a_cgroup2_subtree_to_v1_paths() {
        let layout = decide(
            Path::new("/sys/fs/cgroup/unified/test-1"),
            Some(Path::new("/sys/fs/cgroup/unified")),
            &resolved(HYBRID),
            Some(""),
            false,
        );
        assert_eq!(layout.memory, Source::V1("/sys/fs/cgroup/memory/test-1".into()));
        assert_eq!(layout.pids, Source::V1("/sys/fs/cgroup/pids/test-1".into()));
        assert_eq!(layout.cpu, Source::V1("/sys/fs/cgroup/cpu/test-1".into()));
        assert_eq!(layout.cpuacct, Source::V1("/sys/fs/cgroup/cpuacct/test-1".into()));
        assert_eq!(layout.io, Source::V1("/sys/fs/cgroup/blkio/test-1".into()));
        assert!(!layout.memory_local_events);
    }

    /// systemd's hybrid mode mounts cpu and cpuacct together.
    #[test]
    fn combined_v1_hierarchies_serve_each_of_their_controllers() {
        let text = "\
25 24 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
29 24 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
30 24 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
31 24 0:29 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,net_cls,net_prio
";
        let layout = decide(
            Path::new("/sys/fs/cgroup/unified"),
            Some(Path::new("/sys/fs/cgroup/unified")),
            &resolved(text),
            Some(""),
            false,
        );
        assert_eq!(layout.cpu, Source::V1("/sys/fs/cgroup/cpu,cpuacct".into()));
        assert_eq!(layout.cpuacct, Source::V1("/sys/fs/cgroup/cpu,cpuacct".into()));
        assert_eq!(layout.memory, Source::V1("/sys/fs/cgroup/memory".into()));
        // No v1 hierarchy for blkio and pids: the cgroup2 tree is the only place to look.
        assert_eq!(layout.io, Source::Unified);
        assert_eq!(layout.pids, Source::Unified);
    }

    #[test]
    fn pure_cgroup2_uses_the_unified_tree() {
        let layout = decide(
            Path::new("/sys/fs/cgroup"),
            Some(Path::new("/sys/fs/cgroup")),
            &[],
            Some("cpuset cpu io memory hugetlb pids rdma misc\n"),
            false,
        );
        assert_eq!(
            layout,
            Layout {
                memory: Source::Unified,
                pids: Source::Unified,
                cpu: Source::Unified,
                cpuacct: Source::None,
                io: Source::Unified,
                memory_local_events: false,
            }
        );
    }

    #[test]
    fn memory_localevents_is_read_from_the_cgroup2_super_options() {
        let local = "30 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_localevents,memory_recursiveprot\n";
        assert!(cgroup2_local_events(local, "/sys/fs/cgroup"));
        assert!(!cgroup2_local_events(local, "/sys/fs/cgroup/unified"));
        assert!(!cgroup2_local_events(HYBRID, "/sys/fs/cgroup/unified"));
        // A mount option (before " - ") of that name is not the super option.
        let not_super = "30 22 0:27 / /sys/fs/cgroup rw,memory_localevents - cgroup2 cgroup2 rw,nsdelegate\n";
        assert!(!cgroup2_local_events(not_super, "/sys/fs/cgroup"));
        let decided = |local| {
            decide(
                Path::new("/sys/fs/cgroup"),
                Some(Path::new("/sys/fs/cgroup")),
                &[],
                Some("cpu io memory pids\n"),
                local,
            )
            .memory_local_events
        };
        assert!(decided(true));
        assert!(!decided(false));
    }

    #[test]
    fn the_fixture_tree_is_pure_cgroup2() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/proxmox-host");
        let text = std::fs::read_to_string(base.join("proc/self/mountinfo")).unwrap();
        let mounts = mountinfo::parse(&text).unwrap();
        let layout = detect(&base.join("proc"), &base, &base.join("sys/fs/cgroup"), &mounts);
        assert_eq!(
            layout,
            Layout {
                memory: Source::Unified,
                pids: Source::Unified,
                cpu: Source::Unified,
                cpuacct: Source::None,
                io: Source::Unified,
                memory_local_events: false,
            }
        );
    }
}
