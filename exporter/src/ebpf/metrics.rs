//! The metrics only eBPF can produce, and the eBPF side's own observability.
//!
//! Guest families (`Scope::Guest`, labels [`GUEST_LABELS`]) are new series with no cgroupfs
//! equivalent: run-queue latency, task lifecycle, and socket-level traffic. Socket traffic is
//! deliberately not named like the interface counters (`container_network_*`): cgroup_skb sees
//! L3 lengths of the guest's own sockets' packets, without ARP, forwarded or kernel-generated
//! traffic and without an interface, so it is a different quantity. CPU time is the same
//! quantity as cpu.stat's: the Proxmox collector exports [`super::GuestReading::cpu_seconds`]
//! under its own `container_cpu_usage_seconds_total`, whichever source fed it.
//!
//! Node families (`metrics_exporter_ebpf_*`) describe the eBPF side: whether it runs and why
//! not, each program's run count and run time from the kernel's bpf stats, map fill levels and
//! events that could not be accounted.

use crate::model::{Histogram, Kind, LabelValue, MetricDesc, OtelName, Scope, SnapshotBuilder, Unit, Value};
use exporter_common::{RUNQ_BUCKETS, runq_bucket_upper_ns};

use super::privileges::CapabilityDrop;
use super::{EbpfUnavailable, GuestReading, SelfStats};

/// Label names of every guest family, in order.
pub const GUEST_LABELS: &[&str] = &["container_id", "host_name", "type"];

pub static RUNQUEUE_LATENCY: MetricDesc = MetricDesc {
    name: "container_runqueue_latency_seconds",
    help: "Time the guest's tasks spent runnable but waiting for a CPU, from wakeup or preemption to running: one sample per run slice (eBPF sched_switch, the kernel's sched_info run_delay).",
    kind: Kind::Histogram,
    unit: Unit::Seconds,
    labels: GUEST_LABELS,
    scope: Scope::Guest,
    otel: None,
};

pub static TASKS_FORKED: MetricDesc = MetricDesc {
    name: "container_tasks_forked_total",
    help: "Tasks (processes and threads) created by the guest's tasks (eBPF sched_process_fork).",
    kind: Kind::Counter,
    unit: Unit::Count("{task}"),
    labels: GUEST_LABELS,
    scope: Scope::Guest,
    otel: None,
};

pub static TASKS_EXECS: MetricDesc = MetricDesc {
    name: "container_tasks_execs_total",
    help: "Successful execve calls in the guest (eBPF sched_process_exec).",
    kind: Kind::Counter,
    unit: Unit::Count("{exec}"),
    labels: GUEST_LABELS,
    scope: Scope::Guest,
    otel: None,
};

pub static TASKS_EXITS: MetricDesc = MetricDesc {
    name: "container_tasks_exits_total",
    help: "Tasks (threads) of the guest that exited (eBPF sched_process_exit).",
    kind: Kind::Counter,
    unit: Unit::Count("{task}"),
    labels: GUEST_LABELS,
    scope: Scope::Guest,
    otel: None,
};

pub static SOCKET_RECEIVE_BYTES: MetricDesc = MetricDesc {
    name: "container_socket_receive_bytes_total",
    help: "L3 bytes delivered to the guest's sockets, all interfaces (eBPF cgroup_skb ingress; an interface counts 14 more per Ethernet packet).",
    kind: Kind::Counter,
    unit: Unit::Bytes,
    labels: GUEST_LABELS,
    scope: Scope::Guest,
    otel: None,
};

pub static SOCKET_RECEIVE_PACKETS: MetricDesc = MetricDesc {
    name: "container_socket_receive_packets_total",
    help: "Packets delivered to the guest's sockets, all interfaces (eBPF cgroup_skb ingress).",
    kind: Kind::Counter,
    unit: Unit::Count("{packet}"),
    labels: GUEST_LABELS,
    scope: Scope::Guest,
    otel: None,
};

