//! One collection: run every enabled collector, isolate and time each one, add the
//! exporter's own metrics, and finish an immutable [`Snapshot`].
//!
//! Reads `/proc/self/stat`, `/proc/self/statm` and `/proc/self/fd` (through `PROC_PATH`) for
//! the process metrics, and `/proc/stat` `btime` (plus `/proc/1/stat` in a container) for the
//! start of the node's counters. Produces `metrics_exporter_*` and `process_*` series, and
//! declares since when every node counter has been counting ([`starts::declare_node_starts`]).
//! Synchronous by design: the run loop calls [`Engine::collect`] on a blocking thread.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::collectors::Collector;
use crate::model::{Identity, Kind, MetricDesc, Scope, Snapshot, SnapshotBuilder, Unit};
use crate::starts;

static COLLECTOR_DURATION: MetricDesc = MetricDesc {
    name: "metrics_exporter_collector_duration_seconds",
    help: "Wall time the collector took in the last collection.",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &["collector"],
    scope: Scope::Node,
    otel: None,
};
static COLLECTOR_SUCCESS: MetricDesc = MetricDesc {
    name: "metrics_exporter_collector_success",
    help: "1 if the collector succeeded in the last collection, 0 if it failed.",
    kind: Kind::Gauge,
    unit: Unit::Ratio,
    labels: &["collector"],
    scope: Scope::Node,
    otel: None,
};
static COLLECTIONS: MetricDesc = MetricDesc {
    name: "metrics_exporter_collections_total",
    help: "Collections run since the exporter started.",
    kind: Kind::Counter,
    unit: Unit::Count("{collection}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};
static COLLECTION_ERRORS: MetricDesc = MetricDesc {
    name: "metrics_exporter_collection_errors_total",
    help: "Collector failures (errors and panics) since the exporter started.",
    kind: Kind::Counter,
    unit: Unit::Count("{error}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};
static COLLECTION_DURATION: MetricDesc = MetricDesc {
    name: "metrics_exporter_collection_duration_seconds",
    help: "Wall time of the last whole collection.",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    scope: Scope::Node,
    otel: None,
};
static LAST_COLLECTION: MetricDesc = MetricDesc {
    name: "metrics_exporter_last_collection_timestamp_seconds",
    help: "Unix time at which the last collection started.",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    scope: Scope::Node,
    otel: None,
};
static BUILD_INFO: MetricDesc = MetricDesc {
    name: "metrics_exporter_build_info",
    help: "Version and platform of this exporter.",
    kind: Kind::Info,
    unit: Unit::Ratio,
    labels: &["version", "platform", "ebpf"],
    scope: Scope::Node,
    otel: None,
};
static INSTANCE_INFO: MetricDesc = MetricDesc {
    name: "metrics_exporter_instance_info",
    help: "The seed's instance identifier (host_name:container_id), kept out of the instance target label.",
    kind: Kind::Info,
    unit: Unit::Ratio,
    labels: &["instance"],
    scope: Scope::Node,
    otel: None,
};
static PROCESS_CPU: MetricDesc = MetricDesc {
    name: "process_cpu_seconds_total",
    help: "User and system CPU time of the exporter process.",
    kind: Kind::Counter,
    unit: Unit::Seconds,
    labels: &[],
    scope: Scope::Node,
    otel: Some(crate::model::OtelName {
        name: "process.cpu.time",
        attributes: &[],
        fixed: &[],
    }),
};
static PROCESS_RSS: MetricDesc = MetricDesc {
    name: "process_resident_memory_bytes",
    help: "Resident set size of the exporter process.",
    kind: Kind::Gauge,
    unit: Unit::Bytes,
    labels: &[],
    scope: Scope::Node,
    otel: Some(crate::model::OtelName {
        name: "process.memory.usage",
        attributes: &[],
        fixed: &[],
    }),
};
static PROCESS_FDS: MetricDesc = MetricDesc {
    name: "process_open_fds",
    help: "Open file descriptors of the exporter process.",
    kind: Kind::Gauge,
    unit: Unit::Count("{file_descriptor}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};
static PROCESS_START: MetricDesc = MetricDesc {
    name: "process_start_time_seconds",
    help: "Unix time at which the exporter process started.",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

/// Something outside the collectors that reports its own metrics into every snapshot
/// (the OTLP pusher, the eBPF runtime, the file writer).
pub trait SelfMetrics: Send + Sync {
    fn add(&self, out: &mut SnapshotBuilder);
}

/// What happened to one collector in one collection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CollectorOutcome {
    pub name: &'static str,
    pub duration_seconds: f64,
    pub success: bool,
    pub error: Option<String>,
    pub series: usize,
}

/// The result of one collection.
#[derive(Debug, Clone)]
pub struct Collection {
    pub snapshot: Arc<Snapshot>,
    pub outcomes: Vec<CollectorOutcome>,
    pub duration: Duration,
}

impl Collection {
    /// True when at least one collector succeeded (or none is enabled).
    pub fn any_success(&self) -> bool {
        self.outcomes.is_empty() || self.outcomes.iter().any(|o| o.success)
    }
}

/// Owns the collectors and the counters about them.
pub struct Engine {
    collectors: Vec<Box<dyn Collector>>,
    identity: Arc<Identity>,
    proc_path: PathBuf,
    proc_self: PathBuf,
    platform: &'static str,
    /// The node is an LXC container: its counters start with the container, not the boot.
    in_container: bool,
    /// `btime` and the node's start, kept from their first successful read: neither changes
    /// while the exporter runs, but the kernel prints `btime` as the wall clock minus the
    /// uptime, truncated to seconds, so a clock slewed across a second boundary would make a
    /// fresh read differ by a second and restart every node series in OTLP.
    boot: Option<u64>,
    node_start: Option<SystemTime>,
    ebpf_label: String,
    sequence: u64,
    errors_total: u64,
    self_metrics: Vec<Arc<dyn SelfMetrics>>,
    /// Per collector: whether its last run failed, so a failing collector logs on each change
    /// of state and not on every tick.
    failing: Vec<bool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.collectors.iter().map(|c| c.name()).collect();
        f.debug_struct("Engine")
            .field("collectors", &names)
            .field("sequence", &self.sequence)
            .finish()
    }
}

impl Engine {
    pub fn new(
        collectors: Vec<Box<dyn Collector>>,
        identity: Arc<Identity>,
        proc_path: PathBuf,
        platform: &'static str,
    ) -> Self {
        let failing = vec![false; collectors.len()];
        Engine {
            collectors,
            identity,
            proc_self: proc_path.join("self"),
            proc_path,
            in_container: platform == crate::platform::Platform::Lxc.as_str(),
            boot: None,
            node_start: None,
            platform,
            ebpf_label: "no".into(),
            sequence: 0,
            errors_total: 0,
            self_metrics: Vec::new(),
            failing,
        }
    }

    /// Value of the `ebpf` label of `metrics_exporter_build_info` (e.g. `yes`, `no`).
    pub fn set_ebpf_label(&mut self, label: impl Into<String>) {
        self.ebpf_label = label.into();
    }

    pub fn add_self_metrics(&mut self, source: Arc<dyn SelfMetrics>) {
        self.self_metrics.push(source);
    }

    pub fn collector_names(&self) -> Vec<&'static str> {
        self.collectors.iter().map(|c| c.name()).collect()
    }

    /// Notes of every collector, for /status.
    pub fn notes(&self) -> Vec<(&'static str, Vec<String>)> {
        self.collectors.iter().map(|c| (c.name(), c.notes())).collect()
    }

    /// Runs one collection. Never panics because of a collector.
    pub fn collect(&mut self) -> Collection {
        let started = Instant::now();
        let timestamp = SystemTime::now();
        self.sequence += 1;
        let mut out = SnapshotBuilder::new();
        let mut outcomes = Vec::with_capacity(self.collectors.len());
        for (index, collector) in self.collectors.iter_mut().enumerate() {
            let name = collector.name();
            let mut part = SnapshotBuilder::new();
            let t0 = Instant::now();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| collector.collect(&mut part)));
            let duration = t0.elapsed();
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Some(format!("panicked: {message}"))
                }
            };
            match (&error, self.failing[index]) {
                (Some(e), false) => tracing::warn!(collector = name, error = %e, "collector failed"),
                (None, true) => tracing::info!(collector = name, "collector recovered"),
                _ => {}
            }
            self.failing[index] = error.is_some();
            if error.is_some() {
                self.errors_total += 1;
            }
            let series = part.series_count();
            out.append(part);
            outcomes.push(CollectorOutcome {
                name,
                duration_seconds: duration.as_secs_f64(),
                success: error.is_none(),
                error,
                series,
            });
        }
        for outcome in &outcomes {
            out.push(&COLLECTOR_DURATION, [outcome.name], outcome.duration_seconds);
            out.push(
                &COLLECTOR_SUCCESS,
                [outcome.name],
                if outcome.success { 1.0 } else { 0.0 },
            );
        }
        out.push(&COLLECTIONS, [] as [&str; 0], self.sequence as f64);
        out.push(&COLLECTION_ERRORS, [] as [&str; 0], self.errors_total as f64);
        let unix = timestamp
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        out.push(&LAST_COLLECTION, [] as [&str; 0], unix);
        out.push(
            &BUILD_INFO,
            [env!("CARGO_PKG_VERSION"), self.platform, self.ebpf_label.as_str()],
            1.0,
        );
        out.push(&INSTANCE_INFO, [self.identity.instance.as_str()], 1.0);
        if self.boot.is_none() {
            self.boot = starts::read_boot_seconds(&self.proc_path).ok();
        }
        let boot = self.boot;
        let exporter_start = self.add_process_metrics(&mut out, boot);
        for source in &self.self_metrics {
            source.add(&mut out);
        }
        if self.node_start.is_none() {
            self.node_start =
                boot.and_then(|boot| starts::read_node_start(&self.proc_path, boot, self.in_container).ok());
        }
        starts::declare_node_starts(&mut out, self.node_start, exporter_start);
        let duration = started.elapsed();
        out.push(&COLLECTION_DURATION, [] as [&str; 0], duration.as_secs_f64());
        let snapshot = Arc::new(out.finish(Arc::clone(&self.identity), timestamp, self.sequence));
        Collection {
            snapshot,
            outcomes,
            duration,
        }
    }

    /// The exporter's own CPU, RSS, fds and start time, given `btime`; returns the start. A
    /// value that cannot be read is absent.
    fn add_process_metrics(&self, out: &mut SnapshotBuilder, boot: Option<u64>) -> Option<SystemTime> {
        let none = [] as [&str; 0];
        let stat = std::fs::read_to_string(self.proc_self.join("stat")).ok();
        let mut start = None;
        if let Some(p) = stat.as_deref().and_then(parse_self_stat) {
            let ticks = clock_ticks();
            out.push(&PROCESS_CPU, none, (p.utime + p.stime) as f64 / ticks);
            if let Some(boot) = boot {
                let at = starts::instant(boot, p.starttime, starts::ticks_per_second());
                let unix = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                out.push(&PROCESS_START, none, unix.as_secs_f64());
                start = Some(at);
            }
        }
        let statm = std::fs::read_to_string(self.proc_self.join("statm")).ok();
        if let Some(resident) = statm
            .as_deref()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            out.push(&PROCESS_RSS, none, (resident * page_size()) as f64);
        }
        if let Ok(entries) = std::fs::read_dir(self.proc_self.join("fd")) {
            out.push(&PROCESS_FDS, none, entries.count() as f64);
        }
        start
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq, Eq)]
pub struct SelfStat {
    pub utime: u64,
    pub stime: u64,
    pub starttime: u64,
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses, so
/// fields are counted after the last `)`.
pub fn parse_self_stat(text: &str) -> Option<SelfStat> {
    let fields: Vec<&str> = crate::parse::pid_stat_fields(text)?.collect();
    // After ")" the first field is state (field 3); utime is field 14, stime 15, starttime 22.
    Some(SelfStat {
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CollectError;

    struct Fixed(&'static str, f64);
    impl Collector for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
            out.push(&PROCESS_START, [] as [&str; 0], self.1);
            Ok(())
        }
    }
    struct Failing;
    impl Collector for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn collect(&mut self, _: &mut SnapshotBuilder) -> Result<(), CollectError> {
            Err(CollectError::Vanished {
                path: "/proc/gone".into(),
            })
        }
    }
    struct Panicking;
    impl Collector for Panicking {
        fn name(&self) -> &'static str {
            "panicking"
        }
        fn collect(&mut self, _: &mut SnapshotBuilder) -> Result<(), CollectError> {
            panic!("boom")
        }
    }

