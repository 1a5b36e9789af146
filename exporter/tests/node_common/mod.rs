// Shared helpers of the node_* integration tests (a directory, so cargo does not build it
// as a test crate of its own).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use metrics_exporter::collectors::{Collector, Environment, node};
use metrics_exporter::model::{Snapshot, SnapshotBuilder, Value};
use metrics_exporter::platform::{self, Platform};

pub fn fixture(tree: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(tree)
}

/// An environment pointed at a file tree `root`.
pub fn env_at(root: &Path, platform: Platform) -> Environment {
    let proc_path = root.join("proc");
    let mounts = platform::read_mounts(&proc_path).unwrap_or_default();
    let cgroup = root.join("sys/fs/cgroup");
    Environment {
        platform,
        proc_path,
        sys_path: root.join("sys"),
        root_path: root.to_path_buf(),
        cgroup_path: cgroup.is_dir().then_some(cgroup),
        pve_path: root.join("etc/pve"),
        mounts,
        local_configs: Default::default(),
    }
}

pub fn collector(name: &str, env: &Environment) -> Box<dyn Collector> {
    node::create(name, env).unwrap_or_else(|| panic!("no node collector {name}"))
}

pub fn run(c: &mut dyn Collector) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    c.collect(&mut b).unwrap_or_else(|e| panic!("{} failed: {e}", c.name()));
    b.finish(Arc::default(), SystemTime::now(), 1)
}

pub fn collect(name: &str, env: &Environment) -> Snapshot {
    run(collector(name, env).as_mut())
}

/// The value of the series `name{labels}` (label values in declaration order), if present.
pub fn value(s: &Snapshot, name: &str, labels: &[&str]) -> Option<f64> {
    let family = s.family(name)?;
    family
        .samples
        .iter()
        .find(|x| x.labels.iter().map(|l| &**l).eq(labels.iter().copied()))
        .map(|x| match x.value {
            Value::Number(v) => v,
            Value::Histogram(_) => panic!("{name} is a histogram"),
        })
}

pub fn get(s: &Snapshot, name: &str, labels: &[&str]) -> f64 {
    value(s, name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

pub fn label_sets(s: &Snapshot, name: &str) -> Vec<Vec<String>> {
    s.family(name)
        .map(|f| {
            f.samples
                .iter()
                .map(|x| x.labels.iter().map(|l| l.to_string()).collect())
                .collect()
        })
        .unwrap_or_default()
}

pub fn names(s: &Snapshot) -> Vec<&'static str> {
    s.families.iter().map(|f| f.desc.name).collect()
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
