//! Memory and swap.
//!
//! Reads:
//! - host / Proxmox host: `$PROC_PATH/meminfo`;
//! - LXC container with lxcfs over `/proc/meminfo` (seen in the mount table at start): the
//!   same file, whose MemTotal/MemFree/MemAvailable/Swap* lines lxcfs computes from the
//!   container's cgroup (only those lines are the container's; the rest are host copies);
//! - LXC container without that mount (e.g. a unit with `ProtectProc=` gave the exporter a
//!   fresh /proc): the cgroup namespace root's `memory.current`, `memory.max`, `memory.stat`
//!   (`active_file`, `inactive_file`), `memory.swap.current`, `memory.swap.max`, computed as
//!   lxcfs does. `memory.max` there is usually `max` (the limit sits on the invisible parent):
//!   then total, free and available are not derivable and are absent, never the host's.
//!
//! Produces `node_memory_{usage,free,available,total}_bytes` (usage = total − available) and
//! `node_memory_swap_{total,free}_bytes`.

use std::path::{Path, PathBuf};

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_optional, read_parsed};
use crate::model::{Kind, MetricDesc, OtelName, Scope, SnapshotBuilder, Unit};
use crate::parse;
use crate::parse::cgroup::Limit;
use crate::platform::Platform;

macro_rules! mem_desc {
    ($ident:ident, $name:literal, $help:literal, $otel:expr) => {
        pub static $ident: MetricDesc = MetricDesc {
            name: $name,
            help: $help,
            kind: Kind::Gauge,
            unit: Unit::Bytes,
            labels: &[],
            scope: Scope::Node,
            otel: $otel,
        };
    };
}

const USED: Option<OtelName> = Some(OtelName {
    name: "system.memory.usage",
    attributes: &[],
    fixed: &[("system.memory.state", "used")],
});
const FREE_STATE: Option<OtelName> = Some(OtelName {
    name: "system.memory.usage",
    attributes: &[],
    fixed: &[("system.memory.state", "free")],
});

mem_desc!(
    USAGE,
    "node_memory_usage_bytes",
    "Memory in use: total minus available.",
    USED
);
mem_desc!(FREE, "node_memory_free_bytes", "Unused memory (MemFree).", FREE_STATE);
mem_desc!(
    AVAILABLE,
    "node_memory_available_bytes",
    "Memory available for new work without swapping (MemAvailable).",
    Some(OtelName {
        name: "system.linux.memory.available",
        attributes: &[],
        fixed: &[]
    })
);
mem_desc!(
    TOTAL,
    "node_memory_total_bytes",
    "Total usable memory (in a container: its limit).",
    Some(OtelName {
        name: "system.memory.limit",
        attributes: &[],
        fixed: &[]
    })
);
mem_desc!(
    SWAP_TOTAL,
    "node_memory_swap_total_bytes",
    "Total swap (in a container: its swap limit).",
    None
);
mem_desc!(SWAP_FREE, "node_memory_swap_free_bytes", "Unused swap.", None);

#[derive(Debug)]
enum Source {
    Meminfo(PathBuf),
    Cgroup(PathBuf),
    Missing,
}

#[derive(Debug)]
pub struct MemoryCollector {
    source: Source,
    lxc: bool,
}

/// The values a source could derive; `None` is "not derivable here", never zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryValues {
    pub total: Option<u64>,
    pub free: Option<u64>,
    pub available: Option<u64>,
    pub usage: Option<u64>,
    pub swap_total: Option<u64>,
    pub swap_free: Option<u64>,
}

/// Reads `/proc/meminfo`.
pub fn read_meminfo(path: &Path) -> Result<MemoryValues, CollectError> {
    let m = read_parsed(path, parse::meminfo::parse)?;
    Ok(MemoryValues {
        total: Some(m.total),
        free: Some(m.free),
        available: m.available,
        usage: m.available.map(|a| m.total.saturating_sub(a)),
        swap_total: Some(m.swap_total),
        swap_free: Some(m.swap_free),
    })
}

