//! Cost of every kernel-text parser on the fixture files (one file per iteration).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use exporter::parse::{cgroup, loadavg, meminfo, mountinfo, netdev, pressure, stat};

const HOST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/proxmox-host");
const LXC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/lxc-container");

fn text(path: String) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parsers(c: &mut Criterion) {
    let meminfo_text = text(format!("{HOST}/proc/meminfo"));
    let stat_text = text(format!("{HOST}/proc/stat"));
    let loadavg_text = text(format!("{HOST}/proc/loadavg"));
    let netdev_text = text(format!("{HOST}/proc/net/dev"));
    let pressure_text = text(format!("{HOST}/proc/pressure/memory"));
    let mountinfo_text = text(format!("{LXC}/proc/self/mountinfo"));
    let cpu_stat_text = text(format!("{HOST}/sys/fs/cgroup/cpu.stat"));
    let memory_stat_text = text(format!("{LXC}/sys/fs/cgroup/memory.stat"));
    let io_stat_text = text(format!("{HOST}/sys/fs/cgroup/lxc/101/io.stat"));
    let limit_text = text(format!("{LXC}/sys/fs/cgroup/memory.max"));
    let cpu_max_text = text(format!("{LXC}/sys/fs/cgroup/cpu.max"));
    let current_text = text(format!("{LXC}/sys/fs/cgroup/memory.current"));
    let procs_text = text(format!("{LXC}/sys/fs/cgroup/init.scope/cgroup.procs"));

    let mut g = c.benchmark_group("parse");
    g.bench_function("meminfo", |b| {
        b.iter(|| meminfo::parse(black_box(&meminfo_text)).unwrap())
    });
    g.bench_function("proc_stat", |b| b.iter(|| stat::parse(black_box(&stat_text)).unwrap()));
    g.bench_function("loadavg", |b| {
        b.iter(|| loadavg::parse(black_box(&loadavg_text)).unwrap())
    });
    g.bench_function("netdev", |b| b.iter(|| netdev::parse(black_box(&netdev_text)).unwrap()));
    g.bench_function("pressure", |b| {
        b.iter(|| pressure::parse(black_box(&pressure_text)).unwrap())
    });
    g.bench_function("mountinfo", |b| {
        b.iter(|| mountinfo::parse(black_box(&mountinfo_text)).unwrap())
    });
    g.bench_function("cgroup_cpu_stat", |b| {
        b.iter(|| cgroup::parse_cpu_stat(black_box(&cpu_stat_text)).unwrap())
    });
    g.bench_function("cgroup_memory_stat", |b| {
        b.iter(|| cgroup::parse_flat_keyed(black_box(&memory_stat_text)).unwrap())
    });
    g.bench_function("cgroup_io_stat", |b| {
        b.iter(|| cgroup::parse_io_stat(black_box(&io_stat_text)).unwrap())
    });
    g.bench_function("cgroup_limit", |b| {
        b.iter(|| cgroup::parse_limit(black_box(&limit_text)).unwrap())
    });
    g.bench_function("cgroup_cpu_max", |b| {
        b.iter(|| cgroup::parse_cpu_max(black_box(&cpu_max_text)).unwrap())
    });
    g.bench_function("cgroup_u64", |b| {
        b.iter(|| cgroup::parse_u64(black_box(&current_text)).unwrap())
    });
    g.bench_function("cgroup_procs", |b| {
        b.iter(|| cgroup::parse_pids(black_box(&procs_text)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
