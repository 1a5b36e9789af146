//! Process and thread counts.
//!
//! Reads:
//! - host / Proxmox host: the numeric directories of `$PROC_PATH` (processes) and the total
//!   of `$PROC_PATH/loadavg`'s 4th field `running/total` (threads: scheduling entities);
//! - LXC container: `cgroup.procs` of the cgroup namespace root and every descendant
//!   (processes: distinct PIDs; the root's own `cgroup.procs` is usually empty because
//!   systemd keeps its tasks in child cgroups) and the root's `pids.current` (threads: the
//!   pids controller counts tasks). `/proc/loadavg` there is the host's. Where the cgroup2
//!   root has no `pids.current` (a hybrid host keeps pids in v1), the v1 pids hierarchy's;
//! - LXC container without a cgroup2 hierarchy: the numeric directories of `$PROC_PATH`
//!   (inside a container /proc is the container's PID namespace: its processes exactly) and
//!   `pids.current` of the container's cgroup in the v1 pids hierarchy, if mounted
//!   ([`super::v1_cgroup`]); without it the thread count is absent.
//!
//! Produces `node_processes` (a gauge: the seed called it `node_processes_total`, a counter's
//! spelling) and `node_processes_threads`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_optional, read_parsed};
use crate::model::{Kind, MetricDesc, OtelName, Scope, SnapshotBuilder, Unit};
use crate::parse;
use crate::platform::Platform;

pub static PROCESSES: MetricDesc = MetricDesc {
    name: "node_processes",
    help: "Number of processes (in a container: distinct PIDs in its cgroup subtree).",
    kind: Kind::Gauge,
    unit: Unit::Count("{process}"),
    labels: &[],
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "system.process.count",
        attributes: &[],
        fixed: &[],
    }),
};

pub static THREADS: MetricDesc = MetricDesc {
    name: "node_processes_threads",
    help: "Number of threads (host: /proc/loadavg total; container: pids.current).",
    kind: Kind::Gauge,
    unit: Unit::Count("{thread}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

#[derive(Debug)]
enum Source {
    Proc {
        proc_path: PathBuf,
    },
    Cgroup {
        root: PathBuf,
        /// The v1 pids hierarchy's `pids.current`, read where the cgroup2 root has none.
        v1_pids: Option<PathBuf>,
    },
    /// A container without cgroup2: its PID namespace's /proc, and v1 pids if mounted.
    PidNamespace {
        proc_path: PathBuf,
        v1_pids: Option<PathBuf>,
    },
}

#[derive(Debug)]
pub struct ProcessCollector {
    source: Source,
}

/// Counts the numeric directories of a procfs mount (one per process of its PID namespace).
pub fn count_proc_pids(proc_path: &Path) -> Result<u64, CollectError> {
    let entries = std::fs::read_dir(proc_path).map_err(|e| CollectError::io(proc_path, e))?;
    let mut count = 0;
    for entry in entries {
        let entry = entry.map_err(|e| CollectError::io(proc_path, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().iter().all(u8::is_ascii_digit) && !name.is_empty() {
            count += 1;
        }
    }
    Ok(count)
}

/// Distinct PIDs in `cgroup.procs` of `root` and every descendant cgroup.
///
/// The root must be readable (else the error says which path). A descendant that disappears
/// during the walk (ENOENT/ENODEV on its directory or its `cgroup.procs`) had its processes
/// exit with it: it is skipped. Paths stay `PathBuf`: cgroup names may hold any byte,
/// including a literal backslash (`system-container\x2dgetty.slice`).
pub fn cgroup_pids(root: &Path) -> Result<HashSet<u32>, CollectError> {
    let mut pids = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let is_root = dir == root;
        let procs = dir.join("cgroup.procs");
        match read_parsed(&procs, parse::cgroup::parse_pids) {
            Ok(list) => pids.extend(list),
            Err(e) if e.is_vanished() && !is_root => continue,
            Err(e) => return Err(e),
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                let e = CollectError::io(&dir, e);
                if e.is_vanished() && !is_root {
                    continue;
                }
                return Err(e);
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let e = CollectError::io(&dir, e);
                    if e.is_vanished() {
                        continue;
                    }
                    return Err(e);
                }
            };
            // cgroupfs has no symlinks; file_type() does not follow them anyway.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    Ok(pids)
}

/// A `pids.current`; `None` where the file does not exist (no pids controller there).
fn read_pids_current(path: &Path) -> Result<Option<u64>, CollectError> {
    read_optional(path)?
        .map(|text| parse::cgroup::parse_u64(&text).map_err(|e| CollectError::parse(path, e)))
        .transpose()
}

impl ProcessCollector {
    pub fn new(env: &Environment) -> Self {
        let v1_pids = || super::v1_cgroup(env, "pids").map(|dir| dir.join("pids.current"));
        let source = match (env.platform, &env.cgroup_path) {
            (Platform::Lxc, Some(root)) => Source::Cgroup {
                root: root.clone(),
                v1_pids: v1_pids(),
            },
            (Platform::Lxc, None) => Source::PidNamespace {
                proc_path: env.proc_path.clone(),
                v1_pids: v1_pids(),
            },
            _ => Source::Proc {
                proc_path: env.proc_path.clone(),
            },
        };
        ProcessCollector { source }
    }
}

impl Collector for ProcessCollector {
    fn name(&self) -> &'static str {
        "process"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let none: [&str; 0] = [];
        match &self.source {
            Source::Proc { proc_path } => {
                out.push(&PROCESSES, none, count_proc_pids(proc_path)? as f64);
                let load = read_parsed(&proc_path.join("loadavg"), parse::loadavg::parse)?;
                out.push(&THREADS, none, load.total as f64);
            }
            Source::Cgroup { root, v1_pids } => {
                out.push(&PROCESSES, none, cgroup_pids(root)?.len() as f64);
                // pids.current exists only where the pids controller is enabled.
                let threads = match read_pids_current(&root.join("pids.current"))? {
                    Some(threads) => Some(threads),
                    None => v1_pids.as_deref().map(read_pids_current).transpose()?.flatten(),
                };
                if let Some(threads) = threads {
                    out.push(&THREADS, none, threads as f64);
                }
            }
            Source::PidNamespace { proc_path, v1_pids } => {
                out.push(&PROCESSES, none, count_proc_pids(proc_path)? as f64);
                if let Some(threads) = v1_pids.as_deref().map(read_pids_current).transpose()?.flatten() {
                    out.push(&THREADS, none, threads as f64);
                }
            }
        }
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        match &self.source {
            Source::Proc { proc_path } => vec![format!(
                "processes: numeric directories of {}; threads: {}/loadavg task total",
                proc_path.display(),
                proc_path.display()
            )],
            Source::Cgroup { root, v1_pids } => vec![format!(
                "processes: distinct PIDs in cgroup.procs of {} and its descendants; threads: its pids.current{}",
                root.display(),
                v1_pids
                    .as_ref()
                    .map(|p| format!(", else {}", p.display()))
                    .unwrap_or_default()
            )],
            Source::PidNamespace { proc_path, v1_pids } => vec![format!(
                "no cgroup2 hierarchy: processes are the numeric directories of {} (the container's PID namespace); threads: {}",
                proc_path.display(),
                v1_pids.as_ref().map_or_else(
                    || "absent (no cgroup v1 pids hierarchy mounted)".to_owned(),
                    |p| p.display().to_string()
                )
            )],
        }
    }
}
