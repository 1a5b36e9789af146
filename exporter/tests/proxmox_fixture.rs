//! The Proxmox collectors (`guests`, `cluster`) pointed at fixtures/proxmox-host reproduce every
//! value of its expected.json, and none of the traps expected.md lists. Also: the same
//! collectors over a synthetic host, churn, and bad input. Runs as any user.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use metrics_exporter::collectors::proxmox::{self, synthetic};
use metrics_exporter::collectors::{Collector, Environment};
use metrics_exporter::model::{Snapshot, SnapshotBuilder, Value};
use serde_json::Value as Json;

mod common;
mod proxmox_expected;

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/proxmox-host")
}

fn collect_with(collector: &mut dyn Collector) -> (Snapshot, Result<(), String>) {
    let mut out = SnapshotBuilder::new();
    let result = collector.collect(&mut out).map_err(|e| e.to_string());
    (out.finish(Arc::default(), SystemTime::now(), 1), result)
}

fn collect(name: &str, env: &Environment) -> Snapshot {
    let mut c = proxmox::create(name, env).expect("collector exists");
    let (snap, result) = collect_with(c.as_mut());
    result.unwrap_or_else(|e| panic!("{name} failed: {e}"));
    snap
}

/// Values of `metric` whose labels include every pair of `want`.
fn values(snap: &Snapshot, metric: &str, want: &[(&str, &str)]) -> Vec<f64> {
    let Some(family) = snap.family(metric) else {
        return Vec::new();
    };
    family
        .samples
        .iter()
        .filter(|s| {
            want.iter().all(|(k, v)| {
                let i = family
                    .desc
                    .labels
                    .iter()
                    .position(|l| l == k)
                    .unwrap_or_else(|| panic!("{metric} has no label {k}"));
                &*s.labels[i] == *v
            })
        })
        .map(|s| match &s.value {
            Value::Number(n) => *n,
            Value::Histogram(_) => panic!("histogram"),
        })
        .collect()
}

fn one(snap: &Snapshot, metric: &str, want: &[(&str, &str)]) -> f64 {
    let v = values(snap, metric, want);
    assert_eq!(
        v.len(),
        1,
        "{metric} {want:?}: expected exactly one series, found {v:?}"
    );
    v[0]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

use proxmox_expected::SCALARS;

const NET: &[(&str, &str)] = &[
    ("rx_bytes", "container_network_receive_bytes_total"),
    ("tx_bytes", "container_network_transmit_bytes_total"),
    ("rx_packets", "container_network_receive_packets_total"),
    ("tx_packets", "container_network_transmit_packets_total"),
];

const IO: &[(&str, &str)] = &[
    ("read_bytes", "container_fs_reads_bytes_total"),
    ("write_bytes", "container_fs_writes_bytes_total"),
    ("read_ops", "container_fs_reads_total"),
    ("write_ops", "container_fs_writes_total"),
];

fn expected() -> Json {
    serde_json::from_str(&std::fs::read_to_string(fixture_root().join("expected.json")).unwrap()).unwrap()
}

/// Every container_id that appears in any family of the snapshot.
fn container_ids(snap: &Snapshot) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for f in &snap.families {
        if let Some(i) = f.desc.labels.iter().position(|l| *l == "container_id") {
            ids.extend(f.samples.iter().map(|s| s.labels[i].to_string()));
        }
    }
    ids
}

/// Metric names with at least one series for `id`.
fn families_of(snap: &Snapshot, id: &str) -> BTreeSet<&'static str> {
    snap.families
        .iter()
        .filter(|f| {
            let Some(i) = f.desc.labels.iter().position(|l| *l == "container_id") else {
                return false;
            };
            f.samples.iter().any(|s| &*s.labels[i] == id)
        })
        .map(|f| f.desc.name)
        .collect()
}

#[test]
fn every_guest_value_of_expected_json() {
    let env = synthetic::environment_for_tree(&fixture_root());
    check_every_guest_value(&collect("guests", &env), &expected());
}

/// The hybrid tree: fixtures/proxmox-hybrid, cgroup2 at `sys/fs/cgroup/unified` (CGROUP_PATH)
/// and the cpu+cpuacct, memory, blkio, pids controllers in v1 hierarchies.
fn hybrid_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/proxmox-hybrid")
}

fn hybrid_environment(root: &Path) -> Environment {
    let mut env = synthetic::environment_for_tree(root);
    env.cgroup_path = Some(root.join("sys/fs/cgroup/unified"));
    env
}

