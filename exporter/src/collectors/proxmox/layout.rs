//! Which cgroup hierarchy holds each controller a guest is read from, decided once at start.
//!
//! Reads: `$PROC_PATH/self/mountinfo` (the `cgroup` v1 mounts and their super options, which
//! name the controllers: `rw,memory`, `rw,pids`) and `$CGROUP_PATH/cgroup.controllers`.
//! Produces: a [`Layout`].
//!
//! - Pure cgroup2 (Proxmox VE 7 and later): every controller in the cgroup2 tree.
//! - Hybrid (systemd's "hybrid" mode, and this project's test machine): cgroup2 mounted
//!   somewhere (e.g. `/sys/fs/cgroup/unified`) holds CPU time and pressure; memory and pids are
//!   v1 hierarchies mounted separately, in which the guest has the same relative path.
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
}

impl Layout {
    /// A short description for /status.
    pub fn describe(&self) -> String {
        let one = |s: &Source| match s {
            Source::Unified => "cgroup2".to_owned(),
            Source::V1(p) => format!("cgroup v1 at {}", p.display()),
            Source::None => "not available".to_owned(),
        };
        format!("memory: {}; pids: {}", one(&self.memory), one(&self.pids))
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

/// Decides the layout.
///
/// - `cgroup_path`: CGROUP_PATH (a cgroup2 directory, possibly below the mount point);
/// - `cgroup2_mount`: the cgroup2 mount point resolved under the tree root, if known;
/// - `v1`: the v1 mounts, with mount points resolved under the tree root;
/// - `controllers`: the content of `$CGROUP_PATH/cgroup.controllers`, if readable.
pub fn decide(
    cgroup_path: &Path,
    cgroup2_mount: Option<&Path>,
    v1: &[(PathBuf, V1Mount)],
    controllers: Option<&str>,
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
    Layout {
        memory: source("memory"),
        pids: source("pids"),
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
    decide(cgroup_path, cgroup2.as_deref(), &v1, controllers.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_controllers_from_super_options() {
        let m = v1_mounts(HYBRID);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, "/sys/fs/cgroup/memory");
        assert_eq!(m[1].controllers, ["rw", "memory"]);
        assert_eq!(m[3].controllers, ["rw", "name=systemd"]);
    }

    #[test]
    fn hybrid_maps_a_cgroup2_subtree_to_v1_paths() {
        let v1: Vec<_> = v1_mounts(HYBRID)
            .into_iter()
            .map(|m| (PathBuf::from(&m.mount_point), m))
            .collect();
        let layout = decide(
            Path::new("/sys/fs/cgroup/unified/test-1"),
            Some(Path::new("/sys/fs/cgroup/unified")),
            &v1,
            Some(""),
        );
        assert_eq!(layout.memory, Source::V1("/sys/fs/cgroup/memory/test-1".into()));
        assert_eq!(layout.pids, Source::V1("/sys/fs/cgroup/pids/test-1".into()));
    }

    #[test]
    fn pure_cgroup2_uses_the_unified_tree() {
        let layout = decide(
            Path::new("/sys/fs/cgroup"),
            Some(Path::new("/sys/fs/cgroup")),
            &[],
            Some("cpuset cpu io memory hugetlb pids rdma misc\n"),
        );
        assert_eq!(
            layout,
            Layout {
                memory: Source::Unified,
                pids: Source::Unified
            }
        );
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
                pids: Source::Unified
            }
        );
    }
}