/// Derives the container's memory from its cgroup namespace root, as lxcfs would.
pub fn read_cgroup_memory(root: &Path) -> Result<MemoryValues, CollectError> {
    let current = read_parsed(&root.join("memory.current"), parse::cgroup::parse_u64)?;
    let max = read_parsed(&root.join("memory.max"), parse::cgroup::parse_limit)?;
    let stat_path = root.join("memory.stat");
    let stat = read_parsed(&stat_path, parse::cgroup::parse_flat_keyed)?;
    let file_lru = stat
        .require("active_file")
        .and_then(|a| stat.require("inactive_file").map(|i| a + i))
        .map_err(|e| CollectError::parse(&stat_path, e))?;
    let usage = current.saturating_sub(file_lru);
    let (total, free, available) = match max {
        Limit::Value(limit) => {
            let free = limit.saturating_sub(current);
            (Some(limit), Some(free), Some(free.saturating_add(file_lru).min(limit)))
        }
        Limit::Unlimited => (None, None, None),
    };
    // memory.swap.* exist only with swap accounting; absent files mean absent series.
    let swap_max = read_optional(&root.join("memory.swap.max"))?
        .map(|t| parse::cgroup::parse_limit(&t).map_err(|e| CollectError::parse(&root.join("memory.swap.max"), e)))
        .transpose()?;
    let swap_current = read_optional(&root.join("memory.swap.current"))?
        .map(|t| parse::cgroup::parse_u64(&t).map_err(|e| CollectError::parse(&root.join("memory.swap.current"), e)))
        .transpose()?;
    let (swap_total, swap_free) = match (swap_max, swap_current) {
        (Some(Limit::Value(limit)), Some(cur)) => (Some(limit), Some(limit.saturating_sub(cur))),
        (Some(Limit::Value(limit)), None) => (Some(limit), None),
        _ => (None, None),
    };
    Ok(MemoryValues {
        total,
        free,
        available,
        usage: Some(usage),
        swap_total,
        swap_free,
    })
}

impl MemoryCollector {
    pub fn new(env: &Environment) -> Self {
        let meminfo = env.proc_path.join("meminfo");
        let lxc = env.platform == Platform::Lxc;
        // In a container only an lxcfs-backed /proc/meminfo is the container's.
        let lxcfs_meminfo = env
            .mounts
            .iter()
            .any(|m| m.mount_point == "/proc/meminfo" && m.fs_type == "fuse.lxcfs");
        let source = if !lxc || lxcfs_meminfo {
            Source::Meminfo(meminfo)
        } else if let Some(root) = &env.cgroup_path {
            Source::Cgroup(root.clone())
        } else {
            Source::Missing
        };
        MemoryCollector { source, lxc }
    }

    /// The values of one collection.
    pub fn values(&self) -> Result<MemoryValues, CollectError> {
        match &self.source {
            Source::Meminfo(path) => read_meminfo(path),
            Source::Cgroup(root) => read_cgroup_memory(root),
            Source::Missing => Err(super::no_cgroup("memory")),
        }
    }
}

impl Collector for MemoryCollector {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let v = self.values()?;
        let none: [&str; 0] = [];
        for (desc, value) in [
            (&USAGE, v.usage),
            (&FREE, v.free),
            (&AVAILABLE, v.available),
            (&TOTAL, v.total),
            (&SWAP_TOTAL, v.swap_total),
            (&SWAP_FREE, v.swap_free),
        ] {
            if let Some(value) = value {
                out.push(desc, none, value as f64);
            }
        }
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        match (&self.source, self.lxc) {
            (Source::Meminfo(path), false) => vec![format!("from {}", path.display())],
            (Source::Meminfo(path), true) => vec![format!(
                "from lxcfs {} (MemTotal is the container limit; only MemTotal, MemFree, MemAvailable and Swap* are used, the other lines are host values)",
                path.display()
            )],
            (Source::Cgroup(root), _) => vec![format!(
                "/proc/meminfo is not an lxcfs mount here: derived from the cgroup at {} (memory.current, memory.max, memory.stat active_file + inactive_file); total, free and available are absent while memory.max is \"max\" (the limit sits on a parent the container cannot see)",
                root.display()
            )],
            (Source::Missing, _) => vec![
                "neither lxcfs /proc/meminfo nor a cgroup2 hierarchy: container memory is not derivable (host values are never reported)".into(),
            ],
        }
    }
}
