//! `collect_loop <tree> <collections>`: collects the Proxmox `guests` collector over a host
//! tree (e.g. one written by `synthetic-host`) that many times after one warm-up collection,
//! and nothing else, so that `perf record` or `valgrind --tool=callgrind` sees the steady
//! state only (the criterion bench also writes the tree, which dominates a whole-run profile).
//!
//! `collect_loop --cgroup <dir> <collections>`: the same over real cgroups, with `<dir>` (a
//! cgroup2 directory holding `lxc/<vmid>` guest cgroups) as CGROUP_PATH and this machine's
//! /proc, /sys and mount table.

use std::path::{Path, PathBuf};

use exporter::collectors::Environment;
use exporter::collectors::proxmox::{self, synthetic};
use exporter::model::SnapshotBuilder;
use exporter::platform::{self, Platform};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (env, count) = match args.as_slice() {
        [tree, count] => (synthetic::environment_for_tree(Path::new(tree)), count),
        [flag, dir, count] if flag == "--cgroup" => {
            let proc_path = PathBuf::from("/proc");
            let env = Environment {
                platform: Platform::Proxmox,
                mounts: platform::read_mounts(&proc_path).expect("mount table"),
                local_configs: Default::default(),
                proc_path,
                sys_path: "/sys".into(),
                root_path: "/".into(),
                cgroup_path: Some(PathBuf::from(dir)),
                pve_path: PathBuf::from(dir).join("no-pve"),
            };
            (env, count)
        }
        _ => {
            eprintln!("usage: collect_loop [--cgroup] <tree or cgroup dir> <collections>");
            std::process::exit(2);
        }
    };
    let count: usize = count.parse().expect("<collections> is a number");
    let mut collector = proxmox::create("guests", &env).expect("guests collector");
    collector
        .collect(&mut SnapshotBuilder::new())
        .expect("warm-up collection");
    let start = std::time::Instant::now();
    let mut series = 0;
    for _ in 0..count {
        let mut out = SnapshotBuilder::new();
        collector.collect(&mut out).expect("collection");
        series = out.series_count();
    }
    eprintln!(
        "{count} collections, {series} series, {:.0} µs wall each",
        start.elapsed().as_secs_f64() * 1e6 / count as f64
    );
}
