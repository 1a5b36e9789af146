//! The one declaration of every metric of Proxmox host mode (collectors `guests` and
//! `cluster`).
//!
//! Names follow cAdvisor (lib/metrics/prometheus.go) where cAdvisor has the quantity, so that
//! existing dashboards work; `container_` names otherwise; `pve_` for Proxmox's own concepts
//! (configuration, cluster). OpenTelemetry names are given where the semantic conventions
//! define the quantity (container.cpu.time, container.memory.usage, container.memory.working_set,
//! container.network.io, container.disk.io).

use crate::model::{Kind, MetricDesc, OtelName, Scope, Unit};

/// The identity labels of every per-guest series, in this order.
pub const GUEST_LABELS: [&str; 3] = ["container_id", "host_name", "type"];

macro_rules! metrics {
    ($( $(#[$doc:meta])* $id:ident = $desc:expr; )*) => {
        $( $(#[$doc])* pub static $id: MetricDesc = $desc; )*

        /// Every per-guest metric, indexed by `Id`.
        pub static GUEST_METRICS: &[&MetricDesc] = &[$( &$id ),*];

        /// Index of a per-guest metric in [`GUEST_METRICS`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Id { $( $id ),* }
    };
}

/// A per-guest metric (scope Guest); the new Proxmox collectors declare theirs with it too.
pub(crate) const fn guest(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
    otel: Option<OtelName>,
) -> MetricDesc {
    MetricDesc {
        name,
        help,
        kind,
        unit,
        labels,
        scope: Scope::Guest,
        otel,
    }
}

const L: &[&str] = &GUEST_LABELS;
const L_IF: &[&str] = &["container_id", "host_name", "type", "interface"];
const L_DEV: &[&str] = &["container_id", "host_name", "type", "device"];
const L_EVENT: &[&str] = &["container_id", "host_name", "type", "event"];
const L_LOCK: &[&str] = &["container_id", "host_name", "type", "lock"];
const L_STATE: &[&str] = &["container_id", "host_name", "type", "state"];

/// OpenTelemetry attributes of the guest identity labels: the vmid is the container id, the
/// guest's name its container name; the guest type has no semantic convention.
const OTEL_GUEST: &[&str] = &["container.id", "container.name", "proxmox.guest.type"];
const OTEL_IF: &[&str] = &[
    "container.id",
    "container.name",
    "proxmox.guest.type",
    "network.interface.name",
];
const OTEL_DEV: &[&str] = &["container.id", "container.name", "proxmox.guest.type", "system.device"];

/// The labels of `pve_guest_network_info`: the guest, its `interface` (`net<N>`, as on the
/// series of traffic), the host-side device and what the guest's config says of the interface.
const L_NET_INFO: &[&str] = &[
    "container_id",
    "host_name",
    "type",
    "interface",
    "device",
    "name",
    "bridge",
    "hwaddr",
];
const OTEL_NET_INFO: &[&str] = &[
    "container.id",
    "container.name",
    "proxmox.guest.type",
    "network.interface.name",
    "proxmox.guest.network.device",
    "proxmox.guest.network.guest_name",
    "proxmox.guest.network.bridge",
    "proxmox.guest.network.hwaddr",
];

const NET_IO_RECEIVE: Option<OtelName> = Some(OtelName {
    name: "container.network.io",
    attributes: OTEL_IF,
    fixed: &[("network.io.direction", "receive")],
});
const NET_IO_TRANSMIT: Option<OtelName> = Some(OtelName {
    name: "container.network.io",
    attributes: OTEL_IF,
    fixed: &[("network.io.direction", "transmit")],
});
const DISK_IO_READ: Option<OtelName> = Some(OtelName {
    name: "container.disk.io",
    attributes: OTEL_DEV,
    fixed: &[("disk.io.direction", "read")],
});
const DISK_IO_WRITE: Option<OtelName> = Some(OtelName {
    name: "container.disk.io",
    attributes: OTEL_DEV,
    fixed: &[("disk.io.direction", "write")],
});
const CPU_TIME_USER: Option<OtelName> = Some(OtelName {
    name: "container.cpu.time",
    attributes: OTEL_GUEST,
    fixed: &[("cpu.mode", "user")],
});
const CPU_TIME_SYSTEM: Option<OtelName> = Some(OtelName {
    name: "container.cpu.time",
    attributes: OTEL_GUEST,
    fixed: &[("cpu.mode", "system")],
});

metrics! {
    /// cpu.stat `usage_usec`.
    CPU_USAGE = guest("container_cpu_usage_seconds_total", "CPU time consumed by the guest (cpu.stat usage_usec).", Kind::Counter, Unit::Seconds, L, None);
    CPU_USER = guest("container_cpu_user_seconds_total", "CPU time the guest spent in user mode (cpu.stat user_usec).", Kind::Counter, Unit::Seconds, L, CPU_TIME_USER);
    CPU_SYSTEM = guest("container_cpu_system_seconds_total", "CPU time the guest spent in kernel mode (cpu.stat system_usec).", Kind::Counter, Unit::Seconds, L, CPU_TIME_SYSTEM);
    CPU_PERIODS = guest("container_cpu_cfs_periods_total", "Enforcement periods of the CPU quota that elapsed (cpu.stat nr_periods).", Kind::Counter, Unit::Count("{period}"), L, None);
    CPU_THROTTLED_PERIODS = guest("container_cpu_cfs_throttled_periods_total", "Periods in which the guest was throttled by its CPU quota (cpu.stat nr_throttled).", Kind::Counter, Unit::Count("{period}"), L, None);
    CPU_THROTTLED = guest("container_cpu_cfs_throttled_seconds_total", "Time the guest was throttled by its CPU quota (cpu.stat throttled_usec).", Kind::Counter, Unit::Seconds, L, None);
    /// Absent when cpu.max says `max` (no quota).
    CPU_LIMIT = guest("container_spec_cpu_limit_cores", "CPU quota in cores (cpu.max quota / period); absent when there is no quota.", Kind::Gauge, Unit::Ratio, L, None);

    MEMORY_USAGE = guest("container_memory_usage_bytes", "Memory charged to the guest, page cache included (memory.current; v1 memory.usage_in_bytes).", Kind::Gauge, Unit::Bytes, L, Some(OtelName { name: "container.memory.usage", attributes: OTEL_GUEST, fixed: &[] }));
    MEMORY_WORKING_SET = guest("container_memory_working_set_bytes", "Memory usage minus inactive file cache, floor 0, as cAdvisor and OpenTelemetry define the working set.", Kind::Gauge, Unit::Bytes, L, Some(OtelName { name: "container.memory.working_set", attributes: OTEL_GUEST, fixed: &[] }));
    MEMORY_PVE_USED = guest("container_memory_pve_used_bytes", "Memory usage minus all file cache (memory.current - memory.stat file; v1 usage - total_cache): the figure the Proxmox GUI shows.", Kind::Gauge, Unit::Bytes, L, None);
    MEMORY_SWAP = guest("container_memory_swap", "Swap used by the guest in bytes (memory.swap.current; v1 memory.stat total_swap).", Kind::Gauge, Unit::Bytes, L, None);
    MEMORY_LIMIT = guest("container_spec_memory_limit_bytes", "Hard memory limit (memory.max; v1 memory.limit_in_bytes); absent when unlimited.", Kind::Gauge, Unit::Bytes, L, None);
    MEMORY_SOFT_LIMIT = guest("container_spec_memory_soft_limit_bytes", "Memory throttling threshold (memory.high); absent when unlimited.", Kind::Gauge, Unit::Bytes, L, None);
    SWAP_LIMIT = guest("container_spec_memory_swap_limit_bytes", "Swap limit (memory.swap.max); absent when unlimited.", Kind::Gauge, Unit::Bytes, L, None);
    OOM_KILLS = guest("container_oom_kills_total", "Processes of the guest killed by an OOM killer, the guest's own or the host's (memory.events oom_kill).", Kind::Counter, Unit::Count("{process}"), L, None);
    MEMORY_EVENTS = guest("container_memory_events_total", "Memory limit events of the guest (memory.events: high = over memory.high and throttled, max = at memory.max, oom = its limit could not be kept and the OOM killer ran).", Kind::Counter, Unit::Count("{event}"), L_EVENT, None);

    CPU_WAITING = guest("container_pressure_cpu_waiting_seconds_total", "Time at least one task of the guest waited for CPU (cpu.pressure some).", Kind::Counter, Unit::Seconds, L, None);
    CPU_STALLED = guest("container_pressure_cpu_stalled_seconds_total", "Time all non-idle tasks of the guest waited for CPU (cpu.pressure full).", Kind::Counter, Unit::Seconds, L, None);
    MEMORY_WAITING = guest("container_pressure_memory_waiting_seconds_total", "Time at least one task of the guest stalled on memory (memory.pressure some).", Kind::Counter, Unit::Seconds, L, None);
    MEMORY_STALLED = guest("container_pressure_memory_stalled_seconds_total", "Time all non-idle tasks of the guest stalled on memory (memory.pressure full).", Kind::Counter, Unit::Seconds, L, None);
    IO_WAITING = guest("container_pressure_io_waiting_seconds_total", "Time at least one task of the guest stalled on I/O (io.pressure some).", Kind::Counter, Unit::Seconds, L, None);
    IO_STALLED = guest("container_pressure_io_stalled_seconds_total", "Time all non-idle tasks of the guest stalled on I/O (io.pressure full).", Kind::Counter, Unit::Seconds, L, None);

    FS_READ_BYTES = guest("container_fs_reads_bytes_total", "Bytes read by the guest from a block device (io.stat rbytes). Devices are stacked (LV, thin pool, disk): never sum across devices.", Kind::Counter, Unit::Bytes, L_DEV, DISK_IO_READ);
    FS_WRITE_BYTES = guest("container_fs_writes_bytes_total", "Bytes written by the guest to a block device (io.stat wbytes). Devices are stacked: never sum across devices.", Kind::Counter, Unit::Bytes, L_DEV, DISK_IO_WRITE);
    FS_READS = guest("container_fs_reads_total", "Read operations of the guest on a block device (io.stat rios).", Kind::Counter, Unit::Count("{operation}"), L_DEV, None);
    FS_WRITES = guest("container_fs_writes_total", "Write operations of the guest on a block device (io.stat wios).", Kind::Counter, Unit::Count("{operation}"), L_DEV, None);

    THREADS = guest("container_threads", "Tasks (threads) in the guest (pids.current).", Kind::Gauge, Unit::Count("{thread}"), L, None);
    THREADS_MAX = guest("container_threads_max", "Task limit of the guest (pids.max); absent when unlimited.", Kind::Gauge, Unit::Count("{thread}"), L, None);
    PROCESSES = guest("container_processes", "Processes in the guest: distinct PIDs in cgroup.procs of the guest cgroup and every cgroup below it.", Kind::Gauge, Unit::Count("{process}"), L, None);

    /// `interface` is Proxmox's `net<N>` key for containers and VMs alike, from the host device
    /// `veth<vmid>i<N>` / `tap<vmid>i<N>`; [`GUEST_NETWORK_INFO`] maps it to names.
    NET_RX_BYTES = guest("container_network_receive_bytes_total", "Bytes the guest interface received (host-side veth/tap transmit).", Kind::Counter, Unit::Bytes, L_IF, NET_IO_RECEIVE);
    NET_TX_BYTES = guest("container_network_transmit_bytes_total", "Bytes the guest interface sent (host-side veth/tap receive).", Kind::Counter, Unit::Bytes, L_IF, NET_IO_TRANSMIT);
    NET_RX_PACKETS = guest("container_network_receive_packets_total", "Packets the guest interface received (host-side transmit).", Kind::Counter, Unit::Count("{packet}"), L_IF, None);
    NET_TX_PACKETS = guest("container_network_transmit_packets_total", "Packets the guest interface sent (host-side receive).", Kind::Counter, Unit::Count("{packet}"), L_IF, None);
    NET_RX_ERRORS = guest("container_network_receive_errors_total", "Receive errors of the guest interface (host-side transmit errors).", Kind::Counter, Unit::Count("{error}"), L_IF, None);
    NET_TX_ERRORS = guest("container_network_transmit_errors_total", "Transmit errors of the guest interface (host-side receive errors).", Kind::Counter, Unit::Count("{error}"), L_IF, None);
    NET_RX_DROPPED = guest("container_network_receive_packets_dropped_total", "Packets to the guest the host could not deliver (host-side transmit drops).", Kind::Counter, Unit::Count("{packet}"), L_IF, None);
    NET_TX_DROPPED = guest("container_network_transmit_packets_dropped_total", "Packets from the guest dropped on the host side (host-side receive drop column of /proc/net/dev: rx_dropped + rx_missed_errors).", Kind::Counter, Unit::Count("{packet}"), L_IF, None);

    /// `template` is the config's `template:` flag (`0` when absent, Proxmox's default; empty
    /// when the value is no boolean or there is no config).
    GUEST_INFO = guest("pve_guest_info", "One series per guest of this node: name, node, tags (';'-joined), status (running or stopped) and template (the config's template flag, 0 or 1).", Kind::Info, Unit::Count("1"), &["container_id", "host_name", "type", "node", "tags", "status", "template"], None);
    /// One per guest interface seen on the host (`veth<vmid>i<N>`, `tap<vmid>i<N>`); `name`,
    /// `bridge`, `hwaddr` only where the guest's `net<N>` config line gives them.
    GUEST_NETWORK_INFO = guest("pve_guest_network_info", "One series per interface of a running guest: interface (Proxmox's net<N> key, the label of the container_network_* series), device (host-side veth<vmid>i<N> or tap<vmid>i<N>) and, where the guest config's net<N> line gives them, name (in-guest interface name, containers only), bridge and hwaddr.", Kind::Info, Unit::Count("1"), L_NET_INFO, Some(OtelName { name: "proxmox.guest.network.info", attributes: OTEL_NET_INFO, fixed: &[] }));
    /// Absent while the start cannot be read (no process yet, a `/proc` without its PIDs).
    GUEST_START = guest("pve_guest_start_time_seconds", "Unix time at which the running guest started: the start of its first process (the container's init, the VM's QEMU process), btime + starttime of /proc/<pid>/stat. time() minus it is the guest's uptime.", Kind::Gauge, Unit::Seconds, L, None);
    GUEST_CONFIG_CPUS = guest("pve_guest_config_cpus", "CPUs the guest is configured with (LXC cores; QEMU vcpus, else sockets x cores).", Kind::Gauge, Unit::Count("{cpu}"), L, None);
    GUEST_CONFIG_MEMORY = guest("pve_guest_config_memory_bytes", "Memory the guest is configured with (config memory, MiB x 1048576). Not the effective limit: see container_spec_memory_limit_bytes.", Kind::Gauge, Unit::Bytes, L, None);
    /// Only while the config's main section has a `lock:` line; the label is its value.
    GUEST_LOCK = guest("pve_guest_lock", "1 while the guest's config holds a lock (its lock: line), with the lock: backup, migrate, snapshot, snapshot-delete, rollback, create, clone, disk, fstrim, mounted, destroyed, suspending, suspended. Absent when the guest is not locked.", Kind::Gauge, Unit::Count("1"), L_LOCK, None);
    /// 0 when the config has no `onboot:` line: the schema's default.
    GUEST_ONBOOT = guest("pve_guest_onboot", "1 when the guest is started at node boot (config onboot:), else 0 (also when the line is absent: Proxmox's default).", Kind::Gauge, Unit::Count("1"), L, None);
    /// One series per HA-managed local guest; its source is manager_status when the file
    /// exists, else resources.cfg.
    GUEST_HA_STATE = guest("pve_guest_ha_state", "1 for a guest the HA stack manages, with its state: the CRM's service state from /etc/pve/ha/manager_status (started, stopped, request_start, request_stop, fence, recovery, migrate, relocate, freeze, error), or, where that file is absent, the requested state from /etc/pve/ha/resources.cfg (started, stopped, disabled, ignored). Absent for a guest HA does not manage.", Kind::Gauge, Unit::Count("1"), L_STATE, None);
    /// 0 for a config without snapshot sections.
    GUEST_SNAPSHOTS = guest("pve_guest_snapshots", "Snapshots of the guest: the [name] sections of its config, not the pending one. A container's snapshot named vzdump is a snapshot-mode backup in progress.", Kind::Gauge, Unit::Count("{snapshot}"), L, None);
    /// Absent without snapshots, and when a snapshot's `snaptime` is missing or malformed.
    GUEST_SNAPSHOT_OLDEST = guest("pve_guest_snapshot_oldest_timestamp_seconds", "Unix time at which the guest's oldest snapshot was taken (the smallest snaptime of its config's snapshot sections); absent without snapshots.", Kind::Gauge, Unit::Seconds, L, None);
}

/// A node-level metric (scope Node).
pub(crate) const fn node(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
) -> MetricDesc {
    MetricDesc {
        name,
        help,
        kind,
        unit,
        labels,
        scope: Scope::Node,
        otel: None,
    }
}

/// `.members` cluster name; only on clustered nodes.
pub static CLUSTER_INFO: MetricDesc = node(
    "pve_cluster_info",
    "The cluster this node belongs to (.members), with corosync's config_version.",
    Kind::Info,
    Unit::Count("1"),
    &["cluster", "node", "config_version"],
);
pub static CLUSTER_QUORATE: MetricDesc = node(
    "pve_cluster_quorate",
    "1 when the cluster has quorum (.members quorate), else 0.",
    Kind::Gauge,
    Unit::Count("1"),
    &["cluster"],
);
pub static CLUSTER_NODES: MetricDesc = node(
    "pve_cluster_nodes",
    "Nodes configured in the cluster (.members).",
    Kind::Gauge,
    Unit::Count("{node}"),
    &["cluster"],
);
pub static CLUSTER_NODES_ONLINE: MetricDesc = node(
    "pve_cluster_nodes_online",
    "Nodes of the cluster that are online (.members nodelist).",
    Kind::Gauge,
    Unit::Count("{node}"),
    &["cluster"],
);
pub static CLUSTER_NODE_ONLINE: MetricDesc = node(
    "pve_cluster_node_online",
    "1 when the node is online in the cluster (.members nodelist), else 0.",
    Kind::Gauge,
    Unit::Count("1"),
    &["cluster", "node", "node_id", "ip"],
);
pub static CLUSTER_GUESTS: MetricDesc = node(
    "pve_cluster_guests",
    "Guests per node and type in the cluster's VM list (.vmlist).",
    Kind::Gauge,
    Unit::Count("{guest}"),
    &["node", "type"],
);
pub static PMXCFS_START: MetricDesc = node(
    "pve_pmxcfs_start_time_seconds",
    "When the Proxmox cluster filesystem (pmxcfs) started (.version starttime), Unix seconds.",
    Kind::Gauge,
    Unit::Seconds,
    &[],
);

/// Every cluster metric.
pub static CLUSTER_METRICS: &[&MetricDesc] = &[
    &CLUSTER_INFO,
    &CLUSTER_QUORATE,
    &CLUSTER_NODES,
    &CLUSTER_NODES_ONLINE,
    &CLUSTER_NODE_ONLINE,
    &CLUSTER_GUESTS,
    &PMXCFS_START,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_index_the_table_and_names_are_unique() {
        assert_eq!(GUEST_METRICS[Id::CPU_USAGE as usize].name, CPU_USAGE.name);
        assert_eq!(
            GUEST_METRICS[Id::GUEST_CONFIG_MEMORY as usize].name,
            GUEST_CONFIG_MEMORY.name
        );
        let mut names: Vec<_> = GUEST_METRICS.iter().chain(CLUSTER_METRICS).map(|d| d.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        for d in GUEST_METRICS {
            assert_eq!(&d.labels[..3], &GUEST_LABELS, "{}", d.name);
            if let Some(o) = d.otel {
                assert_eq!(o.attributes.len(), d.labels.len(), "{}", d.name);
            }
            if d.kind == Kind::Counter {
                assert!(d.name.ends_with("_total"), "{}", d.name);
            }
        }
        assert_eq!(NET_RX_BYTES.otel.unwrap().fixed, &[("network.io.direction", "receive")]);
        assert_eq!(
            NET_TX_BYTES.otel.unwrap().fixed,
            &[("network.io.direction", "transmit")]
        );
        assert_eq!(FS_READ_BYTES.otel.unwrap().fixed, &[("disk.io.direction", "read")]);
        assert_eq!(CPU_SYSTEM.otel.unwrap().fixed, &[("cpu.mode", "system")]);
        // The interface label means the same on the traffic series and the info series.
        assert_eq!(GUEST_NETWORK_INFO.labels[..4], NET_RX_BYTES.labels[..]);
        assert_eq!(
            GUEST_NETWORK_INFO.otel.unwrap().attributes[..4],
            NET_RX_BYTES.otel.unwrap().attributes[..]
        );
    }
}