fn hybrid_expected() -> Json {
    serde_json::from_str(&std::fs::read_to_string(hybrid_root().join("expected.json")).unwrap()).unwrap()
}

/// Hybrid layout: CPU limit and throttling from v1 `cpu`, swap limit from v1 memsw, IO from
/// v1 blkio, OOM kills summed over the v1 memcg subtree. Before the v1 files were read, the
/// throttling, CPU limit, swap limit and IO series were absent and oom_kills was 0.
#[test]
fn every_guest_value_of_the_hybrid_tree() {
    let env = hybrid_environment(&hybrid_root());
    let mut guests = proxmox::create("guests", &env).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    check_every_guest_value(&snap, &hybrid_expected());
    // Again with every descriptor kept open.
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    check_every_guest_value(&snap, &hybrid_expected());
}

/// Where the cgroup2 tree has no `cpu.stat` (kernels before 4.15 print it only with the cpu
/// controller), the guests' CPU time comes from v1 cpuacct; the guests are not dropped.
#[test]
fn hybrid_without_cgroup2_cpu_stat_reads_cpuacct() {
    let (_dir, root) = common::fixture_copy("proxmox-hybrid");
    let expected = hybrid_expected();
    for (id, guest) in expected["guests"].as_object().unwrap() {
        let rel = match guest["type"].as_str().unwrap() {
            "lxc" => format!("lxc/{id}"),
            _ => format!("qemu.slice/{id}.scope"),
        };
        std::fs::remove_file(root.join("sys/fs/cgroup/unified").join(rel).join("cpu.stat")).unwrap();
    }
    let snap = collect("guests", &hybrid_environment(&root));
    for (id, guest) in expected["guests"].as_object().unwrap() {
        let want = &guest["cpuacct_fallback"];
        for (key, metric) in [
            ("cpu_seconds", "container_cpu_usage_seconds_total"),
            ("cpu_user_seconds", "container_cpu_user_seconds_total"),
            ("cpu_system_seconds", "container_cpu_system_seconds_total"),
        ] {
            let got = one(&snap, metric, &[("container_id", id.as_str())]);
            assert!(close(got, want[key].as_f64().unwrap()), "{id} {metric}: {got}");
        }
        // The rest of the guest is still there.
        assert_eq!(
            one(&snap, "container_oom_kills_total", &[("container_id", id.as_str())]),
            guest["oom_kills"].as_f64().unwrap()
        );
    }
}

