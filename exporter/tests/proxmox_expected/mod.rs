//! Shared by the tests that check fixtures/proxmox-host/expected.json: which metric each of its
//! per-guest keys is exported as.

/// expected.json key -> metric name (per-guest scalars).
pub const SCALARS: &[(&str, &str)] = &[
    ("cpu_seconds", "container_cpu_usage_seconds_total"),
    ("cpu_user_seconds", "container_cpu_user_seconds_total"),
    ("cpu_system_seconds", "container_cpu_system_seconds_total"),
    ("throttled_seconds", "container_cpu_cfs_throttled_seconds_total"),
    ("throttled_periods", "container_cpu_cfs_throttled_periods_total"),
    ("cpu_periods", "container_cpu_cfs_periods_total"),
    ("cpu_limit_cores", "container_spec_cpu_limit_cores"),
    ("memory_usage_bytes", "container_memory_usage_bytes"),
    ("memory_pve_bytes", "container_memory_pve_used_bytes"),
    ("memory_working_set_bytes", "container_memory_working_set_bytes"),
    ("memory_limit_bytes", "container_spec_memory_limit_bytes"),
    ("memory_high_bytes", "container_spec_memory_soft_limit_bytes"),
    ("swap_bytes", "container_memory_swap"),
    ("swap_limit_bytes", "container_spec_memory_swap_limit_bytes"),
    ("pids", "container_threads"),
    ("pids_limit", "container_threads_max"),
    ("processes", "container_processes"),
    ("oom_kills", "container_oom_kills_total"),
    ("psi_cpu_some_seconds", "container_pressure_cpu_waiting_seconds_total"),
    ("psi_cpu_full_seconds", "container_pressure_cpu_stalled_seconds_total"),
    (
        "psi_memory_some_seconds",
        "container_pressure_memory_waiting_seconds_total",
    ),
    (
        "psi_memory_full_seconds",
        "container_pressure_memory_stalled_seconds_total",
    ),
    ("psi_io_some_seconds", "container_pressure_io_waiting_seconds_total"),
    ("psi_io_full_seconds", "container_pressure_io_stalled_seconds_total"),
];
