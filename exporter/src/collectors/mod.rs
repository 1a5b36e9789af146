//! The collector interface and the catalogue of collectors.
//!
//! A collector reads one area of the kernel (memory, filesystems, guests, ...) and adds
//! samples to a [`SnapshotBuilder`]. Collectors are plain synchronous code: the collection
//! loop runs them on a blocking thread, times each one and isolates its errors and panics.

use crate::error::CollectError;
use crate::model::SnapshotBuilder;

pub mod node;
pub mod proxmox;

/// One area of collection. `&mut self` lets a collector keep state between collections
/// (open descriptors, parsed configuration, eBPF maps); it is dropped with the process.
pub trait Collector: Send {
    /// The stable name used in `ENABLED_COLLECTORS`, `/collectors` and self metrics.
    fn name(&self) -> &'static str;

    /// Adds this collection's samples. An error marks the collector failed for this
    /// collection; whatever it added before failing is still real and is kept.
    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError>;

    /// Facts about this collector worth showing in /status (what it cannot derive here and
    /// why, which source feeds it).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What every collector may need to know, fixed at start, and the one scan collectors share
/// ([`Environment::local_configs`]).
#[derive(Debug, Clone)]
pub struct Environment {
    pub platform: crate::platform::Platform,
    pub proc_path: std::path::PathBuf,
    pub sys_path: std::path::PathBuf,
    /// The filesystem root the paths belong to (`/`, or a fixture tree).
    pub root_path: std::path::PathBuf,
    /// The cgroup2 hierarchy (CGROUP_PATH or found in mountinfo); `None` if there is none.
    pub cgroup_path: Option<std::path::PathBuf>,
    pub pve_path: std::path::PathBuf,
    /// The exporter's mount table at start.
    pub mounts: Vec<crate::parse::mountinfo::Mount>,
    /// This node's guest configs, scanned once per collection for the collectors that list
    /// local guests (shared by every clone of this environment).
    pub local_configs: crate::collectors::proxmox::local_configs::LocalConfigs,
}

/// A collector's entry in the catalogue.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CollectorInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// Platforms where it runs by default.
    pub platforms: &'static [crate::platform::Platform],
}

use crate::platform::Platform::{Host, Lxc, Proxmox};

/// Every collector this build has.
pub const CATALOGUE: &[CollectorInfo] = &[
    CollectorInfo {
        name: "cpu",
        description: "CPU time per mode (host: /proc/stat; container: the cgroup's cpu.stat)",
        platforms: &[Host, Proxmox, Lxc],
    },
    CollectorInfo {
        name: "load",
        description: "load averages from /proc/loadavg (absent in a container: lxcfs shows the host's)",
        platforms: &[Host, Proxmox],
    },
    CollectorInfo {
        name: "memory",
        description: "memory and swap from /proc/meminfo (lxcfs-virtualized in a container)",
        platforms: &[Host, Proxmox, Lxc],
    },
    CollectorInfo {
        name: "filesystem",
        description: "filesystem size, free and available bytes from mountinfo and statvfs",
        platforms: &[Host, Proxmox, Lxc],
    },
    CollectorInfo {
        name: "network",
        description: "interface counters of the exporter's network namespace from /proc/net/dev",
        platforms: &[Host, Proxmox, Lxc],
    },
    CollectorInfo {
        name: "pressure",
        description: "pressure stall time (host: /proc/pressure; container: the cgroup's *.pressure)",
        platforms: &[Host, Proxmox, Lxc],
    },
    CollectorInfo {
        name: "guests",
        description: "every local Proxmox guest's CPU, memory, pressure, I/O, processes and network from cgroupfs and /proc/net/dev, with names and tags from /etc/pve",
        platforms: &[Proxmox],
    },
    CollectorInfo {
        name: "cluster",
        description: "Proxmox cluster name, quorum, nodes and guests per node from /etc/pve (.members, .vmlist, .version, corosync.conf)",
        platforms: &[Proxmox],
    },
    CollectorInfo {
        name: "storage",
        description: "size, used and available bytes of every Proxmox storage enabled on this node (/etc/pve/storage.cfg): path types by statvfs with a hung-mount deadline, others from pvestatd's values in /etc/pve/.rrd",
        platforms: &[Proxmox],
    },
    CollectorInfo {
        name: "replication",
        description: "Proxmox storage replication jobs of local guests (/etc/pve/replication.cfg) with last sync, last try, duration and consecutive failures from /var/lib/pve-manager/pve-replication-state.json",
        platforms: &[Proxmox],
    },
    CollectorInfo {
        name: "backup",
        description: "each local Proxmox guest's last vzdump backup (success, attempt, failure, duration) from /var/log/pve/tasks and whether a job of jobs.cfg or vzdump.cron covers it",
        platforms: &[Proxmox],
    },
    CollectorInfo {
        name: "process",
        description: "process and thread counts (container: its cgroup subtree)",
        platforms: &[Host, Proxmox, Lxc],
    },
    CollectorInfo {
        name: "diskstats",
        description: "block device I/O of whole disks, device-mapper devices and zvols from /proc/diskstats (partitions, loop and ram devices left out), under node_exporter's names",
        platforms: &[Host, Proxmox],
    },
    CollectorInfo {
        name: "zfs",
        description: "ZFS ARC size, target, limits and hits from /proc/spl/kstat/zfs/arcstats and pool health from /proc/spl/kstat/zfs/<pool>/state (nothing without the ZFS module)",
        platforms: &[Host, Proxmox],
    },
    CollectorInfo {
        name: "pve_node",
        description: "Proxmox node facts from local files: pve-manager version (/var/lib/dpkg/status), certificate expiry (/etc/pve), subscription status and due date (/etc/subscription)",
        platforms: &[Proxmox],
    },
];

/// Names accepted in ENABLED_COLLECTORS.
pub fn names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|c| c.name).collect()
}

/// The collectors that run by default on `platform`.
pub fn defaults_for(platform: crate::platform::Platform) -> Vec<&'static str> {
    CATALOGUE
        .iter()
        .filter(|c| c.platforms.contains(&platform))
        .map(|c| c.name)
        .collect()
}

/// Builds the collector called `name` for this environment.
pub fn create(name: &str, env: &Environment) -> Option<Box<dyn Collector>> {
    node::create(name, env).or_else(|| proxmox::create(name, env))
}
