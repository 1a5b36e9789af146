//! Proxmox VE host mode: collectors `guests` (every local guest's CPU, memory, pressure, I/O,
//! processes and network, with names, tags and status) and `cluster` (cluster name, quorum,
//! nodes, guests per node).
//!
//! Reads cgroupfs (`$CGROUP_PATH/lxc/<vmid>`, `$CGROUP_PATH/qemu.slice/<vmid>.scope`, and the
//! v1 memory/pids hierarchies on a hybrid layout), the host's `$PROC_PATH/net/dev` and the
//! cluster filesystem `$PVE_PATH` (`lxc/*.conf`, `qemu-server/*.conf`, `.members`, `.vmlist`,
//! `.version`, `corosync.conf`). No API token and no HTTP call. The metrics are declared in
//! [`metrics`]; [`synthetic`] writes a host tree with N guests for tests and benchmarks.

use crate::collectors::{Collector, Environment};

pub mod backup;
pub mod cluster;
mod files;
pub mod guests;
pub mod layout;
pub mod local_configs;
pub mod metrics;
pub mod node_info;
pub mod replication;
pub mod storage;
pub mod synthetic;

/// Creates the Proxmox collector called `name` (`guests` or `cluster`), `None` for any other
/// name. Nothing is read until the first collection except the mount table and the cgroup
/// root's `cgroup.controllers` (the layout is decided once, here).
pub fn create(name: &str, env: &Environment) -> Option<Box<dyn Collector>> {
    match name {
        "guests" => Some(Box::new(guests::GuestsCollector::new(env))),
        "cluster" => Some(Box::new(cluster::ClusterCollector::new(env))),
        "backup" => Some(Box::new(backup::BackupCollector::new(env))),
        "pve_node" => Some(Box::new(node_info::NodeInfoCollector::new(env))),
        "storage" => Some(Box::new(storage::StorageCollector::new(env))),
        "replication" => Some(Box::new(replication::ReplicationCollector::new(env))),
        _ => None,
    }
}