/// v1 counts an OOM kill only in the victim's memcg: the guest's total is the sum over its
/// subtree, a kill in a cgroup created after the last listing is seen once the cgroup2
/// subtree's shape changes, and the kills of a cgroup that is removed (systemd restarting the
/// killed service) stay in the total.
#[test]
fn hybrid_oom_kills_follow_the_v1_subtree() {
    let (_dir, root) = common::fixture_copy("proxmox-hybrid");
    let env = hybrid_environment(&root);
    let kills = |snap: &Snapshot| one(snap, "container_oom_kills_total", &[("container_id", "101")]);
    let mut guests = proxmox::create("guests", &env).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(kills(&snap), 3.0);

    // A new service cgroup (in both trees, as LXC and systemd create them) whose process is
    // OOM-killed; the cgroup2 subtree's cgroup.stat says it has one more descendant.
    let unified = root.join("sys/fs/cgroup/unified/lxc/101");
    let memory = root.join("sys/fs/cgroup/memory/lxc/101");
    std::fs::create_dir_all(unified.join("ns/system.slice/hog.service")).unwrap();
    std::fs::write(unified.join("ns/system.slice/hog.service/cgroup.procs"), "").unwrap();
    std::fs::write(
        unified.join("cgroup.stat"),
        "nr_descendants 5\nnr_dying_descendants 0\n",
    )
    .unwrap();
    let hog = memory.join("ns/system.slice/hog.service");
    std::fs::create_dir_all(&hog).unwrap();
    std::fs::write(
        hog.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
    )
    .unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(kills(&snap), 7.0);

    // systemd removes the killed service's cgroup: its kills stay in the guest's total.
    std::fs::remove_dir_all(&hog).unwrap();
    std::fs::remove_dir_all(unified.join("ns/system.slice/hog.service")).unwrap();
    std::fs::write(
        unified.join("cgroup.stat"),
        "nr_descendants 4\nnr_dying_descendants 1\n",
    )
    .unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(kills(&snap), 7.0);
    // A later kill in ns adds to it.
    std::fs::write(
        memory.join("ns/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(kills(&snap), 8.0);
}

/// cgroup2 mounted with `memory_localevents`: each cgroup's memory.events counts only its own
/// events, so the guest's OOM kills and memory events are the sums over its subtree. Without
/// the option the guest cgroup's own (hierarchical) memory.events is read, never
/// memory.events.local.
#[test]
fn pure_cgroup2_memory_events_local_or_hierarchical() {
    let (_dir, root) = common::fixture_copy("proxmox-host");
    let cg = root.join("sys/fs/cgroup/lxc/102");
    // memory.events.local of the guest cgroup says nothing happened there itself.
    std::fs::write(
        cg.join("memory.events.local"),
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    )
    .unwrap();
    let snap = collect("guests", &synthetic::environment_for_tree(&root));
    assert_eq!(one(&snap, "container_oom_kills_total", &[("container_id", "102")]), 2.0);

    // The same files under memory_localevents: lxc/102/memory.events is local now, and the
    // kills happened below it.
    let mountinfo = root.join("proc/self/mountinfo");
    let text = std::fs::read_to_string(&mountinfo).unwrap().replace(
        "cgroup2 cgroup2 rw,nsdelegate,",
        "cgroup2 cgroup2 rw,nsdelegate,memory_localevents,",
    );
    assert!(text.contains("memory_localevents"));
    std::fs::write(&mountinfo, text).unwrap();
    let local = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n";
    fn each_events_file(dir: &Path, f: &mut dyn FnMut(&Path)) {
        if dir.join("memory.events").exists() {
            f(&dir.join("memory.events"));
        }
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                each_events_file(&entry.path(), f);
            }
        }
    }
    let mut files = 0;
    each_events_file(&cg, &mut |path| {
        std::fs::write(path, local).unwrap();
        files += 1;
    });
    assert!(files >= 3, "{files} memory.events files below lxc/102");
    std::fs::write(
        cg.join("ns/memory.events"),
        "low 0\nhigh 5\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n",
    )
    .unwrap();
    let service = cg.join("ns/system.slice/ssh.service");
    std::fs::write(
        service.join("memory.events"),
        "low 0\nhigh 0\nmax 2\noom 0\noom_kill 3\noom_group_kill 0\n",
    )
    .unwrap();
    let env = synthetic::environment_for_tree(&root);
    let mut guests = proxmox::create("guests", &env).unwrap();
    assert!(
        guests.notes().iter().any(|n| n.contains("memory_localevents")),
        "{:?}",
        guests.notes()
    );
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    let g102 = [("container_id", "102")];
    assert_eq!(one(&snap, "container_oom_kills_total", &g102), 4.0);
    let event = |name: &str| {
        let mut want = g102.to_vec();
        want.push(("event", name));
        one(&snap, "container_memory_events_total", &want)
    };
    assert_eq!((event("high"), event("max"), event("oom")), (5.0, 3.0, 1.0));
}

