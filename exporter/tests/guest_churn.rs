//! Guest churn (issue 14, point 5): the real-guest rig (crate `guest-rig`: containers A, B, C
//! and two QEMU guests laid out as Proxmox VE lays them out, with a PVE_PATH tree) and the real
//! exporter binary in host mode with eBPF on. Container B (busybox) is stopped and started
//! `SOAK_CHURN_CYCLES` times (5 here; `cargo xtask soak churn --cycles 100` runs the same test
//! with 100). Each transition is checked in a collection made after it (B's series gone, then
//! back).
//!
//! Baseline: measured with B running after the first 3 cycles, when every code path of a stop
//! and a start has run (caches, descriptor tables, the allocator's arenas). After the last
//! cycle, with the same guests running: open descriptors (/proc/<pid>/fd) and the series count
//! (sample lines of /metrics) exactly equal to the baseline, the eBPF guest slots in use equal
//! (B's slot released at each stop), and RSS within +1 MiB.
//!
//! Needs root and the rig's packages (`require`): outside CI it skips loudly. The rig removes
//! everything it made (its ledger, on drop), also on failure.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Exporter, is_root, parse_exposition, require, value};
use guest_rig::http;
use guest_rig::rig::{RIG_ROOT, Rig, Role};

/// The text of a /metrics scrape that shows a collection made after this call.
fn fresh_metrics(address: SocketAddr) -> String {
    for _ in 0..10 {
        let collect = http::request(address, "POST", "/collect?wait", &[]).expect("POST /collect");
        assert_eq!(collect.status, 200, "POST /collect: {}", collect.text());
        let sequence = collect.json()["sequence"].as_f64().expect("sequence");
        let text = http::get(address, "/metrics").expect("GET /metrics").text();
        let series = parse_exposition(&text);
        if value(&series, "metrics_exporter_collections_total", &[]) == Some(sequence) {
            return text;
        }
    }
    panic!("no scrape showed the collection it asked for in 10 tries");
}

fn guest_cpu(text: &str, vmid: u32) -> Option<f64> {
    value(
        &parse_exposition(text),
        "container_cpu_usage_seconds_total",
        &[("container_id", &vmid.to_string())],
    )
}

/// What is compared with the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Footprint {
    fds: usize,
    rss_bytes: u64,
    series: usize,
    guest_slots: Option<f64>,
}

fn footprint(pid: u32, text: &str) -> Footprint {
    // The scrape's own connection is closed by then: let the server see its end first.
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let series = parse_exposition(text);
    Footprint {
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
        rss_bytes: rss_kb * 1024,
        series: series.len(),
        guest_slots: value(&series, "metrics_exporter_ebpf_map_entries", &[("map", "guest_slots")]),
    }
}

/// The names and labels of every series, to say which ones differ.
fn series_keys(text: &str) -> std::collections::BTreeSet<String> {
    parse_exposition(text)
        .into_iter()
        .map(|(name, labels, _)| format!("{name}{labels:?}"))
        .collect()
}

const BASELINE_AFTER: usize = 3;

#[test]
fn guest_churn_returns_to_the_baseline() {
    if !require("root", is_root()) {
        return;
    }
    if let Some(why) = guest_rig::rig::unavailable() {
        require(&why, false);
        return;
    }
    let cycles: usize = std::env::var("SOAK_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(BASELINE_AFTER + 1);
    let dir = PathBuf::from(RIG_ROOT).join(format!("churn-{}", std::process::id()));
    let mut rig = Rig::up(&dir).unwrap_or_else(|e| panic!("rig up: {e:#}"));
    let b = rig.description.container(Role::B).spec.vmid;
    let mut env = rig.description.exporter_env();
    env.push(("COLLECTION_INTERVAL".into(), "5".into()));
    env.push(("LOG_LEVEL".into(), "warn".into()));
    let exporter = Exporter::start(&env);
    let pid = exporter.child.id();
    let text = fresh_metrics(exporter.address);
    assert!(guest_cpu(&text, b).is_some(), "B runs and is exported");
    let start = footprint(pid, &text);
    assert!(start.guest_slots.is_some(), "eBPF runs (EBPF=on): {start:?}");

    let started = Instant::now();
    let mut baseline: Option<(Footprint, String)> = None;
    let mut worst_rss = 0;
    for cycle in 1..=cycles {
        rig.stop_container(b)
            .unwrap_or_else(|e| panic!("cycle {cycle}: stop B: {e:#}"));
        let stopped = fresh_metrics(exporter.address);
        assert_eq!(guest_cpu(&stopped, b), None, "cycle {cycle}: B's series go with it");
        let slots_stopped = footprint(pid, &stopped).guest_slots;
        rig.start_container(b)
            .unwrap_or_else(|e| panic!("cycle {cycle}: start B: {e:#}"));
        let running = fresh_metrics(exporter.address);
        assert!(guest_cpu(&running, b).is_some(), "cycle {cycle}: B is back");
        let now = footprint(pid, &running);
        assert!(
            slots_stopped < now.guest_slots,
            "cycle {cycle}: B's eBPF slot is released while it is stopped: {slots_stopped:?} then {:?}",
            now.guest_slots
        );
        worst_rss = worst_rss.max(now.rss_bytes);
        if cycle == BASELINE_AFTER {
            baseline = Some((now, running));
        }
        if cycle % 10 == 0 || cycle == cycles {
            println!(
                "churn: cycle {cycle}: {now:?}, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let (base, base_text) = baseline.expect("measured after the first cycles");
    let end_text = fresh_metrics(exporter.address);
    let end = footprint(pid, &end_text);
    println!(
        "churn: {cycles} cycles of container {b} in {:.0} s; baseline after cycle {BASELINE_AFTER}: {base:?}; after the last: {end:?}; \
         highest RSS after a cycle {} KiB; at the start (before any cycle): {start:?}",
        started.elapsed().as_secs_f64(),
        worst_rss / 1024
    );
    let (base_keys, end_keys) = (series_keys(&base_text), series_keys(&end_text));
    assert_eq!(
        end.series,
        base.series,
        "series count; only in the baseline: {:?}; only at the end: {:?}",
        base_keys.difference(&end_keys).collect::<Vec<_>>(),
        end_keys.difference(&base_keys).collect::<Vec<_>>()
    );
    assert_eq!(end.fds, base.fds, "open descriptors");
    assert_eq!(end.guest_slots, base.guest_slots, "eBPF guest slots in use");
    assert!(
        end.rss_bytes <= base.rss_bytes + 1024 * 1024,
        "RSS {} KiB, more than 1 MiB over the baseline {} KiB",
        end.rss_bytes / 1024,
        base.rss_bytes / 1024
    );
    drop(exporter);
    let took = rig.down();
    println!("churn: rig down in {:.1} s", took.as_secs_f64());
}
