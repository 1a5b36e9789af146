//! One collection: run every enabled collector, isolate and time each one, add the
//! exporter's own metrics, and finish an immutable [`Snapshot`].
//!
//! Reads `/proc/self/stat`, `/proc/self/statm` and `/proc/self/fd` (through `PROC_PATH`) for
//! the process metrics, and `/proc/stat` `btime` (plus `/proc/1/stat` in a container) for the
//! start of the node's counters. Produces `metrics_exporter_*` and `process_*` series, and
//! declares since when every node counter has been counting ([`starts::declare_node_starts`]).
//! Synchronous by design: the run loop calls [`Engine::collect`] on a blocking thread.
//!
//! Collectors run one after another on a worker thread, each within a deadline
//! ([`collector_deadline`]). A collector still inside `collect` at its deadline (a read from a
//! hung mount, a FIFO without a writer: nothing in userspace can interrupt such a read) keeps
//! that worker: the collection goes on without its samples on a new worker, and the collector is
//! reported as timed out, without being asked again, until its call returns. So a hang costs
//! one collection one deadline, and at most one thread per collector.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
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
static COLLECTOR_TIMEOUTS: MetricDesc = MetricDesc {
    name: "metrics_exporter_collector_timeouts_total",
    help: "Collections in which the collector was still running at its deadline (a hung read), since the exporter started.",
    kind: Kind::Counter,
    unit: Unit::Count("{timeout}"),
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
    /// Wall time of its call; for a collector past its deadline, how long it has been in its
    /// current call.
    pub duration_seconds: f64,
    pub success: bool,
    pub error: Option<String>,
    pub series: usize,
    /// Still running at its deadline: this collection went on without it.
    pub timed_out: bool,
}

/// The least time a collector is given. Why: a collection of a 1000-guest host takes some
/// 100 ms; 5 s is far beyond any healthy collector even on a loaded machine, so a collector
/// past it is hung, not slow.
pub const MIN_COLLECTOR_DEADLINE: Duration = Duration::from_secs(5);

/// How long one collector may run before the collection goes on without it: half the
/// collection interval, so that a collection in which one collector newly hangs still publishes
/// before the next tick is due, and never less than [`MIN_COLLECTOR_DEADLINE`].
pub fn collector_deadline(interval: Duration) -> Duration {
    (interval / 2).max(MIN_COLLECTOR_DEADLINE)
}

/// One collector and what the engine knows of it.
struct Member {
    name: &'static str,
    slot: Slot,
    /// Whether its last run failed, so a failing collector logs on each change of state and
    /// not on every tick.
    failing: bool,
    timeouts: u64,
}

enum Slot {
    /// Between collections.
    Ready(Box<dyn Collector>),
    /// Inside a `collect` call that passed its deadline, since `since`, on a worker the engine
    /// let go; it comes back through the engine's `done` channel when the call returns.
    Stuck { since: Instant },
    /// Handed to the worker for the collection in progress.
    Running,
}

/// A collector to run, sent to the worker.
struct Job {
    index: usize,
    collector: Box<dyn Collector>,
}

/// A finished call, sent back by the worker.
struct Done {
    index: usize,
    collector: Box<dyn Collector>,
    part: SnapshotBuilder,
    error: Option<String>,
    duration: Duration,
}

/// Runs one collector, isolating a panic; the error text is what /status and the log show.
fn run_collector(collector: &mut dyn Collector) -> (SnapshotBuilder, Option<String>, Duration) {
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
    (part, error, duration)
}

/// Starts a worker thread that runs jobs until its job channel closes.
fn spawn_worker(done: mpsc::Sender<Done>) -> std::io::Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new().name("collector".into()).spawn(move || {
        while let Ok(Job { index, mut collector }) = queue.recv() {
            let (part, error, duration) = run_collector(collector.as_mut());
            let finished = Done {
                index,
                collector,
                part,
                error,
                duration,
            };
            if done.send(finished).is_err() {
                break;
            }
        }
    })?;
    Ok(jobs)
}