fn check_every_guest_value(snap: &Snapshot, expected: &Json) {
    for (id, guest) in expected["guests"].as_object().unwrap() {
        let kind = guest["type"].as_str().unwrap();
        let name = guest["name"].as_str().unwrap();
        let base = [("container_id", id.as_str()), ("host_name", name), ("type", kind)];
        let running = guest["running"].as_bool().unwrap();
        let tags: Vec<&str> = guest["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let tags = tags.join(";");
        let info = [
            base[0],
            base[1],
            base[2],
            ("node", guest["node"].as_str().unwrap()),
            ("tags", tags.as_str()),
            ("status", if running { "running" } else { "stopped" }),
        ];
        assert_eq!(one(snap, "pve_guest_info", &info), 1.0, "info of {id}");
        if let Some(mem) = guest["config"]["memory"].as_str() {
            let mib: f64 = mem.parse().unwrap();
            assert_eq!(one(snap, "pve_guest_config_memory_bytes", &base), mib * 1048576.0);
        }

        let absent: Vec<&str> = guest
            .get("_absent")
            .and_then(Json::as_array)
            .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        for (key, metric) in SCALARS {
            let got = values(snap, metric, &base);
            match guest.get(*key) {
                _ if absent.contains(key) => assert!(got.is_empty(), "{id} {metric}: must be absent, got {got:?}"),
                Some(Json::Null) => assert!(got.is_empty(), "{id} {metric}: null means no series, got {got:?}"),
                Some(v) => {
                    let want = v.as_f64().unwrap();
                    assert_eq!(got.len(), 1, "{id} {metric}: expected {want}, got {got:?}");
                    assert!(close(got[0], want), "{id} {metric}: expected {want}, got {}", got[0]);
                }
                None => {}
            }
        }
        if absent.contains(&"oom_events") {
            assert!(
                values(snap, "container_memory_events_total", &base).is_empty(),
                "{id}: memory events must be absent"
            );
        }
        if let Some(events) = guest.get("oom_events").and_then(Json::as_f64) {
            let mut want = base.to_vec();
            want.push(("event", "oom"));
            assert_eq!(one(snap, "container_memory_events_total", &want), events);
        }

        // Network, in the guest's view, keyed by Proxmox's netN (LXC and VM alike); the info
        // series keeps the host device and what the config gives, "" (no label) for the rest.
        if absent.contains(&"net") {
            assert!(values(snap, "container_network_receive_bytes_total", &base).is_empty());
        } else if let Some(net) = guest.get("net").and_then(Json::as_object) {
            assert_eq!(
                values(snap, "container_network_receive_bytes_total", &base).len(),
                net.len(),
                "{id}: interfaces"
            );
            assert_eq!(
                values(snap, "pve_guest_network_info", &base).len(),
                net.len(),
                "{id}: interface info"
            );
            for (interface, counters) in net {
                let mut want = base.to_vec();
                want.push(("interface", interface.as_str()));
                for (key, metric) in NET {
                    let v = one(snap, metric, &want);
                    assert_eq!(v, counters[*key].as_f64().unwrap(), "{id} {interface} {metric}");
                }
                let given = |key: &str| counters.get(key).and_then(Json::as_str).unwrap_or("");
                want.extend([
                    ("device", given("host_device")),
                    ("name", given("name")),
                    ("bridge", given("bridge")),
                    ("hwaddr", given("hwaddr")),
                ]);
                assert_eq!(one(snap, "pve_guest_network_info", &want), 1.0, "{id} {interface} info");
            }
        }

        // I/O per device, never summed, absent where io.stat is absent.
        if absent.contains(&"io") {
            for (_, metric) in IO {
                assert!(values(snap, metric, &base).is_empty(), "{id} {metric} must be absent");
            }
        } else if let Some(io) = guest.get("io").and_then(Json::as_object) {
            assert_eq!(
                values(snap, "container_fs_reads_bytes_total", &base).len(),
                io.len(),
                "{id}: devices"
            );
            for (device, counters) in io {
                let mut want = base.to_vec();
                want.push(("device", device.as_str()));
                for (key, metric) in IO {
                    assert_eq!(
                        one(snap, metric, &want),
                        counters[*key].as_f64().unwrap(),
                        "{id} {device} {metric}"
                    );
                }
            }
        }
    }
}

#[test]
fn traps_of_expected_md() {
    let env = synthetic::environment_for_tree(&fixture_root());
    let snap = collect("guests", &env);
    // Monitor cgroups, pve-container@ units, lxc/ and qemu.slice aggregates and 300 (pve2) are
    // not guests of this node; 103 is stopped and has its config's series only.
    let ids: Vec<String> = container_ids(&snap).into_iter().collect();
    assert_eq!(ids, ["101", "102", "103", "200"]);
    assert_eq!(
        families_of(&snap, "103"),
        BTreeSet::from([
            "pve_guest_info",
            "pve_guest_config_cpus",
            "pve_guest_config_memory_bytes",
            "pve_guest_onboot",
            "pve_guest_snapshots"
        ])
    );
    // Snapshot sections: 101 is `web`, not `web-old`, tags are not `staging`, memory 2048.
    assert!(values(&snap, "pve_guest_info", &[("host_name", "web-old")]).is_empty());
    assert!(values(&snap, "pve_guest_info", &[("tags", "staging")]).is_empty());
    // Firewall, bridge, physical and loopback devices are never guest interfaces.
    let family = snap.family("container_network_receive_bytes_total").unwrap();
    let interfaces: BTreeSet<&str> = family.samples.iter().map(|s| &*s.labels[3]).collect();
    assert_eq!(interfaces, BTreeSet::from(["net0", "net1"]));
    let devices: BTreeSet<&str> = snap
        .family("pve_guest_network_info")
        .unwrap()
        .samples
        .iter()
        .map(|s| &*s.labels[4])
        .collect();
    assert_eq!(
        devices,
        BTreeSet::from(["veth101i0", "veth101i1", "veth102i0", "tap200i0"])
    );
    // Swapped rx/tx: the guest's received bytes are the host side's transmitted bytes.
    let rx = one(
        &snap,
        "container_network_receive_bytes_total",
        &[("container_id", "101"), ("interface", "net0")],
    );
    assert_eq!(rx, 27908331540.0);
    // 200's 117 host-side tx drops are receive drops of the guest.
    assert_eq!(
        one(
            &snap,
            "container_network_receive_packets_dropped_total",
            &[("container_id", "200")]
        ),
        117.0
    );
    // 102 has no limit series (memory.max and memory.high are `max`; not the config's 4096 MiB, not 0).
    assert!(values(&snap, "container_spec_memory_limit_bytes", &[("container_id", "102")]).is_empty());
    assert!(
        values(
            &snap,
            "container_spec_memory_soft_limit_bytes",
            &[("container_id", "102")]
        )
        .is_empty()
    );
    assert!(values(&snap, "container_spec_cpu_limit_cores", &[("container_id", "102")]).is_empty());
    // VM 200 has no io.stat: no I/O series (and not qemu.slice's aggregate).
    assert!(values(&snap, "container_fs_reads_bytes_total", &[("container_id", "200")]).is_empty());
    // oom_kill, not oom: 102 has 2 kills and 0 oom events.
    assert_eq!(one(&snap, "container_oom_kills_total", &[("container_id", "102")]), 2.0);
    // Guest totals come from lxc/<vmid>, not lxc/<vmid>/ns.
    assert_eq!(
        one(&snap, "container_cpu_usage_seconds_total", &[("container_id", "101")]),
        46091657470.0 / 1e6
    );
    // Every per-guest family carries the guest identity labels first.
    for f in &snap.families {
        assert_eq!(
            &f.desc.labels[..3],
            &["container_id", "host_name", "type"],
            "{}",
            f.desc.name
        );
    }
}

#[test]
fn cluster_values_of_expected_json() {
    let env = synthetic::environment_for_tree(&fixture_root());
    let snap = collect("cluster", &env);
    let c = &expected()["cluster"];
    let name = c["name"].as_str().unwrap();
    assert_eq!(
        one(
            &snap,
            "pve_cluster_info",
            &[("cluster", name), ("node", "pve1"), ("config_version", "2")]
        ),
        1.0
    );
    assert_eq!(one(&snap, "pve_cluster_quorate", &[("cluster", name)]), 1.0);
    assert_eq!(one(&snap, "pve_cluster_nodes", &[]), c["nodes_total"].as_f64().unwrap());
    assert_eq!(
        one(&snap, "pve_cluster_nodes_online", &[]),
        c["nodes_online"].as_f64().unwrap()
    );
    for (node, state) in c["nodes"].as_object().unwrap() {
        let id = state["id"].to_string();
        let want = [
            ("node", node.as_str()),
            ("node_id", id.as_str()),
            ("ip", state["ip"].as_str().unwrap()),
        ];
        assert_eq!(one(&snap, "pve_cluster_node_online", &want), 1.0);
    }
    assert_eq!(
        one(&snap, "pve_cluster_guests", &[("node", "pve1"), ("type", "lxc")]),
        3.0
    );
    assert_eq!(
        one(&snap, "pve_cluster_guests", &[("node", "pve1"), ("type", "qemu")]),
        1.0
    );
    assert_eq!(
        one(&snap, "pve_cluster_guests", &[("node", "pve2"), ("type", "lxc")]),
        1.0
    );
    assert!(values(&snap, "pve_cluster_guests", &[("node", "pve2"), ("type", "qemu")]).is_empty());
    assert_eq!(one(&snap, "pve_pmxcfs_start_time_seconds", &[]), 1732185352.0);
}

fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    common::fixture_copy("proxmox-host")
}

