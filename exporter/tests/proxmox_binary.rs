//! The binary with PLATFORM=proxmox over fixtures/proxmox-host reproduces every per-guest value
//! of its expected.json through the exposition text (a `null` there must be an absent series),
//! and none of the traps: monitor cgroups, snapshot sections, firewall devices, stopped and
//! foreign guests.

mod common;
mod proxmox_expected;

use std::process::Command;

use common::*;
use serde_json::Value as Json;

fn fixture_output() -> Vec<Series> {
    output(fixture_env("proxmox-host", "proxmox"))
}

fn output(env: Vec<(String, String)>) -> Vec<Series> {
    let out = Command::new(binary()).arg("--once").envs(env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse_exposition(&String::from_utf8_lossy(&out.stdout))
}

/// fixtures/proxmox-hybrid through the binary: cgroup2 at `sys/fs/cgroup/unified` (CGROUP_PATH),
/// cpu+cpuacct, memory, blkio and pids in v1 hierarchies found in the tree's mountinfo. The tree
/// has only what the guests collector reads: the node collectors fail on it, which `--once`
/// logs and survives.
#[test]
fn every_hybrid_guest_value_through_the_binary() {
    let mut env = fixture_env("proxmox-hybrid", "proxmox");
    for (key, value) in &mut env {
        if key == "CGROUP_PATH" {
            value.push_str("/unified");
        }
    }
    let expected: Json =
        serde_json::from_str(&std::fs::read_to_string(fixture("proxmox-hybrid").join("expected.json")).unwrap())
            .unwrap();
    let series = output(env);
    let checked = check_guests(&series, &expected, "pveh");
    assert!(checked > 60, "only {checked} values checked");
}

use proxmox_expected::SCALARS as QUANTITIES;

#[test]
fn every_expected_guest_value_through_the_binary() {
    let expected: Json =
        serde_json::from_str(&std::fs::read_to_string(fixture("proxmox-host").join("expected.json")).unwrap()).unwrap();
    let series = fixture_output();
    let checked = check_guests(&series, &expected, "pve1");
    assert!(checked > 80, "only {checked} values checked");
    check_traps(&series);
}

/// Every per-guest value of `expected` in the exposition `series`; how many were compared.
fn check_guests(series: &[Series], expected: &Json, node: &str) -> usize {
    let mut checked = 0;
    for (vmid, guest) in expected["guests"].as_object().unwrap() {
        let kind = guest["type"].as_str().unwrap();
        let name = guest["name"].as_str().unwrap();
        let id = [("container_id", vmid.as_str()), ("host_name", name), ("type", kind)];
        let status = if guest["running"] == true { "running" } else { "stopped" };
        let tags = guest["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(";");
        let info = [
            id[0],
            id[1],
            id[2],
            ("node", node),
            ("tags", tags.as_str()),
            ("status", status),
        ];
        assert_eq!(value(series, "pve_guest_info", &info), Some(1.0), "{vmid} info");
        for (key, metric) in QUANTITIES {
            let got = value(series, metric, &id);
            match (&guest[*key], guest["running"] == true) {
                (_, false) => assert_eq!(got, None, "{vmid}: stopped guest has no {metric}"),
                (Json::Null, true) => assert_eq!(got, None, "{vmid}: {metric} must be absent"),
                (v, true) => {
                    assert_eq!(got, Some(v.as_f64().unwrap()), "{vmid} {metric}");
                    checked += 1;
                }
            }
        }
        if guest["running"] == true {
            for (interface, net) in guest["net"].as_object().unwrap() {
                let labels = [id[0], id[2], ("interface", interface.as_str())];
                for (key, metric) in [
                    ("rx_bytes", "container_network_receive_bytes_total"),
                    ("tx_bytes", "container_network_transmit_bytes_total"),
                    ("rx_packets", "container_network_receive_packets_total"),
                    ("tx_packets", "container_network_transmit_packets_total"),
                ] {
                    assert_eq!(
                        value(series, metric, &labels),
                        net[key].as_f64(),
                        "{vmid} {interface} {metric}"
                    );
                    checked += 1;
                }
                // The info series keeps the host device and what the config gives.
                let given = |key: &str| net.get(key).and_then(Json::as_str).unwrap_or("");
                let info = [
                    id[0],
                    ("interface", interface.as_str()),
                    ("device", given("host_device")),
                    ("name", given("name")),
                    ("bridge", given("bridge")),
                    ("hwaddr", given("hwaddr")),
                ];
                assert_eq!(
                    value(series, "pve_guest_network_info", &info),
                    Some(1.0),
                    "{vmid} {interface} info"
                );
                checked += 1;
            }
            let io = guest["io"].as_object();
            let io_series = series
                .iter()
                .filter(|s| s.0 == "container_fs_reads_bytes_total" && s.1["container_id"] == *vmid)
                .count();
            assert_eq!(io_series, io.map(|m| m.len()).unwrap_or(0), "{vmid}: io devices");
            for (device, counters) in io.into_iter().flatten() {
                let labels = [id[0], ("device", device.as_str())];
                assert_eq!(
                    value(series, "container_fs_reads_bytes_total", &labels),
                    counters["read_bytes"].as_f64()
                );
                assert_eq!(
                    value(series, "container_fs_writes_bytes_total", &labels),
                    counters["write_bytes"].as_f64()
                );
                checked += 2;
            }
        }
    }
    checked
}

fn check_traps(series: &[Series]) {
    // Traps: guests of other nodes, monitors and firewall devices produce nothing.
    for (_, labels, _) in series {
        if let Some(id) = labels.get("container_id") {
            assert!(
                ["101", "102", "103", "200"].contains(&id.as_str()),
                "unexpected guest {id}"
            );
        }
        if let Some(interface) = labels.get("interface") {
            assert!(!interface.starts_with("fw"), "firewall device exported: {interface}");
        }
    }
    assert!(
        !series
            .iter()
            .any(|s| s.1.get("host_name").is_some_and(|h| h == "web-old")),
        "snapshot section read"
    );
    assert_eq!(
        value(series, "pve_cluster_quorate", &[("cluster", "homelab")]),
        Some(1.0)
    );
    assert_eq!(
        value(series, "pve_cluster_nodes_online", &[("cluster", "homelab")]),
        Some(2.0)
    );
}
