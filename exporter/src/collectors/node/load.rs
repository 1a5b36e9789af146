//! Load averages.
//!
//! Reads `$PROC_PATH/loadavg` on hosts. Produces `node_load1`, `node_load5`, `node_load15`.
//!
//! In an LXC container `/proc/loadavg` is the host's (lxcfs runs without `-l` on Proxmox, and
//! even with it the figure is an estimate): the collector is not a container default, and if
//! enabled there it emits nothing and says why in its notes.

use std::path::{Path, PathBuf};

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_parsed};
use crate::model::{Kind, MetricDesc, OtelName, Scope, SnapshotBuilder, Unit};
use crate::parse;
use crate::platform::Platform;

macro_rules! load_desc {
    ($ident:ident, $name:literal, $help:literal, $otel:literal) => {
        pub static $ident: MetricDesc = MetricDesc {
            name: $name,
            help: $help,
            kind: Kind::Gauge,
            unit: Unit::Ratio,
            labels: &[],
            scope: Scope::Node,
            otel: Some(OtelName {
                name: $otel,
                attributes: &[],
                fixed: &[],
            }),
        };
    };
}
load_desc!(LOAD1, "node_load1", "1m load average.", "system.cpu.load_average.1m");
load_desc!(LOAD5, "node_load5", "5m load average.", "system.cpu.load_average.5m");
load_desc!(
    LOAD15,
    "node_load15",
    "15m load average.",
    "system.cpu.load_average.15m"
);

#[derive(Debug)]
pub struct LoadCollector {
    /// `None` in a container: nothing there is the container's load.
    path: Option<PathBuf>,
}

/// Reads `/proc/loadavg`.
pub fn read_loadavg(path: &Path) -> Result<parse::loadavg::LoadAvg, CollectError> {
    read_parsed(path, parse::loadavg::parse)
}

impl LoadCollector {
    pub fn new(env: &Environment) -> Self {
        let path = (env.platform != Platform::Lxc).then(|| env.proc_path.join("loadavg"));
        LoadCollector { path }
    }
}

impl Collector for LoadCollector {
    fn name(&self) -> &'static str {
        "load"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let load = read_loadavg(path)?;
        let none: [&str; 0] = [];
        out.push(&LOAD1, none, load.one);
        out.push(&LOAD5, none, load.five);
        out.push(&LOAD15, none, load.fifteen);
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        match &self.path {
            Some(path) => vec![format!("from {}", path.display())],
            None => vec![
                "no load series in an LXC container: /proc/loadavg there is the host's (lxcfs), and the container's load average is not derivable".into(),
            ],
        }
    }
}