pub static SOCKET_TRANSMIT_BYTES: MetricDesc = MetricDesc {
    name: "container_socket_transmit_bytes_total",
    help: "L3 bytes sent by the guest's sockets, all interfaces (eBPF cgroup_skb egress; an interface counts 14 more per Ethernet packet).",
    kind: Kind::Counter,
    unit: Unit::Bytes,
    labels: GUEST_LABELS,
    scope: Scope::Guest,
    otel: None,
};

pub static SOCKET_TRANSMIT_PACKETS: MetricDesc = MetricDesc {
    name: "container_socket_transmit_packets_total",
    help: "Packets sent by the guest's sockets, all interfaces (eBPF cgroup_skb egress).",
    kind: Kind::Counter,
    unit: Unit::Count("{packet}"),
    labels: GUEST_LABELS,
    scope: Scope::Guest,
    otel: None,
};

pub static EBPF_ENABLED: MetricDesc = MetricDesc {
    name: "metrics_exporter_ebpf_enabled",
    help: "1 when the eBPF programs are loaded and feed guest metrics, 0 when they are not; reason says why not.",
    kind: Kind::Gauge,
    unit: Unit::Ratio,
    labels: &["reason"],
    scope: Scope::Node,
    otel: None,
};

pub static PROGRAM_RUNS: MetricDesc = MetricDesc {
    name: "metrics_exporter_ebpf_program_runs_total",
    help: "Runs of each eBPF program of the exporter while kernel bpf stats were enabled (BPF_ENABLE_STATS).",
    kind: Kind::Counter,
    unit: Unit::Count("{run}"),
    labels: &["program"],
    scope: Scope::Node,
    otel: None,
};

pub static PROGRAM_RUN_SECONDS: MetricDesc = MetricDesc {
    name: "metrics_exporter_ebpf_program_run_seconds_total",
    help: "Time spent in each eBPF program of the exporter while kernel bpf stats were enabled.",
    kind: Kind::Counter,
    unit: Unit::Seconds,
    labels: &["program"],
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "metrics_exporter.ebpf.program.time",
        attributes: &["program"],
        fixed: &[],
    }),
};

pub static MAP_ENTRIES: MetricDesc = MetricDesc {
    name: "metrics_exporter_ebpf_map_entries",
    help: "Entries in use of each bounded eBPF map the exporter fills (guest slots, slot table).",
    kind: Kind::Gauge,
    unit: Unit::Count("{entry}"),
    labels: &["map"],
    scope: Scope::Node,
    otel: None,
};

pub static MAP_CAPACITY: MetricDesc = MetricDesc {
    name: "metrics_exporter_ebpf_map_capacity",
    help: "Capacity of each bounded eBPF map the exporter fills.",
    kind: Kind::Gauge,
    unit: Unit::Count("{entry}"),
    labels: &["map"],
    scope: Scope::Node,
    otel: None,
};

pub static EVENTS_LOST: MetricDesc = MetricDesc {
    name: "metrics_exporter_ebpf_events_lost_total",
    help: "What the eBPF side could not account: guests refused for lack of a slot, guest slices whose switch-in was not seen (their CPU time is still charged, from the kernel's own start of the slice; their run-queue wait is not sampled), slot-table entries in an unexpected state.",
    kind: Kind::Counter,
    unit: Unit::Count("{event}"),
    labels: &["reason"],
    scope: Scope::Node,
    otel: None,
};

