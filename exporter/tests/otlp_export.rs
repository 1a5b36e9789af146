//! OTLP push end to end against an in-process receiver on 127.0.0.1: names, units,
//! attributes and resources as specified, start times that hold across exports and restart on
//! a counter reset, and values equal to the snapshot's (the values /metrics serves). Start
//! times from a host tree with a known boot and known process starts: the node's counters
//! start at boot, a guest's at its first process's start, the rest at their first observation.

mod otlp_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter::collectors::{self, proxmox::synthetic};
use metrics_exporter::engine::Engine;
use metrics_exporter::model::Identity;
use metrics_exporter::platform::Platform;

use metrics_exporter::model::{Scope, Snapshot, Value};
use metrics_exporter::otlp::convert::{otel_name, unix_nanos};
use metrics_exporter::otlp::{OtlpHealth, run};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, ResourceMetrics, metric, number_data_point,
};
use otlp_support::*;
use tokio::sync::{oneshot, watch};

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    let value = attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    match value {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn resource_of<'a>(request: &'a ExportMetricsServiceRequest, container: Option<&str>) -> &'a ResourceMetrics {
    request
        .resource_metrics
        .iter()
        .find(|r| attr(&r.resource.as_ref().unwrap().attributes, "container.id") == container)
        .unwrap_or_else(|| panic!("no resource for container {container:?}"))
}

fn metric<'a>(resource: &'a ResourceMetrics, name: &str) -> &'a Metric {
    resource.scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// (start, time, value) of the data point whose attribute `key` is `value` (or the only one).
fn point(metric: &Metric, key: Option<(&str, &str)>) -> (u64, u64, f64) {
    let points = match metric.data.as_ref().unwrap() {
        metric::Data::Sum(s) => &s.data_points,
        metric::Data::Gauge(g) => &g.data_points,
        other => panic!("{}: not a number metric: {other:?}", metric.name),
    };
    let p = points
        .iter()
        .find(|p| key.is_none_or(|(k, v)| attr(&p.attributes, k) == Some(v)))
        .unwrap_or_else(|| panic!("{}: no point {key:?}", metric.name));
    let Some(number_data_point::Value::AsDouble(v)) = p.value else {
        panic!("double")
    };
    (p.start_time_unix_nano, p.time_unix_nano, v)
}