#[test]
fn standalone_node_has_no_cluster_series() {
    let (_dir, root) = fixture_copy();
    let pve = root.join("etc/pve");
    std::fs::write(pve.join(".members"), "{\n\"nodename\": \"pve1\",\n\"version\": 0\n}\n").unwrap();
    std::fs::remove_file(pve.join("corosync.conf")).unwrap();
    std::fs::remove_file(pve.join(".vmlist")).unwrap();
    let snap = collect("cluster", &synthetic::environment_for_tree(&root));
    let names: Vec<_> = snap.families.iter().map(|f| f.desc.name).collect();
    assert_eq!(names, ["pve_pmxcfs_start_time_seconds"]);
    // Nothing of /etc/pve at all: nothing, and no error.
    let empty = tempfile::tempdir().unwrap();
    let mut env = synthetic::environment_for_tree(&root);
    env.pve_path = empty.path().to_path_buf();
    assert!(collect("cluster", &env).families.is_empty());
}

#[test]
fn invalid_members_json_is_a_clear_error_and_the_rest_is_served() {
    let (_dir, root) = fixture_copy();
    let pve = root.join("etc/pve");
    std::fs::write(pve.join(".members"), "{\"nodename\": \"pve1\", \"cluster\": {").unwrap();
    let env = synthetic::environment_for_tree(&root);
    let mut cluster = proxmox::create("cluster", &env).unwrap();
    let (snap, result) = collect_with(cluster.as_mut());
    let error = result.unwrap_err();
    assert!(
        error.contains(".members") && error.contains("invalid .members JSON"),
        "{error}"
    );
    // .vmlist and corosync.conf still give guests per node and the cluster name.
    assert_eq!(
        one(&snap, "pve_cluster_guests", &[("node", "pve1"), ("type", "lxc")]),
        3.0
    );
    assert_eq!(one(&snap, "pve_cluster_info", &[("cluster", "homelab")]), 1.0);
    // The guests collector falls back to the host name for the node and still serves guests.
    let mut guests = proxmox::create("guests", &env).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    assert!(result.unwrap_err().contains(".members"));
    assert_eq!(
        one(&snap, "pve_guest_info", &[("container_id", "101"), ("node", "pve1")]),
        1.0
    );
    assert!(!values(&snap, "container_cpu_usage_seconds_total", &[("container_id", "102")]).is_empty());
}