pub static CAPABILITIES_DROPPED: MetricDesc = MetricDesc {
    name: "metrics_exporter_capabilities_dropped",
    help: "1 when the exporter dropped every capability after trying to load its eBPF programs (none effective, permitted, inheritable or ambient, read back from /proc/self/status), 0 when it could not; absent when it did not try to load them.",
    kind: Kind::Gauge,
    unit: Unit::Ratio,
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

/// Every family this module declares (for catalogues and documentation).
pub static ALL: &[&MetricDesc] = &[
    &RUNQUEUE_LATENCY,
    &TASKS_FORKED,
    &TASKS_EXECS,
    &TASKS_EXITS,
    &SOCKET_RECEIVE_BYTES,
    &SOCKET_RECEIVE_PACKETS,
    &SOCKET_TRANSMIT_BYTES,
    &SOCKET_TRANSMIT_PACKETS,
    &EBPF_ENABLED,
    &PROGRAM_RUNS,
    &PROGRAM_RUN_SECONDS,
    &MAP_ENTRIES,
    &MAP_CAPACITY,
    &EVENTS_LOST,
    &CAPABILITIES_DROPPED,
];

/// The run-queue histogram of one reading, with cumulative buckets in seconds.
pub fn runqueue_histogram(reading: &GuestReading) -> Histogram {
    let c = &reading.counters;
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(RUNQ_BUCKETS - 1);
    for (k, n) in c.runq_buckets.iter().enumerate() {
        cumulative += n;
        if let Some(upper) = runq_bucket_upper_ns(k) {
            buckets.push((upper as f64 / 1e9, cumulative));
        }
    }
    Histogram {
        buckets,
        sum: c.runq_wait_ns as f64 / 1e9,
        count: cumulative,
    }
}

/// Adds the eBPF-only guest series of one guest. `labels` are the values of [`GUEST_LABELS`].
pub fn push_guest(out: &mut SnapshotBuilder, labels: &[LabelValue; 3], reading: &GuestReading) {
    let c = &reading.counters;
    let l = || labels.iter().cloned();
    out.push_value(
        &RUNQUEUE_LATENCY,
        l(),
        Value::Histogram(Box::new(runqueue_histogram(reading))),
    );
    out.push(&TASKS_FORKED, l(), c.forks as f64);
    out.push(&TASKS_EXECS, l(), c.execs as f64);
    out.push(&TASKS_EXITS, l(), c.exits as f64);
    out.push(&SOCKET_RECEIVE_BYTES, l(), c.rx_bytes as f64);
    out.push(&SOCKET_RECEIVE_PACKETS, l(), c.rx_packets as f64);
    out.push(&SOCKET_TRANSMIT_BYTES, l(), c.tx_bytes as f64);
    out.push(&SOCKET_TRANSMIT_PACKETS, l(), c.tx_packets as f64);
}

/// Adds the eBPF side's own series when the programs run.
pub fn push_self(out: &mut SnapshotBuilder, stats: &SelfStats) {
    out.push(&EBPF_ENABLED, [""], 1.0);
    // Run counts exist only while bpf stats are enabled; without them the kernel reports 0,
    // which would be a made-up value: the series are then absent.
    if stats.bpf_stats_enabled {
        for p in &stats.programs {
            out.push(&PROGRAM_RUNS, [p.name], p.run_count as f64);
            out.push(&PROGRAM_RUN_SECONDS, [p.name], p.run_time_ns as f64 / 1e9);
        }
    }
    out.push(&MAP_ENTRIES, ["guest_slots"], stats.slots_used as f64);
    out.push(&MAP_CAPACITY, ["guest_slots"], stats.slots_capacity as f64);
    out.push(&MAP_ENTRIES, ["slot_table"], stats.slots_used as f64);
    out.push(&MAP_CAPACITY, ["slot_table"], stats.slot_table_capacity as f64);
    out.push(&EVENTS_LOST, ["guest_rejected"], stats.guests_rejected as f64);
    if let Some(n) = stats.unseen_switch_in {
        out.push(&EVENTS_LOST, ["switch_in_unseen"], n as f64);
    }
    if let Some(n) = stats.bad_slot {
        out.push(&EVENTS_LOST, ["bad_slot_entry"], n as f64);
    }
}

/// Adds `metrics_exporter_capabilities_dropped` for the drop that followed the load.
pub fn push_capabilities(out: &mut SnapshotBuilder, drop: &CapabilityDrop) {
    out.push(
        &CAPABILITIES_DROPPED,
        [] as [&str; 0],
        if drop.dropped { 1.0 } else { 0.0 },
    );
}

/// Adds `metrics_exporter_ebpf_enabled 0` with the reason the programs do not run.
pub fn push_unavailable(out: &mut SnapshotBuilder, why: &EbpfUnavailable) {
    let reason: LabelValue = why.to_string().into();
    out.push(&EBPF_ENABLED, [reason], 0.0);
}
