//! CPU time per mode.
//!
//! Reads:
//! - host / Proxmox host: `$PROC_PATH/stat` (`cpuN` lines, USER_HZ ticks from
//!   `sysconf(_SC_CLK_TCK)`);
//! - LXC container: `cpu.stat` of the cgroup namespace root (`env.cgroup_path`), never
//!   `/proc/stat`: on cgroup2 lxcfs passes the host's per-CPU lines through for the CPUs in
//!   the container's cpuset, which is host-wide busy time;
//! - LXC container without a cgroup2 hierarchy (a host with v1 controllers only): the
//!   container's `cpuacct.stat` in the v1 `cpuacct` hierarchy ([`super::v1_cgroup`]), `user`
//!   and `system` in USER_HZ ticks, the same cputime-adjusted split as cgroup2's
//!   `user_usec`/`system_usec`.
//!
//! Produces:
//! - `node_cpu_seconds_total{cpu,mode}` on hosts, modes user nice system idle iowait irq
//!   softirq steal. Guest time is not a mode: the kernel already counts it inside user (and
//!   guest_nice inside nice), so exporting it as a mode would count it twice.
//! - `node_cpu_seconds_total{mode}` in a container, modes user and system only (a second
//!   declaration with the same name): a cgroup has no per-CPU split, and idle, iowait and
//!   steal do not exist for a group of tasks.

use std::path::{Path, PathBuf};

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_parsed};
use crate::model::{Kind, MetricDesc, OtelName, Scope, SnapshotBuilder, Unit};
use crate::parse;
use crate::platform::Platform;

pub static CPU_SECONDS: MetricDesc = MetricDesc {
    name: "node_cpu_seconds_total",
    help: "Seconds the CPUs spent in each mode (/proc/stat; guest time is inside user).",
    kind: Kind::Counter,
    unit: Unit::Seconds,
    labels: &["cpu", "mode"],
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "system.cpu.time",
        attributes: &["cpu.logical_number", "cpu.mode"],
        fixed: &[],
    }),
};

pub static CPU_SECONDS_CGROUP: MetricDesc = MetricDesc {
    name: "node_cpu_seconds_total",
    help: "Seconds the container's tasks spent in user and system mode (cgroup cpu.stat, or v1 cpuacct.stat).",
    kind: Kind::Counter,
    unit: Unit::Seconds,
    labels: &["mode"],
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "system.cpu.time",
        attributes: &["cpu.mode"],
        fixed: &[],
    }),
};

#[derive(Debug)]
enum Source {
    ProcStat { path: PathBuf, ticks_per_second: f64 },
    CgroupCpuStat { path: PathBuf },
    CpuacctStat { path: PathBuf, ticks_per_second: f64 },
    Missing,
}

#[derive(Debug)]
pub struct CpuCollector {
    source: Source,
}

/// USER_HZ, the unit of /proc/stat.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // 100 is USER_HZ on every Linux architecture; sysconf failing (-1) is theoretical.
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Reads `/proc/stat`.
pub fn read_proc_stat(path: &Path) -> Result<parse::stat::Stat, CollectError> {
    read_parsed(path, parse::stat::parse)
}

/// Reads a cgroup's `cpu.stat`.
pub fn read_cpu_stat(path: &Path) -> Result<parse::cgroup::CpuStat, CollectError> {
    read_parsed(path, parse::cgroup::parse_cpu_stat)
}

impl CpuCollector {
    pub fn new(env: &Environment) -> Self {
        let source = match (env.platform, &env.cgroup_path) {
            (Platform::Lxc, Some(root)) => Source::CgroupCpuStat {
                path: root.join("cpu.stat"),
            },
            (Platform::Lxc, None) => match super::v1_cgroup(env, "cpuacct") {
                Some(dir) => Source::CpuacctStat {
                    path: dir.join("cpuacct.stat"),
                    ticks_per_second: ticks_per_second(),
                },
                None => Source::Missing,
            },
            _ => Source::ProcStat {
                path: env.proc_path.join("stat"),
                ticks_per_second: ticks_per_second(),
            },
        };
        CpuCollector { source }
    }
}

impl Collector for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        match &self.source {
            Source::ProcStat { path, ticks_per_second } => {
                let stat = read_proc_stat(path)?;
                for (n, ticks) in &stat.cpus {
                    let cpu = n.to_string();
                    for (mode, value) in ticks.modes() {
                        out.push(&CPU_SECONDS, [cpu.as_str(), mode], value as f64 / ticks_per_second);
                    }
                }
            }
            Source::CgroupCpuStat { path } => {
                let stat = read_cpu_stat(path)?;
                out.push(&CPU_SECONDS_CGROUP, ["user"], stat.user_usec as f64 / 1e6);
                out.push(&CPU_SECONDS_CGROUP, ["system"], stat.system_usec as f64 / 1e6);
            }
            Source::CpuacctStat { path, ticks_per_second } => {
                let stat = read_parsed(path, parse::cgroup::parse_cpuacct_stat)?;
                out.push(&CPU_SECONDS_CGROUP, ["user"], stat.user_ticks as f64 / ticks_per_second);
                out.push(
                    &CPU_SECONDS_CGROUP,
                    ["system"],
                    stat.system_ticks as f64 / ticks_per_second,
                );
            }
            Source::Missing => {
                return Err(crate::error::CollectError::Other(
                    "cpu: neither a cgroup2 hierarchy nor a cgroup v1 cpuacct hierarchy was found (mount the container's cgroups, or set CGROUP_PATH); refusing to report host values for a container".into(),
                ));
            }
        }
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        match &self.source {
            Source::ProcStat { path, ticks_per_second } => {
                vec![format!(
                    "per-CPU time from {} at {ticks_per_second} ticks/s",
                    path.display()
                )]
            }
            Source::CgroupCpuStat { path } => vec![format!(
                "container CPU from {} (user and system only; /proc/stat in a container is the host's)",
                path.display()
            )],
            Source::CpuacctStat { path, ticks_per_second } => vec![format!(
                "container CPU from {} at {ticks_per_second} ticks/s (no cgroup2 hierarchy: the v1 cpuacct controller's)",
                path.display()
            )],
            Source::Missing => {
                vec![
                    "no cgroup2 hierarchy and no cgroup v1 cpuacct hierarchy found: container CPU is not derivable"
                        .into(),
                ]
            }
        }
    }
}
