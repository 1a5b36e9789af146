//! The kernel <-> userspace contract of metrics-exporter: every type shared with the eBPF
//! programs in `exporter-ebpf`, with fixed-width fields and explicit sizes.
#![no_std]