struct Running {
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    health: Arc<OtlpHealth>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(config: metrics_exporter::otlp::OtlpConfig) -> Running {
        let (publish, snapshots) = watch::channel(None);
        let health = Arc::new(OtlpHealth::new(&config.endpoint));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, snapshots, health.clone(), async {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move { task.await.unwrap().expect("pusher starts") });
        Running {
            publish,
            health,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_names_units_resources_start_times_and_values() {
    let receiver = Receiver::start().await;
    let exporter = Running::start(config(&receiver.endpoint(), |_| {}));

    let mut sent = Vec::new();
    for sequence in 1..=3 {
        let snapshot = Arc::new(snapshot(sequence, 10.0 * sequence as f64));
        sent.push(snapshot.clone());
        exporter.publish.send_replace(Some(snapshot));
        eventually("export delivered", || receiver.received().len() == sequence as usize).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received: Vec<_> = receiver.received().into_iter().map(|r| r.request).collect();

    // Resources: the node, then one per guest with its identity.
    let first = &received[0];
    assert_eq!(first.resource_metrics.len(), 3);
    let node = resource_of(first, None).resource.as_ref().unwrap();
    assert_eq!(attr(&node.attributes, "service.name"), Some("otlp-test"));
    assert_eq!(attr(&node.attributes, "service.version"), Some("9.9.9"));
    assert_eq!(attr(&node.attributes, "service.instance.id"), Some("pve1"));
    assert_eq!(attr(&node.attributes, "host.name"), Some("pve1"));
    let web = resource_of(first, Some("101"));
    let web_attrs = &web.resource.as_ref().unwrap().attributes;
    assert_eq!(attr(web_attrs, "container.name"), Some("web"));
    assert_eq!(attr(web_attrs, "host.name"), Some("pve1"));
    assert_eq!(attr(web_attrs, "service.name"), Some("otlp-test"));
    assert_eq!(web.scope_metrics[0].scope.as_ref().unwrap().name, "metrics-exporter");

    // Names and units: semantic conventions where declared, project namespace otherwise.
    let node_rm = resource_of(first, None);
    for (name, unit) in [
        ("system.memory.usage", "By"),
        ("system.network.io", "By"),
        ("node.processes_total", "{process}"),
    ] {
        assert_eq!(metric(node_rm, name).unit, unit, "{name}");
    }
    for (name, unit) in [
        ("container.cpu.time", "s"),
        ("container.memory.usage", "By"),
        ("metrics_exporter.container.pressure_cpu_waiting", "s"),
        ("proxmox.guest_info", "1"),
        ("metrics_exporter.container.runqueue_latency", "s"),
    ] {
        assert_eq!(metric(web, name).unit, unit, "{name}");
    }

    // Attributes: declared names, fixed ones, and no guest identity on the points.
    let rx = metric(node_rm, "system.network.io");
    let Some(metric::Data::Sum(sum)) = &rx.data else {
        panic!("sum")
    };
    assert!(sum.is_monotonic);
    assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
    assert_eq!(
        attr(&sum.data_points[0].attributes, "network.interface.name"),
        Some("eth0")
    );
    assert_eq!(
        attr(&sum.data_points[0].attributes, "network.io.direction"),
        Some("receive")
    );
    let mem = metric(node_rm, "system.memory.usage");
    let Some(metric::Data::Gauge(gauge)) = &mem.data else {
        panic!("gauge")
    };
    assert_eq!(
        attr(&gauge.data_points[0].attributes, "system.memory.state"),
        Some("used")
    );
    let cpu = metric(web, "container.cpu.time");
    let Some(metric::Data::Sum(sum)) = &cpu.data else {
        panic!("sum")
    };
    let keys: Vec<_> = sum.data_points[0].attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["cpu.mode"]);
    let info = metric(web, "proxmox.guest_info");
    assert!(matches!(info.data, Some(metric::Data::Gauge(_))));
    let runq = metric(web, "metrics_exporter.container.runqueue_latency");
    let Some(metric::Data::Histogram(h)) = &runq.data else {
        panic!("histogram")
    };
    assert_eq!(h.aggregation_temporality, AggregationTemporality::Cumulative as i32);
    assert_eq!(h.data_points[0].explicit_bounds, [0.0001, 0.001, 0.01]);
    assert_eq!(h.data_points[0].bucket_counts, [10, 5, 2, 1]);
    assert_eq!((h.data_points[0].count, h.data_points[0].sum), (18, Some(0.003)));

    // Start times: the first point is a reset point (start == time); later ones keep that
    // start, which is then earlier than their sample time.
    let starts: Vec<_> = received
        .iter()
        .map(|r| {
            point(
                metric(resource_of(r, Some("101")), "container.cpu.time"),
                Some(("cpu.mode", "user")),
            )
        })
        .collect();
    assert_eq!(starts[0].0, starts[0].1);
    for (i, (start, time, _)) in starts.iter().enumerate() {
        assert_eq!(*start, starts[0].0, "export {i}: start time held");
        assert_eq!(
            *time,
            unix_nanos(sent[i].timestamp),
            "export {i}: sample time is the collection's"
        );
        if i > 0 {
            assert!(start < time, "export {i}: start earlier than the sample");
        }
    }
    let rx_starts: Vec<_> = received
        .iter()
        .map(|r| point(metric(resource_of(r, None), "system.network.io"), None).0)
        .collect();
    assert!(rx_starts.iter().all(|s| *s == rx_starts[0]));

    // Values: every series of every snapshot arrives with the snapshot's value.
    for (snapshot, request) in sent.iter().zip(&received) {
        for family in &snapshot.families {
            let name = otel_name(family.desc);
            for sample in &family.samples {
                let container = match family.desc.scope {
                    Scope::Guest => Some(&*sample.labels[0]),
                    Scope::Node => None,
                };
                let m = metric(resource_of(request, container), &name);
                match &sample.value {
                    Value::Number(expected) => {
                        let key = family
                            .desc
                            .labels
                            .iter()
                            .position(|l| *l == "mode" || *l == "device")
                            .map(|i| {
                                let attribute = family.desc.otel.as_ref().unwrap().attributes[i];
                                (attribute, &*sample.labels[i])
                            });
                        assert_eq!(point(m, key).2, *expected, "{name} {:?}", sample.labels);
                    }
                    Value::Histogram(expected) => {
                        let Some(metric::Data::Histogram(h)) = &m.data else {
                            panic!()
                        };
                        assert_eq!(h.data_points[0].count, expected.count);
                        assert_eq!(h.data_points[0].sum, Some(expected.sum));
                    }
                }
            }
        }
    }
    assert!(exporter.health.is_healthy());
    assert_eq!(exporter.health.status().exports_success, 3);
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_counter_reset_gets_a_new_start_time() {
    let receiver = Receiver::start().await;
    let exporter = Running::start(config(&receiver.endpoint(), |_| {}));
    // Guest 101 restarts between the second and third collection: its CPU counter falls.
    for (sequence, cpu) in [(1, 500.0), (2, 510.0), (3, 2.0), (4, 3.0)] {
        exporter.publish.send_replace(Some(Arc::new(snapshot(sequence, cpu))));
        eventually("export delivered", || receiver.received().len() == sequence as usize).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user = |r: &otlp_support::Received| {
        point(
            metric(resource_of(&r.request, Some("101")), "container.cpu.time"),
            Some(("cpu.mode", "user")),
        )
    };
    let other = |r: &otlp_support::Received| {
        point(
            metric(resource_of(&r.request, Some("102")), "container.cpu.time"),
            Some(("cpu.mode", "user")),
        )
    };
    let received = receiver.received();
    let points: Vec<_> = received.iter().map(user).collect();
    assert_eq!(points[0].0, points[1].0);
    assert!(points[2].0 > points[1].0, "reset: new start");
    assert_eq!(points[2].0, points[2].1, "the reset point starts at its own time");
    assert_eq!(points[3].0, points[2].0, "the new start holds");
    assert!(points[3].0 < points[3].1);
    assert_eq!(points.iter().map(|p| p.2).collect::<Vec<_>>(), [500.0, 510.0, 2.0, 3.0]);
    // The other guest did not restart.
    let others: Vec<_> = received.iter().map(other).collect();
    assert!(others.iter().all(|p| p.0 == others[0].0));
    exporter.shutdown().await;
}

/// A `/proc/<pid>/stat` line of a process started `ticks` clock ticks after boot.
fn proc_stat(pid: u32, ticks: u64) -> String {
    format!("{pid} (some (odd) name) S 1 {pid} {pid} 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 1 0 {ticks} 1000 10 1\n")
}

/// A copy of the fixture tree `name` in a temporary directory.
fn fixture_copy(name: &str) -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name);
    let tree = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture.join("."))
        .arg(tree.path())
        .status()
        .unwrap();
    assert!(status.success(), "copy of the fixture {name}");
    tree
}

/// The Proxmox host fixture copied to a temporary tree, whose `proc/stat` says the host booted
/// at 1732185325, with `/proc/<pid>/stat` for: the exporter itself (123.45 s after boot);
/// container 101's init, the process of `ns/init.scope` (2500 s after boot), and an older
/// process deeper in its tree that is not its init (a service 10 s after boot, impossible in a
/// real guest but a trap for a reader that takes the oldest of all); VM 200's QEMU process,
/// the process of `qemu.slice/200.scope` (3600.12 s after boot). Container 102's processes
/// have no entry: its start cannot be known.
fn host_tree() -> tempfile::TempDir {
    let tree = fixture_copy("proxmox-host");
    let proc = tree.path().join("proc");
    let cgroup = tree.path().join("sys/fs/cgroup");
    let first_line = |path: &Path| -> u32 {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let init_101 = first_line(&cgroup.join("lxc/101/ns/init.scope/cgroup.procs"));
    let cron_101 = first_line(&cgroup.join("lxc/101/ns/system.slice/cron.service/cgroup.procs"));
    let qemu_200 = first_line(&cgroup.join("qemu.slice/200.scope/cgroup.procs"));
    for (pid, ticks) in [
        ("self".to_owned(), 12_345),
        (init_101.to_string(), 250_000),
        (cron_101.to_string(), 1_000),
        (qemu_200.to_string(), 360_012),
    ] {
        let pid_number = pid.parse().unwrap_or(4242);
        std::fs::create_dir_all(proc.join(&pid)).unwrap();
        std::fs::write(proc.join(&pid).join("stat"), proc_stat(pid_number, ticks)).unwrap();
    }
    tree
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_start_times_are_boot_guest_start_or_first_observation() {
    // The expectations below are in ticks of 10 ms: USER_HZ is 100 on every Linux architecture.
    // SAFETY: sysconf has no preconditions.
    assert_eq!(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }, 100);
    const SECOND: u64 = 1_000_000_000;
    const BOOT: u64 = 1_732_185_325 * SECOND;
    let tree = host_tree();
    let env = synthetic::environment_for_tree(tree.path());
    let built = ["cpu", "network", "guests"].map(|name| collectors::create(name, &env).unwrap());
    let identity = Identity {
        host_name: "pve1".into(),
        container_id: None,
        instance: "pve1".into(),
    };
    let mut engine = Engine::new(
        built.into_iter().collect(),
        Arc::new(identity),
        env.proc_path.clone(),
        Platform::Proxmox.as_str(),
    );
    let receiver = Receiver::start().await;
    let exporter = Running::start(config(&receiver.endpoint(), |_| {}));
    let mut times = Vec::new();
    for sequence in 1..=2 {
        let collection = engine.collect();
        assert!(
            collection.outcomes.iter().all(|o| o.success),
            "{:?}",
            collection.outcomes
        );
        times.push(unix_nanos(collection.snapshot.timestamp));
        exporter.publish.send_replace(Some(collection.snapshot));
        eventually("export delivered", || receiver.received().len() == sequence).await;
    }

    let user = Some(("cpu.mode", "user"));
    for (request, time) in receiver.received().iter().map(|r| &r.request).zip(&times) {
        let node = resource_of(request, None);
        let start = |resource, name, key| {
            let (start, at, _) = point(metric(resource, name), key);
            assert_eq!(at, *time, "{name}: the collection's time");
            start
        };
        assert_eq!(start(node, "system.cpu.time", user), BOOT, "host CPU: boot");
        assert_eq!(start(node, "system.network.io", None), BOOT, "host network: boot");
        assert_eq!(
            start(node, "metrics_exporter.collections", None),
            BOOT + 123 * SECOND + 450_000_000,
            "the exporter's own counter: its process start"
        );
        assert_eq!(
            start(resource_of(request, Some("101")), "container.cpu.time", user),
            BOOT + 2500 * SECOND,
            "container: its init's start"
        );
        assert_eq!(
            start(resource_of(request, Some("200")), "container.cpu.time", user),
            BOOT + 3600 * SECOND + 120_000_000,
            "VM: its QEMU process's start"
        );
        assert_eq!(
            start(resource_of(request, Some("102")), "container.cpu.time", user),
            times[0],
            "unknown start: the first observation, held"
        );
        // The same starts as a gauge, which /metrics serves too; absent where unknown.
        let started = |container| {
            point(
                metric(resource_of(request, Some(container)), "proxmox.guest_start_time"),
                None,
            )
            .2
        };
        assert_eq!(started("101"), Duration::new(1_732_185_325 + 2500, 0).as_secs_f64());
        assert_eq!(
            started("200"),
            Duration::new(1_732_185_325 + 3600, 120_000_000).as_secs_f64()
        );
        let ct_102 = &resource_of(request, Some("102")).scope_metrics[0].metrics;
        assert!(ct_102.iter().all(|m| m.name != "proxmox.guest_start_time"));
    }
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_start_times_in_a_container_are_the_containers_start() {
    // SAFETY: sysconf has no preconditions.
    assert_eq!(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }, 100);
    const SECOND: u64 = 1_000_000_000;
    // The container fixture's proc/stat says btime 1732185325 (the host's, as lxcfs passes it
    // through); its init, PID 1 of its namespace, started 2500.5 s after that boot.
    const STARTED: u64 = 1_732_185_325 * SECOND + 2500 * SECOND + 500_000_000;
    let tree = fixture_copy("lxc-container");
    let root = tree.path();
    std::fs::write(root.join("proc/1/stat"), proc_stat(1, 250_050)).unwrap();
    let mounts = std::fs::read_to_string(root.join("proc/self/mountinfo"))
        .map(|text| metrics_exporter::parse::mountinfo::parse(&text).unwrap())
        .unwrap();
    let env = collectors::Environment {
        platform: Platform::Lxc,
        proc_path: root.join("proc"),
        sys_path: root.join("sys"),
        root_path: root.to_path_buf(),
        cgroup_path: Some(root.join("sys/fs/cgroup")),
        pve_path: root.join("etc/pve"),
        mounts,
        local_configs: Default::default(),
    };
    let built = ["cpu", "network"].map(|name| collectors::create(name, &env).unwrap());
    let mut engine = Engine::new(
        built.into_iter().collect(),
        Arc::default(),
        env.proc_path.clone(),
        Platform::Lxc.as_str(),
    );
    let receiver = Receiver::start().await;
    let exporter = Running::start(config(&receiver.endpoint(), |_| {}));
    let collection = engine.collect();
    assert!(
        collection.outcomes.iter().all(|o| o.success),
        "{:?}",
        collection.outcomes
    );
    let time = unix_nanos(collection.snapshot.timestamp);
    exporter.publish.send_replace(Some(collection.snapshot));
    eventually("export delivered", || receiver.received().len() == 1).await;
    let request = receiver.received().remove(0).request;
    let node = resource_of(&request, None);
    for (name, key) in [
        ("system.cpu.time", Some(("cpu.mode", "user"))),
        ("system.network.io", Some(("network.interface.name", "eth0"))),
    ] {
        let (start, at, _) = point(metric(node, name), key);
        assert_eq!(
            (start, at),
            (STARTED, time),
            "{name}: the container's counters start with the container"
        );
    }
    exporter.shutdown().await;
}
