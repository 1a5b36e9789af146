//! What issue 12's collectors (backup, storage, replication, pve_node, diskstats, zfs) add to
//! a steady-state collection of a Proxmox host with 1000 guests: a synthetic host
//! (`collectors::proxmox::synthetic`, with its ~50 kB task index and task logs) plus the
//! fixture's storage, replication, certificate, dpkg, subscription, diskstats and ZFS files,
//! every collector created by name from one environment as the service creates them (so
//! `backup` takes the guest-config scan `guests` made in the same round, as in a collection).
//! A measurement, not a check:
//! `cargo test --release -p metrics-exporter --test proxmox_depth_cost -- --ignored --nocapture`
//! (`SYNTHETIC_GUESTS=N` for another size). It prints thread CPU time per collection, best and
//! mean over 32 rounds, and asserts only that each collector succeeds and produces series.

mod common;

use common::{synthetic_guest_count, thread_cpu_micros};
use std::path::Path;
use std::process::Command;

use metrics_exporter::collectors::proxmox::synthetic;
use metrics_exporter::collectors::{self, Collector};
use metrics_exporter::model::SnapshotBuilder;

/// The collectors issue 12 added (guest state is part of `guests` itself).
const NEW: &[&str] = &["backup", "storage", "replication", "pve_node", "diskstats", "zfs"];

/// The fixture files the new collectors read that a synthetic host does not write.
const FROM_FIXTURE: &[&str] = &[
    "etc/pve/storage.cfg",
    "etc/pve/.rrd",
    "etc/pve/replication.cfg",
    "etc/pve/pve-root-ca.pem",
    "etc/pve/nodes/pve1/pve-ssl.pem",
    "etc/pve/nodes/pve1/pveproxy-ssl.pem",
    "etc/subscription",
    "var/lib/dpkg",
    "var/lib/pve-manager",
    "var/lib/vz",
    "proc/diskstats",
    "proc/spl",
    "sys/block",
    "sys/devices/pci0000:00",
    "sys/devices/virtual/block",
];

fn copy_into(tree: &Path, relative: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/proxmox-host")
        .join(relative);
    let to = tree.join(relative);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg("-T")
        .arg(&from)
        .arg(&to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

#[test]
#[ignore]
fn issue_12_collectors_against_guests_at_1000_guests() {
    let guests = synthetic_guest_count();
    let dir = tempfile::tempdir().unwrap();
    let host = synthetic::generate(dir.path(), &synthetic::Spec::new(guests)).unwrap();
    for relative in FROM_FIXTURE {
        copy_into(dir.path(), relative);
    }
    let env = host.environment();
    let mut reference = collectors::create("guests", &env).unwrap();
    let mut new: Vec<Box<dyn Collector>> = NEW.iter().map(|n| collectors::create(n, &env).unwrap()).collect();

    // First collections read everything (task archive, dpkg status, certificates).
    reference.collect(&mut SnapshotBuilder::new()).unwrap();
    for c in &mut new {
        let mut out = SnapshotBuilder::new();
        c.collect(&mut out).unwrap_or_else(|e| panic!("{}: {e}", c.name()));
        assert!(out.series_count() > 0, "{} produced no series", c.name());
    }

    let rounds = 32;
    let (mut best_g, mut mean_g) = (f64::MAX, 0.0);
    let mut best = vec![f64::MAX; NEW.len()];
    let mut mean = vec![0.0; NEW.len()];
    for _ in 0..rounds {
        let t = thread_cpu_micros();
        reference.collect(&mut SnapshotBuilder::new()).unwrap();
        let g = thread_cpu_micros() - t;
        best_g = f64::min(best_g, g);
        mean_g += g / rounds as f64;
        for (i, c) in new.iter_mut().enumerate() {
            let t = thread_cpu_micros();
            c.collect(&mut SnapshotBuilder::new()).unwrap();
            let d = thread_cpu_micros() - t;
            best[i] = f64::min(best[i], d);
            mean[i] += d / rounds as f64;
        }
    }
    eprintln!("{guests} guests: guests collector best {best_g:.0} µs, mean {mean_g:.0} µs");
    for (i, name) in NEW.iter().enumerate() {
        eprintln!(
            "  {name:<12} best {:>7.0} µs ({:.2}%)  mean {:>7.0} µs ({:.2}%)",
            best[i],
            100.0 * best[i] / best_g,
            mean[i],
            100.0 * mean[i] / mean_g
        );
    }
    let (sum_best, sum_mean): (f64, f64) = (best.iter().sum(), mean.iter().sum());
    eprintln!(
        "  all new      best {sum_best:>7.0} µs ({:.2}%)  mean {sum_mean:>7.0} µs ({:.2}%)",
        100.0 * sum_best / best_g,
        100.0 * sum_mean / mean_g
    );
}
