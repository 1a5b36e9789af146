//! One collection of the Proxmox `guests` collector at N = 10, 100, 1000 guests, in steady
//! state (the collector is created once and collected repeatedly, as the serving process does),
//! with `cgroup.stat` as Linux 6.11+ prints it (`proxmox_guests_collect`) and as 6.8 does
//! (`proxmox_guests_collect_6.8`: no `nr_subsys_*` lines, Proxmox VE 8).
//!
//! Reads a synthetic pure-cgroup2 host with systemd containers written by
//! `metrics_exporter::collectors::proxmox::synthetic` into a temporary directory (a regular
//! filesystem: file reads there cost less than on kernfs; see the real-cgroup measurement in
//! exporter/tests/proxmox_real_root.rs, `real_cgroup_collection_cost`).
//! Produces criterion timings; divide by N for the per-guest cost.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use exporter::collectors::proxmox::synthetic::{self, CgroupStatFormat};
use exporter::collectors::proxmox::{self};
use exporter::model::SnapshotBuilder;

fn guests(c: &mut Criterion) {
    for (group, format) in [
        ("proxmox_guests_collect", CgroupStatFormat::Linux6_11),
        ("proxmox_guests_collect_6.8", CgroupStatFormat::Linux6_8),
    ] {
        collections(c, group, format);
    }
}

fn collections(c: &mut Criterion, group: &str, format: CgroupStatFormat) {
    let mut group = c.benchmark_group(group);
    group.sample_size(20);
    for n in [10usize, 100, 1000] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut spec = synthetic::Spec::new(n);
        spec.cgroup_stat = format;
        let host = synthetic::generate(dir.path(), &spec).expect("synthetic host");
        let env = host.environment();
        let mut collector = proxmox::create("guests", &env).expect("guests collector");
        // Warm up: open the descriptors and parse the configs once, as at the first scrape.
        collector
            .collect(&mut SnapshotBuilder::new())
            .expect("first collection");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let mut out = SnapshotBuilder::new();
                collector.collect(&mut out).expect("collection");
                out
            })
        });
    }
    group.finish();
}

criterion_group!(benches, guests);
criterion_main!(benches);
