//! Guest state in the `guests` collector over fixtures/proxmox-host: locks, onboot, the
//! template flag, HA states and snapshots reproduce every value of
//! fixtures/proxmox-host/expected-guest-state.md and none of its traps, through the collector
//! and through the binary; bad HA and snapshot input costs only its own series. Runs as any
//! user.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use metrics_exporter::collectors::Collector;
use metrics_exporter::collectors::proxmox::{self, synthetic};
use metrics_exporter::model::{Snapshot, SnapshotBuilder, Value};

fn fixture_root() -> PathBuf {
    fixture("proxmox-host")
}

fn collect_with(collector: &mut dyn Collector) -> (Snapshot, Result<(), String>) {
    let mut out = SnapshotBuilder::new();
    let result = collector.collect(&mut out).map_err(|e| e.to_string());
    (out.finish(Arc::default(), SystemTime::now(), 1), result)
}

fn guests_over(root: &Path) -> Box<dyn Collector> {
    proxmox::create("guests", &synthetic::environment_for_tree(root)).expect("guests collector")
}

/// Labels and value of every sample of `metric` whose labels include every pair of `want`.
fn samples(snap: &Snapshot, metric: &str, want: &[(&str, &str)]) -> Vec<(Vec<(String, String)>, f64)> {
    let Some(family) = snap.family(metric) else {
        return Vec::new();
    };
    family
        .samples
        .iter()
        .map(|s| {
            let labels: Vec<(String, String)> = family
                .desc
                .labels
                .iter()
                .zip(s.labels.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let value = match &s.value {
                Value::Number(n) => *n,
                Value::Histogram(_) => panic!("{metric} is a histogram"),
            };
            (labels, value)
        })
        .filter(|(labels, _)| {
            want.iter().all(|(k, v)| {
                let label = labels.iter().find(|(name, _)| name == k);
                assert!(label.is_some(), "{metric} has no label {k}");
                label.is_some_and(|(_, value)| value == v)
            })
        })
        .collect()
}

/// The value of the one series of `metric` for guest `id` with the extra labels `want`;
/// `None` when there is none.
fn value_of(snap: &Snapshot, metric: &str, id: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut labels = vec![("container_id", id)];
    labels.extend_from_slice(want);
    let found = samples(snap, metric, &labels);
    assert!(found.len() <= 1, "{metric} {labels:?}: {found:?}");
    found.first().map(|(_, v)| *v)
}

/// Guests (container_id) with at least one series of `metric`.
fn guests_with(snap: &Snapshot, metric: &str) -> BTreeSet<String> {
    samples(snap, metric, &[])
        .into_iter()
        .map(|(labels, _)| labels[0].1.clone())
        .collect()
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Reads one value back: `(metric, vmid, extra labels)`, `None` when there is no series.
type Get<'a> = &'a dyn Fn(&str, &str, &[(&str, &str)]) -> Option<f64>;
/// The guests (container_id) with a series of a metric.
type With<'a> = &'a dyn Fn(&str) -> BTreeSet<String>;

/// Every value of expected-guest-state.md, read back by `get` from the collector's snapshot or
/// the binary's exposition, and the traps: only local guests, one lock and one HA series per
/// guest at most.
fn check_expected(get: Get<'_>, with: With<'_>) {
    // Locks: 102 only, `backup` (a snapshot-mode backup is running).
    assert_eq!(get("pve_guest_lock", "102", &[("lock", "backup")]), Some(1.0));
    assert_eq!(with("pve_guest_lock"), ids(&["102"]));
    // onboot: 103 has no onboot line: Proxmox's default, 0.
    for (id, onboot) in [("101", 1.0), ("102", 1.0), ("103", 0.0), ("200", 1.0)] {
        assert_eq!(get("pve_guest_onboot", id, &[]), Some(onboot), "{id} onboot");
    }
    // The template flag on the info series: 103 is the template.
    for (id, template) in [("101", "0"), ("102", "0"), ("103", "1"), ("200", "0")] {
        assert_eq!(
            get("pve_guest_info", id, &[("template", template)]),
            Some(1.0),
            "{id} template"
        );
    }
    // Snapshots: 101's [pve:pending] and 200's [PENDING] are not snapshots; 102's `vzdump`
    // (the running backup's) is one.
    for (id, count) in [("101", 2.0), ("102", 1.0), ("103", 0.0), ("200", 0.0)] {
        assert_eq!(get("pve_guest_snapshots", id, &[]), Some(count), "{id} snapshots");
    }
    let oldest = "pve_guest_snapshot_oldest_timestamp_seconds";
    assert_eq!(get(oldest, "101", &[]), Some(1727788800.0));
    assert_eq!(get(oldest, "102", &[]), Some(1733394600.0));
    assert_eq!(with(oldest), ids(&["101", "102"]));
    // HA: manager_status says 101 started, 200 error; 102 is `ignored` in resources.cfg and
    // so not in the CRM's status: no series; 300 is on pve2: no series either.
    assert_eq!(get("pve_guest_ha_state", "101", &[("state", "started")]), Some(1.0));
    assert_eq!(get("pve_guest_ha_state", "200", &[("state", "error")]), Some(1.0));
    assert_eq!(with("pve_guest_ha_state"), ids(&["101", "200"]));
    // 300 (pve2) has no series of any of these families.
    for metric in [
        "pve_guest_info",
        "pve_guest_lock",
        "pve_guest_onboot",
        "pve_guest_ha_state",
        "pve_guest_snapshots",
        oldest,
    ] {
        assert!(!with(metric).contains("300"), "{metric} has pve2's guest 300");
    }
}

#[test]
fn every_guest_state_value_through_the_collector() {
    let mut guests = guests_over(&fixture_root());
    for round in 0..2 {
        // The second round reads the same files from the caches (no stamp changed).
        let (snap, result) = collect_with(guests.as_mut());
        result.unwrap_or_else(|e| panic!("round {round}: {e}"));
        check_expected(&|metric, id, want| value_of(&snap, metric, id, want), &|metric| {
            guests_with(&snap, metric)
        });
    }
}

#[test]
fn every_guest_state_value_through_the_binary() {
    let out = Command::new(binary())
        .arg("--once")
        .only_env(&fixture_env("proxmox-host", "proxmox"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let series = parse_exposition(&stdout);
    check_expected(
        &|metric, id, want| {
            let mut labels = vec![("container_id", id)];
            labels.extend_from_slice(want);
            value(&series, metric, &labels)
        },
        &|metric| {
            series
                .iter()
                .filter(|s| s.0 == metric)
                .filter_map(|s| s.1.get("container_id").cloned())
                .collect()
        },
    );
    // The exposition declares the new families once each, as gauges.
    for metric in [
        "pve_guest_lock",
        "pve_guest_onboot",
        "pve_guest_ha_state",
        "pve_guest_snapshots",
        "pve_guest_snapshot_oldest_timestamp_seconds",
    ] {
        assert_eq!(
            stdout.matches(&format!("# TYPE {metric} gauge\n")).count(),
            1,
            "{metric}"
        );
    }
}

fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    common::fixture_copy("proxmox-host")
}

#[test]
fn resources_cfg_gives_the_requested_states_where_manager_status_is_absent() {
    let (_dir, root) = fixture_copy();
    let manager_status = root.join("etc/pve/ha/manager_status");
    std::fs::remove_file(&manager_status).unwrap();
    let mut guests = guests_over(&root);
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    // 101 has no state line (`started` by default), 102 `ignored`, 200 `started` (the CRM's
    // `error` is not in this file); 300 is on pve2; 103 is not an HA resource.
    assert_eq!(
        value_of(&snap, "pve_guest_ha_state", "101", &[("state", "started")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&snap, "pve_guest_ha_state", "102", &[("state", "ignored")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&snap, "pve_guest_ha_state", "200", &[("state", "started")]),
        Some(1.0)
    );
    assert_eq!(guests_with(&snap, "pve_guest_ha_state"), ids(&["101", "102", "200"]));

    // Once the CRM writes manager_status, it is the source again.
    std::fs::copy(fixture_root().join("etc/pve/ha/manager_status"), &manager_status).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(
        value_of(&snap, "pve_guest_ha_state", "200", &[("state", "error")]),
        Some(1.0)
    );
    assert_eq!(guests_with(&snap, "pve_guest_ha_state"), ids(&["101", "200"]));

    // Neither file: no HA series and no error (a node without HA).
    std::fs::remove_dir_all(root.join("etc/pve/ha")).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert!(snap.family("pve_guest_ha_state").is_none());
}

#[test]
fn invalid_manager_status_json_is_a_clear_error_and_the_rest_is_served() {
    let (_dir, root) = fixture_copy();
    let manager_status = root.join("etc/pve/ha/manager_status");
    // Truncated mid-object, as a torn read would leave it.
    std::fs::write(
        &manager_status,
        r#"{"master_node":"pve2","service_status":{"ct:101":{"node":"pve1","state":"sta"#,
    )
    .unwrap();
    let mut guests = guests_over(&root);
    for round in 0..2 {
        // Reported on every collection while the file stays invalid, not only when it changes.
        let (snap, result) = collect_with(guests.as_mut());
        let error = result.unwrap_err();
        assert!(
            error.contains(&manager_status.display().to_string()) && error.contains("invalid HA manager_status JSON"),
            "round {round}: {error}"
        );
        // No HA state at all (not resources.cfg's: the CRM's view exists, it is unreadable)...
        assert!(snap.family("pve_guest_ha_state").is_none(), "round {round}");
        // ...and every other series is still there.
        assert_eq!(
            value_of(&snap, "pve_guest_lock", "102", &[("lock", "backup")]),
            Some(1.0)
        );
        assert_eq!(value_of(&snap, "pve_guest_snapshots", "101", &[]), Some(2.0));
        assert_eq!(value_of(&snap, "pve_guest_onboot", "103", &[]), Some(0.0));
        assert_eq!(
            value_of(&snap, "container_cpu_usage_seconds_total", "101", &[]),
            Some(46091657470.0 / 1e6)
        );
        assert_eq!(guests_with(&snap, "pve_guest_info"), ids(&["101", "102", "103", "200"]));
    }
    // Repaired: the states are back and the collection succeeds.
    std::fs::copy(fixture_root().join("etc/pve/ha/manager_status"), &manager_status).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(guests_with(&snap, "pve_guest_ha_state"), ids(&["101", "200"]));
}

#[test]
fn a_malformed_snaptime_makes_only_the_oldest_snapshot_absent() {
    let (_dir, root) = fixture_copy();
    let conf = root.join("etc/pve/nodes/pve1/lxc/101.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("snaptime: 1727788800", "snaptime: 2024-10-01")).unwrap();
    let mut guests = guests_over(&root);
    let (snap, result) = collect_with(guests.as_mut());
    let error = result.unwrap_err();
    assert!(
        error.contains("101.conf") && error.contains("snaptime: 2024-10-01"),
        "{error}"
    );
    // The snapshot still counts; the oldest time is unknown (not snap2's, which is younger).
    assert_eq!(value_of(&snap, "pve_guest_snapshots", "101", &[]), Some(2.0));
    let oldest = "pve_guest_snapshot_oldest_timestamp_seconds";
    assert_eq!(value_of(&snap, oldest, "101", &[]), None);
    // Everything else of 101 and the other guests' snapshots are unaffected.
    assert_eq!(value_of(&snap, oldest, "102", &[]), Some(1733394600.0));
    assert_eq!(
        value_of(
            &snap,
            "pve_guest_info",
            "101",
            &[("host_name", "web"), ("template", "0")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(&snap, "pve_guest_ha_state", "101", &[("state", "started")]),
        Some(1.0)
    );
}

#[test]
fn locks_templates_and_ha_states_follow_their_files() {
    let (_dir, root) = fixture_copy();
    let conf = root.join("etc/pve/nodes/pve1/lxc/102.conf");
    let original = std::fs::read_to_string(&conf).unwrap();
    let mut guests = guests_over(&root);
    let (snap, _) = collect_with(guests.as_mut());
    assert_eq!(
        value_of(&snap, "pve_guest_lock", "102", &[("lock", "backup")]),
        Some(1.0)
    );

    // The backup ends: vzdump removes its snapshot and the lock.
    let (main, _) = original.split_once("\n[vzdump]").unwrap();
    let done = main.replace("lock: backup\n", "").replace("parent: vzdump\n", "");
    std::fs::write(&conf, &done).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert!(snap.family("pve_guest_lock").is_none());
    assert_eq!(value_of(&snap, "pve_guest_snapshots", "102", &[]), Some(0.0));
    assert_eq!(
        value_of(&snap, "pve_guest_snapshot_oldest_timestamp_seconds", "102", &[]),
        None
    );

    // A migration locks it again, under another lock; the template flag of 103 goes.
    std::fs::write(&conf, format!("lock: migrate\n{done}")).unwrap();
    let template = root.join("etc/pve/nodes/pve1/lxc/103.conf");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, text.replace("template: 1\n", "")).unwrap();
    // And the CRM moves 200 out of the error state.
    let manager_status = root.join("etc/pve/ha/manager_status");
    let status = std::fs::read_to_string(&manager_status).unwrap();
    std::fs::write(
        &manager_status,
        status.replace(r#""state":"error""#, r#""state":"stopped""#),
    )
    .unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(samples(&snap, "pve_guest_lock", &[]).len(), 1);
    assert_eq!(
        value_of(&snap, "pve_guest_lock", "102", &[("lock", "migrate")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&snap, "pve_guest_info", "103", &[("template", "0")]),
        Some(1.0)
    );
    assert_eq!(
        samples(&snap, "pve_guest_ha_state", &[("container_id", "200")]).len(),
        1
    );
    assert_eq!(
        value_of(&snap, "pve_guest_ha_state", "200", &[("state", "stopped")]),
        Some(1.0)
    );
}