#[test]
fn malformed_cgroup_files_and_config_garbage() {
    let (_dir, root) = fixture_copy();
    let cg = root.join("sys/fs/cgroup/lxc/101");
    // Truncated mid-line, garbage, a non-number limit, invalid UTF-8.
    std::fs::write(cg.join("memory.stat"), "anon 284864512\nfile 92169").unwrap();
    std::fs::write(cg.join("memory.current"), "").unwrap();
    std::fs::write(cg.join("io.stat"), "253:7 rbytes=12 wbytes\n").unwrap();
    std::fs::write(cg.join("cpu.pressure"), "some avg10=1.11 avg60=1.19 avg300=1.26 tot").unwrap();
    std::fs::write(cg.join("memory.max"), "unlimited\n").unwrap();
    std::fs::write(cg.join("pids.current"), b"\xff\xfe\n").unwrap();
    let conf = root.join("etc/pve/nodes/pve1/lxc/102.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.insert_str(0, "this is not a key\n\u{7f}\u{1}\n");
    std::fs::write(&conf, text).unwrap();

    let env = synthetic::environment_for_tree(&root);
    let mut guests = proxmox::create("guests", &env).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    let error = result.unwrap_err();
    assert!(error.contains("lxc/101/") || error.contains("102.conf"), "{error}");
    let g101 = [("container_id", "101")];
    // Broken files: their series are absent (never 0)...
    for metric in [
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_memory_pve_used_bytes",
        "container_spec_memory_limit_bytes",
        "container_fs_reads_bytes_total",
        "container_pressure_cpu_waiting_seconds_total",
        "container_threads",
    ] {
        assert!(values(&snap, metric, &g101).is_empty(), "{metric} must be absent");
    }
    // ...and everything else of 101 and of the other guests is still there.
    assert_eq!(
        one(&snap, "container_cpu_usage_seconds_total", &g101),
        46091657470.0 / 1e6
    );
    assert_eq!(
        one(&snap, "container_spec_memory_soft_limit_bytes", &g101),
        2130706432.0
    );
    assert_eq!(one(&snap, "container_processes", &g101), 20.0);
    assert_eq!(
        one(&snap, "container_memory_usage_bytes", &[("container_id", "200")]),
        4576149504.0
    );
    // Garbage lines in 102.conf do not hide its name.
    assert_eq!(
        one(&snap, "pve_guest_info", &[("container_id", "102"), ("host_name", "db")]),
        1.0
    );
}

#[test]
fn a_guest_that_stops_disappears_and_one_that_starts_appears() {
    let (_dir, root) = fixture_copy();
    let env = synthetic::environment_for_tree(&root);
    let mut guests = proxmox::create("guests", &env).unwrap();
    let (snap, _) = collect_with(guests.as_mut());
    assert!(!values(&snap, "container_cpu_usage_seconds_total", &[("container_id", "102")]).is_empty());

    // 102 stops: its cgroup goes; it has info `stopped` and nothing else at the next collection.
    std::fs::remove_dir_all(root.join("sys/fs/cgroup/lxc/102")).unwrap();
    // 104 starts: a cgroup appears (no config: default name CT104).
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(root.join("sys/fs/cgroup/lxc/101"))
        .arg(root.join("sys/fs/cgroup/lxc/104"))
        .status()
        .unwrap();
    assert!(status.success());
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    // (Its config's series stay: 102 is locked by a backup with its `vzdump` snapshot.)
    assert_eq!(
        families_of(&snap, "102"),
        BTreeSet::from([
            "pve_guest_info",
            "pve_guest_config_cpus",
            "pve_guest_config_memory_bytes",
            "pve_guest_lock",
            "pve_guest_onboot",
            "pve_guest_snapshots",
            "pve_guest_snapshot_oldest_timestamp_seconds"
        ])
    );
    assert_eq!(
        one(
            &snap,
            "pve_guest_info",
            &[("container_id", "102"), ("status", "stopped")]
        ),
        1.0
    );
    assert_eq!(
        one(
            &snap,
            "container_cpu_usage_seconds_total",
            &[("container_id", "104"), ("host_name", "CT104")]
        ),
        46091.65747
    );
    assert_eq!(
        one(
            &snap,
            "pve_guest_info",
            &[("container_id", "104"), ("status", "running"), ("tags", "")]
        ),
        1.0
    );
}

#[test]
fn a_guest_removed_before_its_first_read_is_left_out_entirely() {
    // A directory that lists but whose files are gone when opened: what a collection sees of
    // a cgroup removed between the listing and the first read (on kernfs, reads on descriptors
    // kept from earlier collections fail with ENODEV instead: proxmox_real_root covers that).
    let (_dir, root) = fixture_copy();
    let shell = root.join("sys/fs/cgroup/lxc/105");
    std::fs::create_dir_all(&shell).unwrap();
    let env = synthetic::environment_for_tree(&root);
    let mut guests = proxmox::create("guests", &env).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert!(families_of(&snap, "105").is_empty(), "{:?}", families_of(&snap, "105"));
    assert!(!values(&snap, "container_cpu_usage_seconds_total", &[("container_id", "101")]).is_empty());
}

#[test]
fn synthetic_host_at_scale() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = synthetic::Spec::new(120);
    spec.stopped = 5;
    let host = synthetic::generate(dir.path(), &spec).unwrap();
    let env = host.environment();
    let mut guests = proxmox::create("guests", &env).unwrap();
    for round in 0..3 {
        let (snap, result) = collect_with(guests.as_mut());
        result.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(values(&snap, "container_cpu_usage_seconds_total", &[]).len(), 120);
        assert_eq!(values(&snap, "pve_guest_info", &[("status", "stopped")]).len(), 5);
        for g in &host.guests {
            let id = g.vmid.to_string();
            let base = [
                ("container_id", id.as_str()),
                ("host_name", g.name.as_str()),
                ("type", g.kind.as_str()),
            ];
            assert_eq!(
                one(&snap, "container_cpu_usage_seconds_total", &base),
                g.usage_usec as f64 / 1e6
            );
            assert_eq!(
                one(&snap, "container_memory_usage_bytes", &base),
                g.memory_current as f64
            );
            assert_eq!(
                one(&snap, "container_memory_working_set_bytes", &base),
                (g.memory_current - g.inactive_file) as f64
            );
            assert_eq!(
                one(&snap, "container_memory_pve_used_bytes", &base),
                (g.memory_current - g.file) as f64
            );
            assert_eq!(
                values(&snap, "container_spec_memory_limit_bytes", &base),
                g.memory_max.map(|v| v as f64).into_iter().collect::<Vec<_>>()
            );
            assert_eq!(one(&snap, "container_processes", &base), g.processes as f64);
            assert_eq!(one(&snap, "container_threads", &base), g.pids_current as f64);
            assert_eq!(
                one(&snap, "container_network_transmit_bytes_total", &base),
                g.host_rx_bytes as f64
            );
            assert_eq!(
                one(&snap, "container_network_receive_bytes_total", &base),
                g.host_tx_bytes as f64
            );
        }
    }
}

