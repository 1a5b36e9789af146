//! Pressure stall information (PSI).
//!
//! Reads:
//! - host / Proxmox host: `$PROC_PATH/pressure/{cpu,memory,io}`;
//! - LXC container: `{cpu,memory,io}.pressure` of the cgroup namespace root. Without a cgroup2
//!   hierarchy there is nothing to read (PSI per cgroup exists only in cgroup2, and
//!   `/proc/pressure` in a container is the host's): the series are absent, the collector
//!   succeeds and its notes say why.
//!
//! Produces `node_pressure_{cpu,memory,io}_waiting_seconds_total` (the `some` line) and
//! `node_pressure_{cpu,memory,io}_stalled_seconds_total` (the `full` line); `total=` is in
//! microseconds. On a host the system-wide cpu `full` line is all zeros by kernel design
//! (some task is always runnable somewhere: psi.rst), so `node_pressure_cpu_stalled` is not
//! exported there; in a cgroup it is real. A missing file (kernel without PSI, `psi=0`) means
//! the series is absent, never zero.

use std::path::{Path, PathBuf};

use crate::collectors::{Collector, Environment};
use crate::error::CollectError;
use crate::model::{Kind, MetricDesc, Scope, SnapshotBuilder, Unit};
use crate::parse;
use crate::parse::pressure::Pressure;
use crate::platform::Platform;

macro_rules! psi_desc {
    ($ident:ident, $name:literal, $help:literal) => {
        pub static $ident: MetricDesc = MetricDesc {
            name: $name,
            help: $help,
            kind: Kind::Counter,
            unit: Unit::Seconds,
            labels: &[],
            scope: Scope::Node,
            otel: None,
        };
    };
}

psi_desc!(
    CPU_WAITING,
    "node_pressure_cpu_waiting_seconds_total",
    "Time at least one task waited for CPU (PSI some)."
);
psi_desc!(
    CPU_STALLED,
    "node_pressure_cpu_stalled_seconds_total",
    "Time all non-idle tasks of the cgroup waited for CPU (PSI full; container only)."
);
psi_desc!(
    MEMORY_WAITING,
    "node_pressure_memory_waiting_seconds_total",
    "Time at least one task stalled on memory (PSI some)."
);
psi_desc!(
    MEMORY_STALLED,
    "node_pressure_memory_stalled_seconds_total",
    "Time all non-idle tasks stalled on memory (PSI full)."
);
psi_desc!(
    IO_WAITING,
    "node_pressure_io_waiting_seconds_total",
    "Time at least one task stalled on IO (PSI some)."
);
psi_desc!(
    IO_STALLED,
    "node_pressure_io_stalled_seconds_total",
    "Time all non-idle tasks stalled on IO (PSI full)."
);

struct Resource {
    path: PathBuf,
    waiting: &'static MetricDesc,
    /// `None` where the full line is meaningless (host cpu).
    stalled: Option<&'static MetricDesc>,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("path", &self.path)
            .field("stalled", &self.stalled.is_some())
            .finish()
    }
}

#[derive(Debug)]
pub struct PressureCollector {
    resources: Vec<Resource>,
    lxc: bool,
    /// Files found absent at the last collection, for notes().
    absent: Vec<PathBuf>,
    /// A container without a cgroup2 hierarchy: no pressure to read (not an error).
    no_cgroup2: bool,
}

/// Reads a pressure file; `Ok(None)` when the kernel has no PSI for it (ENOENT, or
/// EOPNOTSUPP when PSI is compiled in but disabled).
pub fn read_pressure(path: &Path) -> Result<Option<Pressure>, CollectError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(None),
        Err(e) => return Err(CollectError::io(path, e)),
    };
    parse::pressure::parse(&text)
        .map(Some)
        .map_err(|e| CollectError::parse(path, e))
}

impl PressureCollector {
    pub fn new(env: &Environment) -> Self {
        let lxc = env.platform == Platform::Lxc;
        let (resources, no_cgroup2) = match (lxc, &env.cgroup_path) {
            (true, Some(root)) => (
                vec![
                    Resource {
                        path: root.join("cpu.pressure"),
                        waiting: &CPU_WAITING,
                        stalled: Some(&CPU_STALLED),
                    },
                    Resource {
                        path: root.join("memory.pressure"),
                        waiting: &MEMORY_WAITING,
                        stalled: Some(&MEMORY_STALLED),
                    },
                    Resource {
                        path: root.join("io.pressure"),
                        waiting: &IO_WAITING,
                        stalled: Some(&IO_STALLED),
                    },
                ],
                false,
            ),
            (true, None) => (Vec::new(), true),
            (false, _) => {
                let dir = env.proc_path.join("pressure");
                (
                    vec![
                        Resource {
                            path: dir.join("cpu"),
                            waiting: &CPU_WAITING,
                            stalled: None,
                        },
                        Resource {
                            path: dir.join("memory"),
                            waiting: &MEMORY_WAITING,
                            stalled: Some(&MEMORY_STALLED),
                        },
                        Resource {
                            path: dir.join("io"),
                            waiting: &IO_WAITING,
                            stalled: Some(&IO_STALLED),
                        },
                    ],
                    false,
                )
            }
        };
        PressureCollector {
            resources,
            lxc,
            absent: Vec::new(),
            no_cgroup2,
        }
    }
}

impl Collector for PressureCollector {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let none: [&str; 0] = [];
        let mut first_error = None;
        self.absent.clear();
        // One broken file does not hide the others: keep going, report the first error.
        for r in &self.resources {
            match read_pressure(&r.path) {
                Ok(Some(p)) => {
                    out.push(r.waiting, none, p.some.total_usec as f64 / 1e6);
                    if let (Some(desc), Some(full)) = (r.stalled, p.full) {
                        out.push(desc, none, full.total_usec as f64 / 1e6);
                    }
                }
                Ok(None) => self.absent.push(r.path.clone()),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.no_cgroup2 {
            notes.push(
                "no cgroup2 hierarchy found: pressure stall information exists per cgroup only in cgroup2 (and /proc/pressure is the host's), so the container's pressure series are absent".to_owned(),
            );
        } else if self.lxc {
            notes.push("from the cgroup namespace root's *.pressure files".to_owned());
        } else {
            notes.push(
                "node_pressure_cpu_stalled_seconds_total is not exported on a host: the system-wide cpu full line is zero by kernel design".to_owned(),
            );
        }
        for path in &self.absent {
            notes.push(format!(
                "{} absent (kernel without PSI?): its series are absent",
                path.display()
            ));
        }
        notes
    }
}
