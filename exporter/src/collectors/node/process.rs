//! Process and thread counts.
//!
//! Reads:
//! - host / Proxmox host: the numeric directories of `$PROC_PATH` (processes) and the total
//!   of `$PROC_PATH/loadavg`'s 4th field `running/total` (threads: scheduling entities);
//! - LXC container: `cgroup.procs` of the cgroup namespace root and every descendant
//!   (processes: distinct PIDs; the root's own `cgroup.procs` is usually empty because
//!   systemd keeps its tasks in child cgroups) and the root's `pids.current` (threads: the
//!   pids controller counts tasks). `/proc/loadavg` there is the host's.
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
    Proc { proc_path: PathBuf },
    Cgroup { root: PathBuf },
    Missing,
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

impl ProcessCollector {
    pub fn new(env: &Environment) -> Self {
        let source = match (env.platform, &env.cgroup_path) {
            (Platform::Lxc, Some(root)) => Source::Cgroup { root: root.clone() },
            (Platform::Lxc, None) => Source::Missing,
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
            Source::Cgroup { root } => {
                out.push(&PROCESSES, none, cgroup_pids(root)?.len() as f64);
                // pids.current exists only where the pids controller is enabled.
                let path = root.join("pids.current");
                if let Some(text) = read_optional(&path)? {
                    let threads = parse::cgroup::parse_u64(&text).map_err(|e| CollectError::parse(&path, e))?;
                    out.push(&THREADS, none, threads as f64);
                }
            }
            Source::Missing => return Err(super::no_cgroup("process")),
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
            Source::Cgroup { root } => vec![format!(
                "processes: distinct PIDs in cgroup.procs of {} and its descendants; threads: its pids.current",
                root.display()
            )],
            Source::Missing => vec!["no cgroup2 hierarchy found: container process counts are not derivable".into()],
        }
    }
}