/// The subtree of a guest is listed again when `cgroup.stat` says its shape changed, and only
/// then: an inner cgroup whose controllers are disabled can hold processes, and a 6.11+ kernel
/// shows that in `nr_subsys_*` (the synthetic tree prints those lines).
#[test]
fn a_subtree_is_walked_again_when_cgroup_stat_changes_shape() {
    let dir = tempfile::tempdir().unwrap();
    let host = synthetic::generate(dir.path(), &synthetic::Spec::new(1)).unwrap();
    let env = host.environment();
    let guest = &host.guests[0];
    assert_eq!(guest.kind.as_str(), "lxc");
    let id = guest.vmid.to_string();
    let cgroup = env.cgroup_path.clone().unwrap().join(format!("lxc/{id}"));
    let processes = |snap: &Snapshot| one(snap, "container_processes", &[("container_id", id.as_str())]);
    let mut guests = proxmox::create("guests", &env).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    let before = processes(&snap);
    assert!(before > 0.0);

    // system.slice loses its controllers and gets a process of its own.
    let slice = cgroup.join("ns/system.slice");
    std::fs::write(slice.join("cgroup.subtree_control"), "").unwrap();
    std::fs::write(slice.join("cgroup.procs"), "4242424\n").unwrap();
    // cgroup.stat unchanged: the cgroups listed at the last walk are read, nothing else.
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(processes(&snap), before);
    // The kernel counts the controller states that went away below system.slice (its units
    // and slices lost their memory and pids states).
    let below = std::fs::read_to_string(slice.join("cgroup.stat")).unwrap();
    let below: u64 = below.lines().next().unwrap()["nr_descendants ".len()..]
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(cgroup.join("cgroup.stat")).unwrap();
    let changed: String = stat
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((key @ ("nr_subsys_memory" | "nr_subsys_pids"), value)) => {
                format!("{key} {}\n", value.parse::<u64>().unwrap() - below)
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert_ne!(changed, stat);
    std::fs::write(cgroup.join("cgroup.stat"), changed).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(processes(&snap), before + 1.0);
}

/// Limits are read again when the guest's config changes (`pct set` writes both), and at least
/// every eighth collection otherwise (a limit written to cgroupfs directly).
#[test]
fn a_changed_limit_is_seen_at_the_next_config_change_or_within_eight_collections() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = synthetic::Spec::new(1);
    spec.stopped = 0;
    let host = synthetic::generate(dir.path(), &spec).unwrap();
    let env = host.environment();
    let guest = &host.guests[0];
    let id = guest.vmid.to_string();
    let cgroup = env.cgroup_path.clone().unwrap().join(format!("lxc/{id}"));
    let limit = |snap: &Snapshot| {
        values(
            snap,
            "container_spec_memory_limit_bytes",
            &[("container_id", id.as_str())],
        )
    };
    let mut guests = proxmox::create("guests", &env).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    let before = limit(&snap);

    // Written to cgroupfs only: seen within eight collections.
    std::fs::write(cgroup.join("memory.max"), "1073741824\n").unwrap();
    let mut seen_after = None;
    for n in 1..=8 {
        let (snap, result) = collect_with(guests.as_mut());
        result.unwrap();
        if limit(&snap) == [1073741824.0] {
            seen_after = Some(n);
            break;
        }
        assert_eq!(limit(&snap), before, "collection {n}: the last value read, repeated");
    }
    assert!(
        seen_after.is_some(),
        "memory.max written directly not seen in 8 collections"
    );

    // With the config: at the next collection.
    std::fs::write(cgroup.join("memory.max"), "2147483648\n").unwrap();
    let conf = env.pve_path.join(format!("lxc/{id}.conf"));
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("memory: 2048\n");
    std::fs::write(&conf, text).unwrap();
    let (snap, result) = collect_with(guests.as_mut());
    result.unwrap();
    assert_eq!(limit(&snap), [2147483648.0]);
}
