//! Collector `cluster`: the Proxmox cluster as pmxcfs presents it, without API token or HTTP.
//!
//! Reads `$PVE_PATH/.members` (node name, cluster name, quorum, nodes and their online state),
//! `$PVE_PATH/.vmlist` (every guest of the cluster with its node and type), `$PVE_PATH/.version`
//! (pmxcfs start time) and `$PVE_PATH/corosync.conf` (config_version and node list, used where
//! `.members` lacks them).
//!
//! Produces `pve_cluster_info`, `pve_cluster_quorate`, `pve_cluster_nodes`,
//! `pve_cluster_nodes_online`, `pve_cluster_node_online`, `pve_cluster_guests` and
//! `pve_pmxcfs_start_time_seconds` (see [`super::metrics`]).
//!
//! A standalone node (no `cluster` in `.members`, no corosync.conf) has no cluster series at
//! all, not zeros. A file that is missing or invalid leaves its series out and is reported as
//! the collector's error; the other files are still used.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::metrics as m;
use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_optional};
use crate::model::SnapshotBuilder;
use crate::parse::pve;

/// The `cluster` collector.
#[derive(Debug)]
pub struct ClusterCollector {
    pve_path: PathBuf,
}

impl ClusterCollector {
    pub fn new(env: &Environment) -> Self {
        ClusterCollector {
            pve_path: env.pve_path.clone(),
        }
    }
}

/// Reads and parses an optional file: `Ok(None)` when it does not exist.
fn optional<T>(
    path: PathBuf,
    parse: impl FnOnce(&str) -> Result<T, crate::error::ParseError>,
    errors: &mut Vec<CollectError>,
) -> Option<T> {
    match read_optional(&path) {
        Ok(Some(text)) => match parse(&text) {
            Ok(value) => Some(value),
            Err(e) => {
                errors.push(CollectError::parse(&path, e));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

impl Collector for ClusterCollector {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let mut errors = Vec::new();
        let members = optional(self.pve_path.join(".members"), pve::parse_members, &mut errors);
        let vmlist = optional(self.pve_path.join(".vmlist"), pve::parse_vmlist, &mut errors);
        let version = optional(self.pve_path.join(".version"), pve::parse_version, &mut errors);
        let corosync = optional(self.pve_path.join("corosync.conf"), pve::parse_corosync, &mut errors);

        if let Some(version) = &version {
            out.push(&m::PMXCFS_START, [] as [&str; 0], version.starttime as f64);
        }

        let cluster = members.as_ref().and_then(|mb| mb.cluster.as_ref());
        let name = cluster
            .map(|c| c.name.clone())
            .or_else(|| corosync.as_ref().and_then(|c| c.cluster_name.clone()));
        if let Some(name) = &name {
            let node = members.as_ref().map(|mb| mb.nodename.as_str()).unwrap_or_default();
            let config_version = cluster
                .map(|c| c.version)
                .or_else(|| corosync.as_ref().and_then(|c| c.config_version))
                .map(|v| v.to_string())
                .unwrap_or_default();
            out.push(&m::CLUSTER_INFO, [name.as_str(), node, config_version.as_str()], 1.0);
            if let Some(c) = cluster {
                out.push(&m::CLUSTER_QUORATE, [name.as_str()], if c.quorate { 1.0 } else { 0.0 });
            }
            let total = cluster
                .map(|c| c.nodes)
                .or_else(|| corosync.as_ref().map(|c| c.nodes.len() as u64));
            if let Some(total) = total {
                out.push(&m::CLUSTER_NODES, [name.as_str()], total as f64);
            }
            if let Some(mb) = members.as_ref().filter(|mb| !mb.nodelist.is_empty()) {
                let online = mb.nodelist.values().filter(|n| n.online).count();
                out.push(&m::CLUSTER_NODES_ONLINE, [name.as_str()], online as f64);
                for (node, state) in &mb.nodelist {
                    let id = state.id.to_string();
                    let ip = state.ip.as_deref().unwrap_or_default();
                    out.push(
                        &m::CLUSTER_NODE_ONLINE,
                        [name.as_str(), node, id.as_str(), ip],
                        if state.online { 1.0 } else { 0.0 },
                    );
                }
            }
        }

        if let Some(vmlist) = &vmlist {
            let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
            for entry in vmlist.ids.values() {
                *counts.entry((entry.node.as_str(), entry.kind.as_str())).or_default() += 1;
            }
            for ((node, kind), n) in counts {
                out.push(&m::CLUSTER_GUESTS, [node, kind], n as f64);
            }
        }

        super::guests::summarize(errors)
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "cluster state from {} (pmxcfs); no API token, no HTTP",
            self.pve_path.display()
        )]
    }
}