    #[test]
    fn errors_and_panics_are_isolated_and_counted() {
        let collectors: Vec<Box<dyn Collector>> =
            vec![Box::new(Failing), Box::new(Panicking), Box::new(Fixed("fixed", 42.0))];
        let mut engine = Engine::new(collectors, Arc::default(), "/proc".into(), "host");
        let c = engine.collect();
        let c = if c.snapshot.sequence == 1 { engine.collect() } else { c };
        assert_eq!(c.snapshot.sequence, 2);
        assert!(c.any_success());
        let by_name = |n: &str| c.outcomes.iter().find(|o| o.name == n).unwrap().clone();
        assert!(!by_name("failing").success);
        assert_eq!(
            by_name("failing").error.as_deref(),
            Some("/proc/gone: not there (never was, or removed while being read)")
        );
        assert_eq!(by_name("panicking").error.as_deref(), Some("panicked: boom"));
        assert!(by_name("fixed").success);
        let errors = c.snapshot.family("metrics_exporter_collection_errors_total").unwrap();
        assert_eq!(errors.samples[0].value, crate::model::Value::Number(4.0));
        let success = c.snapshot.family("metrics_exporter_collector_success").unwrap();
        assert_eq!(success.samples.len(), 3);
    }

    static NODE_COUNTER: MetricDesc = MetricDesc {
        name: "node_test_seconds_total",
        help: "A kernel counter of the node.",
        kind: Kind::Counter,
        unit: Unit::Seconds,
        labels: &[],
        scope: Scope::Node,
        otel: None,
    };
    static GUEST_COUNTER: MetricDesc = MetricDesc {
        name: "container_test_seconds_total",
        help: "A guest counter.",
        kind: Kind::Counter,
        unit: Unit::Seconds,
        labels: &["container_id", "host_name", "type"],
        scope: Scope::Guest,
        otel: None,
    };
    struct Counters;
    impl Collector for Counters {
        fn name(&self) -> &'static str {
            "counters"
        }
        fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
            out.push(&NODE_COUNTER, [] as [&str; 0], 1.0);
            out.push(&GUEST_COUNTER, ["101", "web", "lxc"], 1.0);
            Ok(())
        }
    }

    /// A proc tree with btime 1700000000, the exporter started 12345 ticks after boot and the
    /// container's init 250 ticks after boot.
    fn proc_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("stat", "cpu  1 2 3 4 5 6 7 8 9 10\nbtime 1700000000\n");
        write(
            "self/stat",
            "77 (metrics-exporter) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15 16 17 18 12345 20\n",
        );
        write(
            "1/stat",
            "1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 250 1 1\n",
        );
        dir
    }

    #[test]
    fn node_counters_count_since_boot_or_container_start_and_own_since_process_start() {
        use crate::model::CountsSince;
        let hz = starts::ticks_per_second();
        let exporter = starts::instant(1_700_000_000, 12345, hz);
        for (platform, node) in [
            ("proxmox-host", starts::instant(1_700_000_000, 0, hz)),
            ("lxc-container", starts::instant(1_700_000_000, 250, hz)),
        ] {
            let dir = proc_tree();
            let mut engine = Engine::new(vec![Box::new(Counters)], Arc::default(), dir.path().into(), platform);
            let c = engine.collect();
            let since = |name: &str| c.snapshot.family(name).unwrap().since;
            assert_eq!(
                since("node_test_seconds_total"),
                CountsSince::Instant(node),
                "{platform}"
            );
            assert_eq!(
                since("metrics_exporter_collections_total"),
                CountsSince::Instant(exporter)
            );
            assert_eq!(since("process_cpu_seconds_total"), CountsSince::Instant(exporter));
            assert_eq!(
                since("container_test_seconds_total"),
                CountsSince::Unknown,
                "guest: not the node's"
            );
            assert_eq!(since("process_start_time_seconds"), CountsSince::Unknown, "a gauge");
        }
        // Read once: a btime that moves by a second (a slewed clock) does not move the starts.
        let dir = proc_tree();
        let mut engine = Engine::new(vec![Box::new(Counters)], Arc::default(), dir.path().into(), "host");
        let first = engine.collect().snapshot;
        std::fs::write(dir.path().join("stat"), "cpu  1 2 3 4 5 6 7 8 9 10\nbtime 1700000001\n").unwrap();
        let second = engine.collect().snapshot;
        for name in ["node_test_seconds_total", "process_cpu_seconds_total"] {
            assert_eq!(
                second.family(name).unwrap().since,
                first.family(name).unwrap().since,
                "{name}"
            );
        }
        // Without btime nothing is known, and nothing is made up.
        let dir = proc_tree();
        std::fs::write(dir.path().join("stat"), "cpu  1 2 3 4 5 6 7 8 9 10\n").unwrap();
        let mut engine = Engine::new(vec![Box::new(Counters)], Arc::default(), dir.path().into(), "host");
        let c = engine.collect();
        assert_eq!(
            c.snapshot.family("node_test_seconds_total").unwrap().since,
            CountsSince::Unknown
        );
        assert!(c.snapshot.family("process_start_time_seconds").is_none());
    }

    #[test]
    fn process_metrics_are_real() {
        let mut engine = Engine::new(Vec::new(), Arc::default(), "/proc".into(), "host");
        let c = engine.collect();
        let rss = c.snapshot.family("process_resident_memory_bytes").unwrap();
        let crate::model::Value::Number(rss) = rss.samples[0].value else {
            panic!()
        };
        assert!(rss > 1e6, "rss {rss}");
        let start = c.snapshot.family("process_start_time_seconds").unwrap();
        let crate::model::Value::Number(start) = start.samples[0].value else {
            panic!()
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(start <= now + 1.0 && start > now - 3600.0, "start {start} now {now}");
    }

    #[test]
    fn self_stat_with_parentheses_in_comm() {
        let line = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15 16 17 18 999 20";
        assert_eq!(
            parse_self_stat(line),
            Some(SelfStat {
                utime: 111,
                stime: 222,
                starttime: 999
            })
        );
        assert_eq!(parse_self_stat("garbage"), None);
    }

    /// Found by the proc_pid_stat fuzz target: a vertical tab split fields here (Unicode
    /// whitespace) but not in the guest-start reader, so the two disagreed on starttime.
    #[test]
    fn self_stat_splits_fields_like_the_start_reader() {
        let line = "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\x0b0 19 20";
        // "18\x0b0" is one field, so field 22 is "19" for both (it was "0" here before).
        assert_eq!(parse_self_stat(line).map(|s| s.starttime), Some(19));
        assert_eq!(crate::starts::parse_start_ticks(line).unwrap(), 19);
        let good = "1 (x) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15 16 17 18 999 20";
        assert_eq!(parse_self_stat(good).map(|s| s.starttime), Some(999));
        assert_eq!(crate::starts::parse_start_ticks(good).unwrap(), 999);
    }
}