/// How a call on the worker ended.
enum Call {
    Finished(Done),
    TimedOut,
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
    members: Vec<Member>,
    /// The worker collectors run on; `None` until first needed and after one hung on it.
    worker: Option<mpsc::Sender<Job>>,
    /// Where every worker, current or let go, sends finished calls.
    done_tx: mpsc::Sender<Done>,
    done: mpsc::Receiver<Done>,
    deadline: Duration,
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
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.members.iter().map(|m| m.name).collect();
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
        let members = collectors
            .into_iter()
            .map(|c| Member {
                name: c.name(),
                slot: Slot::Ready(c),
                failing: false,
                timeouts: 0,
            })
            .collect();
        let (done_tx, done) = mpsc::channel();
        Engine {
            members,
            worker: None,
            done_tx,
            done,
            deadline: collector_deadline(Duration::from_secs(30)),
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
        }
    }

    /// How long each collector may run in a collection (see [`collector_deadline`]).
    pub fn set_collector_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    /// Value of the `ebpf` label of `metrics_exporter_build_info` (e.g. `yes`, `no`).
    pub fn set_ebpf_label(&mut self, label: impl Into<String>) {
        self.ebpf_label = label.into();
    }

    pub fn add_self_metrics(&mut self, source: Arc<dyn SelfMetrics>) {
        self.self_metrics.push(source);
    }

    pub fn collector_names(&self) -> Vec<&'static str> {
        self.members.iter().map(|m| m.name).collect()
    }

    /// Notes of every collector, for /status (none for one stuck in a call).
    pub fn notes(&self) -> Vec<(&'static str, Vec<String>)> {
        self.members
            .iter()
            .map(|m| match &m.slot {
                Slot::Ready(c) => (m.name, c.notes()),
                Slot::Stuck { .. } | Slot::Running => (m.name, Vec::new()),
            })
            .collect()
    }

    /// Takes back a collector whose hung call has returned; its late samples belong to a
    /// collection already published and are dropped.
    fn take_back(&mut self, done: Done) {
        let member = &mut self.members[done.index];
        if let Slot::Stuck { since } = member.slot {
            tracing::info!(
                collector = member.name,
                seconds = since.elapsed().as_secs_f64(),
                "collector returned from a call that passed its deadline"
            );
        }
        member.slot = Slot::Ready(done.collector);
    }

    /// Runs `collector` on the worker and waits until it returns or its deadline passes.
    fn call(&mut self, index: usize, collector: Box<dyn Collector>, started: Instant) -> Call {
        let mut job = Job { index, collector };
        // A worker is (re)started when there is none; if the system refuses a thread, the
        // collector runs here, without a deadline, rather than not at all.
        for _ in 0..2 {
            let worker = match self.worker.take() {
                Some(worker) => worker,
                None => match spawn_worker(self.done_tx.clone()) {
                    Ok(worker) => worker,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a collector thread; collecting without a deadline");
                        break;
                    }
                },
            };
            match worker.send(job) {
                Ok(()) => {
                    self.worker = Some(worker);
                    return self.wait(index, started);
                }
                Err(mpsc::SendError(back)) => job = back,
            }
        }
        let mut collector = job.collector;
        let (part, error, duration) = run_collector(collector.as_mut());
        Call::Finished(Done {
            index,
            collector,
            part,
            error,
            duration,
        })
    }

    fn wait(&mut self, index: usize, started: Instant) -> Call {
        let deadline = started + self.deadline;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(done) if done.index == index => return Call::Finished(done),
                Ok(late) => self.take_back(late),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // The worker is busy with this call for as long as it lasts: let it go
                    // (it ends once the call returns, as its job channel is closed).
                    self.worker = None;
                    return Call::TimedOut;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("the engine holds a sender"),
            }
        }
    }

    /// Runs one collection. Never panics because of a collector.
    pub fn collect(&mut self) -> Collection {
        let started = Instant::now();
        let timestamp = SystemTime::now();
        self.sequence += 1;
        let mut out = SnapshotBuilder::new();
        let mut outcomes = Vec::with_capacity(self.members.len());
        while let Ok(late) = self.done.try_recv() {
            self.take_back(late);
        }
        for index in 0..self.members.len() {
            let name = self.members[index].name;
            let t0 = Instant::now();
            let (part, error, duration, timed_out) =
                match std::mem::replace(&mut self.members[index].slot, Slot::Running) {
                    Slot::Ready(collector) => match self.call(index, collector, t0) {
                        Call::Finished(done) => {
                            self.members[index].slot = Slot::Ready(done.collector);
                            (Some(done.part), done.error, done.duration, false)
                        }
                        Call::TimedOut => {
                            self.members[index].slot = Slot::Stuck { since: t0 };
                            (None, Some(self.timed_out_message(t0)), t0.elapsed(), true)
                        }
                    },
                    Slot::Stuck { since } => {
                        self.members[index].slot = Slot::Stuck { since };
                        (None, Some(self.timed_out_message(since)), since.elapsed(), true)
                    }
                    Slot::Running => unreachable!("only one collection runs at a time"),
                };
            let member = &mut self.members[index];
            match (&error, member.failing) {
                (Some(e), false) => tracing::warn!(collector = name, error = %e, "collector failed"),
                (None, true) => tracing::info!(collector = name, "collector recovered"),
                _ => {}
            }
            member.failing = error.is_some();
            if timed_out {
                member.timeouts += 1;
            }
            if error.is_some() {
                self.errors_total += 1;
            }
            let series = part.as_ref().map_or(0, SnapshotBuilder::series_count);
            if let Some(part) = part {
                out.append(part);
            }
            outcomes.push(CollectorOutcome {
                name,
                duration_seconds: duration.as_secs_f64(),
                success: error.is_none(),
                error,
                series,
                timed_out,
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
        for member in &self.members {
            out.push(&COLLECTOR_TIMEOUTS, [member.name], member.timeouts as f64);
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

    fn timed_out_message(&self, since: Instant) -> String {
        format!(
            "timed out: still in its call after {:.1} s (deadline {:.1} s, a hung read?); its samples are absent and it is not called again until that call returns",
            since.elapsed().as_secs_f64(),
            self.deadline.as_secs_f64()
        )
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

    /// Blocks in `collect` while its gate is closed, as a read from a hung mount does.
    struct Hanging {
        gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
        calls: Arc<std::sync::atomic::AtomicUsize>,
    }
    impl Collector for Hanging {
        fn name(&self) -> &'static str {
            "hanging"
        }
        fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (open, changed) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
            out.push(&NODE_COUNTER, [] as [&str; 0], 7.0);
            Ok(())
        }
    }

    #[test]
    fn a_hung_collector_is_timed_out_not_called_again_and_recovers() {
        let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hanging = Hanging {
            gate: Arc::clone(&gate),
            calls: Arc::clone(&calls),
        };
        let collectors: Vec<Box<dyn Collector>> = vec![Box::new(hanging), Box::new(Fixed("fixed", 42.0))];
        let mut engine = Engine::new(collectors, Arc::default(), "/proc".into(), "host");
        engine.set_collector_deadline(Duration::from_millis(100));
        let outcome = |c: &Collection, n: &str| c.outcomes.iter().find(|o| o.name == n).unwrap().clone();
        let timeouts = |c: &Collection| {
            let family = c.snapshot.family("metrics_exporter_collector_timeouts_total").unwrap();
            let sample = family.samples.iter().find(|s| &*s.labels[0] == "hanging").unwrap();
            sample.value.clone()
        };
        for round in 1..=3 {
            let c = engine.collect();
            let hung = outcome(&c, "hanging");
            assert!(hung.timed_out && !hung.success, "round {round}: {hung:?}");
            assert!(hung.error.as_deref().unwrap().starts_with("timed out"), "{hung:?}");
            assert_eq!(hung.series, 0);
            assert!(outcome(&c, "fixed").success, "the others are collected");
            assert!(c.snapshot.family("node_test_seconds_total").is_none(), "absent, not 0");
            assert_eq!(timeouts(&c), crate::model::Value::Number(round as f64));
            // Called once: while its call hangs it is not called again (no second thread).
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
        {
            let (open, changed) = &*gate;
            *open.lock().unwrap() = true;
            changed.notify_all();
        }
        // The hung call returns on its own thread; the next collections take it back.
        let mut recovered = None;
        for _ in 0..200 {
            let c = engine.collect();
            if outcome(&c, "hanging").success {
                recovered = Some(c);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let c = recovered.expect("the collector came back once its call returned");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(!outcome(&c, "hanging").timed_out);
        assert!(c.snapshot.family("node_test_seconds_total").is_some());
        // A counter: it keeps its count (3, plus any collection that ran before the returned
        // call was taken back) and does not grow while the collector keeps its deadline.
        let kept = timeouts(&c);
        assert!(matches!(kept, crate::model::Value::Number(n) if n >= 3.0), "{kept:?}");
        assert_eq!(timeouts(&engine.collect()), kept);
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
